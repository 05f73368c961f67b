package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// member is one [[cluster.server]] of routingCluster.
type member struct {
	id, weight int
	drain      bool
}

// routingCluster is cluster "web" in routing mode over the topology's
// servers named by members, with the given drain_timeout and extra lines.
func (tp *topo) routingCluster(drainTimeout string, members []member, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
[[cluster]]
name = "web"
address = %q
interface = "lan0"
mode = "routing"
hash = "jhash"
seed = 0x5eed
buckets = 4096
drain_timeout = %q
`, ghostAddr, drainTimeout)
	for _, m := range members {
		fmt.Fprintf(&b, "\n  [[cluster.server]]\n  id = %d\n  address = %q\n  weight = %d\n  drain = %v\n", m.id, tp.servers[m.id].addr, m.weight, m.drain)
	}
	b.WriteString(extra)
	return b.String()
}

// clusterJSON is the part of `status --json` these tests read.
type clusterJSON struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	// TableFingerprint digests where the table (with its pins) sends clients.
	TableFingerprint string            `json:"table_fingerprint"`
	Counters         map[string]uint64 `json:"counters"`
	Transition       *struct {
		Phase   string `json:"phase"`
		Moved   int    `json:"moved_buckets"`
		Entries int64  `json:"entries"`
	} `json:"transition"`
}

// web reads cluster web from `status --json`.
func (tp *topo) web() clusterJSON {
	tp.t.Helper()
	out := tp.rtr.MustRun(tp.bin, "status", "--socket", tp.sock, "--json")
	var st struct {
		Clusters []clusterJSON `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		tp.t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, c := range st.Clusters {
		if c.Name == "web" {
			return c
		}
	}
	tp.t.Fatalf("no cluster web in status --json:\n%s", out)
	return clusterJSON{}
}

// reloadTo writes text as the configuration, sends SIGHUP and waits until
// the new table is published; it returns when it saw it.
func (tp *topo) reloadTo(text string) time.Time {
	tp.t.Helper()
	v := tp.web().Version
	tp.writeConfig(text)
	if err := tp.app.Signal(syscall.SIGHUP); err != nil {
		tp.t.Fatal(err)
	}
	harness.WaitFor(tp.t, 5*time.Second, "the reload applied", func() bool { return tp.web().Version > v })
	return time.Now()
}

// ownersUnder is lookup (with servers counted as down) under the
// configuration text, restoring the running file afterwards.
func (tp *topo) ownersUnder(text, down string, clients []string) map[string]int {
	tp.t.Helper()
	running, err := os.ReadFile(tp.cfgPath)
	if err != nil {
		tp.t.Fatal(err)
	}
	defer tp.writeConfig(string(running))
	tp.writeConfig(text)
	if down == "" {
		return tp.lookup(clients)
	}
	return tp.lookupDown(clients, down)
}

