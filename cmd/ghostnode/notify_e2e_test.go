package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPrivilegedRunNotify: `ghostnode run` started as systemd starts a
// Type=notify service (NOTIFY_SOCKET naming a socket the test reads) says
// READY=1 only once the server is set up: at that moment the ghost is on
// lo and ARP is suppressed. SIGTERM brings STOPPING=1.
func TestPrivilegedRunNotify(t *testing.T) {
	tp := newTopo(t)
	cfgText := strings.ReplaceAll(broadcastConfig, "MODE", "routing")
	cfgText = strings.Replace(cfgText, "broadcast_address = \"10.0.0.250\"\n", "", 1)
	cfgPath := filepath.Join(t.TempDir(), "ghost.toml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	next := func(timeout time.Duration) string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(timeout))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification within %v: %v", timeout, err)
		}
		return string(buf[:n])
	}
	run := tp.srv.Start("ghostnode-run", "env", "NOTIFY_SOCKET="+sock, tp.bin, "run", "-c", cfgPath, "--cluster", "web", "--id", "1", "--state-dir", tp.stateDir)
	msg := next(30 * time.Second)
	lo := tp.srv.MustRun("ip", "-o", "addr", "show", "dev", "lo")
	ignore, err := tp.srv.ReadSysctl("net.ipv4.conf.all.arp_ignore")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(msg, "READY=1\n") {
		t.Fatalf("first notification %q, want READY=1\nlog:\n%s", msg, run.Log())
	}
	if !strings.Contains(lo, "203.0.113.10/32") || strings.TrimSpace(ignore) != "1" {
		t.Errorf("READY=1 arrived before the setup: lo %q, arp_ignore %q", lo, ignore)
	}
	run.Signal(syscall.SIGTERM)
	if msg := next(10 * time.Second); msg != "STOPPING=1" {
		t.Errorf("after SIGTERM: %q, want STOPPING=1", msg)
	}
	if err := run.Wait(15 * time.Second); err != nil {
		t.Errorf("ghostnode run did not stop cleanly: %v\n%s", err, run.Log())
	}
}
