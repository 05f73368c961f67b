package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// bcastMember is one server line of bcastConfig.
type bcastMember struct {
	weight int
	drain  bool
}

// bcastConfig is the appliance's configuration of a broadcast cluster web
// whose members are the first len(members) servers.
func (tp *topo) bcastConfig(members []bcastMember) string {
	var b strings.Builder
	b.WriteString(tp.baseConfig())
	fmt.Fprintf(&b, `
[[cluster]]
name = "web"
address = %q
interface = "lan0"
mode = "broadcast"
hash = "jhash"
seed = 0x5eed
buckets = 4096
%s`, ghostAddr, broadcastExtra(fastHealth))
	for i, m := range members {
		fmt.Fprintf(&b, "\n  [[cluster.server]]\n  id = %d\n  address = %q\n  weight = %d\n", i, tp.servers[i].addr, m.weight)
		if m.drain {
			b.WriteString("  drain = true\n")
		}
	}
	return b.String()
}

// announceState is the part of `ghostrouter status --json` about a
// broadcast cluster's announcements.
type announceState struct {
	Cluster string `json:"cluster"`
	Seq     uint64 `json:"seq"`
	Settled bool   `json:"settled"`
	Unowned int    `json:"unowned"`
	Excused uint64 `json:"excused"`
	Stalls  uint64 `json:"stalls"`
	Servers []struct {
		ID       int    `json:"id"`
		AckedSeq uint64 `json:"acked_seq"`
		Behind   uint64 `json:"behind"`
		Late     bool   `json:"late"`
		Owned    int    `json:"owned"`
	} `json:"servers"`
}

func (tp *topo) announceState() announceState {
	tp.t.Helper()
	var st struct {
		Announce []announceState `json:"announce"`
	}
	out := tp.rtr.MustRun(tp.bin, "status", "--json", "--socket", tp.sock)
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Announce) != 1 {
		tp.t.Fatalf("status --json: %v; announce %+v", err, st.Announce)
	}
	return st.Announce[0]
}

// waitSettled waits until the change is complete: the announcement in
// force is the appliance's table, every server of it has acknowledged it,
// and the members' filters own what the appliance's table gives them.
func (tp *topo) waitSettled(members int, what string) announceState {
	tp.t.Helper()
	var st announceState
	harness.WaitFor(tp.t, 10*time.Second, "the change settled: "+what, func() bool {
		st = tp.announceState()
		if !st.Settled {
			return false
		}
		for _, s := range st.Servers {
			if s.AckedSeq != st.Seq {
				return false
			}
		}
		return true
	})
	tp.waitInStep(members, what)
	return st
}

// unownedCounter reads server i's filter counter of new connections to
// buckets that no server owned (the gap of a change).
func (tp *topo) unownedCounter(i int) uint64 {
	tp.t.Helper()
	s := tp.servers[i]
	out := s.ns.MustRun(tp.node, "status", "--json", "--cluster", "web", "--state-dir", tp.h.ArtifactDir()+"/node-"+s.name)
	var reps []struct {
		Counters struct {
			Unowned struct {
				Packets uint64 `json:"packets"`
			} `json:"Unowned"`
		} `json:"counters"`
	}
	if err := json.Unmarshal([]byte(out), &reps); err != nil || len(reps) != 1 {
		tp.t.Fatalf("ghostnode status --json: %v\n%s", err, out)
	}
	return reps[0].Counters.Unowned.Packets
}

var issuedLine = regexp.MustCompile(`time=(\S+) .*msg="announcement issued" cluster=web seq=(\d+) tables=(\d+) unowned_buckets=(\d+) settled=(true|false)`)

// gaps reads from the appliance's log how long buckets had no owner in
// each change: from the release to the acquisition.
func gaps(t *testing.T, log string, from time.Time) []time.Duration {
	var out []time.Duration
	var since time.Time
	for _, m := range issuedLine.FindAllStringSubmatch(log, -1) {
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("log time %q: %v", m[1], err)
		}
		switch {
		case at.Before(from):
		case m[4] != "0" && since.IsZero():
			since = at
		case m[5] == "true" && !since.IsZero():
			out = append(out, at.Sub(since))
			since = time.Time{}
		}
	}
	return out
}