// TestRoutingPlannedChangesKeepConnections puts a routing cluster through
// every planned change under sustained load: short TCP connections (a new
// one per request), long-lived TCP connections (one per client, a request
// every 100 ms) and UDP request/response flows (one socket per client,
// numbered requests). Server 3 starts failed. While the load runs: server
// 4 is added, server 1 drained, server 2's weight doubled, server 3
// recovers, and a reload changes nothing. Not one request may fail, no
// long-lived connection may break, every UDP request is answered exactly
// once and every UDP flow by one server, and no server sends a TCP reset
// (captured on every server's link and on the client's).
func TestRoutingPlannedChangesKeepConnections(t *testing.T) {
	const nShort, nLong, nUDP = 32, 24, 16
	tp := newTopo(t, topoOptions{servers: 5, clientAddrs: nShort + nLong + nUDP})
	for i, s := range tp.servers {
		if i != 3 { // server 3 starts failed
			s.peer = s.ns.Start("peer-"+s.name, tp.peer, "serve", "-name", s.name, "-http", ":80", "-udp", ":9000", "-lifetime", "5m")
		}
	}
	for i, s := range tp.servers {
		if i != 3 {
			s.peer.WaitForLog("ready", 10*time.Second)
		}
	}
	all := []member{{0, 1, false}, {1, 1, false}, {2, 1, false}, {3, 1, false}, {4, 1, false}}
	cfg := func(ms []member) string { return tp.baseConfig() + tp.routingCluster("60s", ms, fastHealth) }
	four := cfg(all[:4])
	added := cfg(all)
	drained := cfg([]member{all[0], {1, 1, true}, all[2], all[3], all[4]})
	weighted := cfg([]member{all[0], {1, 1, true}, {2, 2, false}, all[3], all[4]})
	tp.start(four)
	tp.writeConfig(added)
	tp.setupNodes()
	tp.writeConfig(four)
	tp.waitServerState(3, false, 10*time.Second)

	clients := tp.clientSources(nShort + nLong + nUDP)
	short, long, udp := clients[:nShort], clients[nShort:nShort+nLong], clients[nShort+nLong:]
	// The owners of each client at each stage, by the configuration alone.
	stages := []map[string]int{
		tp.ownersUnder(four, "3", clients),
		tp.ownersUnder(added, "3", clients),
		tp.ownersUnder(drained, "3", clients),
		tp.ownersUnder(weighted, "3", clients),
		tp.ownersUnder(weighted, "", clients),
	}
	movedOf := func(cs []string) int {
		n := 0
		for _, c := range cs {
			for i := 1; i < len(stages); i++ {
				if stages[i][c] != stages[i-1][c] {
					n++
					break
				}
			}
		}
		return n
	}

	rstFilter := "tcp[tcpflags] & tcp-rst != 0"
	var caps []*harness.Capture
	for _, s := range tp.servers {
		caps = append(caps, s.ns.Capture("e0", rstFilter))
	}
	caps = append(caps, tp.cli.Capture("c0", rstFilter))

	const dur = 11 * time.Second
	url := "http://" + ghostAddr + "/"
	start := time.Now()
	shortP := tp.cli.Start("load-short", tp.peer, "load", "-url", url, "-src", strings.Join(short, ","),
		"-duration", dur.String(), "-interval", "100ms", "-timeout", "3s")
	longP := tp.cli.Start("load-long", tp.peer, "load", "-url", url, "-src", strings.Join(long, ","),
		"-duration", dur.String(), "-interval", "100ms", "-timeout", "3s", "-reuse")
	udpP := tp.cli.Start("udpload", tp.peer, "udpload", "-dst", ghostAddr+":9000", "-src", strings.Join(udp, ","),
		"-duration", dur.String(), "-interval", "100ms", "-tries", "1", "-retry", "2s")

	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) } // the load's pacing, not a readiness wait
	var log []string
	step := func(what string, do func()) {
		t0 := time.Now()
		do()
		log = append(log, fmt.Sprintf("+%s %s (applied in %s)", t0.Sub(start).Round(time.Millisecond), what, time.Since(t0).Round(time.Millisecond)))
	}
	at(1500 * time.Millisecond)
	step("server 4 added", func() { tp.reloadTo(added) })
	at(3500 * time.Millisecond)
	step("server 1 drained", func() { tp.reloadTo(drained) })
	at(5500 * time.Millisecond)
	step("server 2 weight 2", func() { tp.reloadTo(weighted) })
	at(7500 * time.Millisecond)
	step("server 3 recovered", func() {
		s := tp.servers[3]
		s.peer = s.ns.Start("peer-"+s.name, tp.peer, "serve", "-name", s.name, "-http", ":80", "-udp", ":9000", "-lifetime", "5m")
		tp.waitServerState(3, true, 5*time.Second)
	})
	at(9500 * time.Millisecond)
	step("a reload that changes nothing", func() { tp.reloadTo(weighted) })
	during := tp.web()

	for _, p := range []*harness.Proc{shortP, longP, udpP} {
		if err := p.Wait(dur + 30*time.Second); err != nil {
			t.Fatalf("load: %v\n%s", err, p.Log())
		}
	}
	time.Sleep(300 * time.Millisecond) // let tcpdump write what it still buffers
	pkts := harness.StopAll(caps...)

	shortRes, longRes := parseLoad(t, shortP.Log()), parseLoad(t, longP.Log())
	shortFail, longFail := 0, 0
	for _, r := range shortRes {
		if !r.ok {
			if shortFail++; shortFail <= 10 {
				t.Errorf("short connection from %s at +%s failed: %s", r.src, r.at.Sub(start).Round(time.Millisecond), r.text)
			}
		}
	}
	longServer := map[string]int{}
	for _, r := range longRes {
		if !r.ok {
			if longFail++; longFail <= 10 {
				t.Errorf("long-lived connection of %s at +%s: %s", r.src, r.at.Sub(start).Round(time.Millisecond), r.text)
			}
			continue
		}
		if s, ok := longServer[r.src]; ok && s != r.server {
			t.Errorf("long-lived connection of %s answered by s%d, then s%d at +%s", r.src, s, r.server, r.at.Sub(start).Round(time.Millisecond))
		}
		longServer[r.src] = r.server
	}
	streams := udpFlows(parseUDPLoad(t, udpP.Log()))
	udpSent, udpAnswered, udpDup, udpLost := 0, 0, 0, 0
	for _, c := range udp {
		s, ok := streams[c]
		if !ok {
			t.Errorf("no udpload result for %s", c)
			continue
		}
		udpSent += s.sent
		udpAnswered += s.answered
		udpDup += s.dup
		udpLost += s.lost
		if s.sent < 50 || s.answered != s.sent || s.dup != 0 {
			t.Errorf("UDP flow of %s: %+v, want every request answered exactly once", c, s)
		}
		if strings.Contains(s.servers, ",") {
			t.Errorf("UDP flow of %s answered by several servers: %s", c, s.servers)
		}
	}
	resets := 0
	for i, ps := range pkts {
		for _, p := range ps {
			if p.Src.String() == ghostAddr {
				where := "the client's link"
				if i < len(tp.servers) {
					where = tp.servers[i].name + "'s link"
				}
				if resets++; resets <= 10 {
					t.Errorf("a TCP reset from the ghost on %s: %s", where, p)
				}
			}
		}
	}
	end := tp.web()
	fmt.Fprintf(os.Stdout, "TRANSITION REPORT (routing): %s\n", strings.Join(log, "; "))
	fmt.Fprintf(os.Stdout, "TRANSITION REPORT (routing): short TCP %d requests, %d failed (%d of %d clients moved); long-lived TCP %d requests on %d connections, %d failed or broken (%d of %d clients moved); UDP %d requests on %d flows, %d answered, %d duplicates, %d lost (%d of %d clients moved); %d TCP resets from the ghost on the wire\n",
		len(shortRes), shortFail, movedOf(short), nShort, len(longRes), len(longServer), longFail, movedOf(long), nLong,
		udpSent, len(streams), udpAnswered, udpDup, udpLost, movedOf(udp), nUDP, resets)
	fmt.Fprintf(os.Stdout, "TRANSITION REPORT (routing): flow memory: remembered %d, held packets %d, overflow %d, released %d, windows %d; at the last change %+v\n",
		end.Counters["flow_remembered"], end.Counters["flow_held_packets"], end.Counters["flow_overflow"], end.Counters["flow_released"], end.Counters["flow_windows"], during.Transition)
	if movedOf(long) == 0 || movedOf(udp) == 0 || movedOf(short) == 0 {
		t.Errorf("the changes moved no long-lived, UDP or short client: the test proves nothing")
	}
	if end.Counters["flow_overflow"] != 0 || end.Counters["flow_remembered"] == 0 || end.Counters["flow_held_packets"] == 0 {
		t.Errorf("flow memory counters %v: want flows remembered and held, no overflow", end.Counters)
	}
}

