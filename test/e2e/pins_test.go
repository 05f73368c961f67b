package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

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

// choosePins pins one client to each of the servers 0..n-1, each a client
// the hash sends elsewhere (so the pin visibly moves it), and returns the
// pins (client -> server id) and where every client should then go.
func choosePins(clients []string, hashed map[string]int, n int) (pins, want map[string]int) {
	pins = map[string]int{}
	for target := range n {
		for _, c := range clients {
			if _, taken := pins[c]; !taken && hashed[c] != target {
				pins[c] = target
				break
			}
		}
	}
	want = map[string]int{}
	for _, c := range clients {
		want[c] = hashed[c]
		if id, ok := pins[c]; ok {
			want[c] = id
		}
	}
	return pins, want
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
	pins, want := choosePins(clients, hashed, 4)
	if len(pins) != 4 {
		t.Fatalf("found %d clients to pin", len(pins))
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

// inputTable is the table recordInput adds on a server.
const inputTable = "grinput"

// recordInput makes a server's kernel note the source of every packet to
// the ghost that it delivers locally (the input hook, after the server's
// filter decided): the oracle for "this server accepted the client".
func recordInput(t *testing.T, ns *harness.NS) {
	t.Helper()
	script := fmt.Sprintf(`table ip %s {
	set seen { typeof ip saddr; flags dynamic; size 65535; }
	chain in {
		type filter hook input priority filter; policy accept;
		ip daddr %s add @seen { ip saddr }
	}
}
`, inputTable, ghostAddr)
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s\n%s", ns.Name, err, out, script)
	}
}

// inputSeen reads back what recordInput noted.
func inputSeen(t *testing.T, ns *harness.NS) map[string]bool {
	t.Helper()
	out := ns.MustRun("nft", "-j", "list", "set", "ip", inputTable, "seen")
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j list set: %v\n%s", err, out)
	}
	got := map[string]bool{}
	for _, obj := range doc.Nftables {
		raw, ok := obj["set"]
		if !ok {
			continue
		}
		var set struct{ Elem []json.RawMessage }
		if err := json.Unmarshal(raw, &set); err != nil {
			t.Fatal(err)
		}
		for _, e := range set.Elem {
			var s string
			if json.Unmarshal(e, &s) != nil {
				var el struct {
					Elem struct{ Val string } `json:"elem"`
				}
				if err := json.Unmarshal(e, &el); err != nil || el.Elem.Val == "" {
					t.Fatalf("nft element %s", e)
				}
				s = el.Elem.Val
			}
			got[s] = true
		}
	}
	return got
}

// ruleCounter is the packet counter of the rule with comment in a server's
// ghostnode table, read from the kernel.
func ruleCounter(t *testing.T, ns *harness.NS, comment string) int {
	t.Helper()
	out := ns.MustRun("nft", "-j", "list", "table", "ip", "ghost_web")
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	for _, obj := range doc.Nftables {
		raw, ok := obj["rule"]
		if !ok {
			continue
		}
		var r struct {
			Comment string
			Expr    []map[string]json.RawMessage
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		if r.Comment != comment {
			continue
		}
		for _, x := range r.Expr {
			if c, ok := x["counter"]; ok {
				var n struct{ Packets int }
				if err := json.Unmarshal(c, &n); err != nil {
					t.Fatal(err)
				}
				return n.Packets
			}
		}
	}
	t.Fatalf("no rule %q with a counter in ghost_web:\n%s", comment, out)
	return 0
}

// TestBroadcastModePins: broadcast mode without announcements (the servers'
// filters come from the configuration through ghostnode setup). Two of 24
// clients are pinned to servers 0 and 1, away from their hashed servers.
// Every server receives every packet (the appliance broadcasts them); the
// kernel is the oracle of which one accepts: each server's kernel notes, at
// its input hook, the clients whose packets its filter let through. A
// pinned client's packets get through on its pinned server alone, and only
// that server answers it (captures: SYN-ACKs and replies from the ghost;
// the answering service names itself); every other client gets through on
// its hashed server alone; the filters' own counters show the pin rules
// accepting on the pinned servers and dropping elsewhere.
func TestBroadcastModePins(t *testing.T) {
	const nClients = 24
	tp := newTopo(t, topoOptions{servers: 4, clientAddrs: nClients})
	tp.startServers()
	plain := tp.baseConfig() + tp.clusterConfig("broadcast", "jhash", fmt.Sprintf("broadcast_address = %q\n", secondGhost))
	tp.start(plain)
	clients := tp.clientSources(nClients)
	hashed := tp.lookup(clients)
	pins, want := choosePins(clients, hashed, 2)
	pinned := tp.baseConfig() + tp.clusterConfig("broadcast", "jhash", fmt.Sprintf("broadcast_address = %q\n", secondGhost)+pinSections(pins))
	tp.reloadTo(pinned)
	tp.setupNodes()
	if got := tp.lookup(clients); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lookup with pins:\n%v\nwant\n%v", got, want)
	}
	for _, s := range tp.servers {
		recordInput(t, s.ns)
	}

	var capSrv []*harness.Capture
	for _, s := range tp.servers {
		capSrv = append(capSrv, s.ns.Capture("e0", "ip"))
	}
	tp.askAll(clients, want)
	all := harness.StopAll(capSrv...)
	ghost := netip.MustParseAddr(ghostAddr)
	for i, pkts := range all {
		for _, p := range pkts {
			if p.Src != ghost {
				continue
			}
			if id, isPinned := pins[p.Dst.String()]; isPinned && id != i {
				t.Errorf("server %d answered %s, which is pinned to server %d: %v", i, p.Dst, id, p)
			}
		}
	}
	answered := map[string]bool{}
	for i, pkts := range all {
		for _, p := range pkts {
			if _, isPinned := pins[p.Dst.String()]; isPinned && p.Src == ghost && pins[p.Dst.String()] == i {
				answered[p.Dst.String()] = true
			}
		}
	}
	for c, id := range pins {
		if !answered[c] {
			t.Errorf("no answer to pinned %s captured at its server %d", c, id)
		}
	}
	seen := make([]map[string]bool, len(tp.servers))
	for i, s := range tp.servers {
		seen[i] = inputSeen(t, s.ns)
	}
	for _, c := range clients {
		var at []int
		for i := range tp.servers {
			if seen[i][c] {
				at = append(at, i)
			}
		}
		if len(at) != 1 || at[0] != want[c] {
			t.Errorf("%s got through the filters of servers %v (kernel), want only %d", c, at, want[c])
		}
	}
	for i, s := range tp.servers {
		here, away := ruleCounter(t, s.ns, "pinned-new"), ruleCounter(t, s.ns, "pinned-away")
		switch {
		case i < 2 && (here == 0 || away == 0):
			t.Errorf("server %d: pin rules accepted %d and dropped %d packets; want both, it has a pinned client and the other's packets reach it", i, here, away)
		case i >= 2 && (here != 0 || away == 0):
			t.Errorf("server %d: pin rules accepted %d and dropped %d packets; want none accepted (no client is pinned to it) and some dropped", i, here, away)
		}
		tp.nodeStatus(i)
	}
	t.Logf("pins %v: each pinned client got through the filter of its server alone (kernel), answered by it alone", pins)
}

