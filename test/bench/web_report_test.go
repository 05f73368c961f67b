package bench

import (
	"math"
	"strings"
	"testing"
)

// The GRWRK line as wrk 4.1 printed it from WrkScript on this machine, among its usual
// output.
const wrkOut = `Running 3s test @ http://203.0.113.10:8102/
  1 threads and 64 connections
GRWRK requests=20418 duration_us=3004121 p50_us=8211 p99_us=21873 connect=0 read=0 write=0 status=0 timeout=0
`

func TestParseWrk(t *testing.T) {
	w, err := ParseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	if w.Requests != 20418 || w.DurationUS != 3004121 || w.P50US != 8211 || w.P99US != 21873 || w.Errors() != 0 {
		t.Fatalf("parsed %+v", w)
	}
	if r := w.Rate(); math.Abs(r-20418/3.004121) > 1e-6 {
		t.Errorf("rate %v", r)
	}
	for _, bad := range []string{
		"Running 3s test\n", // no result line: wrk failed before done()
		"GRWRK requests=1 duration_us=0 p50_us=1 p99_us=1 connect=0 read=0 write=0 status=0 timeout=0",   // no duration
		"GRWRK requests=1 duration_us=10 p50_us=1 p99_us=1 connect=0 read=0 write=0 status=0",            // a field missing
		"GRWRK requests=-1 duration_us=10 p50_us=1 p99_us=1 connect=0 read=0 write=0 status=0 timeout=0", // not a count
		"GRWRK requests=1 duration_us=10 p50_us=1 p99_us=1 connect=0 read=0 write=0 status=0 timeout=0 x=1",
	} {
		if _, err := ParseWrk(bad); err == nil {
			t.Errorf("ParseWrk(%q) accepted it", bad)
		}
	}
}

func TestCombineWrk(t *testing.T) {
	c, err := CombineWrk([]Wrk{
		{Requests: 100, DurationUS: 2e6, P50US: 1000, P99US: 5000, Connect: 1},
		{Requests: 300, DurationUS: 3e6, P50US: 2000, P99US: 4000, Tmo: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Requests != 400 || c.DurationUS != 3e6 || c.P50US != 1750 || c.P99US != 5000 || c.Errors() != 3 {
		t.Fatalf("combined %+v", c)
	}
	if _, err := CombineWrk(nil); err == nil {
		t.Error("no results combined without an error")
	}
}

// Lines of /proc/net/tcp as Linux prints them: a listener, two TIME_WAIT sockets to port
// 8102 (0x1FA6), one to 8103, and an established one to 8102.
const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23 1 0000000000000000 100 0 0 10 0
   1: 0A6433C6:9EDB 0A7100CB:1FA6 06 00000000:00000000 03:0000139E 00000000     0        0 0 3 0000000000000000
   2: 0A6433C6:9EDC 0A7100CB:1FA6 06 00000000:00000000 03:0000139E 00000000     0        0 0 3 0000000000000000
   3: 0A6433C6:9EDD 0A7100CB:1FA7 06 00000000:00000000 03:0000139E 00000000     0        0 0 3 0000000000000000
   4: 0A6433C6:9EDE 0A7100CB:1FA6 01 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 20 4 30 10 -1
`

func TestCountTimeWait(t *testing.T) {
	for port, want := range map[uint16]int{8102: 2, 8103: 1, 80: 0} {
		got, err := CountTimeWait(procNetTCP, port)
		if err != nil || got != want {
			t.Errorf("port %d: %d TIME_WAIT (%v), want %d", port, got, err, want)
		}
	}
	if _, err := CountTimeWait(procNetTCP+"   5: 0A6433C6:9EDF 0A7100CB 06 0\n", 8102); err == nil {
		t.Error("a remote address without a port was accepted")
	}
}

func TestJudgeSlackAndLimit(t *testing.T) {
	tw := Figure{Better: Lower, Target: 1.2, Slack: 5}
	for _, tc := range []struct {
		k, g float64
		want string
	}{
		{0, 3, "met"},     // the kernel at zero: within the slack
		{0, 6, "NOT met"}, // beyond it
		{100, 125, "met"}, // 1.2 x 100 + 5
		{100, 126, "NOT met"},
		{math.NaN(), 1, "no data"},
	} {
		if _, v := tw.Judge(tc.k, tc.g); v != tc.want {
			t.Errorf("TIME_WAIT kernel %v, appliance %v: %q, want %q", tc.k, tc.g, v, tc.want)
		}
	}
	cpu := Figure{Better: Lower, ApplianceOnly: true, Limit: 3.35, Unit: "us"}
	for g, want := range map[float64]string{3.0: "met", 3.35: "met", 6.7: "NOT met", math.NaN(): "no data"} {
		if r, v := cpu.Judge(math.NaN(), g); v != want || !math.IsNaN(r) {
			t.Errorf("CPU %v: %q (ratio %v), want %q", g, v, r, want)
		}
	}
	if got := cpu.targetText(); got != "<= 3.35 us" {
		t.Errorf("target text %q", got)
	}
	if got := Unmet([]Figure{{Key: "c", Name: "cpu", Unit: "us", Better: Lower, ApplianceOnly: true, Limit: 3.35}},
		Samples{"c": {math.NaN()}}, Samples{"c": {6.7, 6.6, 6.8}}); len(got) != 1 || !strings.Contains(got[0], "6.70 us") {
		t.Errorf("Unmet: %q", got)
	}
}

func TestWebFiguresHaveTheTargets(t *testing.T) {
	targets := map[string]float64{}
	for _, f := range WebFigures() {
		targets[f.Key] = f.Target
	}
	for key, want := range map[string]float64{
		"close_c16_rate": 0.9, "close_c64_rate": 0.9, "close_many_c64_rate": 0.9,
		"close_c16_p99": 1.5, "close_many_c16_p99": 1.5,
		"keep_c16_rate": 0.85, "keep_many_c64_rate": 0.85,
		"close_c16_timewait": 1.2,
		"close_c1_rate":      0, "keep_c1_rate": 0, "close_c64_p50": 0,
	} {
		if got, ok := targets[key]; !ok || got != want {
			t.Errorf("%s: target %v (present %v), want %v", key, got, ok, want)
		}
	}
}

func TestNginxConfigListensOnEveryPort(t *testing.T) {
	c := NginxConfig("/tmp/x", []int{8099, 8100, 8101})
	for _, want := range []string{"listen 8099 ", "listen 8100 ", "listen 8101 ", "pid /tmp/x/nginx.pid;", "daemon off;", `return 200 "ok\n";`} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
}
