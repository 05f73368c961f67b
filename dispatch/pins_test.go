package dispatch

import (
	"net/netip"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// pinnedOther returns n clients with, for each, a server index other than
// the one sel sends it to: pins that visibly change where it goes.
func pinnedOther(t testing.TB, sel core.Selector, servers []core.Server, n int) ([]netip.Addr, []int) {
	t.Helper()
	var clients []netip.Addr
	var to []int
	for i := 0; len(clients) < n && i < 256; i++ {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		idx, _, ok := sel.Select(a)
		if !ok {
			continue
		}
		clients = append(clients, a)
		to = append(to, (idx+1+i%(len(servers)-1))%len(servers))
	}
	if len(clients) < n {
		t.Fatalf("found %d clients", len(clients))
	}
	return clients, to
}

func pinsTo(clients []netip.Addr, to []int, servers []core.Server) []config.Pin {
	var ps []config.Pin
	for i, c := range clients {
		ps = append(ps, config.Pin{Client: c, Server: servers[to[i]].ID})
	}
	return ps
}

// pinForwarder is testForwarder with pins sending 32 clients elsewhere than
// the hash.
func pinForwarder(t testing.TB, lan *tap.Endpoint) (*Forwarder, *Cluster, *View, []netip.Addr, []int) {
	f, c, v := testForwarder(t, lan, nil)
	clients, to := pinnedOther(t, v.Selector, v.Servers, 32)
	v.pins = core.LivePins(pinsTo(clients, to, v.Servers), v.Servers)
	c.Publish(v)
	return f, c, v, clients, to
}

// The packet path sends a pinned client's packets, and ICMP errors quoting
// its flows, to its pinned server.
func TestForwarderHonoursPins(t *testing.T) {
	lan, peer := lanPair(t)
	f, c, v, clients, to := pinForwarder(t, lan)
	for i, cl := range clients {
		if !f.Inbound(nil, udpFrame(cl, hookGhost, 64)).Taken() {
			t.Fatal("not taken")
		}
		out := readNow(t, peer)
		if out == nil || [6]byte(out[0:6]) != v.MACs[to[i]] {
			t.Fatalf("pinned %s went to %x, want server index %d (%x)", cl, out, to[i], v.MACs[to[i]])
		}
		if !f.Inbound(nil, icmpErrorFrame(netip.MustParseAddr("192.0.2.254"), 3, 4, serverToClient(hookGhost, cl))).Taken() {
			t.Fatal("not taken")
		}
		out = readNow(t, peer)
		if out == nil || [6]byte(out[0:6]) != v.MACs[to[i]] {
			t.Fatalf("an ICMP error quoting pinned %s went to %x, want %x", cl, out, v.MACs[to[i]])
		}
	}
	if c.Stats().ICMPErrors.Load() != uint64(len(clients)) {
		t.Errorf("ICMP errors dispatched %d, want %d", c.Stats().ICMPErrors.Load(), len(clients))
	}
}

func TestForwarderPinnedZeroAllocs(t *testing.T) {
	f, c, _, clients, _ := pinForwarder(t, nullLAN(t, "null"))
	pinned := udpFrame(clients[0], hookGhost, 64)
	hashed := udpFrame(netip.MustParseAddr("198.51.100.10"), hookGhost, 64)
	work := make([]byte, len(pinned))
	for _, frame := range [][]byte{pinned, hashed} {
		allocs := testing.AllocsPerRun(1000, func() {
			copy(work, frame)
			f.Inbound(nil, work)
		})
		if allocs != 0 {
			t.Fatalf("%v allocations per dispatched packet with pins, want 0", allocs)
		}
	}
	if c.Stats().Packets.Load() < 2000 {
		t.Fatalf("%d packets dispatched, want 2000", c.Stats().Packets.Load())
	}
}

// BenchmarkForwarderInboundPinned is BenchmarkForwarderInbound for a
// cluster with 32 pins, an eighth of the packets from pinned clients:
// compare its ns/op with BenchmarkForwarderInbound's in the same run.
func BenchmarkForwarderInboundPinned(b *testing.B) {
	f, _, _, clients, _ := pinForwarder(b, nullLAN(b, "null"))
	frames := make([][]byte, 256)
	for i := range frames {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		if i%8 == 0 {
			src = clients[(i/8)%len(clients)]
		}
		frames[i] = udpFrame(src, hookGhost, 64)
	}
	work := make([]byte, len(frames[0]))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(work, frames[i&255])
		f.Inbound(nil, work)
	}
}

// IPv6: a pinned client's packets (an echo request) and the ICMPv6 errors
// quoting its flows go to its pinned server.
func TestForwarderHonoursPinsIPv6(t *testing.T) {
	lan, peer := lanPair(t)
	ghost6 := netip.MustParseAddr("2001:db8:ffff::10")
	_, _, v := testForwarder(t, lan, nil)
	router := netip.MustParseAddr("2001:db8:9::1")
	var clients []netip.Addr
	var to []int
	for i := 1; len(clients) < 8 && i < 256; i++ {
		c := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(i)})
		idx, _, ok := v.Selector.Select(c)
		if !ok {
			continue
		}
		clients = append(clients, c)
		to = append(to, (idx+1)%len(v.Servers))
	}
	pv := *v
	pv.pins = core.LivePins(pinsTo(clients, to, v.Servers), v.Servers)
	c6 := NewCluster("web6", ghost6, lan)
	c6.Publish(&pv)
	f := NewForwarder(nil)
	f.SetClusters([]*Cluster{c6})
	for i, c := range clients {
		for _, typ := range []uint8{1, 2, 128} { // two errors quoting its flow, and its own echo request
			src := router
			if typ == 128 {
				src = c
			}
			if !f.Inbound(nil, icmp6ErrorFrame(src, ghost6, ghost6, c, typ)).Taken() {
				t.Fatal("not taken")
			}
			out := readNow(t, peer)
			if out == nil || [6]byte(out[0:6]) != v.MACs[to[i]] {
				t.Fatalf("ICMPv6 type %d about pinned %s went to %x, want server index %d (%x)", typ, c, out, to[i], v.MACs[to[i]])
			}
		}
	}
}
