package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Better says which way a figure improves.
type Better int

const (
	Higher Better = iota // throughput, rates
	Lower                // latency, CPU time
)

func (b Better) String() string {
	if b == Lower {
		return "lower"
	}
	return "higher"
}

// Figure is one row of the table.
type Figure struct {
	Key    string  // stable identifier, the key of Samples
	Name   string  // the row's label
	Unit   string  // of the values
	Better Better  // which way is good
	Target float64 // the speed target for the ratio ghostrouter/kernel; 0: none
	// ApplianceOnly figures have no kernel value (the appliance's own CPU time).
	ApplianceOnly bool
	// Limit is the target of an ApplianceOnly figure: a bound on the appliance's own
	// value (at most, for Lower; at least, for Higher); 0: none.
	Limit float64
	// Slack, for a Lower figure with a Target, also meets the target when the
	// appliance's value is at most Target x kernel + Slack (in the figure's unit): for
	// counts whose kernel value may be near zero, where a ratio alone says little.
	Slack float64
}

// Judge returns the ratio ghostrouter/kernel of the medians k and g (NaN for an
// ApplianceOnly figure) and the verdict on the figure's target: "" when it has none.
func (f Figure) Judge(k, g float64) (ratio float64, verdict string) {
	if f.ApplianceOnly {
		switch {
		case f.Limit == 0:
			return math.NaN(), ""
		case math.IsNaN(g):
			return math.NaN(), "no data"
		case f.Better == Lower && g <= f.Limit, f.Better == Higher && g >= f.Limit:
			return math.NaN(), "met"
		default:
			return math.NaN(), "NOT met"
		}
	}
	r := Ratio(k, g)
	if f.Slack > 0 && f.Better == Lower && !math.IsNaN(k) && !math.IsNaN(g) {
		if g <= f.Target*k+f.Slack {
			return r, "met"
		}
		return r, "NOT met"
	}
	return r, f.Verdict(r)
}

// Keys of the figures.
const (
	TCPUp      = "tcp_up"
	TCPDown    = "tcp_down"
	TCPPlain   = "tcp_plain"
	UDPRecv    = "udp_recv"
	UDPSent    = "udp_sent"
	UDPShare   = "udp_share"
	HTTPRate   = "http_rate"
	HTTPP50    = "http_p50"
	HTTPP99    = "http_p99"
	PingAvg    = "ping_avg"
	CPUPerPkt  = "cpu_per_pkt"
	CPUPercent = "cpu_percent"
)

// Figures are the rows, in order, with the speed targets (README.md lists them).
var Figures = []Figure{
	{Key: TCPUp, Name: "TCP client->ghost, 4 streams", Unit: "Gbit/s", Better: Higher, Target: 0.5},
	{Key: TCPDown, Name: "TCP ghost->client, 4 streams", Unit: "Gbit/s", Better: Higher, Target: 0.5},
	{Key: TCPPlain, Name: "TCP client->server 0, plain routing", Unit: "Gbit/s", Better: Higher},
	{Key: UDPRecv, Name: "UDP 64 B to ghost, delivered", Unit: "kpps", Better: Higher, Target: 0.8},
	{Key: UDPSent, Name: "UDP 64 B to ghost, offered by sender", Unit: "kpps", Better: Higher},
	{Key: UDPShare, Name: "UDP 64 B to ghost, delivered/offered", Unit: "%", Better: Higher},
	{Key: HTTPRate, Name: "HTTP GET, new connection each", Unit: "req/s", Better: Higher},
	{Key: HTTPP50, Name: "HTTP GET latency p50", Unit: "ms", Better: Lower},
	{Key: HTTPP99, Name: "HTTP GET latency p99", Unit: "ms", Better: Lower, Target: 1.5},
	{Key: PingAvg, Name: "ping RTT avg", Unit: "ms", Better: Lower},
	{Key: CPUPerPkt, Name: "appliance CPU per UDP packet", Unit: "us", Better: Lower, ApplianceOnly: true, Limit: 3.35},
	{Key: CPUPercent, Name: "appliance CPU during UDP", Unit: "% core", Better: Lower, ApplianceOnly: true},
}

