package bench

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The short-connection workloads: a real HTTP load generator (wrk) on the client against
// a real web server (nginx) on every server, a new connection per request and keep-alive,
// at several concurrencies, from one client address and from several.

// WebRun is one wrk workload.
type WebRun struct {
	Key       string // prefix of its figures' keys
	Conc      int    // concurrent connections in all
	Sources   int    // client addresses, one wrk process each (Conc/Sources connections)
	KeepAlive bool   // false: "Connection: close", a new TCP connection per request
	// TimeWait and CPU say whether the run also reports the clients' TIME_WAIT growth and
	// the appliance's CPU per request.
	TimeWait, CPU bool
}

// WebRuns are the workloads of every round, in order.
func WebRuns() []WebRun {
	return []WebRun{
		{Key: "close_c1", Conc: 1, Sources: 1},
		{Key: "close_c16", Conc: 16, Sources: 1, TimeWait: true},
		{Key: "close_c64", Conc: 64, Sources: 1, TimeWait: true, CPU: true},
		{Key: "close_many_c16", Conc: 16, Sources: 4},
		{Key: "close_many_c64", Conc: 64, Sources: 4, TimeWait: true},
		{Key: "keep_c1", Conc: 1, KeepAlive: true, Sources: 1},
		{Key: "keep_c16", Conc: 16, KeepAlive: true, Sources: 1},
		{Key: "keep_c64", Conc: 64, KeepAlive: true, Sources: 1, CPU: true},
		{Key: "keep_many_c16", Conc: 16, KeepAlive: true, Sources: 4},
		{Key: "keep_many_c64", Conc: 64, KeepAlive: true, Sources: 4},
	}
}

func (w WebRun) label() string {
	how := "new conn"
	if w.KeepAlive {
		how = "keep-alive"
	}
	from := "1 client addr"
	if w.Sources > 1 {
		from = strconv.Itoa(w.Sources) + " client addrs"
	}
	return fmt.Sprintf("HTTP %s, c=%d, %s", how, w.Conc, from)
}

// Keys of a web run's figures.
func (w WebRun) RateKey() string     { return w.Key + "_rate" }
func (w WebRun) P50Key() string      { return w.Key + "_p50" }
func (w WebRun) P99Key() string      { return w.Key + "_p99" }
func (w WebRun) TimeWaitKey() string { return w.Key + "_timewait" }
func (w WebRun) CPUKey() string      { return w.Key + "_cpu" }
func (w WebRun) IdleKey() string     { return w.Key + "_idle" }

// Targets of the short-connection figures, ratios ghostrouter/kernel.
const (
	TargetNewConnRate = 0.9  // requests/s, new connection each, 16 and 64 concurrent
	TargetNewConnP99  = 1.5  // p99 latency, the same runs
	TargetKeepRate    = 0.85 // requests/s with keep-alive, 16 and 64 concurrent
	TargetTimeWait    = 1.2  // the clients' TIME_WAIT growth per request
	// TimeWaitSlack: TIME_WAIT per 1000 requests the appliance may add to 1.2 x the
	// kernel's (0.5% of the connections): the kernel's is near zero, so the ratio alone
	// would judge noise.
	TimeWaitSlack = 5
)

// WebFigures are the rows of the short-connection workloads, with their targets.
func WebFigures() []Figure {
	var figs []Figure
	for _, w := range WebRuns() {
		rate := Figure{Key: w.RateKey(), Name: w.label() + ", rate", Unit: "req/s", Better: Higher}
		p50 := Figure{Key: w.P50Key(), Name: w.label() + ", p50", Unit: "ms", Better: Lower}
		p99 := Figure{Key: w.P99Key(), Name: w.label() + ", p99", Unit: "ms", Better: Lower}
		if w.Conc >= 16 {
			if w.KeepAlive {
				rate.Target = TargetKeepRate
			} else {
				rate.Target, p99.Target = TargetNewConnRate, TargetNewConnP99
			}
		}
		figs = append(figs, rate, p50, p99)
		if w.Conc >= 16 {
			// Whether the run used up the machine or waited on wake-ups: /proc/stat's idle
			// share of every CPU over the run.
			figs = append(figs, Figure{Key: w.IdleKey(), Name: w.label() + ", machine idle", Unit: "% CPUs", Better: Lower})
		}
		if w.TimeWait {
			figs = append(figs, Figure{Key: w.TimeWaitKey(), Name: w.label() + ", client TIME_WAIT", Unit: "/1000 req",
				Better: Lower, Target: TargetTimeWait, Slack: TimeWaitSlack})
		}
		if w.CPU {
			figs = append(figs, Figure{Key: w.CPUKey(), Name: w.label() + ", appliance CPU", Unit: "us/req",
				Better: Lower, ApplianceOnly: true})
		}
	}
	return figs
}