// checkPinnedOnWire asks the ghost from every client and checks, with the
// kernel as the oracle, that each got through the filter of want's server
// alone and that only that server answered it.
func checkPinnedOnWire(t *testing.T, tp *topo, clients []string, want map[string]int) {
	t.Helper()
	for _, s := range tp.servers {
		s.ns.MustRun("sh", "-c", "nft delete table ip "+inputTable+" 2>/dev/null; true")
		recordInput(t, s.ns)
	}
	var capSrv []*harness.Capture
	for _, s := range tp.servers {
		capSrv = append(capSrv, s.ns.Capture("e0", "ip"))
	}
	tp.askAll(clients, want)
	all := harness.StopAll(capSrv...)
	ghost := netip.MustParseAddr(ghostAddr)
	for i, pkts := range all {
		for _, p := range pkts {
			if id, ok := want[p.Dst.String()]; ok && p.Src == ghost && id != i {
				t.Errorf("server %d answered %s, which is server %d's: %v", i, p.Dst, id, p)
			}
		}
	}
	seen := make([]map[string]bool, len(tp.servers))
	for i, s := range tp.servers {
		seen[i] = inputSeen(t, s.ns)
	}
	for _, c := range clients {
		var at []int
		for i := range tp.servers {
			if seen[i][c] {
				at = append(at, i)
			}
		}
		if len(at) != 1 || at[0] != want[c] {
			t.Errorf("%s got through the filters of servers %v (kernel), want only %d", c, at, want[c])
		}
	}
}

// TestBroadcastAnnouncedPins: broadcast mode with `ghostnode run` on the
// servers: the pins travel in the signed announcements and each server's
// filter follows them. Two pinned clients get through the filter of their
// pinned server alone (the kernel's input hook is the oracle) and only it
// answers them. When a pinned server fails, the announced table hashes its
// client to a survivor (break before make, as for buckets); when it
// recovers, the client is pinned to it again.
func TestBroadcastAnnouncedPins(t *testing.T) {
	const nClients = 16
	tp := newTopo(t, topoOptions{servers: 4, clientAddrs: nClients})
	tp.startServers()
	clients := tp.clientSources(nClients)
	tp.writeConfig(tp.baseConfig() + tp.clusterConfig("broadcast", "jhash", broadcastExtra(fastHealth)))
	hashed := tp.lookup(clients)
	pins, want := choosePins(clients, hashed, 2)
	tp.start(tp.baseConfig() + tp.clusterConfig("broadcast", "jhash", broadcastExtra(fastHealth+pinSections(pins))))
	if got := tp.lookup(clients); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lookup with pins:\n%v\nwant\n%v", got, want)
	}
	tp.runNodes(tp.cfgPath, 0, 4)
	tp.waitInStep(4, "at start")
	checkPinnedOnWire(t, tp, clients, want)

	// The pinned server 0 fails: its pinned client is hashed to a survivor.
	var victimClient string
	for c, id := range pins {
		if id == 0 {
			victimClient = c
		}
	}
	wantDown := tp.lookupDown(clients, "0")
	if wantDown[victimClient] == 0 {
		t.Fatalf("lookup --down 0 still sends %s to server 0", victimClient)
	}
	vs := tp.servers[0]
	vs.peer.Signal(syscall.SIGKILL)
	vs.peer.Wait(5 * time.Second)
	tp.waitServerState(0, false, 5*time.Second)
	tp.waitInStep(4, "after the pinned server's failure")
	var others []string
	for _, c := range clients {
		if want[c] != 0 {
			others = append(others, c)
		}
	}
	checkPinnedOnWire(t, tp, append(others, victimClient), wantDown)

	// It recovers: the client is pinned to it again.
	vs.peer = vs.ns.Start("peer-s0-again", tp.peer, "serve", "-name", vs.name, "-http", ":80", "-udp", ":9000", "-lifetime", "5m")
	vs.peer.WaitForLog("ready", 10*time.Second)
	tp.waitServerState(0, true, 10*time.Second)
	tp.waitInStep(4, "after the recovery")
	checkPinnedOnWire(t, tp, clients, want)
	t.Logf("pins %v announced; %s went to server %d while server 0 was down, and back", pins, victimClient, wantDown[victimClient])
}
