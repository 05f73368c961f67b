package dispatch

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// icmpErrorFrame builds an Ethernet frame with an ICMPv4 error (type, code)
// from router to the ghost, quoting quote (the packet the error is about).
func icmpErrorFrame(router netip.Addr, typ, code uint8, quote []byte) []byte {
	n := 20 + 8 + len(quote)
	f := make([]byte, 14+n)
	copy(f[0:6], hookLANMAC)
	copy(f[6:12], hookInMAC)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(n))
	ip[8], ip[9] = 64, 1
	s, d := router.As4(), hookGhost.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip[:20], 0))
	ic := ip[20:]
	ic[0], ic[1] = typ, code
	binary.BigEndian.PutUint16(ic[6:8], 1280) // next-hop MTU (fragmentation needed)
	copy(ic[8:], quote)
	binary.BigEndian.PutUint16(ic[2:4], ^checksum.Checksum(ic, 0))
	return f
}

// serverToClient is the first 28 bytes of a TCP segment from the ghost to
// client, as a router quotes it.
func serverToClient(src, client netip.Addr) []byte {
	q := make([]byte, 28)
	q[0] = 0x45
	binary.BigEndian.PutUint16(q[2:], 1500)
	q[6] = 0x40 // DF
	q[8], q[9] = 63, 6
	s, d := src.As4(), client.As4()
	copy(q[12:16], s[:])
	copy(q[16:20], d[:])
	binary.BigEndian.PutUint16(q[10:], ^checksum.Checksum(q[:20], 0))
	binary.BigEndian.PutUint16(q[20:], 80)
	binary.BigEndian.PutUint16(q[22:], 40000)
	return q
}

// distinctPair returns a client and a router address that the cluster's
// selector sends to different servers, so that dispatching an error by the
// wrong one of them shows.
func distinctPair(t *testing.T, v *View) (client, router netip.Addr) {
	t.Helper()
	router = netip.MustParseAddr("192.0.2.254")
	ri, _, _ := v.Selector.Select(router)
	for i := 1; i < 255; i++ {
		client = netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		if ci, _, _ := v.Selector.Select(client); ci != ri {
			return client, router
		}
	}
	t.Fatal("no client hashes away from the router")
	return
}

func TestICMPErrorFollowsTheQuotedClient(t *testing.T) {
	for _, tc := range []struct {
		name      string
		typ, code uint8
	}{
		{"fragmentation needed", 3, 4},
		{"port unreachable", 3, 3},
		{"time exceeded", 11, 0},
		{"parameter problem", 12, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lan, peer := lanPair(t)
			f, c, v := testForwarder(t, lan, nil)
			client, router := distinctPair(t, v)
			in := icmpErrorFrame(router, tc.typ, tc.code, serverToClient(hookGhost, client))
			if !f.Inbound(nil, in).Taken() {
				t.Fatal("ICMP error to the ghost not taken")
			}
			out := readNow(t, peer)
			if out == nil {
				t.Fatal("nothing reached the LAN")
			}
			want, _, _ := v.Selector.Select(client)
			if [6]byte(out[0:6]) != v.MACs[want] {
				t.Fatalf("error sent to %x; the quoted client %s is server %d's (%x)", out[0:6], client, want, v.MACs[want])
			}
			if out[14+8] != 63 {
				t.Fatalf("TTL %d, want 63", out[14+8])
			}
			if c.Stats().ICMPErrors.Load() != 1 || c.Stats().ICMPMalformed.Load() != 0 {
				t.Fatalf("icmp errors %d malformed %d, want 1 0", c.Stats().ICMPErrors.Load(), c.Stats().ICMPMalformed.Load())
			}
		})
	}
}

func TestICMPNonErrorsGoBySource(t *testing.T) {
	lan, peer := lanPair(t)
	f, c, v := testForwarder(t, lan, nil)
	client, router := distinctPair(t, v)
	// An echo request from router quoting nothing: by its source.
	echo := icmpErrorFrame(router, 8, 0, serverToClient(hookGhost, client))
	// A later fragment of an ICMP error: no ICMP header, by its source.
	later := icmpErrorFrame(router, 3, 4, serverToClient(hookGhost, client))
	later[14+7] = 10
	binary.BigEndian.PutUint16(later[14+10:], 0)
	binary.BigEndian.PutUint16(later[14+10:], ^checksum.Checksum(later[14:34], 0))
	ri, _, _ := v.Selector.Select(router)
	for name, in := range map[string][]byte{"echo request": echo, "later fragment": later} {
		if !f.Inbound(nil, in).Taken() {
			t.Fatalf("%s: not taken", name)
		}
		out := readNow(t, peer)
		if out == nil || [6]byte(out[0:6]) != v.MACs[ri] {
			t.Fatalf("%s: went to %x, want the sender's server %x", name, out, v.MACs[ri])
		}
	}
	if c.Stats().ICMPErrors.Load() != 0 {
		t.Fatal("a non-error counted as an error")
	}
}