// TestBroadcastChangesUnderLoad: a broadcast cluster with `ghostnode run`
// on every server, under sustained load of short TCP connections (a new
// connection per request from 48 clients), long-lived TCP connections (12
// clients, one connection each for the whole run) and a UDP
// request/response stream (48 clients, one flow each, a request every
// 200ms, retried after 300ms without an answer like a DNS client), goes
// through every planned change: a failed server's recovery, a server
// added, a server drained, a weight changed, and a reload that changes
// nothing. Each is a SIGHUP (or a health transition) the appliance turns
// into a release, acknowledged by the servers, and then the acquisition.
//
// Required: zero failed requests, zero broken long-lived connections
// (each stays on the server it started on, the drained one included), each
// UDP request answered exactly once by exactly one server, every SYN of a
// connection answered by one server only (one initial sequence number per
// connection, in the client's capture) and no RST from the ghost; no server
// was excused (every change went ahead on acknowledgements, not on the
// bound); after the drain, no new connection or datagram reaches the
// drained server; the reload that changes nothing announces nothing new.
func TestBroadcastChangesUnderLoad(t *testing.T) {
	const (
		nClients = 48
		nLong    = 12
		loadFor  = 18 * time.Second
	)
	tp := newTopo(t, topoOptions{servers: 5, clientAddrs: nClients})
	tp.startServers()
	base := []bcastMember{{1, false}, {1, false}, {1, false}, {1, false}}
	nodeCfg := tp.h.ArtifactDir() + "/node.toml" // the servers' copy: all five
	if err := os.WriteFile(nodeCfg, []byte(tp.bcastConfig(append(base, bcastMember{1, false}))), 0o644); err != nil {
		t.Fatal(err)
	}
	tp.start(tp.bcastConfig(base))
	tp.runNodes(nodeCfg, 0, 5)
	tp.waitSettled(4, "at start")
	clients := tp.clientSources(nClients)

	// Server 3 fails before the load starts; its recovery is one of the
	// changes under load.
	s3 := tp.servers[3]
	s3.peer.Signal(syscall.SIGKILL)
	s3.peer.Wait(5 * time.Second)
	tp.waitServerState(3, false, 5*time.Second)
	tp.waitSettled(4, "server 3 failed")
	unownedBefore := tp.unownedCounter(0)
	excusedBefore := tp.announceState().Excused // the servers' agents may start after the appliance's first announcement

	capCli := tp.cli.Capture("c0", "tcp[tcpflags] & (tcp-syn|tcp-rst) != 0")
	start := time.Now()
	waitShort := tp.runLoad(clients, loadFor, "-interval", "150ms", "-timeout", "3s")
	waitLong := tp.runLoad(clients[:nLong], loadFor, "-reuse", "-interval", "200ms", "-timeout", "3s")
	udp := tp.cli.Start(fmt.Sprintf("udpload-%d", time.Now().UnixNano()), tp.peer, "udpload", "-dst", ghostAddr+":9000",
		"-src", strings.Join(clients, ","), "-duration", loadFor.String(), "-interval", "200ms", "-retry", "300ms", "-tries", "8")
	time.Sleep(2 * time.Second)

	type step struct {
		name string
		at   time.Time
		seq  uint64
	}
	var steps []step
	mark := func(name string, st announceState) {
		steps = append(steps, step{name, time.Now(), st.Seq})
		t.Logf("+%v %s: settled at seq %d (%d acquisitions waited for acknowledgements so far)", time.Since(start).Round(time.Millisecond), name, st.Seq, st.Stalls)
		time.Sleep(1500 * time.Millisecond) // load against the new table
	}
	reload := func(members []bcastMember) {
		tp.writeConfig(tp.bcastConfig(members))
		tp.app.Signal(syscall.SIGHUP)
	}

	// 1. The failed server recovers.
	s3.peer = s3.ns.Start("peer-s3-again", tp.peer, "serve", "-name", s3.name, "-http", ":80", "-udp", ":9000", "-lifetime", "5m")
	s3.peer.WaitForLog("ready", 10*time.Second)
	tp.waitServerState(3, true, 10*time.Second)
	mark("server 3 recovered", tp.waitSettled(4, "server 3 recovered"))

	// 2. A fifth server.
	five := append(base, bcastMember{1, false})
	reload(five)
	harness.WaitFor(t, 5*time.Second, "five servers in the appliance's status", func() bool { return len(tp.applianceBuckets()) == 5 })
	mark("server 4 added", tp.waitSettled(5, "server 4 added"))

	// 3. Server 1 drained.
	drained := append([]bcastMember(nil), five...)
	drained[1].drain = true
	reload(drained)
	mark("server 1 drained", tp.waitSettled(5, "server 1 drained"))
	drainedAt := time.Now()

	// 4. Server 2's weight 3.
	weighted := append([]bcastMember(nil), drained...)
	weighted[2].weight = 3
	reload(weighted)
	mark("server 2 weight 3", tp.waitSettled(5, "server 2 weight 3"))

	// 5. A reload that changes nothing.
	before := tp.announceState()
	reloads := strings.Count(tp.app.Log(), `msg=reloaded`)
	reload(weighted)
	harness.WaitFor(t, 5*time.Second, "the reload in the appliance's log", func() bool {
		return strings.Count(tp.app.Log(), `msg=reloaded`) > reloads
	})
	time.Sleep(time.Second)
	if after := tp.announceState(); after.Seq != before.Seq || !after.Settled {
		t.Errorf("a reload that changes nothing announced seq %d (was %d), settled %v", after.Seq, before.Seq, after.Settled)
	}
	mark("reload without change", tp.announceState())
	if left := time.Until(start.Add(loadFor)); left < time.Second {
		t.Errorf("the changes took until %v before the load's end: the last ones were not under load", -left)
	}

	shortRes, longRes := waitShort(), waitLong()
	if err := udp.Wait(loadFor + 30*time.Second); err != nil {
		t.Fatalf("udpload: %v\n%s", err, udp.Log())
	}
	udpRes := parseUDPLoad(t, udp.Log())
	pkts := capCli.Stop()
	final := tp.announceState()

	// Short connections: none failed; after the drain none reached server 1.
	shortFailed := 0
	for _, r := range shortRes {
		if !r.ok {
			shortFailed++
			t.Errorf("short request from %s failed at +%v: %s", r.src, r.at.Sub(start).Round(time.Millisecond), r.text)
		} else if r.server == 1 && r.at.After(drainedAt.Add(500*time.Millisecond)) {
			t.Errorf("a new connection from %s reached the drained server 1 at +%v", r.src, r.at.Sub(start).Round(time.Millisecond))
		}
	}
	// Long-lived connections: none broke, each stayed on its server.
	longBroken := 0
	longOn := map[string]map[int]bool{}
	for _, r := range longRes {
		if !r.ok {
			longBroken++
			t.Errorf("long-lived connection of %s broke at +%v: %s", r.src, r.at.Sub(start).Round(time.Millisecond), r.text)
			continue
		}
		if longOn[r.src] == nil {
			longOn[r.src] = map[int]bool{}
		}
		longOn[r.src][r.server] = true
	}
	longOnDrained := 0
	for src, on := range longOn {
		if len(on) != 1 {
			t.Errorf("long-lived connection of %s answered by servers %v: it moved", src, on)
		}
		if on[1] {
			longOnDrained++
		}
	}
	// UDP: every request answered exactly once, by exactly one server.
	udpRetried, udpUnanswered, udpDup := 0, 0, 0
	for _, r := range udpRes {
		if r.tries > 1 {
			udpRetried++
		}
		switch {
		case r.answers == 0:
			udpUnanswered++
			t.Errorf("UDP request %d of %s (+%v) was never answered in %d tries", r.seq, r.src, r.at.Sub(start).Round(time.Millisecond), r.tries)
		case r.answers > 1 || len(r.servers) != 1 || r.answeredTwice > 0:
			udpDup++
			t.Errorf("UDP request %d of %s (+%v) answered %d times by %v (%d tries)", r.seq, r.src, r.at.Sub(start).Round(time.Millisecond), r.answers, r.servers, r.tries)
		case r.servers[0] == "s1" && r.at.After(drainedAt.Add(500*time.Millisecond)):
			t.Errorf("UDP request %d of %s reached the drained server 1 at +%v", r.seq, r.src, r.at.Sub(start).Round(time.Millisecond))
		}
	}
	// The wire: one server answers each SYN; no RST from the ghost.
	isns := map[string]map[uint32]bool{}
	rsts := 0
	for _, p := range pkts {
		if c, ok := synackOf(p); ok {
			if isns[c] == nil {
				isns[c] = map[uint32]bool{}
			}
			isns[c][p.TCPSeq] = true
		}
		if p.Src.String() == ghostAddr && p.Proto == harness.ProtoTCP && p.TCPFlags&harness.TCPFlagRST != 0 {
			rsts++
			if rsts <= 5 {
				t.Errorf("a TCP RST from the ghost: %v", p)
			}
		}
	}
	doubly := 0
	for c, seqs := range isns {
		if len(seqs) != 1 {
			doubly++
			t.Errorf("connection %s was answered by %d servers", c, len(seqs))
		}
	}
	if final.Excused != excusedBefore {
		t.Errorf("%d servers were excused under load: a change went ahead without an old owner's acknowledgement", final.Excused-excusedBefore)
	}
	if final.Stalls < 4 {
		t.Errorf("only %d acquisitions waited for acknowledgements: the changes did not move buckets as expected", final.Stalls)
	}
	var gapMax time.Duration
	gs := gaps(t, tp.app.Log(), start)
	for _, g := range gs {
		gapMax = max(gapMax, g)
	}
	if len(gs) < 4 {
		t.Errorf("%d releases followed by acquisitions in the appliance's log, want one per change (4)", len(gs))
	}
	var unowned uint64
	for i := range tp.servers {
		unowned = max(unowned, tp.unownedCounter(i)) // every server sees every broadcast SYN
	}
	unowned -= min(unowned, unownedBefore)
	sort.Slice(gs, func(i, j int) bool { return gs[i] < gs[j] })
	var names []string
	for _, s := range steps {
		names = append(names, fmt.Sprintf("%s (seq %d)", s.name, s.seq))
	}
	fmt.Fprintf(os.Stdout, "BROADCAST CHANGES REPORT: %s\n"+
		"  short TCP requests: %d, failed %d; TCP connections answered by two servers: %d; RSTs from the ghost: %d\n"+
		"  long-lived TCP connections: %d (%d of them on the drained server), broken %d\n"+
		"  UDP requests: %d, answered exactly once by one server: %d, retried after the gap: %d, unanswered %d, answered twice %d\n"+
		"  no-owner gaps (release to acquisition, appliance log): %v, longest %v; new connections and datagrams counted in the gap by the filters: %d\n"+
		"  announcements: seq %d, %d acquisitions waited for acknowledgements, %d servers excused under load\n",
		strings.Join(names, ", "), len(shortRes), shortFailed, doubly, rsts, len(longOn), longOnDrained, longBroken,
		len(udpRes), len(udpRes)-udpUnanswered-udpDup, udpRetried, udpUnanswered, udpDup, gs, gapMax, unowned,
		final.Seq, final.Stalls, final.Excused-excusedBefore)
	tp.ignoredAgentIsVisible(weighted)
	if unowned < uint64(udpRetried) {
		t.Errorf("the filters counted %d new connections and datagrams to unowned buckets, fewer than the %d UDP requests that had to be retried", unowned, udpRetried)
	}
	if gapMax >= time.Second {
		t.Errorf("the longest no-owner gap was %v, want under the acknowledgement bound (1s)", gapMax)
	}
}

