package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

var ownedLine = regexp.MustCompile(`owned\s+(\d+) of (\d+) buckets`)

// ownedCount reads how many buckets server i's filter owns.
func (tp *topo) ownedCount(i int) int {
	tp.t.Helper()
	s := tp.servers[i]
	out, err := s.ns.Run(tp.node, "status", "--cluster", "web", "--state-dir", tp.h.ArtifactDir()+"/node-"+s.name)
	if err != nil {
		return -1 // not set up yet
	}
	m := ownedLine.FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

var serverRow = regexp.MustCompile(`(?m)^\s+(\d+)\s+\S+\s+\S+\s+\d+\s+\S+\s+(\d+)\s`)

// applianceBuckets reads, from the appliance's status, how many buckets each
// server id owns in the table it runs.
func (tp *topo) applianceBuckets() map[int]int {
	tp.t.Helper()
	m := map[int]int{}
	for _, sm := range serverRow.FindAllStringSubmatch(tp.status(), -1) {
		id, _ := strconv.Atoi(sm[1])
		n, _ := strconv.Atoi(sm[2])
		m[id] = n
	}
	return m
}

// waitInStep waits until the filters of servers [0, n) own exactly the
// buckets the appliance's table gives them, and the appliance has heard
// every server acknowledge the announcement in force.
func (tp *topo) waitInStep(n int, what string) {
	tp.t.Helper()
	harness.WaitFor(tp.t, 10*time.Second, "servers' filters in step with the appliance "+what, func() bool {
		ab := tp.applianceBuckets()
		for i := 0; i < n; i++ {
			if tp.ownedCount(i) != ab[i] {
				return false
			}
		}
		st := tp.announceState()
		for _, s := range st.Servers {
			if s.AckedSeq != st.Seq {
				return false
			}
		}
		return st.Settled
	})
}

// runNodes starts `ghostnode run` on the first n servers, reading cfgPath
// (with any extra arguments), and waits until each has applied an
// announced table.
func (tp *topo) runNodes(cfgPath string, from, to int, extra ...string) {
	tp.t.Helper()
	if tp.node == "" {
		tp.node = tp.h.Build("cmd/ghostnode")
	}
	for i := from; i < to; i++ {
		s := tp.servers[i]
		args := append([]string{tp.node, "run", "-c", cfgPath, "--cluster", "web", "--id", strconv.Itoa(i),
			"--state-dir", tp.h.ArtifactDir() + "/node-" + s.name}, extra...)
		s.ns.Start("ghostnode-"+s.name, args...)
	}
	for i := from; i < to; i++ {
		harness.WaitFor(tp.t, 10*time.Second, fmt.Sprintf("ghostnode run on s%d to set up", i), func() bool {
			return tp.ownedCount(i) >= 0
		})
	}
}

// TestBroadcastFailoverAndReload: broadcast mode with `ghostnode run` on the
// servers, the table announcements doing the work. A failed server's clients
// move to the survivors (its buckets appear in their filters) and only they
// fail, only until detection; exactly one server answers each client. Then a
// fifth server is added by SIGHUP under load: no request fails, long-lived
// connections opened before the change (one per old server, from clients
// whose buckets move to the new server) survive it on their old servers, and
// about 1/5 of the clients move.
func TestBroadcastFailoverAndReload(t *testing.T) {
	const nClients = 64
	tp := newTopo(t, topoOptions{servers: 5, clientAddrs: nClients})
	tp.startServers()
	four := tp.baseConfig() + tp.clusterConfigN("broadcast", "jhash", broadcastExtra(fastHealth), 4)
	five := tp.baseConfig() + tp.clusterConfigN("broadcast", "jhash", broadcastExtra(fastHealth), 5)
	nodeCfg := tp.h.ArtifactDir() + "/node.toml" // the servers' copy: it names all five
	if err := os.WriteFile(nodeCfg, []byte(five), 0o644); err != nil {
		t.Fatal(err)
	}
	tp.start(four)
	tp.runNodes(nodeCfg, 0, 4)
	tp.waitInStep(4, "at start")
	clients := tp.clientSources(nClients)
	want := tp.lookup(clients)
	const victim = 2
	wantDown := tp.lookupDown(clients, strconv.Itoa(victim))
	before := map[int]int{}
	for i := 0; i < 4; i++ {
		before[i] = tp.ownedCount(i)
	}

	// A failure.
	capCli := tp.cli.Capture("c0", "tcp")
	wait := tp.runLoad(clients, 6*time.Second)
	time.Sleep(1500 * time.Millisecond)
	fail := time.Now()
	vs := tp.servers[victim]
	vs.peer.Signal(syscall.SIGKILL)
	vs.peer.Wait(5 * time.Second)
	detected := tp.waitServerState(victim, false, 5*time.Second)
	tp.waitInStep(4, "after the failure")
	results := wait()
	o := analyse(t, results, want, wantDown, victim, fail, detected, 600*time.Millisecond)
	pkts := capCli.Stop()
	for i := 0; i < 4; i++ {
		if i != victim && tp.ownedCount(i) <= before[i] {
			t.Errorf("survivor s%d owns %d buckets, %d before the failure: it did not take any of the failed server's", i, tp.ownedCount(i), before[i])
		}
	}
	// Exactly one server answers each connection: all SYN-ACKs of a
	// connection carry one initial sequence number (a retransmission repeats
	// it; a second server would choose its own).
	isns := map[string]map[uint32]bool{}
	for _, p := range pkts {
		if c, ok := synackOf(p); ok {
			if isns[c] == nil {
				isns[c] = map[uint32]bool{}
			}
			isns[c][p.TCPSeq] = true
		}
		// The failed server's kernel resets its own clients' connections
		// once its service is gone, until the failure is detected; any
		// other reset means a connection reached a server not its own.
		if p.Src.String() == ghostAddr && p.Proto == harness.ProtoTCP && p.TCPFlags&harness.TCPFlagRST != 0 &&
			(want[p.Dst.String()] != victim || p.Time.After(detected.Add(600*time.Millisecond))) {
			t.Errorf("a TCP RST outside the failed server's outage: %v", p)
		}
	}
	for c, seqs := range isns {
		if len(seqs) != 1 {
			t.Errorf("connection %s was answered by %d servers", c, len(seqs))
		}
	}
	fmt.Fprintf(os.Stdout, "BROADCAST OUTAGE REPORT: appliance: %s\n  clients: %d of %d belonged to server %d; %d of their requests failed, the last at +%s; moved to %v; other clients: %d failed requests\n",
		lastEvent(tp.status()), o.victimClients, nClients, victim, o.victimFailures, o.lastVictimFailure.Sub(fail).Round(time.Millisecond), o.movedTo, o.otherFailures)

	// Recovery.
	vs.peer = vs.ns.Start("peer-s2-again", tp.peer, "serve", "-name", vs.name, "-http", ":80", "-udp", ":9000", "-lifetime", "5m")
	vs.peer.WaitForLog("ready", 10*time.Second)
	tp.waitServerState(victim, true, 10*time.Second)
	tp.waitInStep(4, "after the recovery")
	if n := tp.ownedCount(victim); n != before[victim] {
		t.Errorf("the recovered server owns %d buckets, %d before its failure", n, before[victim])
	}
	tp.askAll(clients, want)

	// A fifth server by SIGHUP, under load, with long-lived connections.
	tp.runNodes(nodeCfg, 4, 5)
	tp.waitInStep(5, "with the fifth server running but not yet a member") // it owns nothing
	tp.writeConfig(five)
	after := tp.lookup(clients)
	tp.writeConfig(four)
	var long []string
	for srv := 0; srv < 4; srv++ {
		for _, c := range clients {
			if want[c] == srv && after[c] == 4 {
				long = append(long, c)
				break
			}
		}
	}
	if len(long) < 3 {
		t.Fatalf("only %d old servers have a client that moves to the new one", len(long))
	}
	waitLong := tp.runLoad(long, 5*time.Second, "-reuse", "-timeout", "2s")
	waitShort := tp.runLoad(clients, 5*time.Second, "-timeout", "2s")
	time.Sleep(1500 * time.Millisecond)
	tp.writeConfig(five)
	reloadAt := time.Now()
	tp.app.Signal(syscall.SIGHUP)
	harness.WaitFor(t, 5*time.Second, "five servers in the appliance's status", func() bool {
		return len(tp.applianceBuckets()) == 5
	})
	tp.waitInStep(5, "after the reload")
	longRes, shortRes := waitLong(), waitShort()
	for _, r := range longRes {
		if !r.ok {
			t.Errorf("long-lived connection of %s broke at +%s: %s", r.src, r.at.Sub(reloadAt).Round(time.Millisecond), r.text)
		} else if r.server != want[r.src] {
			t.Errorf("long-lived connection of %s answered by s%d, want its old server s%d", r.src, r.server, want[r.src])
		}
	}
	failed := 0
	for _, r := range shortRes {
		if !r.ok {
			failed++
			t.Errorf("request from %s failed at +%s: %s", r.src, r.at.Sub(reloadAt).Round(time.Millisecond), r.text)
		} else if r.at.After(reloadAt.Add(time.Second)) && r.server != after[r.src] {
			t.Errorf("after the reload %s was answered by s%d, want s%d", r.src, r.server, after[r.src])
		}
	}
	moved := 0
	for _, c := range clients {
		if want[c] != after[c] {
			moved++
		}
	}
	fmt.Fprintf(os.Stdout, "BROADCAST RELOAD REPORT: fifth server added by SIGHUP: %d of %d clients moved (%.1f%%, ideal 20%%); %d long-lived connections kept on their old servers; %d of %d short requests failed\n",
		moved, nClients, 100*float64(moved)/nClients, len(long), failed, len(shortRes))
	if share := float64(moved) / nClients; share < 0.08 || share > 0.35 {
		t.Errorf("%.0f%% of clients moved, want close to 20%%", 100*share)
	}
	st := tp.status()
	if !strings.Contains(st, "announcements_failed=0") {
		t.Errorf("announcements failed:\n%s", st)
	}
}
