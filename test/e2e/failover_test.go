package e2e

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// fastHealth is a health section that notices a failure in about
// fall x interval = 600 ms.
const fastHealth = `
  [cluster.health]
  check = "tcp"
  port = 80
  interval = "200ms"
  timeout = "150ms"
  rise = 2
  fall = 3
`

// lookupDown is lookup with servers counted as failed.
func (tp *topo) lookupDown(clients []string, down string) map[string]int {
	tp.t.Helper()
	args := []string{tp.bin, "lookup", "-c", tp.cfgPath, "--cluster", "web", "--down", down}
	out := tp.rtr.MustRun(append(args, clients...)...)
	m := map[string]int{}
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) == 4 {
			id, _ := strconv.Atoi(f[2])
			m[f[0]] = id
		}
	}
	return m
}

// result is one request of the load generator.
type result struct {
	at     time.Time
	src    string
	ok     bool
	server int // -1 when failed
	text   string
}

// runLoad starts `peer load` from the clients; wait returns its results.
func (tp *topo) runLoad(clients []string, d time.Duration, extra ...string) (wait func() []result) {
	args := append([]string{tp.peer, "load", "-url", "http://" + ghostAddr + "/", "-src", strings.Join(clients, ","),
		"-duration", d.String(), "-interval", "100ms", "-timeout", "400ms"}, extra...)
	p := tp.cli.Start(fmt.Sprintf("load-%d", time.Now().UnixNano()), args...)
	return func() []result {
		if err := p.Wait(d + 30*time.Second); err != nil {
			tp.t.Fatalf("load generator: %v\n%s", err, p.Log())
		}
		return parseLoad(tp.t, p.Log())
	}
}

var serverName = regexp.MustCompile(`^s(\d+) `)

func parseLoad(t *testing.T, log string) []result {
	var out []result
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) < 3 {
			continue
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		r := result{at: time.UnixMilli(ms), src: f[1], ok: f[2] == "OK", server: -1}
		if len(f) == 4 {
			r.text = f[3]
		}
		if r.ok {
			m := serverName.FindStringSubmatch(r.text)
			if m == nil {
				t.Fatalf("load line without a server name: %q", line)
			}
			r.server, _ = strconv.Atoi(m[1])
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		t.Fatalf("the load generator produced no results:\n%s", log)
	}
	return out
}

// waitServerState polls status until server id of cluster web is up or down.
func (tp *topo) waitServerState(id int, up bool, timeout time.Duration) time.Time {
	tp.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	row := regexp.MustCompile(`(?m)^\s+` + strconv.Itoa(id) + `\s+\S+\s+\S+\s+\d+\s+` + state + `\b`)
	harness.WaitFor(tp.t, timeout, fmt.Sprintf("server %d %s in status", id, state), func() bool {
		return row.MatchString(tp.status())
	})
	return time.Now()
}

// outage summarises one failure: what the clients saw.
type outage struct {
	victimClients, otherFailures, victimFailures int
	lastVictimFailure                            time.Time
	movedTo                                      map[int]int // survivor -> victim clients it took
}

// analyse checks results against the failure window [fail, detected]:
// clients of other servers never fail; the victim's clients fail only until
// detection (plus slack), and afterwards are served by the server lookup
// --down names.
func analyse(t *testing.T, results []result, want, wantDown map[string]int, victim int, fail, detected time.Time, slack time.Duration) outage {
	o := outage{movedTo: map[int]int{}}
	seen := map[string]bool{}
	for _, r := range results {
		mine := want[r.src] == victim
		if mine && !seen[r.src] {
			seen[r.src] = true
			o.victimClients++
		}
		switch {
		case !mine && !r.ok:
			o.otherFailures++
			t.Errorf("client %s of server %d failed at %s: %s", r.src, want[r.src], r.at.Format("15:04:05.000"), r.text)
		case !mine && r.server != want[r.src]:
			t.Errorf("client %s of server %d was answered by server %d", r.src, want[r.src], r.server)
		case mine && !r.ok:
			o.victimFailures++
			if r.at.After(o.lastVictimFailure) {
				o.lastVictimFailure = r.at
			}
			if r.at.Before(fail.Add(-slack)) || r.at.After(detected.Add(slack)) {
				t.Errorf("client %s of the failed server failed at %s, outside the outage %s..%s",
					r.src, r.at.Format("15:04:05.000"), fail.Format("15:04:05.000"), detected.Format("15:04:05.000"))
			}
		case mine && r.at.After(detected.Add(slack)):
			if r.server != wantDown[r.src] {
				t.Errorf("after detection client %s was answered by server %d, want %d", r.src, r.server, wantDown[r.src])
			}
			o.movedTo[r.server]++
		}
	}
	return o
}

