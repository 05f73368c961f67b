package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// reloadReply is the part of `ghostrouter reload --json` the tests read.
type reloadReply struct {
	OK         bool     `json:"ok"`
	Failed     string   `json:"failed"`
	Error      string   `json:"error"`
	Validated  []string `json:"validated"`
	Committed  []string `json:"committed"`
	RolledBack []string `json:"rolled_back"`
}

// runningState is what `status --json` says the appliance runs: cluster
// web's servers and table version, and the routes.
type runningState struct {
	servers []string
	version uint64
	routes  []string // "TO via VIA"
}

func (tp *topo) runningState() runningState {
	tp.t.Helper()
	out := tp.rtr.MustRun(tp.bin, "status", "--json", "--socket", tp.sock)
	var st struct {
		Clusters []struct {
			Name    string `json:"name"`
			Version uint64 `json:"version"`
			Servers []struct {
				Address string `json:"address"`
			} `json:"servers"`
		} `json:"clusters"`
		Routes []struct {
			To, Via string
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Clusters) != 1 {
		tp.t.Fatalf("status --json: %v\n%s", err, out)
	}
	var rs runningState
	for _, s := range st.Clusters[0].Servers {
		rs.servers = append(rs.servers, s.Address)
	}
	rs.version = st.Clusters[0].Version
	for _, r := range st.Routes {
		if r.Via != "" {
			rs.routes = append(rs.routes, r.To+" via "+r.Via)
		}
	}
	return rs
}

// reloadJSON runs `ghostrouter reload --json` and returns its reply and
// whether it exited 0.
func (tp *topo) reloadJSON() (reloadReply, bool) {
	tp.t.Helper()
	out, err := tp.rtr.Run(tp.bin, "reload", "--json", "--socket", tp.sock)
	var rep reloadReply
	if jerr := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &rep); jerr != nil {
		tp.t.Fatalf("reload --json: %v\n%s", jerr, out)
	}
	return rep, err == nil
}

// transitHops pings 192.0.2.1 (routed via a server) from the client and
// returns how many echo requests each of servers 0 and 1 received: the
// captures on the servers' own links, not the appliance, say where the
// route points.
func (tp *topo) transitHops() [2]int {
	tp.t.Helper()
	var caps [2]*harness.Capture
	for i := range caps {
		caps[i] = tp.servers[i].ns.Capture("e0", "icmp[icmptype] = icmp-echo and dst host 192.0.2.1")
	}
	tp.cli.Run("ping", "-c", "3", "-i", "0.2", "-W", "1", "192.0.2.1") // nobody answers: the captures count
	var n [2]int
	for i, pkts := range harness.StopAll(caps[0], caps[1]) {
		n[i] = len(pkts)
	}
	return n
}

// TestReloadRouterRefusesKeepsBoth: a reload whose dispatcher part is
// valid (server 2 leaves the cluster) but whose router part is not (a new
// route via 10.0.0.99, an address on the LAN's subnet that nobody holds: the
// file check accepts it, only the router's address resolution finds it
// unreachable) is refused as a whole. The reply says the router refused,
// the dispatcher had validated, nothing was committed; status shows the old
// servers, table version and routes; and real traffic proves it: server 2
// still answers its clients, and packets for the routed prefix still reach
// server 0, not the new next hop server 1. The same file without the bad
// route then commits both, and the same traffic follows it.
func TestReloadRouterRefusesKeepsBoth(t *testing.T) {
	const nClients = 32
	tp := newTopo(t, topoOptions{servers: 3, clientAddrs: nClients})
	tp.startServers()
	route := func(via string) string {
		return fmt.Sprintf("\n[[route]]\nto = \"192.0.2.0/24\"\nvia = %q\n", via)
	}
	old := tp.baseConfig() + route("10.0.0.11") + tp.clusterConfig("routing", "jhash", "")
	tp.start(old)
	tp.setupNodes()
	clients := tp.clientSources(nClients)
	before := tp.lookup(clients)
	onS2 := 0
	for _, c := range clients {
		if before[c] == 2 {
			onS2++
		}
	}
	if onS2 == 0 {
		t.Fatal("no client maps to server 2: the test cannot see it leave")
	}
	tp.askAll(clients, before)
	state0 := tp.runningState()
	if hops := tp.transitHops(); hops[0] == 0 || hops[1] != 0 {
		t.Fatalf("before the reload: echo requests on s0/s1 = %v, want all on s0", hops)
	}

	good := tp.baseConfig() + route("10.0.0.12") + tp.clusterConfigN("routing", "jhash", "", 2)
	bad := good + "\n[[route]]\nto = \"10.99.0.0/16\"\nvia = \"10.0.0.99\"\n"
	tp.writeConfig(bad)
	if out, err := tp.rtr.Run(tp.bin, "check", "-c", tp.cfgPath); err != nil {
		t.Fatalf("the file check refuses the bad file, so this is not a router-only failure:\n%s", out)
	}
	rep, exit0 := tp.reloadJSON()
	fmt.Fprintf(os.Stdout, "RELOAD REPORT: router refused: ok=%v failed=%q validated=%v committed=%v error=%q\n",
		rep.OK, rep.Failed, rep.Validated, rep.Committed, rep.Error)
	if exit0 || rep.OK || rep.Failed != "router" || !strings.Contains(rep.Error, "10.0.0.99") {
		t.Errorf("reload of a file the router refuses: exit 0 = %v, reply %+v", exit0, rep)
	}
	if len(rep.Committed) != 0 || len(rep.Validated) != 1 || rep.Validated[0] != "dispatch" {
		t.Errorf("reply: validated %v, committed %v; want validated [dispatch], nothing committed", rep.Validated, rep.Committed)
	}
	if out, err := tp.rtr.Run(tp.bin, "reload", "--socket", tp.sock); err == nil || !strings.Contains(out, "rejected by the router") || !strings.Contains(out, "kept") {
		t.Errorf("reload (text) of the same file: err %v, output:\n%s", err, out)
	}
	if st := tp.runningState(); fmt.Sprint(st) != fmt.Sprint(state0) {
		t.Errorf("status after the refused reload:\n got %+v\nwant %+v", st, state0)
	}
	tp.askAll(clients, before) // server 2 still answers its clients
	if hops := tp.transitHops(); hops[0] == 0 || hops[1] != 0 {
		t.Errorf("after the refused reload: echo requests on s0/s1 = %v, want all still on s0", hops)
	}

	// The same change without the bad route: both parts commit.
	tp.writeConfig(good)
	after := tp.lookup(clients)
	rep, exit0 = tp.reloadJSON()
	if !exit0 || !rep.OK || len(rep.Committed) != 2 {
		t.Fatalf("reload of the good file: exit 0 = %v, reply %+v", exit0, rep)
	}
	st := tp.runningState()
	if len(st.servers) != 2 || st.version == state0.version || !strings.Contains(strings.Join(st.routes, ","), "192.0.2.0/24 via 10.0.0.12") {
		t.Errorf("status after the good reload: %+v", st)
	}
	moved := 0
	for _, c := range clients {
		if after[c] == 2 {
			t.Fatalf("client %s maps to server 2 after it left", c)
		}
		if after[c] != before[c] {
			moved++
		}
	}
	if moved != onS2 {
		t.Errorf("%d clients moved, want exactly server 2's %d", moved, onS2)
	}
	tp.askAll(clients, after)
	if hops := tp.transitHops(); hops[0] != 0 || hops[1] == 0 {
		t.Errorf("after the good reload: echo requests on s0/s1 = %v, want all on s1", hops)
	}
}
