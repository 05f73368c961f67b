package dispatch

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// pinnedOther returns n clients with, for each, a server index other than
// the one sel sends it to: pins that visibly change where it goes.
func pinnedOther(t testing.TB, sel Selector, servers []Server, n int) ([]netip.Addr, []int) {
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

func pinsTo(clients []netip.Addr, to []int, servers []Server) []config.Pin {
	var ps []config.Pin
	for i, c := range clients {
		ps = append(ps, config.Pin{Client: c, Server: servers[to[i]].ID})
	}
	return ps
}

// A pinned client goes to its server while it is live; otherwise, and for
// every client not pinned, the hash decides (the unpinned selector is the
// oracle for that).
func TestPinnedSelector(t *testing.T) {
	cfg, err := config.Parse("pins.toml", []byte(`
[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "routing"
seed = 0x5eed
buckets = 4096
`+func() string {
		s := ""
		for i := range 6 {
			s += fmt.Sprintf("\n  [[cluster.server]]\n  id = %d\n  address = \"10.0.0.%d\"\n", 10+i, 11+i)
		}
		return s
	}()))
	if err != nil {
		t.Fatal(err)
	}
	cl := &cfg.Clusters[0]
	plain, servers, err := SelectorFor(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	clients, to := pinnedOther(t, plain, servers, 8)
	cl.Pins = pinsTo(clients, to, servers)
	down := servers[to[0]].ID
	sel, _, err := SelectorFor(cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	selDown, serversDown, err := SelectorFor(cl, map[int]bool{down: true})
	if err != nil {
		t.Fatal(err)
	}
	plainDown, _, err := SelectorFor(&config.Cluster{Name: cl.Name, Hash: cl.Hash, Seed: cl.Seed, Buckets: cl.Buckets, Servers: cl.Servers}, map[int]bool{down: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		idx, b, ok := sel.Select(c)
		_, pb, _ := plain.Select(c)
		if !ok || idx != to[i] || b != pb {
			t.Errorf("pinned %s: server index %d bucket %d ok %v, want %d, the hashed bucket %d", c, idx, b, ok, to[i], pb)
		}
		idx, _, ok = selDown.Select(c)
		want, _, _ := plainDown.Select(c)
		if servers[to[i]].ID == down {
			if !ok || idx != want {
				t.Errorf("%s pinned to server %d, which is down: index %d, want the hash's %d", c, down, idx, want)
			}
		} else if !ok || serversDown[idx].ID != servers[to[i]].ID {
			t.Errorf("%s pinned to server %d: with server %d down it went to %d", c, servers[to[i]].ID, down, serversDown[idx].ID)
		}
	}
	for i := range 256 {
		c := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		a, ab, aok := sel.Select(c)
		b, bb, bok := plain.Select(c)
		if a != b || ab != bb || aok != bok {
			t.Fatalf("unpinned %s: %d/%d/%v with pins, %d/%d/%v without", c, a, ab, aok, b, bb, bok)
		}
	}
}

// The fingerprint covers the pins and whether each is in effect; without
// pins it is the table's own.
func TestPinsFingerprint(t *testing.T) {
	servers := []Server{{ID: 1, Weight: 1, Up: true}, {ID: 2, Weight: 1, Up: true}, {ID: 3, Weight: 1, Up: true}}
	tbl, err := NewTable(servers, 64)
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("%#016x", tbl.Fingerprint())
	if got := clusterFingerprint(tbl, tbl.Servers(), nil); got != base {
		t.Errorf("without pins: %s, want the table's %s", got, base)
	}
	a, b := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("192.0.2.8")
	p1 := []config.Pin{{Client: a, Server: 1}, {Client: b, Server: 2}}
	p2 := []config.Pin{{Client: b, Server: 2}, {Client: a, Server: 1}}
	p3 := []config.Pin{{Client: a, Server: 3}, {Client: b, Server: 2}}
	f1, f2, f3 := clusterFingerprint(tbl, tbl.Servers(), p1), clusterFingerprint(tbl, tbl.Servers(), p2), clusterFingerprint(tbl, tbl.Servers(), p3)
	if f1 == base || f1 != f2 || f1 == f3 {
		t.Errorf("fingerprints: base %s, pins %s, same pins reordered %s, one pin moved %s", base, f1, f2, f3)
	}
	down := []Server{{ID: 1, Weight: 1, Up: false}, {ID: 2, Weight: 1, Up: true}, {ID: 3, Weight: 1, Up: true}}
	td, err := NewTable(down, 64)
	if err != nil {
		t.Fatal(err)
	}
	if pinsFingerprint(td.Fingerprint(), p1, td.Servers()) == pinsFingerprint(td.Fingerprint(), p1, tbl.Servers()) {
		t.Error("a pin's server going down does not change the fingerprint")
	}
}

// pinForwarder is testForwarder with pins sending 32 clients elsewhere than
// the hash.
func pinForwarder(t testing.TB, lan *tap.Endpoint) (*Forwarder, *Cluster, *View, []netip.Addr, []int) {
	f, c, v := testForwarder(t, lan, nil)
	clients, to := pinnedOther(t, v.Selector, v.Servers, 32)
	v.pins = livePins(pinsTo(clients, to, v.Servers), v.Servers)
	c.Publish(v)
	return f, c, v, clients, to
}

// The packet path sends a pinned client's packets, and ICMP errors quoting
// its flows, to its pinned server.
func TestForwarderHonoursPins(t *testing.T) {
	lan, peer := lanPair(t)
	f, c, v, clients, to := pinForwarder(t, lan)
	for i, cl := range clients {
		if !f.Inbound(nil, udpFrame(cl, hookGhost, 64)) {
			t.Fatal("not taken")
		}
		out := readNow(t, peer)
		if out == nil || [6]byte(out[0:6]) != v.MACs[to[i]] {
			t.Fatalf("pinned %s went to %x, want server index %d (%x)", cl, out, to[i], v.MACs[to[i]])
		}
		if !f.Inbound(nil, icmpErrorFrame(netip.MustParseAddr("192.0.2.254"), 3, 4, serverToClient(hookGhost, cl))) {
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

func nullForwarder(t testing.TB) *tap.Endpoint {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { null.Close() })
	lan, err := tap.NewEndpoint(tap.EndpointConfig{Name: "null", Files: []*os.File{null}, MAC: hookLANMAC, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	return lan
}

func TestForwarderPinnedZeroAllocs(t *testing.T) {
	f, c, _, clients, _ := pinForwarder(t, nullForwarder(t))
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
	f, _, _, clients, _ := pinForwarder(b, nullForwarder(b))
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
	pv.pins = livePins(pinsTo(clients, to, v.Servers), v.Servers)
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
			if !f.Inbound(nil, icmp6ErrorFrame(src, ghost6, ghost6, c, typ)) {
				t.Fatal("not taken")
			}
			out := readNow(t, peer)
			if out == nil || [6]byte(out[0:6]) != v.MACs[to[i]] {
				t.Fatalf("ICMPv6 type %d about pinned %s went to %x, want server index %d (%x)", typ, c, out, to[i], v.MACs[to[i]])
			}
		}
	}
}