// Samples holds one value per round for each figure key; NaN marks a failed measurement.
type Samples map[string][]float64

// Add appends v to key's samples.
func (s Samples) Add(key string, v float64) { s[key] = append(s[key], v) }

// Median is the median of the values that are not NaN; NaN when there are none.
func Median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds; 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// Ratio is ghostrouter/kernel; NaN when either is missing or the kernel's is 0.
func Ratio(kernel, appliance float64) float64 {
	if math.IsNaN(kernel) || math.IsNaN(appliance) || kernel == 0 {
		return math.NaN()
	}
	return appliance / kernel
}

// Verdict says whether ratio meets the figure's target: "" when it has none.
func (f Figure) Verdict(ratio float64) string {
	switch {
	case f.Target == 0:
		return ""
	case math.IsNaN(ratio):
		return "no data"
	case f.Better == Higher && ratio >= f.Target, f.Better == Lower && ratio <= f.Target:
		return "met"
	default:
		return "NOT met"
	}
}

func (f Figure) targetText() string {
	switch {
	case f.ApplianceOnly && f.Limit != 0 && f.Better == Lower:
		return "<= " + strconv.FormatFloat(f.Limit, 'f', -1, 64) + " " + f.Unit
	case f.ApplianceOnly && f.Limit != 0:
		return ">= " + strconv.FormatFloat(f.Limit, 'f', -1, 64) + " " + f.Unit
	case f.Target == 0:
		return ""
	case f.Better == Higher:
		return ">= " + strconv.FormatFloat(f.Target, 'f', -1, 64)
	case f.Slack > 0:
		return "<= " + strconv.FormatFloat(f.Target, 'f', -1, 64) + " +" + strconv.FormatFloat(f.Slack, 'f', -1, 64)
	default:
		return "<= " + strconv.FormatFloat(f.Target, 'f', -1, 64)
	}
}

// num formats a value with three significant digits at least, "-" for NaN.
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// WriteTable writes the side-by-side table of medians: figure, unit, kernel, ghostrouter,
// ratio ghostrouter/kernel, which way is better, and the target with its verdict.
func WriteTable(w io.Writer, figs []Figure, kernel, appliance Samples) error {
	// Numbers read best right-aligned; labels, left-aligned: pad them all to one width.
	width := nameWidth(figs)
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	tw2 := len("<= 1.5 NOT met")
	for _, f := range figs {
		tw2 = max(tw2, len(f.targetText())+len(" no data"))
	}
	fmt.Fprintf(tw, "%-*s\tunit\tkernel\tghostrouter\tratio g/k\tbetter\t%-*s\t\n", width, "figure", tw2, "target")
	for _, f := range figs {
		k, g := Median(kernel[f.Key]), Median(appliance[f.Key])
		if f.ApplianceOnly {
			k = math.NaN()
		}
		r, v := f.Judge(k, g)
		tgt := f.targetText()
		if v != "" {
			tgt += " " + v
		}
		fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t%s\t%s\t%-*s\t\n", width, f.Name, f.Unit, num(k), num(g), num(r), f.Better, tw2, tgt)
	}
	return flushAligned(w, tw, &buf)
}

// nameWidth is the width of the figure column: the longest name, or the header's.
func nameWidth(figs []Figure) int {
	width := len("figure")
	for _, f := range figs {
		width = max(width, len(f.Name))
	}
	return width
}

// flushAligned flushes tw, a right-aligning tabwriter over buf, to w. Right alignment pads
// every line on the left by the column padding; that is dropped, and the trailing blanks.
func flushAligned(w io.Writer, tw *tabwriter.Writer, buf *bytes.Buffer) error {
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		if line == "" {
			continue
		}
		line = strings.TrimRight(strings.TrimPrefix(line, "  "), " \n")
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

// WriteSamples writes every round's value, kernel and ghostrouter, for each figure.
func WriteSamples(w io.Writer, figs []Figure, kernel, appliance Samples) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tkernel, per round\tghostrouter, per round")
	for _, f := range figs {
		fmt.Fprintf(tw, "%s (%s)\t%s\t%s\n", f.Name, f.Unit, joinNums(kernel[f.Key]), joinNums(appliance[f.Key]))
	}
	return tw.Flush()
}