// ignoredAgentIsVisible stops server 0's agent (SIGSTOP: its filter stays,
// it acknowledges nothing) and changes a weight: the change goes ahead
// after the acknowledgement bound, and the appliance's status shows server
// 0 behind, late and excused. Once the agent continues it catches up.
func (tp *topo) ignoredAgentIsVisible(members []bcastMember) {
	t := tp.t
	t.Helper()
	var run struct {
		PID int `json:"pid"`
	}
	b, err := os.ReadFile(tp.h.ArtifactDir() + "/node-s0/run/web.json")
	if err != nil || json.Unmarshal(b, &run) != nil || run.PID <= 0 {
		t.Fatalf("server 0's run status: %v\n%s", err, b)
	}
	if err := syscall.Kill(run.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(run.PID, syscall.SIGCONT) })
	before := tp.announceState()
	changed := append([]bcastMember(nil), members...)
	changed[2].weight = 1
	tp.writeConfig(tp.bcastConfig(changed))
	tp.app.Signal(syscall.SIGHUP)
	var st announceState
	harness.WaitFor(t, 5*time.Second, "the change to go ahead without server 0", func() bool {
		st = tp.announceState()
		return st.Settled && st.Seq > before.Seq
	})
	text := tp.status()
	row := regexp.MustCompile(`(?m)^\s+by server 0\s+seq (\d+)\s+(\d+)\s.*\(late\)$`)
	m := row.FindStringSubmatch(text)
	s0 := st.Servers[0]
	if m == nil || s0.ID != 0 || !s0.Late || s0.Behind == 0 || st.Excused != before.Excused+1 {
		t.Errorf("a stopped agent is not visible: %+v (excused %d, before %d)\n%s", s0, st.Excused, before.Excused, text)
	}
	if err := syscall.Kill(run.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 5*time.Second, "server 0's agent to catch up", func() bool {
		st = tp.announceState()
		return st.Servers[0].AckedSeq == st.Seq && !st.Servers[0].Late
	})
	fmt.Fprintf(os.Stdout, "IGNORED APPLIANCE REPORT: with server 0's agent stopped, a change went ahead after the bound; status showed %q; after SIGCONT it runs seq %d\n",
		strings.TrimSpace(m[0]), st.Servers[0].AckedSeq)
}
