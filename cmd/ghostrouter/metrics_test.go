package main

import (
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/stage"
)

func testStatus() Status {
	return Status{
		Clusters: []ClusterStatus{{
			Name: "web", Version: 3,
			Counters: map[string]uint64{"packets": 10, "drop_no_mac": 2},
			Servers: []ServerStatus{
				{ID: 0, Address: "10.0.0.11", Up: true, Buckets: 2048, Packets: 6, Bytes: 600},
				{ID: 1, Address: "10.0.0.12", Up: false, Buckets: 0, Packets: 4, Bytes: 400, Transitions: 1},
			},
		}},
		Links: []LinkStatus{{Name: "lan0", State: "up", Counters: map[string]uint64{"rx_frames": 7, "tx_bytes": 70}},
			{Name: "up0", State: "faulted", Fault: "link up0: receive loop stopped: file descriptor in bad state"}},
		Counters: map[string]uint64{"ttl_exceeded": 1, "fastpath_forwarded": 5},
		Stages:   []string{"dispatch", "ttl-guard"},
		Verdicts: []stage.Count{
			{Stage: "dispatch", Kind: "dropped", Reason: "no_mac", N: 2},
			{Stage: "ttl-guard", Kind: "answered", Reason: "ttl_exceeded", N: 1},
		},
	}
}

// scrape returns the text exposition of m.
func scrape(t *testing.T, m *metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept", "text/plain")
	m.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body.String())
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestMetrics(t *testing.T) {
	m := newMetrics(testStatus, func() (uint64, uint64, uint64) { return 2, 30, 4 })
	m.HealthChecked("web", 0, 3*time.Millisecond, nil)
	m.HealthChecked("web", 1, 500*time.Millisecond, errors.New("timeout"))
	m.TableBuilt("web", 200*time.Microsecond)
	out := scrape(t, m)
	for _, want := range []string{
		"# TYPE ghostrouter_cluster_packets_total counter\n",
		`ghostrouter_cluster_packets_total{cluster="web"} 10` + "\n",
		`ghostrouter_cluster_drop_no_mac_total{cluster="web"} 2` + "\n",
		"# TYPE ghostrouter_server_up gauge\n",
		`ghostrouter_server_up{address="10.0.0.11",cluster="web",server="0"} 1` + "\n",
		`ghostrouter_server_up{address="10.0.0.12",cluster="web",server="1"} 0` + "\n",
		`ghostrouter_server_buckets{address="10.0.0.11",cluster="web",server="0"} 2048` + "\n",
		`ghostrouter_server_packets_total{address="10.0.0.12",cluster="web",server="1"} 4` + "\n",
		`ghostrouter_link_rx_frames_total{interface="lan0"} 7` + "\n",
		`ghostrouter_link_up{interface="lan0"} 1` + "\n",
		`ghostrouter_link_up{interface="up0"} 0` + "\n",
		"ghostrouter_ttl_exceeded_total 1\n",
		"# TYPE ghostrouter_stage_frames_total counter\n",
		`ghostrouter_stage_frames_total{reason="no_mac",stage="dispatch",verdict="dropped"} 2` + "\n",
		`ghostrouter_stage_frames_total{reason="ttl_exceeded",stage="ttl-guard",verdict="answered"} 1` + "\n",
		"# TYPE ghostrouter_health_check_duration_seconds histogram\n",
		`ghostrouter_health_check_duration_seconds_bucket{cluster="web",result="ok",server="0",le="0.005"} 1` + "\n",
		`ghostrouter_health_check_duration_seconds_bucket{cluster="web",result="ok",server="0",le="0.0025"} 0` + "\n",
		`ghostrouter_health_check_duration_seconds_count{cluster="web",result="failed",server="1"} 1` + "\n",
		`ghostrouter_table_build_duration_seconds_count{cluster="web"} 1` + "\n",
		"ghostrouter_capture_sessions_total 2\n",
		"ghostrouter_capture_dropped_frames_total 4\n",
		"# TYPE go_goroutines gauge\n",
		"# TYPE process_cpu_seconds_total counter\n",
		"ghostrouter_build_info{commit=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", out)
	}
	promtoolCheck(t, out)
}

// promtoolCheck runs Prometheus' own linter on an exposition: names, units,
// suffixes, HELP and TYPE lines.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not installed (Debian package prometheus)")
		}
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestStatusShowsStages: the status text names the datapath's stages in
// order and lists each stage's dropped and answered frames by reason.
func TestStatusShowsStages(t *testing.T) {
	st := testStatus()
	var b strings.Builder
	printStatus(&b, &st)
	out := b.String()
	for _, want := range []string{
		"datapath: dispatch -> ttl-guard -> netstack\n",
		"  dispatch   dropped   no_mac        2\n",
		"  ttl-guard  answered  ttl_exceeded  1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	st.Verdicts = nil
	b.Reset()
	printStatus(&b, &st)
	if !strings.Contains(b.String(), "no frame dropped or answered") {
		t.Errorf("status without verdicts:\n%s", b.String())
	}
}