// TestRoutingFailover: 4 servers, 64 clients making repeated short HTTP
// requests. Stopping one server's service, and later cutting its link, makes
// only its clients fail, only until detection; then the survivors serve them
// as lookup --down predicts, spread over all survivors; the other clients see
// no failure at all. Restarting the server moves its clients back.
func TestRoutingFailover(t *testing.T) {
	const nClients = 64
	tp := newTopo(t, topoOptions{servers: 4, clientAddrs: nClients})
	tp.startServers()
	tp.start(tp.baseConfig() + tp.clusterConfig("routing", "jhash", fastHealth))
	tp.setupNodes()
	clients := tp.clientSources(nClients)
	want := tp.lookup(clients)
	const victim = 1
	wantDown := tp.lookupDown(clients, strconv.Itoa(victim))
	vs := tp.servers[victim]
	const slack = 400 * time.Millisecond

	for _, how := range []string{"service stopped", "link cut"} {
		wait := tp.runLoad(clients, 6*time.Second)
		time.Sleep(1500 * time.Millisecond) // load running against a healthy cluster
		fail := time.Now()
		if how == "service stopped" {
			vs.peer.Signal(syscall.SIGKILL)
			vs.peer.Wait(5 * time.Second)
		} else {
			tp.rtr.MustRun("ip", "link", "set", "l-s1", "down")
		}
		detected := tp.waitServerState(victim, false, 5*time.Second)
		results := wait()
		o := analyse(t, results, want, wantDown, victim, fail, detected, slack)
		if o.victimFailures == 0 {
			t.Errorf("%s: the failed server's clients saw no failure: the test proves nothing", how)
		}
		survivors := []int{}
		for id := range o.movedTo {
			survivors = append(survivors, id)
		}
		sort.Ints(survivors)
		if len(survivors) != 3 {
			t.Errorf("%s: the failed server's clients went to servers %v, want all 3 survivors", how, survivors)
		}
		ev := lastEvent(tp.status())
		fmt.Fprintf(os.Stdout, "OUTAGE REPORT (%s): appliance: %s\n  clients: %d of %d belonged to server %d; %d of their requests failed, the last at +%s; moved to %v; other clients: %d failed requests\n",
			how, ev, o.victimClients, nClients, victim, o.victimFailures, o.lastVictimFailure.Sub(fail).Round(time.Millisecond), o.movedTo, o.otherFailures)

		// Recovery: its clients come back to it.
		if how == "service stopped" {
			vs.peer = vs.ns.Start("peer-s1-again", tp.peer, "serve", "-name", vs.name, "-http", ":80", "-udp", ":9000", "-lifetime", "5m")
			vs.peer.WaitForLog("ready", 10*time.Second)
		} else {
			tp.rtr.MustRun("ip", "link", "set", "l-s1", "up")
		}
		tp.waitServerState(victim, true, 10*time.Second)
		res := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://"+ghostAddr+"/", "-src", strings.Join(clients, ",")))
		for _, c := range clients {
			if exp := fmt.Sprintf("s%d %s", want[c], c); res[c] != exp {
				t.Errorf("%s, after recovery: %s got %q, want %q", how, c, res[c], exp)
			}
		}
	}
}

// lastEvent is the newest event line of status.
func lastEvent(status string) string {
	ev := ""
	for _, l := range strings.Split(status, "\n") {
		if s := strings.TrimSpace(l); strings.HasPrefix(s, "event: ") {
			ev = strings.TrimPrefix(s, "event: ")
		}
	}
	return ev
}