func joinNums(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = num(x)
	}
	return strings.Join(s, " ")
}

// Iperf3 is what the benchmark reads from `iperf3 -J` on the client.
type Iperf3 struct {
	SentBPS      float64 // sender's bits per second
	ReceivedBPS  float64 // receiver's bits per second (TCP: what the benchmark reports)
	Seconds      float64 // the sender's measured duration
	SentPackets  int64   // UDP: datagrams sent
	LostPackets  int64   // UDP: as the receiver counted them
	RecvdPackets int64   // UDP: datagrams the receiving iperf3 read (sent - lost)
}

// ParseIperf3 reads iperf3's JSON output. Anything before the first '{' (a warning on
// stderr, which NS.Run mixes in) is skipped. iperf3's own "error" is returned as an error.
func ParseIperf3(out []byte) (Iperf3, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return Iperf3{}, fmt.Errorf("iperf3: no JSON in output: %q", clip(out))
	}
	var doc struct {
		Error string `json:"error"`
		End   struct {
			SumSent     *iperfSum `json:"sum_sent"`
			SumReceived *iperfSum `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.NewDecoder(bytes.NewReader(out[i:])).Decode(&doc); err != nil {
		return Iperf3{}, fmt.Errorf("iperf3: %v in %q", err, clip(out))
	}
	if doc.Error != "" {
		return Iperf3{}, fmt.Errorf("iperf3: %s", doc.Error)
	}
	s, r := doc.End.SumSent, doc.End.SumReceived
	if s == nil || r == nil {
		return Iperf3{}, errors.New("iperf3: no end.sum_sent / end.sum_received in the output")
	}
	return Iperf3{
		SentBPS: s.BitsPerSecond, ReceivedBPS: r.BitsPerSecond, Seconds: s.Seconds,
		SentPackets: s.Packets, LostPackets: r.LostPackets, RecvdPackets: r.Packets - r.LostPackets,
	}, nil
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Packets       int64   `json:"packets"`
	LostPackets   int64   `json:"lost_packets"`
}

// ParsePing reads the summary of `ping -q`: the average RTT and the packet loss.
func ParsePing(out string) (avg time.Duration, lossPercent float64, err error) {
	lossFound, rttFound := false, false
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "% packet loss"); i >= 0 {
			j := strings.LastIndexAny(line[:i], " ,") + 1
			if lossPercent, err = strconv.ParseFloat(line[j:i], 64); err != nil {
				return 0, 0, fmt.Errorf("ping: loss in %q: %v", line, err)
			}
			lossFound = true
		}
		// rtt min/avg/max/mdev = 0.045/0.061/0.094/0.012 ms
		if strings.HasPrefix(line, "rtt ") || strings.HasPrefix(line, "round-trip ") {
			_, vals, ok := strings.Cut(line, "= ")
			f := strings.Split(strings.TrimSuffix(strings.TrimSpace(vals), " ms"), "/")
			if !ok || len(f) < 2 {
				return 0, 0, fmt.Errorf("ping: summary line %q", line)
			}
			ms, perr := strconv.ParseFloat(f[1], 64)
			if perr != nil {
				return 0, 0, fmt.Errorf("ping: average in %q: %v", line, perr)
			}
			avg, rttFound = time.Duration(ms*float64(time.Millisecond)), true
		}
	}
	if !lossFound {
		return 0, 0, fmt.Errorf("ping: no summary in %q", clip([]byte(out)))
	}
	if !rttFound {
		return 0, lossPercent, fmt.Errorf("ping: no RTT (%.0f%% loss)", lossPercent)
	}
	return avg, lossPercent, nil
}

// ClockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every
// Linux architecture Go supports.
const ClockTicks = 100

// CPUTimes are the totals of /proc/stat's "cpu" line (every CPU), in clock ticks.
type CPUTimes struct{ Idle, Total uint64 }

// ParseStatCPU reads the "cpu" line of /proc/stat: idle (with iowait) and the sum of
// every field (a guest's time is counted in user and nice already, so guest and
// guest_nice, fields 9 and 10, are left out of the total).
func ParseStatCPU(stat string) (CPUTimes, error) {
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return CPUTimes{}, fmt.Errorf("/proc/stat: cpu line %q: want 4 or more values", clip([]byte(line)))
		}
		var c CPUTimes
		for i, x := range f[1:min(len(f), 9)] {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return CPUTimes{}, fmt.Errorf("/proc/stat: cpu line, value %d: %v", i+1, err)
			}
			c.Total += v
			if i == 3 || i == 4 { // idle, iowait
				c.Idle += v
			}
		}
		return c, nil
	}
	return CPUTimes{}, fmt.Errorf("/proc/stat: no cpu line in %q", clip([]byte(stat)))
}

// IdlePercent is the idle share of the CPU time from a to b, in percent; NaN when no time passed.
func IdlePercent(a, b CPUTimes) float64 {
	if b.Total <= a.Total || b.Idle < a.Idle {
		return math.NaN()
	}
	return 100 * float64(b.Idle-a.Idle) / float64(b.Total-a.Total)
}

// ParseProcStatCPU returns utime+stime, in clock ticks, from the text of /proc/PID/stat.
// It counts every thread of the process.
func ParseProcStatCPU(stat string) (uint64, error) {
	// The command name (field 2) is in parentheses and may hold spaces: count from ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/PID/stat: no ')' in %q", clip([]byte(stat)))
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/PID/stat: %d fields after the name, want 13 or more", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/PID/stat: utime/stime: %v", err)
	}
	return ut + st, nil
}

// ParseSNMPUDP returns the UDP counters InDatagrams and RcvbufErrors from the text of
// /proc/net/snmp: together, the datagrams that reached the host's UDP layer whether or not
// the socket had room for them.
func ParseSNMPUDP(snmp string) (inDatagrams, rcvbufErrors uint64, err error) {
	var names []string
	for _, line := range strings.Split(snmp, "\n") {
		rest, ok := strings.CutPrefix(line, "Udp: ")
		if !ok {
			continue
		}
		if names == nil {
			names = strings.Fields(rest)
			continue
		}
		vals := strings.Fields(rest)
		var in, rb uint64
		var foundIn, foundRb bool
		for i, n := range names {
			if i >= len(vals) {
				break
			}
			switch n {
			case "InDatagrams":
				in, err = strconv.ParseUint(vals[i], 10, 64)
				foundIn = err == nil
			case "RcvbufErrors":
				rb, err = strconv.ParseUint(vals[i], 10, 64)
				foundRb = err == nil
			}
			if err != nil {
				return 0, 0, fmt.Errorf("/proc/net/snmp: Udp %s: %v", n, err)
			}
		}
		if !foundIn || !foundRb {
			return 0, 0, errors.New("/proc/net/snmp: no Udp InDatagrams/RcvbufErrors")
		}
		return in, rb, nil
	}
	return 0, 0, errors.New("/proc/net/snmp: no Udp lines")
}

func clip(b []byte) string {
	const n = 300
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// WriteBaseline writes, for each figure the bare TAP loop has samples of, the medians of
// the kernel, the bare TAP loop and ghostrouter, and the ratios bare/kernel and
// ghostrouter/bare: how far a TAP alone is from the kernel, and what ghostrouter makes of it.
func WriteBaseline(w io.Writer, figs []Figure, kernel, bare, appliance Samples) error {
	width := nameWidth(figs)
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tunit\tkernel\tbare TAP\tghostrouter\tratio b/k\tratio g/b\t\n", width, "figure")
	for _, f := range figs {
		b := Median(bare[f.Key])
		if math.IsNaN(b) {
			continue
		}
		k, g := Median(kernel[f.Key]), Median(appliance[f.Key])
		if f.ApplianceOnly {
			k = math.NaN()
		}
		fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", width, f.Name, f.Unit, num(k), num(b), num(g), num(Ratio(k, b)), num(Ratio(b, g)))
	}
	return flushAligned(w, tw, &buf)
}
