package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{nan, 5, nan}, 5},
		{[]float64{7}, 7},
	} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := Median([]float64{nan}); !math.IsNaN(got) {
		t.Errorf("Median([NaN]) = %v, want NaN", got)
	}
	if got := Median(nil); !math.IsNaN(got) {
		t.Errorf("Median(nil) = %v, want NaN", got)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // 1..100 ms, unsorted
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := Percentile(ds, tc.p); got != tc.want {
			t.Errorf("Percentile(1..100 ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if ds[0] != 100*time.Millisecond {
		t.Errorf("Percentile sorted its input in place")
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil, 50) = %v, want 0", got)
	}
}

func TestVerdict(t *testing.T) {
	up := Figure{Better: Higher, Target: 0.5}
	lat := Figure{Better: Lower, Target: 1.5}
	for _, tc := range []struct {
		f     Figure
		ratio float64
		want  string
	}{
		{up, 0.5, "met"}, {up, 0.49, "NOT met"}, {lat, 1.5, "met"}, {lat, 1.6, "NOT met"},
		{up, math.NaN(), "no data"}, {Figure{}, 3, ""},
	} {
		if got := tc.f.Verdict(tc.ratio); got != tc.want {
			t.Errorf("Figure{Better: %v, Target: %v}.Verdict(%v) = %q, want %q", tc.f.Better, tc.f.Target, tc.ratio, got, tc.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	k := Samples{TCPUp: {10, 12, 11}, HTTPP99: {1, 1, 1}, CPUPerPkt: {math.NaN()}}
	g := Samples{TCPUp: {1, 2, 3}, HTTPP99: {1.2, 1.4, 1.3}, CPUPerPkt: {4, 5, 6}}
	var b strings.Builder
	if err := WriteTable(&b, Figures, k, g); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 1+len(Figures) {
		t.Fatalf("WriteTable: %d lines, want %d:\n%s", len(lines), 1+len(Figures), b.String())
	}
	row := func(name string) []string {
		for _, l := range lines {
			if strings.HasPrefix(l, name) {
				return strings.Fields(strings.TrimPrefix(l, name))
			}
		}
		t.Fatalf("WriteTable: no row %q:\n%s", name, b.String())
		return nil
	}
	// unit kernel ghostrouter ratio better target...
	if r := row("TCP client->ghost, 4 streams"); strings.Join(r, " ") != "Gbit/s 11.0 2.00 0.182 higher >= 0.5 NOT met" {
		t.Errorf("TCP row = %q", strings.Join(r, " "))
	}
	if r := row("HTTP GET latency p99"); strings.Join(r, " ") != "ms 1.00 1.30 1.30 lower <= 1.5 met" {
		t.Errorf("p99 row = %q", strings.Join(r, " "))
	}
	if r := row("appliance CPU per UDP packet"); strings.Join(r, " ") != "us - 5.00 - lower <= 3.35 us NOT met" {
		t.Errorf("CPU row = %q", strings.Join(r, " "))
	}
	if r := row("ping RTT avg"); strings.Join(r, " ") != "ms - - - lower" {
		t.Errorf("ping row without samples = %q", strings.Join(r, " "))
	}
	// The numbers are right-aligned: every row's kernel column ends where the header's does.
	end := strings.Index(lines[0], "kernel") + len("kernel")
	for _, l := range lines[1:] {
		if len(l) < end || l[end-1] == ' ' || len(l) > end && l[end] != ' ' {
			t.Errorf("kernel column not right-aligned at %d in %q", end, l)
		}
	}
}

func TestParseIperf3(t *testing.T) {
	const udp = `warning: something on stderr
{"start": {}, "end": {"sum_sent": {"seconds": 5.0001, "bits_per_second": 135885843.4, "packets": 265410, "lost_packets": 0},
"sum_received": {"seconds": 5.0002, "bits_per_second": 134644636.7, "packets": 265408, "lost_packets": 2406}}}`
	got, err := ParseIperf3([]byte(udp))
	if err != nil {
		t.Fatalf("ParseIperf3(udp): %v", err)
	}
	want := Iperf3{SentBPS: 135885843.4, ReceivedBPS: 134644636.7, Seconds: 5.0001, SentPackets: 265410, LostPackets: 2406, RecvdPackets: 263002}
	if got != want {
		t.Errorf("ParseIperf3(udp) = %+v, want %+v", got, want)
	}
	if _, err := ParseIperf3([]byte(`{"start": {}, "end": {}, "error": "unable to connect to server: Connection refused"}`)); err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("ParseIperf3(error doc) = %v, want the iperf3 error", err)
	}
	if _, err := ParseIperf3([]byte("iperf3: error - no JSON")); err == nil {
		t.Errorf("ParseIperf3(no JSON) = nil error")
	}
	if _, err := ParseIperf3([]byte(`{"end": {}}`)); err == nil {
		t.Errorf("ParseIperf3(no sums) = nil error")
	}
}

func TestParsePing(t *testing.T) {
	const ok = `PING 203.0.113.10 (203.0.113.10) 56(84) bytes of data.

--- 203.0.113.10 ping statistics ---
20 packets transmitted, 20 received, 0% packet loss, time 969ms
rtt min/avg/max/mdev = 0.045/0.061/0.094/0.012 ms
`
	avg, loss, err := ParsePing(ok)
	if err != nil || avg != 61*time.Microsecond || loss != 0 {
		t.Errorf("ParsePing(ok) = %v, %v, %v; want 61µs, 0, nil", avg, loss, err)
	}
	const lossy = "20 packets transmitted, 15 received, 25% packet loss, time 969ms\nrtt min/avg/max/mdev = 1.5/2.25/3/0.5 ms\n"
	avg, loss, err = ParsePing(lossy)
	if err != nil || avg != 2250*time.Microsecond || loss != 25 {
		t.Errorf("ParsePing(lossy) = %v, %v, %v; want 2.25ms, 25, nil", avg, loss, err)
	}
	if _, loss, err := ParsePing("20 packets transmitted, 0 received, 100% packet loss, time 1s\n"); err == nil || loss != 100 {
		t.Errorf("ParsePing(all lost) = loss %v, err %v; want 100 and an error", loss, err)
	}
	if _, _, err := ParsePing("ping: connect: Network is unreachable\n"); err == nil {
		t.Errorf("ParsePing(no summary) = nil error")
	}
}

func TestParseProcStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis, as the kernel allows.
	const stat = "4242 (ghost) router) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0"
	got, err := ParseProcStatCPU(stat)
	if err != nil || got != 325 {
		t.Errorf("ParseProcStatCPU = %v, %v; want 325, nil", got, err)
	}
	if _, err := ParseProcStatCPU("4242 (x) S 1 2"); err == nil {
		t.Errorf("ParseProcStatCPU(short) = nil error")
	}
	if _, err := ParseProcStatCPU("garbage"); err == nil {
		t.Errorf("ParseProcStatCPU(garbage) = nil error")
	}
}

func TestParseSNMPUDP(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 263004 0 2406 265412 2406 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
`
	in, rb, err := ParseSNMPUDP(snmp)
	if err != nil || in != 263004 || rb != 2406 {
		t.Errorf("ParseSNMPUDP = %v, %v, %v; want 263004, 2406, nil", in, rb, err)
	}
	if _, _, err := ParseSNMPUDP("Ip: Forwarding\nIp: 1\n"); err == nil {
		t.Errorf("ParseSNMPUDP(no Udp) = nil error")
	}
}

func TestUnmetAndStrict(t *testing.T) {
	figs := []Figure{
		{Key: "up", Name: "up", Better: Higher, Target: 0.5},
		{Key: "lat", Name: "lat", Better: Lower, Target: 1.5},
		{Key: "none", Name: "none", Better: Higher},
		{Key: "gone", Name: "gone", Better: Higher, Target: 0.7},
	}
	kernel := Samples{"up": {10, 10, 10}, "lat": {1, 1, 1}, "none": {1}}
	app := Samples{"up": {6, 6, 6}, "lat": {2, 2, 2}, "none": {0.1}}
	got := Unmet(figs, kernel, app)
	if len(got) != 2 || !strings.HasPrefix(got[0], "lat: ratio 2.00") || !strings.HasPrefix(got[1], "gone: ratio -") {
		t.Fatalf("Unmet = %q, want lat (2.00 > 1.5) and gone (no data)", got)
	}
	// Without -strict a miss is logged; with it, it fails the test.
	for _, strict := range []bool{false, true} {
		rec := &recordingTB{TB: t}
		checkTargets(rec, strict, got)
		if rec.failed != strict || rec.logged == strict {
			t.Errorf("strict=%v: failed %v logged %v", strict, rec.failed, rec.logged)
		}
	}
}

// recordingTB notes Errorf and Logf instead of acting on them.
type recordingTB struct {
	testing.TB
	failed, logged bool
}

func (r *recordingTB) Errorf(string, ...any) { r.failed = true }
func (r *recordingTB) Logf(string, ...any)   { r.logged = true }
func (r *recordingTB) Helper()               {}

func TestWriteBaseline(t *testing.T) {
	figs := []Figure{
		{Key: "rate", Name: "rate", Unit: "req/s", Better: Higher},
		{Key: "cpu", Name: "cpu", Unit: "us", Better: Lower, ApplianceOnly: true},
		{Key: "bulk", Name: "bulk", Unit: "Gbit/s", Better: Higher},
	}
	k := Samples{"rate": {100, 120, 110}, "cpu": {math.NaN()}, "bulk": {10}}
	b := Samples{"rate": {50, 70, math.NaN()}, "cpu": {8, 6, 7}}
	g := Samples{"rate": {90, 80, 85}, "cpu": {4, 5, 3}, "bulk": {5}}
	var out strings.Builder
	if err := WriteBaseline(&out, figs, k, b, g); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if !strings.HasPrefix(lines[0], "figure ") {
		t.Errorf("header %q: the figure column is not left-aligned", lines[0])
	}
	rows := map[string]string{}
	for _, l := range lines[1:] {
		if l != strings.TrimSpace(l) {
			t.Errorf("row %q: padded on the left or right", l)
		}
		f := strings.Fields(l)
		rows[f[0]] = strings.Join(f[1:], " ")
	}
	want := map[string]string{
		// medians: kernel 110, bare 60, ghostrouter 85; 60/110, 85/60
		"rate": "req/s 110 60.0 85.0 0.545 1.42",
		// appliance-only: no kernel figure; 4/7
		"cpu": "us - 7.00 4.00 - 0.571",
	}
	if len(rows) != len(want) {
		t.Errorf("rows %v, want only the figures the bare loop has samples of: %v", rows, want)
	}
	for name, w := range want {
		if rows[name] != w {
			t.Errorf("row %s = %q, want %q", name, rows[name], w)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	stat := "cpu  100 5 200 600 40 0 55 0 7 0\ncpu0 50 2 100 300 20 0 30 0 7 0\nctxt 12345\n"
	c, err := ParseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	// user+nice+system+idle+iowait+irq+softirq+steal = 1000; guest (7) is inside user.
	if c != (CPUTimes{Idle: 640, Total: 1000}) {
		t.Errorf("ParseStatCPU = %+v, want {Idle:640 Total:1000}", c)
	}
	later, _ := ParseStatCPU("cpu  150 5 300 700 40 0 205 0 7 0\n") // user +50, system +100, idle +100, softirq +150
	if got := IdlePercent(c, later); got != 25 {                    // idle 100 of 400
		t.Errorf("IdlePercent = %v, want 25", got)
	}
	if got := IdlePercent(later, c); !math.IsNaN(got) {
		t.Errorf("IdlePercent backwards = %v, want NaN", got)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4\n", "cpu 1 2 3\n", "cpu 1 x 3 4\n"} {
		if _, err := ParseStatCPU(bad); err == nil {
			t.Errorf("ParseStatCPU(%q): no error", bad)
		}
	}
}
