package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// TestOpsLinkDeletedExitsForRestart: deleting the appliance's LAN TAP
// device under it is a link fault it acts on as documented: it logs the
// fault naming the link, tells its supervisor (systemd STATUS, then
// STOPPING=1), shuts down (removing the other TAP device it
// created, and stops answering on its control socket) and exits with status 1, which the
// shipped systemd unit answers with a restart (Restart=on-failure). Started
// again as the supervisor would, it creates the link anew and every client
// is answered again by its server.
func TestOpsLinkDeletedExitsForRestart(t *testing.T) {
	const nClients = 8
	tp := newTopo(t, topoOptions{servers: 2, clientAddrs: nClients})
	tp.startServers()
	text := tp.baseConfig() + tp.clusterConfig("routing", "jhash", "")
	// Started as the unit would (Type=notify): the supervisor hears why it stops.
	tp.writeConfig(text)
	nl := listenNotify(t, tp.h.ArtifactDir())
	tp.app = tp.rtr.Start("ghostrouter", "env", "NOTIFY_SOCKET="+nl.path, tp.bin, "run", "-c", tp.cfgPath)
	if msg := nl.next(t, 30*time.Second); !strings.HasPrefix(msg, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", msg)
	}
	tp.setupNodes()
	clients := tp.clientSources(nClients)
	want := tp.lookup(clients)
	tp.askAll(clients, want)

	// The supervisor's side of the contract: the unit restarts on failure.
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(filepath.Join(root, "configs", "ghostrouter.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Restart=(on-failure|always)$`).Match(unit) {
		t.Fatal("configs/ghostrouter.service does not restart the appliance when it exits with a failure")
	}

	deleted := time.Now()
	tp.rtr.MustRun("ip", "link", "del", "lan0")
	err = tp.app.Wait(30 * time.Second)
	if errors.Is(err, harness.ErrStillRunning) {
		t.Fatalf("the appliance still runs 30s after its LAN link was deleted:\n%s", tp.app.Log())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("the appliance exited with %v after its LAN link was deleted, want exit status 1:\n%s", err, tp.app.Log())
	}
	took := time.Since(deleted)
	if msg := nl.next(t, 5*time.Second); !strings.HasPrefix(msg, "STATUS=link fault on lan0: ") {
		t.Errorf("the supervisor was told %q, want STATUS=link fault on lan0: ...", msg)
	}
	if msg := nl.next(t, 5*time.Second); msg != "STOPPING=1" {
		t.Errorf("then %q, want STOPPING=1", msg)
	}
	log := tp.app.Log()
	if !strings.Contains(log, "link fault") || !strings.Contains(log, "interface=lan0") {
		t.Errorf("the log does not report the fault on lan0:\n%s", log)
	}
	if out, err := tp.rtr.Run("ip", "link", "show", "up0"); err == nil {
		t.Errorf("the TAP device up0 the appliance created outlived it:\n%s", out)
	}
	if out, err := tp.rtr.Run(tp.bin, "status", "--socket", tp.sock); err == nil {
		t.Errorf("the control socket still answers after the exit:\n%s", out)
	}
	fmt.Fprintf(os.Stdout, "LINK FAULT REPORT: lan0 deleted; the appliance exited with status %d after %s\n", ee.ExitCode(), took.Round(time.Millisecond))

	// The supervisor starts it again: the link is created anew, status
	// shows both links up, the clients are answered by their servers.
	tp.start(text)
	out := tp.status()
	if !regexp.MustCompile(`(?m)^\s+lan0 \S+ up:`).MatchString(out) || strings.Contains(out, "FAULTED") {
		t.Errorf("status after the restart does not show lan0 up:\n%s", out)
	}
	harness.WaitFor(t, 15*time.Second, "every server's MAC after the restart", func() bool {
		return !strings.Contains(tp.status(), "(unresolved)")
	})
	tp.askAll(clients, want)
}
