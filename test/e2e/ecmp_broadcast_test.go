package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
	"github.com/ghostrouter/ghostrouter/test/harness"
)

// broadcastConfig is appliance x's configuration for the broadcast-mode
// scale-out: the same cluster in broadcast mode, and a virtual router on
// the LAN that only elects the appliance that announces tables (ECMP, not
// VRRP, spreads the traffic): A has priority 150, B 100.
func (e *ecmpTopo) broadcastConfig(x, key string) *ecmpApp {
	app := e.appConfig(x, 1) // the names, paths and routing-mode text
	prio := map[string]int{"a": 150, "b": 100}[x]
	text, err := os.ReadFile(app.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	s := strings.Replace(string(text), `mode = "routing"
hash = "modulo"`, fmt.Sprintf(`mode = "broadcast"
hash = "jhash"
seed = 0x5eed
buckets = 4096
broadcast_address = "10.0.0.250"
announce_key_file = %q
announce_interval = "300ms"`, key), 1)
	s += fmt.Sprintf(`
[[neighbor]]
address = "10.0.0.250"
mac = "ff:ff:ff:ff:ff:ff"
interface = "lan%[1]s"

[[vrrp]]
interface = "lan%[1]s"
vrid = 60
priority = %[2]d
interval = "100ms"
addresses = ["10.0.0.200"]
`, x, prio)
	if err := os.WriteFile(app.cfg, []byte(s), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return app
}

// bstatus is what this test reads of `status --json`.
type bstatus struct {
	Counters map[string]uint64 `json:"counters"`
	Links    []struct {
		Name string `json:"name"`
		MAC  string `json:"mac"`
	} `json:"links"`
	VRRP []struct {
		State string `json:"state"`
	} `json:"vrrp"`
	Clusters []struct {
		TableFingerprint string `json:"table_fingerprint"`
		Servers          []struct {
			ID      int `json:"id"`
			Buckets int `json:"buckets"`
		} `json:"servers"`
	} `json:"clusters"`
}

func (e *ecmpTopo) bstatus(app *ecmpApp) bstatus {
	e.t.Helper()
	var st bstatus
	out := e.rtr.MustRun(e.bin, "status", "--json", "--socket", app.sock)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func (e *ecmpTopo) waitVRRP(app *ecmpApp, state string) {
	e.t.Helper()
	harness.WaitFor(e.t, 10*time.Second, app.name+" VRRP "+state, func() bool {
		st := e.bstatus(app)
		return len(st.VRRP) == 1 && st.VRRP[0].State == state
	})
}

// owned is server i's owned bucket count as its ghostnode reports it (-1
// before it is set up).
func (e *ecmpTopo) owned(node string, i int) int {
	s := e.servers[i]
	out, err := s.ns.Run(node, "status", "--cluster", "web", "--state-dir", filepath.Join(e.h.ArtifactDir(), "node-"+s.name))
	if err != nil {
		return -1
	}
	m := ownedLine.FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// inStep waits until every server's filter owns exactly what app's table
// gives it (the buckets of all servers adding up to the whole table).
func (e *ecmpTopo) inStep(node string, app *ecmpApp, what string) {
	e.t.Helper()
	harness.WaitFor(e.t, 15*time.Second, "servers' filters in step with "+what, func() bool {
		st := e.bstatus(app)
		if len(st.Clusters) != 1 {
			return false
		}
		total := 0
		for _, s := range st.Clusters[0].Servers {
			if e.owned(node, s.ID) != s.Buckets {
				return false
			}
			total += s.Buckets
		}
		return total == 4096
	})
}

// answers asks the ghost from every client and returns client -> server.
func (e *ecmpTopo) answers(clients []string) map[string]string {
	e.t.Helper()
	res := peerResults(e.cli.MustRun(e.peer, "http", "-url", "http://"+ecmpGhost+"/", "-src", strings.Join(clients, ","), "-parallel", "8"))
	out := map[string]string{}
	for _, c := range clients {
		f := strings.Fields(res[c])
		if len(f) != 2 || f[1] != c || !strings.HasPrefix(f[0], "s") {
			e.t.Errorf("HTTP from %s: %q", c, res[c])
			continue
		}
		out[c] = f[0]
	}
	return out
}

// TestECMPScaleOutBroadcast: broadcast mode behind ECMP. Both appliances
// forward (BGP, multipath); the servers hear one announcer, the LAN virtual
// router's master, and never flap between the two. After the master stops,
// the other announces and the servers follow it; clients keep their servers
// whichever appliance carries them.
func TestECMPScaleOutBroadcast(t *testing.T) {
	e := newECMPTopo(t)
	harness.RequireRoot(t, "nft")
	node := e.h.Build("cmd/ghostnode")
	e.startServers()
	e.startBird()
	dir := e.h.ArtifactDir()
	key, pub := filepath.Join(dir, "announce.key"), filepath.Join(dir, "announce.pub")
	if _, err := keyfile.Generate(key, pub); err != nil {
		t.Fatal(err)
	}
	a := e.broadcastConfig("a", key)
	b := e.broadcastConfig("b", key)
	start := func(app *ecmpApp) {
		app.proc = e.rtr.Start(fmt.Sprintf("%s-%d", app.name, time.Now().UnixNano()), e.bin, "run", "-c", app.cfg)
		harness.WaitFor(t, 15*time.Second, app.name+"'s control socket", func() bool {
			if app.proc.Exited() {
				t.Fatalf("%s exited:\n%s", app.name, app.proc.Log())
			}
			_, err := e.rtr.Run(e.bin, "status", "--socket", app.sock)
			return err == nil
		})
	}
	start(a)
	e.waitVRRP(a, "master")
	start(b)
	e.waitVRRP(b, "backup")
	e.waitHops([]string{a.upAddr, b.upAddr}, 20*time.Second, "both appliances as next hops")

	// Every server's agent takes announcements from either appliance.
	for i, s := range e.servers {
		s.ns.Start("ghostnode-"+s.name, node, "run", "-c", a.cfg, "--cluster", "web", "--id", strconv.Itoa(i),
			"--key-file", pub, "--appliance", "10.0.0.1,10.0.0.2", "--state-dir", filepath.Join(dir, "node-"+s.name))
	}
	e.inStep(node, a, "A (the LAN master)")
	if fa, fb := e.bstatus(a).Clusters[0].TableFingerprint, e.bstatus(b).Clusters[0].TableFingerprint; fa != fb {
		t.Errorf("table fingerprints differ: A %s, B %s", fa, fb)
	}

	// Both carry traffic; each client is answered by one server, the same
	// one whichever appliance its connection crossed.
	clients := ecmpClients(32)
	macOf := func(app *ecmpApp, link string) string {
		for _, l := range e.bstatus(app).Links {
			if l.Name == link {
				return l.MAC
			}
		}
		t.Fatalf("%s has no link %s", app.name, link)
		return ""
	}
	// Each TAP sees the bridge's flood of the other's broadcasts too: count
	// only the frames each appliance itself sent.
	capA := e.rtr.Capture("lana", "ether broadcast and ether src "+macOf(a, "lana")+" and ip dst "+ecmpGhost)
	capB := e.rtr.Capture("lanb", "ether broadcast and ether src "+macOf(b, "lanb")+" and ip dst "+ecmpGhost)
	first := e.answers(clients)
	sentB := e.bstatus(b).Counters["announcements_sent"]
	for range 3 {
		again := e.answers(clients)
		for c, s := range first {
			if again[c] != s {
				t.Errorf("client %s answered by %s, then by %s", c, s, again[c])
			}
		}
	}
	if n := e.bstatus(b).Counters["announcements_sent"] - sentB; n != 0 {
		t.Errorf("B sent %d announcements while A is the LAN master: the servers hear two announcers", n)
	}
	// Both broadcast ghost traffic onto the LAN (captured on each one's TAP).
	pk := harness.StopAll(capA, capB)
	pkA, pkB := pk[0], pk[1]
	t.Logf("ghost frames broadcast onto the LAN: A %d, B %d", len(pkA), len(pkB))
	if len(pkA) == 0 || len(pkB) == 0 {
		t.Errorf("ghost traffic did not cross both appliances: A %d frames, B %d", len(pkA), len(pkB))
	}

	// A stops: B becomes master, announces, and the servers follow it.
	if err := a.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	e.waitHops([]string{b.upAddr}, 3*time.Second, "A withdrawn")
	e.waitVRRP(b, "master")
	harness.WaitFor(t, 10*time.Second, "B announcing", func() bool {
		return e.bstatus(b).Counters["announcements_sent"] > sentB
	})
	e.inStep(node, b, "B after A stopped")
	after := e.answers(clients)
	for c, s := range first {
		if after[c] != s {
			t.Errorf("after A stopped, client %s answered by %s, before by %s", c, after[c], s)
		}
	}
	t.Logf("broadcast behind ECMP: %d clients, each answered by one server through both appliances; B took over the announcements", len(first))
}
