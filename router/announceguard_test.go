package router

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// udpFrame is an Ethernet frame with a UDP datagram to dst:port, IPv4 or
// IPv6 by dst; ext are IPv6 extension headers (8 bytes each: next header,
// length 0) put before the UDP header; frag is the IPv4 fragment offset
// field.
func udpFrame(dst netip.Addr, port uint16, frag uint16, ext ...byte) []byte {
	f := make([]byte, 14, 128)
	if dst.Is4() {
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(ip[6:], frag)
		copy(ip[12:], []byte{198, 51, 100, 7})
		a := dst.As4()
		copy(ip[16:], a[:])
		f = append(f, ip...)
	} else {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0], ip[7] = 0x60, 64
		ip[6] = 17
		if len(ext) > 0 {
			ip[6] = ext[0]
		}
		a := dst.As16()
		copy(ip[24:], a[:])
		f = append(f, ip...)
		for i, e := range ext {
			next := byte(17)
			if i+1 < len(ext) {
				next = ext[i+1]
			}
			h := make([]byte, 8)
			h[0] = next
			_ = e
			f = append(f, h...)
		}
	}
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], port)
	return append(f, udp...)
}

func TestPortGuard(t *testing.T) {
	lan, up := &tap.Endpoint{}, &tap.Endpoint{}
	g := NewPortGuard()
	g.Set([]PortRule{{LAN: lan, Port: 9470, Dst: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("203.0.113.10/32"), netip.MustParsePrefix("2001:db8:2::/64")}}})
	server, ghost, v6 := netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8:2::11")
	for _, tc := range []struct {
		name  string
		ep    *tap.Endpoint
		frame []byte
		drop  bool
	}{
		{"client to a server's announce port", up, udpFrame(server, 9470, 0), true},
		{"client to the ghost's announce port", up, udpFrame(ghost, 9470, 0), true},
		{"client to the LAN broadcast address", up, udpFrame(netip.MustParseAddr("10.0.0.255"), 9470, 0), true},
		{"first fragment (more fragments set)", up, udpFrame(server, 9470, 0x2000), true},
		{"IPv6 client to a server", up, udpFrame(v6, 9470, 0), true},
		{"IPv6 through hop-by-hop and destination options", up, udpFrame(v6, 9470, 0, 0, 60), true},
		{"IPv6 first fragment", up, udpFrame(v6, 9470, 0, 44), true},
		{"from the LAN itself", lan, udpFrame(server, 9470, 0), false},
		{"another port", up, udpFrame(server, 9000, 0), false},
		{"another destination", up, udpFrame(netip.MustParseAddr("10.0.1.11"), 9470, 0), false},
		{"non-first fragment", up, udpFrame(server, 9470, 0x0010), false},
		{"truncated", up, udpFrame(server, 9470, 0)[:14+20+2], false},
		{"runt", up, []byte{1, 2, 3}, false},
	} {
		before := g.Dropped()
		want := stage.Pass
		if tc.drop {
			want = stage.Drop(stage.AnnouncePort)
		}
		if got := g.Inbound(tc.ep, tc.frame); got != want {
			t.Errorf("%s: verdict %v, want %v", tc.name, got, want)
		}
		if n := g.Dropped() - before; (n == 1) != tc.drop {
			t.Errorf("%s: counted %d", tc.name, n)
		}
	}
	frame := udpFrame(server, 9000, 0)
	if n := testing.AllocsPerRun(100, func() { g.Inbound(up, frame) }); n != 0 {
		t.Errorf("%v allocations per frame, want 0", n)
	}
}

// FuzzPortGuard: the guard never panics, and never drops a frame that is
// not a UDP datagram to the protected port.
func FuzzPortGuard(f *testing.F) {
	f.Add(udpFrame(netip.MustParseAddr("10.0.0.11"), 9470, 0))
	f.Add(udpFrame(netip.MustParseAddr("2001:db8:2::11"), 9470, 0, 0, 43, 44))
	lan, up := &tap.Endpoint{}, &tap.Endpoint{}
	g := NewPortGuard()
	g.Set([]PortRule{{LAN: lan, Port: 9470, Dst: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if g.Inbound(up, frame).Taken() {
			if _, port, ok := udpDst(frame); !ok || port != 9470 {
				t.Fatalf("dropped a frame that is not UDP to 9470: % x", frame)
			}
		}
	})
}

// BenchmarkPortGuard: the stage's cost per frame that it lets through
// (the common case: ordinary traffic), with no rule (the baseline: a
// router without broadcast clusters) and with two clusters' rules.
func BenchmarkPortGuard(b *testing.B) {
	lan, up := &tap.Endpoint{}, &tap.Endpoint{}
	frame := udpFrame(netip.MustParseAddr("10.0.0.11"), 9000, 0)
	for _, tc := range []struct {
		name  string
		rules []PortRule
	}{
		{"baseline-no-rules", nil},
		{"two-clusters", []PortRule{
			{LAN: lan, Port: 9470, Dst: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("203.0.113.10/32")}},
			{LAN: lan, Port: 9471, Dst: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24"), netip.MustParsePrefix("203.0.113.11/32")}},
		}},
	} {
		g := NewPortGuard()
		g.Set(tc.rules)
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				g.Inbound(up, frame)
			}
		})
	}
}
