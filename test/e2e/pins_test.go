package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// kernelSeenAt is where the servers' kernels saw each client's packets to
// the ghost (recordKernelBuckets): client -> server indices.
func kernelSeenAt(t *testing.T, tp *topo) map[string][]int {
	t.Helper()
	at := map[string][]int{}
	for i, s := range tp.servers {
		for a := range kernelBuckets(t, s.ns) {
			at[a.String()] = append(at[a.String()], i)
		}
	}
	return at
}

// pinSections is the [[cluster.pin]] tables for pins (client -> server id).
func pinSections(pins map[string]int) string {
	var b strings.Builder
	for c, id := range pins {
		fmt.Fprintf(&b, "\n  [[cluster.pin]]\n  client = %q\n  server = %d\n", c, id)
	}
	return b.String()
}

// TestRoutingModePins: 4 servers, 24 clients. Without pins every client
// lands where the hash puts it (the servers' kernels say where each was
// received, and agree with lookup). Then a reload pins four clients to
// servers the hash does not give them, one pinned to each server. On the
// wire: every packet from a pinned client to the ghost leaves the appliance
// with its pinned server's MAC, only that server's capture and kernel see
// it, and that server's HTTP and UDP services answer it; every other client
// stays where it was; lookup names the pinned servers; the table
// fingerprint changes. A pinned server taken out of the table (drained) no
// longer takes its pinned client: the hash does.
func TestRoutingModePins(t *testing.T) {
	const nClients = 24
	tp := newTopo(t, topoOptions{servers: 4, clientAddrs: nClients})
	tp.startServers()
	tp.start(tp.baseConfig() + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	for _, s := range tp.servers {
		recordKernelBuckets(t, s.ns, 0x5eed, 4096)
	}
	clients := tp.clientSources(nClients)
	hashed := tp.lookup(clients)
	tp.askAll(clients, hashed)
	for _, c := range clients {
		if at := kernelSeenAt(t, tp)[c]; len(at) != 1 || at[0] != hashed[c] {
			t.Fatalf("without pins %s reached servers %v (kernel); lookup names %d", c, at, hashed[c])
		}
	}
	fpBefore := tp.web().TableFingerprint

	// Pin four clients, one to each server, each away from its hashed server.
	pins := map[string]int{}
	for target := range 4 {
		for _, c := range clients {
			if _, taken := pins[c]; !taken && hashed[c] != target {
				pins[c] = target
				break
			}
		}
	}
	if len(pins) != 4 {
		t.Fatalf("found %d clients to pin", len(pins))
	}
	want := map[string]int{}
	for _, c := range clients {
		want[c] = hashed[c]
		if id, ok := pins[c]; ok {
			want[c] = id
		}
	}
	pinned := tp.baseConfig() + tp.clusterConfig("routing", "jhash", pinSections(pins))
	for _, s := range tp.servers {
		s.ns.MustRun("nft", "flush", "set", "ip", kernelHashTable, "seen")
	}
	tp.reloadTo(pinned)

	capLAN := tp.rtr.Capture("br-lan", "ip")
	var capSrv []*harness.Capture
	for _, s := range tp.servers {
		capSrv = append(capSrv, s.ns.Capture("e0", "ip"))
	}
	tp.askAll(clients, want) // each answer names the server that gave it
	all := harness.StopAll(append([]*harness.Capture{capLAN}, capSrv...)...)
	ghost := netip.MustParseAddr(ghostAddr)
	onLAN := map[string]int{}
	for _, p := range all[0] {
		id, isPinned := pins[p.Src.String()]
		if p.Dst != ghost || !isPinned {
			continue
		}
		onLAN[p.Src.String()]++
		if p.DstMAC.String() != tp.servers[id].mac.String() {
			t.Errorf("pinned %s: a packet to the ghost went to MAC %s, want server %d's %s", p.Src, p.DstMAC, id, tp.servers[id].mac)
		}
	}
	for c := range pins {
		if onLAN[c] == 0 {
			t.Errorf("no packet from pinned %s to the ghost captured on the LAN", c)
		}
	}
	for i, pkts := range all[1:] {
		for _, p := range pkts {
			if id, isPinned := pins[p.Src.String()]; isPinned && p.Dst == ghost && id != i {
				t.Errorf("server %d captured a packet of %s, which is pinned to server %d: %v", i, p.Src, id, p)
			}
		}
	}
	seen := kernelSeenAt(t, tp)
	for _, c := range clients {
		if at := seen[c]; len(at) != 1 || at[0] != want[c] {
			t.Errorf("with pins %s reached servers %v (kernel), want only %d", c, at, want[c])
		}
	}
	if got := tp.lookup(clients); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lookup with pins:\n%v\nwant\n%v", got, want)
	}
	if fp := tp.web().TableFingerprint; fp == fpBefore || fp == "" {
		t.Errorf("table fingerprint %q with pins, %q without: want a change", fp, fpBefore)
	}

	// Drain one pinned server: its pinned client falls back to the hash.
	var drained string
	for c, id := range pins {
		if hashed[c] != 0 && id != 0 {
			drained = c
			break
		}
	}
	id := pins[drained]
	drainedCfg := strings.Replace(pinned, fmt.Sprintf("  id = %d\n  address = %q\n", id, tp.servers[id].addr),
		fmt.Sprintf("  id = %d\n  address = %q\n  drain = true\n", id, tp.servers[id].addr), 1)
	if drainedCfg == pinned {
		t.Fatal("could not drain the server in the configuration")
	}
	fallback := tp.ownersUnder(drainedCfg, "", []string{drained})[drained]
	if fallback == id {
		t.Fatalf("lookup still sends %s to its drained server %d", drained, id)
	}
	for _, s := range tp.servers {
		s.ns.MustRun("nft", "flush", "set", "ip", kernelHashTable, "seen")
	}
	tp.reloadTo(drainedCfg)
	tp.askAll([]string{drained}, map[string]int{drained: fallback})
	if at := kernelSeenAt(t, tp)[drained]; len(at) != 1 || at[0] != fallback {
		t.Errorf("%s pinned to drained server %d reached servers %v (kernel), want the hash's %d", drained, id, at, fallback)
	}
	t.Logf("pins %v; %d clients each reached only its server (kernel, captures, answers)", pins, len(clients))
}
