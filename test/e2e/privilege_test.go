package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// procStatus reads fields of /proc/PID/status (the kernel's account of the
// process, independent of anything the appliance says about itself); nil
// when the thread or process is gone.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// Capability bits (linux/capability.h).
const (
	capDACOverride = 1
	capNetAdmin    = 12
	capNetRaw      = 13
	capSysModule   = 16
	capSysAdmin    = 21
)

// TestRunsUnprivileged: once running, the appliance is the default user
// (nobody): /proc shows non-zero real, effective, saved and filesystem
// uids and gids, no supplementary group, no capability at all (in
// particular none of CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_DAC_OVERRIDE,
// CAP_NET_ADMIN, CAP_NET_RAW), in every thread. It still
// forwards, dispatches, health-checks, answers status, takes a reload
// (which adds a server) and stops cleanly, removing its TAP devices.
func TestRunsUnprivileged(t *testing.T) {
	const nClients = 16
	tp := newTopo(t, topoOptions{servers: 3, clientAddrs: nClients})
	tp.startServers()
	health := "  [cluster.health]\n  check = \"tcp\"\n  port = 80\n  interval = \"200ms\"\n  timeout = \"150ms\"\n"
	two := tp.baseConfig() + tp.clusterConfigN("routing", "jhash", "", 2) + health
	three := tp.baseConfig() + tp.clusterConfig("routing", "jhash", "") + health
	tp.writeConfig(three)
	tp.setupNodes() // every server is ready; the appliance starts with two
	tp.start(two)
	pid := tp.app.Pid()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	checked := 0
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		st := procStatus(t, tid)
		if st == nil {
			continue // the thread exited since the listing
		}
		checked++
		for _, k := range []string{"Uid", "Gid"} {
			for _, id := range strings.Fields(st[k]) {
				if id == "0" {
					t.Errorf("thread %d: %s: %s, want no 0 (real, effective, saved, filesystem)", tid, k, st[k])
				}
			}
		}
		if st["Groups"] != "" {
			t.Errorf("thread %d: supplementary groups %q, want none", tid, st["Groups"])
		}
		for _, k := range []string{"CapEff", "CapPrm", "CapAmb"} {
			caps, err := strconv.ParseUint(st[k], 16, 64)
			if err != nil {
				t.Fatalf("thread %d: %s %q", tid, k, st[k])
			}
			for _, c := range []int{capSysAdmin, capSysModule, capDACOverride, capNetAdmin, capNetRaw} {
				if caps&(1<<c) != 0 {
					t.Errorf("thread %d: %s %s holds capability %d", tid, k, st[k], c)
				}
			}
			if caps != 0 {
				t.Errorf("thread %d: %s = %s, want none", tid, k, st[k])
			}
		}
	}
	if checked == 0 || procStatus(t, pid) == nil {
		t.Fatalf("appliance pid %d: no thread could be read (%d listed)", pid, len(tasks))
	}
	t.Logf("appliance pid %d, %d threads: Uid %s, CapEff %s", pid, checked, procStatus(t, pid)["Uid"], procStatus(t, pid)["CapEff"])

	// It works: health checks bring both servers up, clients reach them.
	tp.waitServerState(0, true, 5*time.Second)
	tp.waitServerState(1, true, 5*time.Second)
	clients := tp.clientSources(nClients)
	tp.askAll(clients, tp.lookup(clients))

	// A reload adds the third server.
	tp.writeConfig(three)
	if out := tp.rtr.MustRun(tp.bin, "reload", "--socket", tp.sock); !strings.Contains(out, "reloaded") {
		t.Fatalf("reload as an unprivileged appliance: %s", out)
	}
	harness.WaitFor(t, 5*time.Second, "three servers in status", func() bool {
		return strings.Contains(tp.status(), tp.servers[2].addr.String())
	})
	tp.waitServerState(2, true, 5*time.Second)
	// A new UDP flow of a moved bucket still goes to its old server while
	// the transition window learns (routing mode keeps flows across planned
	// changes): ask once that is over.
	harness.WaitFor(t, 5*time.Second, "the transition window's learning phase over", func() bool {
		return !strings.Contains(tp.status(), "transition: learning")
	})
	tp.askAll(clients, tp.lookup(clients))

	// SIGTERM: a clean exit, and its TAP devices are gone.
	if err := tp.app.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := tp.app.Wait(10 * time.Second); err != nil {
		t.Fatalf("appliance after SIGTERM: %v\n%s", err, tp.app.Log())
	}
	if out, _ := tp.rtr.Run("ip", "-br", "link"); strings.Contains(out, "up0") || strings.Contains(out, "lan0") {
		t.Errorf("TAP devices left after SIGTERM:\n%s", out)
	}
}

// TestUnprivilegedReloadNeedingMore: the unprivileged appliance takes a
// reload that keeps its (unchanged, root-only) key file, and rejects,
// with a message and keeping the running configuration, one that needs
// what it no longer has: a replaced key file it cannot read, and a new
// interface (a new TAP device).
func TestUnprivilegedReloadNeedingMore(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 2})
	cfg := tp.baseConfig() + tp.clusterConfig("broadcast", "jhash", broadcastExtra(""))
	tp.start(cfg)
	reload := func() string {
		out, _ := tp.rtr.Run(tp.bin, "reload", "--socket", tp.sock)
		return out
	}
	// The same file again: the key, unchanged, is not read again.
	if out := reload(); !strings.Contains(out, "reloaded") {
		t.Fatalf("reload of the unchanged file: %s", out)
	}
	// A new key pair at the same path (root's, mode 0600).
	priv := filepath.Join(tp.h.ArtifactDir(), announceKeyFile)
	os.Remove(priv)
	os.Remove(filepath.Join(tp.h.ArtifactDir(), announcePubFile))
	tp.rtr.MustRun(tp.bin, "keygen", "--private", priv)
	out := reload()
	if !strings.Contains(out, "rejected") || !strings.Contains(out, "announce_key_file") || !strings.Contains(out, "takes a restart") {
		t.Errorf("reload with a replaced key file the appliance cannot read: %s", out)
	}
	t.Logf("reload with a replaced key file: %s", strings.TrimSpace(out))
	// A new interface.
	tp.writeConfig(cfg + "\n[[interface]]\nname = \"extra0\"\naddresses = [\"192.0.2.1/24\"]\n")
	if out := reload(); !strings.Contains(out, "rejected") {
		t.Errorf("reload adding an interface: %s", out)
	}
	if out, err := tp.rtr.Run("ip", "link", "show", "extra0"); err == nil {
		t.Errorf("a rejected reload created a TAP device:\n%s", out)
	}
	// The running configuration stays: it still announces.
	before := counter(t, tp.status(), "announcements_sent")
	harness.WaitFor(t, 5*time.Second, "announcements to go on after the rejected reloads", func() bool {
		return counter(t, tp.status(), "announcements_sent") > before+1
	})
	if n := counter(t, tp.status(), "announcements_failed"); n != 0 {
		t.Errorf("announcements_failed = %d", n)
	}
}
