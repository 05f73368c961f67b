package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// TestReloadAddServerAndBadFile (routing mode): adding a fifth server by
// SIGHUP under load moves close to 1/5 of the clients to it, not one request
// fails (the connections of moved clients are kept), and every client is
// answered by the server the new table names; a bad file on reload changes
// nothing and is reported with FILE:LINE, by the log and by `reload`.
func TestReloadAddServerAndBadFile(t *testing.T) {
	const nClients = 64
	tp := newTopo(t, topoOptions{servers: 5, clientAddrs: nClients})
	tp.startServers()
	four := tp.baseConfig() + tp.clusterConfigN("routing", "jhash", "", 4)
	tp.start(four)
	tp.setupNodesN(4)
	clients := tp.clientSources(nClients)
	before := tp.lookup(clients)

	// The fifth server is prepared like the others, then added by SIGHUP.
	five := tp.baseConfig() + tp.clusterConfig("routing", "jhash", "")
	tp.writeConfig(five)
	tp.setupNodes()
	tp.writeConfig(four) // lookup reads the file: keep it as running until the reload
	wait := tp.runLoad(clients, 4*time.Second, "-timeout", "2s")
	time.Sleep(1500 * time.Millisecond)
	tp.writeConfig(five)
	reloadAt := time.Now()
	if err := tp.app.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 5*time.Second, "five servers in status", func() bool {
		return strings.Contains(tp.status(), "10.0.0.15")
	})
	results := wait()
	after := tp.lookup(clients)
	moved, toNew := 0, 0
	for _, c := range clients {
		if before[c] != after[c] {
			moved++
			if after[c] == 4 {
				toNew++
			}
		}
	}
	// Routing mode keeps the connections of moved clients across the change
	// (a transition window): not one request may fail.
	failed := 0
	for _, r := range results {
		if !r.ok {
			failed++
			t.Logf("failed request: %s at +%s: %s", r.src, r.at.Sub(reloadAt).Round(time.Millisecond), r.text)
			continue
		}
		want := before[r.src]
		if r.at.After(reloadAt.Add(500 * time.Millisecond)) {
			want = after[r.src]
		}
		if r.server != want && r.at.After(reloadAt.Add(500*time.Millisecond)) || r.at.Before(reloadAt) && r.server != want {
			t.Errorf("client %s answered by s%d at +%s, want s%d", r.src, r.server, r.at.Sub(reloadAt).Round(time.Millisecond), want)
		}
	}
	share := float64(moved) / nClients
	fmt.Fprintf(os.Stdout, "RELOAD REPORT: a fifth server added by SIGHUP under load: %d of %d clients moved (%.1f%%, ideal 20%%), %d of them to the new server; %d of %d requests failed\n",
		moved, nClients, 100*share, toNew, failed, len(results))
	if moved != toNew {
		t.Errorf("%d clients moved between old servers: only moves to the new server are expected", moved-toNew)
	}
	if share < 0.08 || share > 0.35 {
		t.Errorf("%.0f%% of clients moved, want close to 20%%", 100*share)
	}
	if failed > 0 {
		t.Errorf("%d requests failed across the reload", failed)
	}

	// A bad file: rejected, reported, nothing changes.
	bad := five + "\n[[route]]\nto = \"192.0.2.0/24\"\nvia = \"203.0.113.99\"\n"
	path := tp.writeConfig(bad)
	badLine := strings.Count(bad[:strings.Index(bad, `via = "203.0.113.99"`)], "\n") + 1
	out, err := tp.rtr.Run(tp.bin, "reload", "--socket", tp.sock)
	if err == nil {
		t.Fatalf("reload accepted a bad file: %s", out)
	}
	loc := fmt.Sprintf("%s:%d:", path, badLine)
	if !strings.Contains(out, loc) || !strings.Contains(out, "via") {
		t.Errorf("reload answer does not name %s and the key via:\n%s", loc, out)
	}
	tp.app.Signal(syscall.SIGHUP)
	harness.WaitFor(t, 5*time.Second, "the rejected SIGHUP reload in the log", func() bool {
		return strings.Count(tp.app.Log(), "reload rejected") >= 2
	})
	if !strings.Contains(tp.app.Log(), loc) {
		t.Errorf("the log does not name %s", loc)
	}
	res := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://"+ghostAddr+"/", "-src", strings.Join(clients, ",")))
	for _, c := range clients {
		if exp := fmt.Sprintf("s%d %s", after[c], c); res[c] != exp {
			t.Errorf("after the rejected reload %s got %q, want %q", c, res[c], exp)
		}
	}
}
