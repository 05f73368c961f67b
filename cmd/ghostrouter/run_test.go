package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ghostrouter/ghostrouter/cmd/internal/sdnotify"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/test/kit"
)

// runConfig is an appliance with every part that starts goroutines: a
// routing cluster with TCP health checks, a broadcast cluster that
// announces, VRRP, BGP, the metrics endpoint and the control socket.
func runConfig(t *testing.T, dir string) (*config.Config, string) {
	t.Helper()
	text := fmt.Sprintf(`[router]
log_level = "error"
control_socket = %q
metrics_address = "127.0.0.1:9469"

[[interface]]
name = "up0"
addresses = ["198.51.100.2/24"]
mac = "02:00:5e:00:0a:01"

[[interface]]
name = "lan0"
addresses = ["10.0.0.2/24"]
mac = "02:00:5e:00:0a:02"

[[route]]
to = "0.0.0.0/0"
via = "198.51.100.254"

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "routing"

  [[cluster.server]]
  id = 0
  address = "10.0.0.11"

  [[cluster.server]]
  id = 1
  address = "10.0.0.12"

  [cluster.health]
  check = "tcp"
  port = 80
  interval = "100ms"
  timeout = "50ms"

[[cluster]]
name = "mail"
address = "203.0.113.20"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
announce_key_file = %q

  [[cluster.server]]
  id = 0
  address = "10.0.0.21"

[[vrrp]]
interface = "lan0"
vrid = 52
priority = 150
interval = "100ms"
addresses = ["10.0.0.1"]

[bgp]
asn = 65010
router_id = "198.51.100.2"
hold_time = "9s"

  [[bgp.neighbor]]
  address = "198.51.100.254"
  asn = 65000
`, filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "announce.key"))
	var out, errs strings.Builder
	if rc := cmdKeygen([]string{"--private", filepath.Join(dir, "announce.key")}, &out, &errs); rc != 0 {
		t.Fatalf("keygen: %s", errs.String())
	}
	path := filepath.Join(dir, "ghostrouter.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Router.MetricsAddress = "127.0.0.1:0" // any free port (the file wants one)
	return cfg, path
}

// socketLinks are endpoints over socket pairs, one per interface of cfg;
// the test's ends stay open (and silent) until the test ends.
func socketLinks(t *testing.T, cfg *config.Config) map[string]*tap.Endpoint {
	t.Helper()
	eps := map[string]*tap.Endpoint{}
	for _, ic := range cfg.Interfaces {
		local, _ := kit.Pair(t, ic.Name) // the test's end stays silent
		ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: ic.Name, Files: []*os.File{local}, MAC: ic.MAC.HardwareAddr(), MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		eps[ic.Name] = ep
	}
	return eps
}

// TestRunOwnsItsGoroutines: the appliance runs with every part that starts
// goroutines (control socket with a request in progress and an idle
// connection, metrics with a scrape, health checks, announcements, VRRP,
// BGP, systemd notifications, a reload); once its context ends and
// runAppliance returns, not one goroutine it started is left (goleak).
func TestRunOwnsItsGoroutines(t *testing.T) {
	// Goroutines of the test binary and the runtime that were there before.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	cfg, path := runConfig(t, dir)
	eps := socketLinks(t, cfg)

	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify.sock"))
	sd, err := sdnotify.FromEnv()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan net.Addr, 1)
	done := make(chan int, 1)
	log := slog.New(slog.DiscardHandler)
	go func() {
		done <- runAppliance(ctx, cfg, path, log, runOptions{notify: sd, eps: eps, started: func(a net.Addr) { ready <- a }})
	}()
	var metrics net.Addr
	select {
	case metrics = <-ready:
	case code := <-done:
		t.Fatalf("runAppliance returned %d before it was ready", code)
	case <-time.After(20 * time.Second):
		t.Fatal("the appliance was not ready within 20s")
	}
	if metrics == nil {
		t.Fatal("no metrics listener")
	}

	// Use every part: status, a reload, a scrape, and a control connection
	// left open without a request.
	sock := cfg.Router.ControlSocket
	if st, err := request(sock, "status"); err != nil || len(st.Clusters) != 2 || len(st.Links) != 2 {
		t.Fatalf("status: %v %+v", err, st)
	}
	if rep, err := requestReload(sock); err != nil || !rep.OK {
		t.Fatalf("reload: %v %+v", err, rep)
	}
	// A file the router refuses (a new next hop that never answers ARP: the
	// test's end of up0 stays silent): nothing committed, routes as before.
	before, err := request(sock, "status")
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(text), `via = "198.51.100.254"`, `via = "198.51.100.99"`, 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := requestReload(sock)
	if err != nil || rep.OK || rep.Failed != stepRouter || len(rep.Committed) != 0 || !strings.Contains(rep.Error, "198.51.100.99") {
		t.Errorf("reload of a file the router refuses: %v %+v", err, rep)
	}
	t.Logf("refused reload: %s", rep.Summary())
	if after, err := request(sock, "status"); err != nil || fmt.Sprint(after.Routes) != fmt.Sprint(before.Routes) {
		t.Errorf("routes after the refused reload: %v %v, want %v", err, after.Routes, before.Routes)
	}
	resp, err := http.Get("http://" + metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(300 * time.Millisecond) // a few health-check and VRRP rounds

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("runAppliance returned %d after its context ended, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("runAppliance did not return within 20s of its context ending")
	}
	// The idle control connection was closed by the appliance.
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the idle control connection: read %v, want EOF (closed by the appliance)", err)
	}
}