// WrkScript is the Lua script given to wrk: at the end it prints one line the benchmark
// parses (ParseWrk) instead of wrk's human-readable summary.
const WrkScript = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("GRWRK requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
`

// Wrk is one wrk process's result.
type Wrk struct {
	Requests           int64
	DurationUS         int64 // the run's length, microseconds
	P50US, P99US       int64 // latency percentiles, microseconds (request written to response read)
	Connect, Read      int64 // socket errors
	Write, Status, Tmo int64 // socket errors; non-2xx/3xx responses; timeouts
}

// Rate is requests per second.
func (w Wrk) Rate() float64 {
	if w.DurationUS <= 0 {
		return 0
	}
	return float64(w.Requests) / (float64(w.DurationUS) / 1e6)
}

// Errors is every error wrk counted.
func (w Wrk) Errors() int64 { return w.Connect + w.Read + w.Write + w.Status + w.Tmo }

// ParseWrk reads the GRWRK line WrkScript prints from wrk's output.
func ParseWrk(out string) (Wrk, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "GRWRK ")
		if !ok {
			continue
		}
		var w Wrk
		fields := map[string]*int64{
			"requests": &w.Requests, "duration_us": &w.DurationUS, "p50_us": &w.P50US, "p99_us": &w.P99US,
			"connect": &w.Connect, "read": &w.Read, "write": &w.Write, "status": &w.Status, "timeout": &w.Tmo,
		}
		seen := 0
		for _, kv := range strings.Fields(rest) {
			k, v, ok := strings.Cut(kv, "=")
			p := fields[k]
			if !ok || p == nil {
				return Wrk{}, fmt.Errorf("wrk: unknown field %q in %q", kv, rest)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return Wrk{}, fmt.Errorf("wrk: %s=%q: not a count", k, v)
			}
			*p = n
			seen++
		}
		if seen != len(fields) {
			return Wrk{}, fmt.Errorf("wrk: %d of %d fields in %q", seen, len(fields), rest)
		}
		if w.DurationUS <= 0 {
			return Wrk{}, fmt.Errorf("wrk: duration %d us", w.DurationUS)
		}
		return w, nil
	}
	return Wrk{}, fmt.Errorf("wrk: no result line in %q", clip([]byte(out)))
}

// CombineWrk merges the results of wrk processes run side by side: requests and errors
// add up, the rate is over the longest run, p50 is the request-weighted mean of theirs
// and p99 the largest (an upper bound of the merged p99).
func CombineWrk(ws []Wrk) (Wrk, error) {
	if len(ws) == 0 {
		return Wrk{}, errors.New("wrk: no result")
	}
	var c Wrk
	var p50 float64
	for _, w := range ws {
		c.Requests += w.Requests
		c.DurationUS = max(c.DurationUS, w.DurationUS)
		c.P99US = max(c.P99US, w.P99US)
		p50 += float64(w.P50US) * float64(w.Requests)
		c.Connect, c.Read, c.Write, c.Status, c.Tmo = c.Connect+w.Connect, c.Read+w.Read, c.Write+w.Write, c.Status+w.Status, c.Tmo+w.Tmo
	}
	if c.Requests > 0 {
		c.P50US = int64(p50 / float64(c.Requests))
	}
	return c, nil
}

// tcpTimeWait is the state number of TIME_WAIT in /proc/net/tcp.
const tcpTimeWait = 6

// CountTimeWait counts the IPv4 sockets in TIME_WAIT to remote port port in the text of
// /proc/net/tcp.
func CountTimeWait(procNetTCP string, port uint16) (int, error) {
	n := 0
	for i, line := range strings.Split(procNetTCP, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 4 {
			continue
		}
		_, rport, ok := strings.Cut(f[2], ":")
		if !ok {
			return 0, fmt.Errorf("/proc/net/tcp line %d: remote address %q", i+1, f[2])
		}
		p, err1 := strconv.ParseUint(rport, 16, 16)
		st, err2 := strconv.ParseUint(f[3], 16, 8)
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("/proc/net/tcp line %d: %v", i+1, err)
		}
		if uint16(p) == port && st == tcpTimeWait {
			n++
		}
	}
	return n, nil
}

// NginxConfig is the configuration of one server's nginx: one process, no logs of
// requests, a short fixed answer on every port of ports, everything under dir.
func NginxConfig(dir string, ports []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server {
`, dir)
	for _, p := range ports {
		fmt.Fprintf(&b, "    listen %d backlog=4096;\n", p)
	}
	b.WriteString(`    location / { default_type text/plain; return 200 "ok\n"; }
  }
}
`)
	return b.String()
}
