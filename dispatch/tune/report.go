package tune

import (
	"fmt"
	"io"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Report is everything the text and SVG reports show. Build it with the
// results of reading and searching; it does no work of its own.
type Report struct {
	Cluster string
	Mode    string   // routing | broadcast
	Files   []string // the logs read, as named on the command line
	Pop     *Population
	Eval    *Evaluator
	Search  SearchResult
	Seeds   int // seeds searched per bucket count
	Top     int // heavy clients to list
	// HoldOut is the held-out validation, nil when it was not asked for.
	HoldOut *HoldOut
	// Recommended is what the report recommends: the search's best when
	// it held up on held-out windows (or no validation was asked for),
	// else the current setting.
	Recommended Candidate
	// Pins are the recommended pins (HoldOut.Pins held up, on top of the
	// current setting); none when they did not, or when a new setting is
	// recommended (pins placed for the old one would not fit it).
	Pins []PinChoice
}

// barWidth is the width of the widest terminal bar, in cells.
const barWidth = 24

// WriteText writes the human report: input, the bound the heaviest client
// sets, the search, current against recommended, a per-server bar chart,
// the heaviest clients and where they land, and the lines to paste.
func (r *Report) WriteText(w io.Writer) error {
	bw := new(strings.Builder)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	e, s, pop := r.Eval, &r.Search, r.Pop
	by := e.Metric()
	cur, best := &s.Current, &s.Best
	bytesToo := pop.Bytes > 0

	p("ghostrouter tune: cluster %q, %s mode, %d servers; balance judged on %s\n\n",
		r.Cluster, r.Mode, len(e.Servers()), by)

	p("input\n")
	p("  %s\n", strings.Join(r.Files, ", "))
	p("  %s lines: %s parsed (%s with a size field), %s blank or comments, %s malformed\n",
		group(pop.Lines), group(int64(pop.Requests)), group(pop.Sized), group(pop.Blank), group(pop.Malformed))
	for _, m := range pop.Examples {
		p("    %s\n", m)
	}
	if pop.Malformed > int64(len(pop.Examples)) {
		p("    ... and %s more\n", group(pop.Malformed-int64(len(pop.Examples))))
	}
	p("  %s distinct clients, %s requests", group(int64(len(pop.Clients))), group(int64(pop.Requests)))
	if bytesToo {
		p(", %s (%s bytes)", human(pop.Bytes), group(int64(pop.Bytes)))
	}
	p("\n\n")

	if b := e.LowerBound(); b.Client.Addr.IsValid() {
		p("heaviest client\n")
		p("  %s sent %s of all %s; the largest server's fair share is %s.\n",
			b.Client.Addr, pct(b.Share), by, pct(b.FairShare))
		p("  Any per-client hash sends all of one client's requests to one server, so\n")
		if b.MaxMean > 1 {
			p("  no seed, bucket count or hash can bring max/mean below %.3f for this log.\n\n", b.MaxMean)
		} else {
			p("  one client alone can fill %.0f%% of a server's fair share; it does not\n", 100*b.Share/b.FairShare)
			p("  bound max/mean by itself here.\n\n")
		}
	}

	p("search\n")
	var bl []string
	for _, t := range s.PerBuckets {
		bl = append(bl, strconv.Itoa(t.Buckets))
	}
	p("  jhash seeds 0..%d (and the current seed) x buckets [%s]", max(r.Seeds-1, 0), strings.Join(bl, " "))
	if s.Modulo != nil {
		p(", and modulo")
	}
	p(": %s candidates\n", group(int64(s.Candidates)))
	for _, err := range s.Skipped {
		p("  skipped: %v\n", err)
	}
	p("    %-8s %-10s %9s %8s\n", "buckets", "best seed", "max/mean", "cv")
	row := func(t Tried, buckets, seed string) {
		mark := " "
		if t.Candidate == best.Candidate {
			mark = "*"
		}
		p("  %s %-8s %-10s %9.3f %8.4f\n", mark, buckets, seed, t.MaxMean, t.CV)
	}
	for _, t := range s.PerBuckets {
		row(t, strconv.Itoa(t.Buckets), fmt.Sprintf("%#x", t.Seed))
	}
	if t := s.Modulo; t != nil {
		row(*t, "modulo", "-")
	}
	p("  (* best found on these logs)\n")
	p("\n")

	p("on the logs searched (in-sample: what the search fitted, not a forecast)\n")
	p("  %-22s %-28s %-28s\n", "", "current", "best found")
	p("  %-22s %-28s %-28s\n", "setting", short(cur.Candidate), short(best.Candidate))
	for _, m := range []Metric{ByRequests, ByBytes} {
		if m == ByBytes && !bytesToo {
			continue
		}
		p("  %-22s %-28.3f %-28.3f\n", "max/mean "+m.String(), cur.Score(m).MaxMean, best.Score(m).MaxMean)
		p("  %-22s %-28.4f %-28.4f\n", "cv "+m.String(), cur.Score(m).CV, best.Score(m).CV)
	}
	if cur.Lost != (Counts{}) || best.Lost != (Counts{}) {
		p("  %-22s %-28s %-28s\n", "requests no server takes", group(int64(cur.Lost.Requests)), group(int64(best.Lost.Requests)))
	}
	p("\n")

	r.writeServers(bw, by, bytesToo)
	r.writeClients(bw, bytesToo)
	r.writeHoldOut(bw)
	r.writePins(bw)

	p("recommended settings for [[cluster]] name = %q", r.Cluster)
	switch {
	case cur.Candidate == best.Candidate:
		p(" (the current settings are already the best found)")
	case r.Recommended == cur.Candidate:
		p(" (keep the current settings: nothing found is reliably better on later traffic)")
	case r.HoldOut == nil:
		p(" (chosen in-sample, not validated on held-out traffic)")
	}
	p(":\n")
	for _, l := range ConfigLines(r.Recommended) {
		p("  %s\n", l)
	}
	for _, l := range PinLines(r.Pins) {
		p("  %s\n", l)
	}
	// The padded columns leave trailing spaces; drop them.
	lines := strings.Split(bw.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}

// writeHoldOut writes the held-out validation: each fold, the spreads, and
// the verdict with its reasons.
func (r *Report) writeHoldOut(w io.Writer) {
	h := r.HoldOut
	if h == nil {
		return
	}
	fmt.Fprintf(w, "held-out validation (search on earlier windows, score max/mean on the next)\n")
	if h.Untimed > 0 {
		fmt.Fprintf(w, "  %s requests had no time stamp and are left out of it\n", group(int64(h.Untimed)))
	}
	if len(h.Folds) > 0 {
		fmt.Fprintf(w, "  %-4s %-25s %-25s %9s %9s %9s %15s %7s %9s\n", "fold", "trained on", "scored on",
			"current", "searched", "(fitted)", "random seeds", "floor", "new heavy")
		for i, f := range h.Folds {
			fmt.Fprintf(w, "  %-4d %-25s %-25s %9.3f %9.3f %9.3f %15s %7.3f %6d/%d\n", i+1,
				span(f.TrainFrom, f.TrainTo), span(f.TestFrom, f.TestTo), f.Current, f.Searched, f.InSample,
				fmt.Sprintf("%.3f ± %.3f", f.RandomMean, f.RandomSD), f.Floor, f.NewHeavy, f.Heavy)
		}
		fmt.Fprintf(w, "  over %d folds: current %s, searched %s, random seeds %s; gain %s\n",
			len(h.Folds), h.Current, h.Searched, h.Random, h.Gain)
		fmt.Fprintf(w, "  (fitted: the searched setting's score on the windows it was chosen on; floor: what the\n")
		fmt.Fprintf(w, "   heaviest client alone forces; new heavy: heavy clients not heavy before, of all heavy)\n")
	}
	if h.Reliable {
		fmt.Fprintf(w, "  verdict: the searched setting is reliably better: expected max/mean %s instead of %s\n\n",
			h.Searched, h.Current)
		return
	}
	fmt.Fprintf(w, "  verdict: no setting is reliably better than the current one.\n")
	for _, why := range h.Why {
		fmt.Fprintf(w, "  - %s\n", why)
	}
	fmt.Fprintln(w)
}

// span writes a window's time span in UTC.
func span(from, to int64) string {
	const layout = "01-02 15:04"
	return time.Unix(from, 0).UTC().Format(layout) + " .. " + time.Unix(to, 0).UTC().Format(layout)
}

// ConfigLines returns the config lines that select c.
func ConfigLines(c Candidate) []string {
	if c.Hash == HashModulo {
		return []string{`hash = "modulo"`}
	}
	return []string{
		fmt.Sprintf("hash = %q", c.Hash),
		fmt.Sprintf("seed = %#x", c.Seed),
		fmt.Sprintf("buckets = %d", c.Buckets),
	}
}

func short(c Candidate) string {
	if c.Hash == HashModulo {
		return "modulo"
	}
	return fmt.Sprintf("jhash %#x, %d buckets", c.Seed, c.Buckets)
}

// ratios returns each server's load over its fair share (0 for servers
// that take none).
func (r *Report) ratios(loads []uint64, total uint64) []float64 {
	out := make([]float64, len(loads))
	if total == 0 {
		return out
	}
	for i, sh := range r.Eval.Share() {
		if sh > 0 {
			out[i] = float64(loads[i]) / (float64(total) * sh)
		}
	}
	return out
}

func (r *Report) writeServers(w io.Writer, by Metric, bytesToo bool) {
	e, s := r.Eval, &r.Search
	total := by.Of(e.Total())
	cr := r.ratios(s.Current.Loads(by), total)
	br := r.ratios(s.Best.Loads(by), total)
	scale := 1.0
	for i := range cr {
		scale = math.Max(scale, math.Max(cr[i], br[i]))
	}
	fmt.Fprintf(w, "per server: share of %s, and load / fair share (bar; | is the fair share)\n", by)
	fmt.Fprintf(w, "  %5s %-16s %6s %6s   %-*s   %-*s\n", "id", "address", "weight", "fair",
		barWidth+16, "current", barWidth+16, "best found")
	for i, srv := range e.Servers() {
		weight := strconv.Itoa(srv.Weight)
		if !srv.Up {
			weight = "down"
		}
		fmt.Fprintf(w, "  %5d %-16s %6s %6s   %s   %s\n", srv.ID, srv.Addr, weight, pct(e.Share()[i]),
			cell(s.Current.Loads(by)[i], total, cr[i], scale), cell(s.Best.Loads(by)[i], total, br[i], scale))
	}
	if other := by.other(); bytesToo {
		fmt.Fprintf(w, "  (by %s: max/mean %.3f current, %.3f best found)\n", other,
			s.Current.Score(other).MaxMean, s.Best.Score(other).MaxMean)
	}
	fmt.Fprintln(w)
}

// cell is "share ratio bar", bar padded to barWidth.
func cell(load, total uint64, ratio, scale float64) string {
	share := 0.0
	if total > 0 {
		share = float64(load) / float64(total)
	}
	return fmt.Sprintf("%6s %5.2fx %s", pct(share), ratio, bar(ratio, scale))
}

// bar draws ratio on a scale where scale fills barWidth cells, with eighth
// blocks, and a '|' at the fair share (ratio 1) when the bar stops short of it.
func bar(ratio, scale float64) string {
	eighths := int(math.Round(ratio / scale * barWidth * 8))
	fair := int(math.Round(1 / scale * barWidth))
	var b strings.Builder
	cells := 0
	for ; eighths >= 8; eighths -= 8 {
		b.WriteString("█")
		cells++
	}
	if eighths > 0 {
		b.WriteString([]string{"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"}[eighths])
		cells++
	}
	for ; cells < barWidth; cells++ {
		if cells == fair-1 && fair > 0 {
			b.WriteByte('|')
			continue
		}
		b.WriteByte(' ')
	}
	return b.String()
}

func (r *Report) writeClients(w io.Writer, bytesToo bool) {
	e, s := r.Eval, &r.Search
	cs := e.Clients()
	if r.Top <= 0 || len(cs) == 0 {
		return
	}
	cs = cs[:min(r.Top, len(cs))]
	fmt.Fprintf(w, "heaviest clients (by %s) and the server each lands on\n", e.Metric())
	fmt.Fprintf(w, "  %-39s %12s %7s", "client", "requests", "")
	if bytesToo {
		fmt.Fprintf(w, " %10s %7s", "bytes", "")
	}
	fmt.Fprintf(w, "  %-11s %s\n", "current", "best found")
	tot := e.Total()
	curAt, curErr := e.Placer(s.Current.Candidate)
	bestAt, bestErr := e.Placer(s.Best.Candidate)
	name := func(at func(netip.Addr) int, err error, a netip.Addr) string {
		if err != nil {
			return "?"
		}
		if i := at(a); i >= 0 {
			return "server " + strconv.Itoa(e.Servers()[i].ID)
		}
		return "none"
	}
	for _, c := range cs {
		fmt.Fprintf(w, "  %-39s %12s %7s", c.Addr, group(int64(c.Requests)), pct(frac(c.Requests, tot.Requests)))
		if bytesToo {
			fmt.Fprintf(w, " %10s %7s", human(c.Bytes), pct(frac(c.Bytes, tot.Bytes)))
		}
		fmt.Fprintf(w, "  %-11s %s\n", name(curAt, curErr, c.Addr), name(bestAt, bestErr, c.Addr))
	}
	fmt.Fprintln(w)
}

func frac(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func pct(f float64) string { return strconv.FormatFloat(f*100, 'f', 2, 64) + "%" }

// group writes n with thousands separators.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// human writes a byte count in binary units.
func human(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// writePins writes the verdict on pins: each fold's held-out max/mean with
// and without them, the expected effect with its spread, and the pins.
func (r *Report) writePins(w io.Writer) {
	h := r.HoldOut
	if h == nil || h.Pins == nil {
		return
	}
	o := h.Pins
	fmt.Fprintf(w, "pins (clients heavy in every window, placed on servers deliberately; the rest stay hashed)\n")
	if len(h.Folds) > 0 {
		fmt.Fprintf(w, "  on top of %s\n", short(o.Base))
		fmt.Fprintf(w, "  %-4s %5s %9s %11s\n", "fold", "pins", "without", "with pins")
		for i, f := range h.Folds {
			fmt.Fprintf(w, "  %-4d %5d %9.3f %11.3f\n", i+1, f.Pins, f.Unpinned, f.Pinned)
		}
		fmt.Fprintf(w, "  over %d folds: held-out max/mean %s with pins, %s without; gain %s (random seeds spread %.3f)\n",
			len(h.Folds), o.Pinned, o.Unpinned, o.Gain, h.Random.SD)
	}
	if !o.Reliable || len(r.Pins) == 0 {
		why := o.Why
		if why == "" {
			why = "they were placed for another setting than the one recommended"
		}
		fmt.Fprintf(w, "  verdict: no pins recommended: %s\n\n", why)
		return
	}
	fmt.Fprintf(w, "  verdict: pin %d clients: expected held-out max/mean %s instead of %s (gain %s)\n", len(r.Pins), o.Pinned, o.Unpinned, o.Gain)
	by := r.Eval.Metric()
	total := by.Of(r.Eval.Total())
	for _, p := range r.Pins {
		share := 0.0
		if total > 0 {
			share = float64(by.Of(p.Client.Counts)) / float64(total)
		}
		fmt.Fprintf(w, "    %-39s %7s of %s -> server %d\n", p.Client.Addr, pct(share), by, p.ID)
	}
	fmt.Fprintln(w)
}

// PinLines returns the config tables that pin pins.
func PinLines(pins []PinChoice) []string {
	var out []string
	for _, p := range pins {
		out = append(out, "", "[[cluster.pin]]", fmt.Sprintf("client = %q", p.Client.Addr.String()), fmt.Sprintf("server = %d", p.ID))
	}
	return out
}
