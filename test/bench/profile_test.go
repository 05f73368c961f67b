package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// EnvProfile=1 runs TestProfileAppliance.
const EnvProfile = "GHOSTROUTER_BENCH_PROFILE"

// profileSecs is how long perf samples each workload, which runs profileSecs+4 seconds.
const profileSecs = 5

// TestProfileAppliance profiles the appliance with perf (Linux perf_events: user and kernel
// stacks, which a Go CPU profile would stop at the system call) under the small-packet
// workload (iperf3 UDP, 64 B, unlimited) and the short-connection one (wrk, a new
// connection per request, 16 concurrent), and counts its context switches; the reports go
// to the test log and the artifact directory. Not part of make bench:
//
//	GHOSTROUTER_BENCH_PROFILE=1 go test -count=1 -run '^TestProfileAppliance$' -v ./test/bench/
func TestProfileAppliance(t *testing.T) {
	if os.Getenv(EnvProfile) != "1" {
		t.Skipf("runs only with %s=1", EnvProfile)
	}
	requireBenchTools(t)
	if _, err := exec.LookPath("perf"); err != nil {
		t.Fatalf("perf is missing (Debian: linux-perf): %v", err)
	}
	h := harness.New(t)
	tp := newTopo(t, h, Appliance, dispatchMAC)
	tp.startWeb()
	pid := strconv.Itoa(tp.app.Pid())
	for _, w := range []struct {
		name string
		load []string
	}{
		{"udp64", []string{"iperf3", "-c", ghostAddr, "-p", iperfPort, "-u", "-l", "64", "-b", "0", "-t", strconv.Itoa(profileSecs + 4)}},
		{"close_c16", []string{"wrk", "-t1", "-c16", "-d" + strconv.Itoa(profileSecs+4) + "s", "-H", "Connection: close", "-s", tp.wrkScript(),
			"http://" + ghostAddr + ":" + strconv.Itoa(webPortBase) + "/"}},
	} {
		var wg sync.WaitGroup
		var loadOut string
		wg.Add(1)
		go func() {
			defer wg.Done()
			loadOut, _ = tp.cli.Run(w.load...)
		}()
		time.Sleep(2 * time.Second) // the load reaches its steady state
		data := filepath.Join(h.ArtifactDir(), "perf-"+w.name+".data")
		cpu0, _ := tp.applianceCPU()
		stat, err := exec.Command("perf", "stat", "-e", "task-clock,context-switches,cpu-migrations", "-p", pid, "--", "sleep", "2").CombinedOutput()
		if err != nil {
			t.Errorf("perf stat: %v\n%s", err, stat)
		}
		cpu1, _ := tp.applianceCPU()
		if out, err := exec.Command("perf", "record", "-F", "499", "-g", "-o", data, "-p", pid, "--", "sleep", strconv.Itoa(profileSecs-2)).CombinedOutput(); err != nil {
			t.Fatalf("perf record: %v\n%s", err, out)
		}
		wg.Wait()
		report := func(args ...string) string {
			out, err := exec.Command("perf", append([]string{"report", "-i", data, "--stdio", "--percent-limit", "1.5"}, args...)...).CombinedOutput()
			if err != nil {
				t.Errorf("perf report: %v\n%s", err, out)
			}
			path := filepath.Join(h.ArtifactDir(), fmt.Sprintf("perf-%s-%s.txt", w.name, strings.Join(args, "")))
			os.WriteFile(path, out, 0o644)
			return string(out)
		}
		self := report("--no-children", "--sort", "sym", "-g", "none")
		incl := report("--children", "--sort", "sym", "-g", "none")
		t.Logf("%s: load output:\n%s\nappliance CPU over 2 s: %.2f s\nperf stat:\n%s\nself time by symbol:\n%s\ninclusive time by symbol:\n%s",
			w.name, tail(loadOut, 3), float64(cpu1-cpu0)/ClockTicks, stat, headLines(self, 45), headLines(incl, 45))
	}
}

// headLines is the first n non-comment lines of s.
func headLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
			continue
		}
		out = append(out, l)
		if len(out) == n {
			break
		}
	}
	return strings.Join(out, "\n")
}