func TestICMPErrorWithBadQuoteDropped(t *testing.T) {
	client := netip.MustParseAddr("198.51.100.7")
	good := serverToClient(hookGhost, client)
	for _, tc := range []struct {
		name  string
		quote []byte
	}{
		{"nothing quoted", nil},
		{"short header", good[:19]},
		{"not IPv4", append([]byte{0x65}, good[1:]...)},
		{"header length under 20", append([]byte{0x44}, good[1:]...)},
		{"header length past the quote", append([]byte{0x4f}, good[1:]...)},
		{"quoted source not the ghost", serverToClient(netip.MustParseAddr("203.0.113.99"), client)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lan, peer := lanPair(t)
			f, c, _ := testForwarder(t, lan, nil)
			if !f.Inbound(nil, icmpErrorFrame(netip.MustParseAddr("192.0.2.254"), 3, 4, tc.quote)).Taken() {
				t.Fatal("not taken")
			}
			if out := readNow(t, peer); out != nil {
				t.Fatalf("a malformed error reached the LAN (%d bytes)", len(out))
			}
			if c.Stats().ICMPMalformed.Load() != 1 || c.Stats().Packets.Load() != 0 {
				t.Fatalf("malformed %d packets %d, want 1 0", c.Stats().ICMPMalformed.Load(), c.Stats().Packets.Load())
			}
		})
	}
}

// icmp6ErrorFrame builds an ICMPv6 error from router to ghost quoting the
// start of an IPv6 packet from qsrc to client.
func icmp6ErrorFrame(router, ghost, qsrc, client netip.Addr, typ uint8) []byte {
	plen := 8 + 40 + 8
	f := make([]byte, 14+40+plen)
	copy(f[0:6], hookLANMAC)
	copy(f[6:12], hookInMAC)
	f[12], f[13] = 0x86, 0xdd
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(plen))
	ip[6], ip[7] = 58, 64
	s, d := router.As16(), ghost.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	ic := ip[40:]
	ic[0] = typ
	binary.BigEndian.PutUint32(ic[4:8], 1280)
	q := ic[8:]
	q[0] = 0x60
	binary.BigEndian.PutUint16(q[4:6], 1400)
	q[6], q[7] = 6, 63
	qs, qd := qsrc.As16(), client.As16()
	copy(q[8:24], qs[:])
	copy(q[24:40], qd[:])
	return f
}

func TestICMPv6ErrorFollowsTheQuotedClient(t *testing.T) {
	lan, peer := lanPair(t)
	ghost6 := netip.MustParseAddr("2001:db8:ffff::10")
	_, _, v := testForwarder(t, lan, nil)
	c6 := NewCluster("web6", ghost6, lan)
	c6.Publish(v)
	f := NewForwarder(nil)
	f.SetClusters([]*Cluster{c6})
	router := netip.MustParseAddr("2001:db8:9::1")
	ri, _, _ := v.Selector.Select(router)
	var client netip.Addr
	for i := 1; ; i++ {
		client = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(i)})
		if ci, _, _ := v.Selector.Select(client); ci != ri {
			break
		}
	}
	want, _, _ := v.Selector.Select(client)
	for _, typ := range []uint8{1, 2, 3, 4} {
		if !f.Inbound(nil, icmp6ErrorFrame(router, ghost6, ghost6, client, typ)).Taken() {
			t.Fatal("not taken")
		}
		out := readNow(t, peer)
		if out == nil || [6]byte(out[0:6]) != v.MACs[want] {
			t.Fatalf("ICMPv6 type %d went to %x, want the quoted client's server %x", typ, out, v.MACs[want])
		}
	}
	// A quote of a packet the ghost did not send: dropped, counted.
	if !f.Inbound(nil, icmp6ErrorFrame(router, ghost6, router, client, 2)).Taken() {
		t.Fatal("not taken")
	}
	if out := readNow(t, peer); out != nil {
		t.Fatal("an error quoting another source reached the LAN")
	}
	if c6.Stats().ICMPErrors.Load() != 4 || c6.Stats().ICMPMalformed.Load() != 1 {
		t.Fatalf("errors %d malformed %d, want 4 1", c6.Stats().ICMPErrors.Load(), c6.Stats().ICMPMalformed.Load())
	}
	// An echo request (type 128) goes by its source.
	if !f.Inbound(nil, icmp6ErrorFrame(router, ghost6, ghost6, client, 128)).Taken() {
		t.Fatal("not taken")
	}
	if out := readNow(t, peer); out == nil || [6]byte(out[0:6]) != v.MACs[ri] {
		t.Fatalf("echo request went to %x, want the sender's server %x", out, v.MACs[ri])
	}
}

func TestICMPErrorDispatchAllocatesNothing(t *testing.T) {
	lan := nullLAN(t, "null")
	f, c, _ := testForwarder(t, lan, nil)
	frame := icmpErrorFrame(netip.MustParseAddr("192.0.2.254"), 3, 4, serverToClient(hookGhost, netip.MustParseAddr("198.51.100.9")))
	work := make([]byte, len(frame))
	allocs := testing.AllocsPerRun(1000, func() {
		copy(work, frame)
		f.Inbound(nil, work)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per ICMP error, want 0", allocs)
	}
	if c.Stats().ICMPErrors.Load() == 0 {
		t.Fatal("no error was dispatched")
	}
}