// TestRoutingDrainKeepsConnections: draining a server in routing mode keeps
// its established connections on it until they end (the server's own log
// shows their requests after the drain), sends it no new connection (a
// capture on its link sees no SYN after the drain is applied, while new
// connections of the same clients are answered by others), and the flow
// memory is empty and released once drain_timeout has passed.
func TestRoutingDrainKeepsConnections(t *testing.T) {
	harness.RequireRoot(t, "tcpdump", "nft", "ss")
	const nClients = 48
	tp := newTopo(t, topoOptions{servers: 3, clientAddrs: nClients})
	tp.startServers()
	ms := []member{{0, 1, false}, {1, 1, false}, {2, 1, false}}
	const drainTimeout = 6 * time.Second
	cfg := func(ms []member) string { return tp.baseConfig() + tp.routingCluster(drainTimeout.String(), ms, "") }
	before := cfg(ms)
	drained := cfg([]member{ms[0], {1, 1, true}, ms[2]})
	tp.start(before)
	tp.setupNodes()
	clients := tp.clientSources(nClients)
	owners := tp.lookup(clients)
	var onOne []string
	for _, c := range clients {
		if owners[c] == 1 {
			onOne = append(onOne, c)
		}
	}
	if len(onOne) < 7 {
		t.Fatalf("only %d of %d clients on server 1", len(onOne), nClients)
	}
	straddler := onOne[len(onOne)-1] // opens a connection whose handshake straddles the drain
	onOne = onOne[:len(onOne)-1]
	long, fresh := onOne[:len(onOne)/2], onOne[len(onOne)/2:]
	after := tp.ownersUnder(drained, "", clients)

	syns := tp.servers[1].ns.Capture("e0", "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn")
	url := "http://" + ghostAddr + "/"
	start := time.Now()
	longP := tp.cli.Start("load-long", tp.peer, "load", "-url", url, "-src", strings.Join(long, ","),
		"-duration", "4s", "-interval", "100ms", "-timeout", "2s", "-reuse")
	time.Sleep(time.Second) // the long-lived connections are up and busy
	servedBefore := strings.Count(tp.servers[1].peer.Log(), "s1 http ")

	// The straddling handshake: the client's SYN reaches server 1 before
	// the drain, its final ACK and request (held back by the client's own
	// nftables until the drain is applied) after it. They must reach server
	// 1, which completes the handshake and answers.
	tp.cli.MustRun("nft", "add table ip straddle")
	tp.cli.MustRun("nft", "add chain ip straddle out { type filter hook output priority 0 ; policy accept ; }")
	tp.cli.MustRun("nft", "add rule ip straddle out ip saddr "+straddler+" tcp dport 80 tcp flags != syn drop")
	straddleP := tp.cli.Start("straddle", tp.peer, "http", "-url", url, "-src", straddler, "-timeout", "10s")
	harness.WaitFor(t, 5*time.Second, "the straddling SYN half-open on server 1", func() bool {
		out, _ := tp.servers[1].ns.Run("ss", "-Htn", "state", "syn-recv")
		return strings.Contains(out, straddler+":") || strings.Contains(out, straddler+"]:") // v4-mapped on a dual-stack listener
	})
	sighup := time.Now()
	applied := tp.reloadTo(drained)
	tp.cli.MustRun("nft", "delete table ip straddle")
	if tr := tp.web().Transition; tr == nil || tr.Moved == 0 {
		t.Fatalf("the drain opened no transition window: %+v", tr)
	}
	// New connections, from the long-lived clients themselves and from
	// other clients of server 1, while the old ones run.
	shortP := tp.cli.Start("load-short", tp.peer, "load", "-url", url, "-src", strings.Join(append(append([]string{}, long...), fresh...), ","),
		"-duration", "2s", "-interval", "100ms", "-timeout", "2s")
	harness.WaitFor(t, 5*time.Second, "the flows remembered", func() bool {
		tr := tp.web().Transition
		return tr != nil && tr.Entries >= int64(len(long))
	})
	for _, p := range []*harness.Proc{longP, shortP, straddleP} {
		if err := p.Wait(30 * time.Second); err != nil {
			t.Fatalf("load: %v\n%s", err, p.Log())
		}
	}
	servedAfter := strings.Count(tp.servers[1].peer.Log(), "s1 http ") - servedBefore
	straddled := peerResults(straddleP.Log())[straddler]
	if want := "s1 " + straddler; straddled != want {
		t.Errorf("the connection whose handshake straddled the drain: %q, want %q", straddled, want)
	}
	if !strings.Contains(tp.servers[1].peer.Log(), "s1 http "+straddler+"\n") {
		t.Errorf("server 1's log does not show the straddling connection's request")
	}

	reported := map[string]bool{}
	for _, r := range parseLoad(t, longP.Log()) {
		if (!r.ok || r.server != 1) && !reported[r.src] { // the first failure of each connection
			reported[r.src] = true
			t.Errorf("long-lived connection of %s at +%s: %s (want it on s1 until it ends)", r.src, r.at.Sub(start).Round(time.Millisecond), r.text)
		}
	}
	newOK := 0
	for _, r := range parseLoad(t, shortP.Log()) {
		switch {
		case !r.ok:
			t.Errorf("new connection from %s failed: %s", r.src, r.text)
		case r.server == 1 || r.server != after[r.src]:
			t.Errorf("new connection from %s answered by s%d, want s%d (server 1 is drained)", r.src, r.server, after[r.src])
		default:
			newOK++
		}
	}
	// On the server side: requests of the old connections kept reaching
	// server 1 after the drain (about 3 s of them at 10 per second each)...
	if min := len(long) * 15; servedAfter < min {
		t.Errorf("server 1 served %d requests after the drain, want at least %d (its connections were kept)", servedAfter, min)
	}
	// ...and no new connection reached it once the drain was applied.
	time.Sleep(300 * time.Millisecond) // let tcpdump write what it still buffers
	newSYN := 0
	for _, p := range syns.Stop() {
		if p.Time.After(applied) {
			newSYN++
			t.Errorf("a SYN reached the drained server at +%s: %s", p.Time.Sub(sighup).Round(time.Millisecond), p)
		}
	}

	// After drain_timeout the memory is gone.
	var closedAt time.Time
	harness.WaitFor(t, drainTimeout+5*time.Second, "the transition window closed", func() bool {
		w := tp.web()
		closedAt = time.Now()
		return w.Transition == nil
	})
	w := tp.web()
	if late := closedAt.Sub(applied); late > drainTimeout+2*time.Second {
		t.Errorf("the window closed %s after the drain, drain_timeout is %s", late.Round(time.Millisecond), drainTimeout)
	}
	c := w.Counters
	if c["flow_released"] != c["flow_remembered"] || c["flow_remembered"] < uint64(len(long)) || c["flow_overflow"] != 0 {
		t.Errorf("flow counters %v: want every remembered flow released", c)
	}
	fmt.Fprintf(os.Stdout, "DRAIN REPORT (routing): a handshake straddling the drain (SYN before, ACK after) completed on s1: %q; %d long-lived connections to s1 kept through the drain (s1 served %d of their requests after it); %d new connections from s1's clients answered by others; %d SYNs reached s1 after the drain; the window closed %s after the drain (drain_timeout %s); flows remembered %d, released %d\n",
		straddled, len(long), servedAfter, newOK, newSYN, closedAt.Sub(applied).Round(100*time.Millisecond), drainTimeout, c["flow_remembered"], c["flow_released"])
}
