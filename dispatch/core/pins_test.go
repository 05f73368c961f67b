package core

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/ghostrouter/ghostrouter/router/config"
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
	if got := ClusterFingerprint(tbl, tbl.Servers(), nil); got != base {
		t.Errorf("without pins: %s, want the table's %s", got, base)
	}
	a, b := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("192.0.2.8")
	p1 := []config.Pin{{Client: a, Server: 1}, {Client: b, Server: 2}}
	p2 := []config.Pin{{Client: b, Server: 2}, {Client: a, Server: 1}}
	p3 := []config.Pin{{Client: a, Server: 3}, {Client: b, Server: 2}}
	f1, f2, f3 := ClusterFingerprint(tbl, tbl.Servers(), p1), ClusterFingerprint(tbl, tbl.Servers(), p2), ClusterFingerprint(tbl, tbl.Servers(), p3)
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
