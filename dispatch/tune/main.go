package tune

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// DefaultSeeds is how many seeds --seeds tries by default.
const DefaultSeeds = 4096

// defaultBuckets are the bucket counts tried besides the current one when
// --buckets is not given.
func defaultBuckets() []int { return []int{1024, 4096, 65536} }

const usage = `usage: ghostrouter tune -c FILE [--cluster NAME] [flags] LOG...

Choose a cluster's dispatch hash settings (hash, seed, buckets) from the
access logs its servers already write: the patent's "hash function determined
based on an analysis of a distribution of client IP addresses in an access
log" (EP 0 865 180 A2, claims 7, 14 and 21).

Each LOG is an access log in Apache/nginx common or combined format, HAProxy's
default HTTP or TCP log format (with or without the syslog header), or one
client address per line; IPv4 and IPv6; gzip files are read as such; "-" is
standard input. Several logs are read in the order given (oldest first).
Lines that do not parse are counted and the first few named. Memory grows
with the number of distinct clients, not with the number of lines.

For the cluster's servers and weights, tune tries jhash seeds 0..N-1 (and the
current seed) for each bucket count, and in routing mode the "modulo" hash
too (broadcast mode can only use jhash: the servers' kernel filter computes
it). It reports, for the current settings and the best found, each server's
share of requests and bytes, max/mean load (each server against its
weight's fair share; 1 is perfect) and the coefficient of variation, with a
bar chart, the heaviest clients and the server each lands on, and the lines
to paste into the config. The search is deterministic: the same logs give the
same answer.

A heavy single client cannot be balanced by any per-client hash: all of one
client's requests (a crawler, a corporate NAT, a proxy) go to one server, so
whichever server gets it carries at least that load. If one client sends 5%
of the requests to a 64-server cluster (fair share 1.56%), max/mean cannot go
below 3.2 whatever the seed; the report prints this floor for your logs. Only
splitting that client's traffic by something other than its address can help.

A search fits the logs it is given: which clients happened to be busy in
them. So tune validates out of sample: it splits the logs by their time
stamps into --folds+1 windows, and for each later window searches on all the
windows before it and scores the choice on that window alone. It reports the
held-out max/mean of the current setting, of the searched one and of random
seeds, with their spread over the folds, and recommends a change only when
the searched setting beat the current one on every fold by more than that
spread. Otherwise it says plainly that no setting is reliably better, and
why (heavy clients that no hash can even out; heavy clients that change
from window to window). Logs without time stamps cannot be validated; then
nothing is recommended unless --in-sample is given.

A new seed or bucket count sends most clients to a different server; apply it
when that is acceptable.

Pins: clients heavy in every window (crawlers, proxies,
corporate NATs) can be placed on servers deliberately with [[cluster.pin]],
while the long tail stays hashed. tune chooses them on the earlier windows,
places each (heaviest first) on the server least loaded after taking it, and
scores them on the next window like a seed: it recommends pins only when they
lowered the held-out max/mean on every fold by more than the spread of that
gain and of random seeds, and prints the expected effect with its spread.
Pins are placed and scored on top of the setting recommended (the current
one, or the searched one when that held up).

flags:
  -c, --config FILE   the configuration file (required)
  --cluster NAME      the cluster to tune (optional when the config has one)
  --by requests|bytes judge balance on requests (default) or on response
                      bytes from the size field
  --seeds N           jhash seeds to try per bucket count (default 4096)
  --buckets N,N,...   bucket counts to try (default: the current count,
                      1024, 4096, 65536; at most 65536)
  --top N             list the N heaviest clients (default 10)
  --svg FILE          also draw current against recommended as an SVG file
  --folds N           held-out folds (default 3): the logs are split by time
                      into N+1 windows of about equal traffic
  --pins N            recommend at most N pins (default 16, at most 64; 0: none)
  --in-sample         recommend the best setting on the logs searched,
                      without held-out validation (not advised)
  --json              write the report as JSON on standard output
  --write             write the recommended hash/seed/buckets lines (and pins,
                      replacing the cluster's [[cluster.pin]] tables) into the
                      cluster in the config file, in place, keeping every
                      other line and comment; the result is checked with the
                      config parser before it replaces the file
Flags may come before or after the logs; "--" ends them.
`

// Main runs `ghostrouter tune` with args (the words after "tune") and returns
// the exit code: 0 on success, 1 on a failure, 2 on a usage error. Logs named
// "-" are read from stdin. A progress line goes to stderr only when
// stderrIsTerminal.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer, stderrIsTerminal bool) int {
	// The working set is a few large maps and slices built once; collecting
	// at half the default growth keeps the peak a third lower for no
	// measurable CPU (the search allocates almost nothing).
	defer debug.SetGCPercent(debug.SetGCPercent(50))
	o, logs, err := parseArgs(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ghostrouter tune: %v\n", err)
		fmt.Fprintln(stderr, "run 'ghostrouter tune -h' for help")
		return 2
	}
	if err := run(o, logs, stdin, stdout, stderr, stderrIsTerminal); err != nil {
		fmt.Fprintf(stderr, "ghostrouter tune: %v\n", err)
		return 1
	}
	return 0
}

// options are the parsed flags.
type options struct {
	config   string
	cluster  string
	by       Metric
	seeds    int
	buckets  []int
	svg      string
	write    bool
	top      int
	folds    int
	json     bool
	inSample bool
	pins     int
}

func parseArgs(args []string, helpOut io.Writer) (options, []string, error) {
	var o options
	fs := flag.NewFlagSet("ghostrouter tune", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.config, "c", "", "the configuration `FILE`")
	fs.StringVar(&o.config, "config", "", "the configuration `FILE` (same as -c)")
	fs.StringVar(&o.cluster, "cluster", "", "the cluster to tune (optional when the config has one)")
	by := fs.String("by", "requests", "judge balance on `requests` or bytes (from the size field)")
	fs.IntVar(&o.seeds, "seeds", DefaultSeeds, "how many jhash seeds to try per bucket count (`N`)")
	buckets := fs.String("buckets", "", "comma-separated bucket counts to try (default: the current count, 1024, 4096, 65536)")
	fs.StringVar(&o.svg, "svg", "", "also draw current against recommended as an SVG `FILE`")
	fs.BoolVar(&o.write, "write", false, "write the recommended hash/seed/buckets into the config file in place, keeping everything else")
	fs.IntVar(&o.top, "top", 10, "list the `N` heaviest clients")
	fs.IntVar(&o.folds, "folds", DefaultFolds, "held-out folds: split the logs by time into N+1 windows")
	fs.BoolVar(&o.json, "json", false, "write the report as JSON")
	fs.IntVar(&o.pins, "pins", DefaultMaxPins, "recommend at most `N` pins for clients heavy in every window (0: none)")
	fs.BoolVar(&o.inSample, "in-sample", false, "recommend the best setting on the logs searched, without held-out validation")
	fs.Usage = func() {
		fmt.Fprint(helpOut, usage)
	}

	// Flags may come before, between or after the logs; "--" ends them.
	var logs []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.Usage()
			}
			return o, nil, err
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if used := len(rest) - len(left); used > 0 && rest[used-1] == "--" {
			logs = append(logs, left...)
			break
		}
		logs = append(logs, left[0])
		rest = left[1:]
	}

	var err error
	if o.by, err = ParseMetric(*by); err != nil {
		return o, nil, errors.New(strings.TrimPrefix(err.Error(), "tune: "))
	}
	switch {
	case o.config == "":
		return o, nil, errors.New("-c FILE is required")
	case len(logs) == 0:
		return o, nil, errors.New("no access logs given (use - for standard input)")
	case o.seeds < 1 || o.seeds > 1<<24:
		return o, nil, fmt.Errorf("--seeds %d: want 1..%d", o.seeds, 1<<24)
	case o.top < 0:
		return o, nil, fmt.Errorf("--top %d: want 0 or more", o.top)
	case o.pins < 0 || o.pins > config.MaxPins:
		return o, nil, fmt.Errorf("--pins %d: want 0..%d", o.pins, config.MaxPins)
	case o.folds < 1 || o.folds > MaxSlots-1:
		return o, nil, fmt.Errorf("--folds %d: want 1..%d", o.folds, MaxSlots-1)
	}
	if *buckets != "" {
		for _, f := range strings.Split(*buckets, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > config.MaxBuckets {
				return o, nil, fmt.Errorf("--buckets: %q is not a bucket count (1..%d)", f, config.MaxBuckets)
			}
			o.buckets = append(o.buckets, n)
		}
	}
	return o, logs, nil
}

func run(o options, logs []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) error {
	cfg, err := config.LoadWithoutKeys(o.config) // tuning needs no private key
	if err != nil {
		return err
	}
	cl, err := pickCluster(cfg, o.cluster)
	if err != nil {
		return err
	}
	cur := Candidate{Hash: cl.Hash.String(), Seed: cl.Seed, Buckets: cl.Buckets}
	if cur.Hash == HashModulo {
		cur.Seed, cur.Buckets = 0, 0
	}
	buckets := o.buckets
	if buckets == nil {
		if cl.Buckets > 0 {
			buckets = append(buckets, cl.Buckets)
		}
		buckets = append(buckets, defaultBuckets()...)
	}
	buckets = dedup(buckets)

	// Read.
	prog := newProgress(stderr, tty)
	pop := NewPopulation()
	for _, name := range logs {
		if err := readOne(pop, name, stdin, prog); err != nil {
			prog.done()
			return err
		}
	}
	prog.done()
	if len(pop.Clients) == 0 {
		return fmt.Errorf("no client addresses in %d lines of %s (%d malformed)", pop.Lines, strings.Join(logs, ", "), pop.Malformed)
	}
	if o.by == ByBytes && pop.Sized == 0 {
		return errors.New("--by bytes: no line had a size field (address-only logs have none); use --by requests")
	}

	// Search.
	servers := core.ServersFor(cl, nil) // as the appliance sees them: drained servers weigh 0
	slices.SortFunc(servers, func(a, b core.Server) int { return a.ID - b.ID })
	ev, err := NewEvaluator(servers, pop, o.by)
	if err != nil {
		return fmt.Errorf("cluster %q: %w", cl.Name, err)
	}
	sopts := SearchOptions{
		Seeds:   o.seeds,
		Buckets: buckets,
		Modulo:  cl.Mode == config.ModeRouting,
		Current: cur,
	}
	if tty {
		sopts.Progress = func(done, total int) { prog.printf("searching: seed %d of %d", done, total) }
	}
	hopts := HoldOutOptions{Folds: o.folds, Search: sopts}
	hopts.Pins = o.pins // both modes: broadcast filters honour pins too
	var res SearchResult
	var ho HoldOut
	if o.inSample {
		res, err = ev.Search(sopts)
	} else {
		// The whole log's search and the held-out folds' in one sweep.
		res, ho, err = SearchHoldOut(ev, pop, hopts)
	}
	prog.done()
	if err != nil {
		return err
	}
	rep := &Report{Cluster: cl.Name, Mode: cl.Mode.String(), Files: logs, Pop: pop, Eval: ev, Search: res, Seeds: o.seeds, Top: o.top}
	rep.Recommended = res.Best.Candidate
	if !o.inSample {
		rep.HoldOut = &ho
		if !ho.Reliable {
			rep.Recommended = cur
		}
		if ho.Pins != nil && ho.Pins.Reliable && ho.Pins.Base == rep.Recommended {
			rep.Pins = ho.Pins.Pins
		}
	}

	// Report.
	write := rep.WriteText
	if o.json {
		write = rep.WriteJSON
	}
	if err := write(stdout); err != nil {
		return err
	}
	msgs := stdout // with --json, stdout holds the JSON alone
	if o.json {
		msgs = stderr
	}
	if o.svg != "" {
		if err := writeFileAtomic(o.svg, 0o644, rep.WriteSVG); err != nil {
			return err
		}
		fmt.Fprintf(msgs, "\nwrote %s\n", o.svg)
	}
	if o.write {
		if rep.Recommended == cur && res.Best.Candidate != cur && len(rep.Pins) == 0 {
			fmt.Fprintf(msgs, "\n%s not rewritten: no setting and no pins are reliably better on held-out traffic\n", o.config)
			return nil
		}
		var pins *[]PinChoice
		if len(rep.Pins) > 0 {
			pins = &rep.Pins
		}
		return writeConfig(o.config, cl.Name, rep.Recommended, pins, msgs)
	}
	return nil
}

func pickCluster(cfg *config.Config, name string) (*config.Cluster, error) {
	if name != "" {
		cl, ok := cfg.Cluster(name)
		if !ok {
			return nil, fmt.Errorf("%s: no cluster %q", cfg.File, name)
		}
		return cl, nil
	}
	switch len(cfg.Clusters) {
	case 0:
		return nil, fmt.Errorf("%s: no [[cluster]] to tune", cfg.File)
	case 1:
		return &cfg.Clusters[0], nil
	}
	names := make([]string, len(cfg.Clusters))
	for i, c := range cfg.Clusters {
		names[i] = c.Name
	}
	return nil, fmt.Errorf("%s has %d clusters (%s): choose one with --cluster", cfg.File, len(names), strings.Join(names, ", "))
}

func dedup(xs []int) []int {
	var out []int
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func readOne(pop *Population, name string, stdin io.Reader, prog *progress) error {
	var r io.Reader = stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	var cb ProgressFunc
	if prog.tty {
		cb = func(file string, lines int64) {
			prog.printf("reading %s: %s lines, %s clients", file, group(lines), group(int64(len(pop.Clients))))
		}
	}
	return pop.ReadLog(name, r, cb)
}

// writeConfig rewrites the cluster's keys (and, when pins is not nil, its
// pins) in path, checks the result with the config parser, and replaces the
// file (through its symlink, keeping its mode) only if the result parses and
// says what was asked.
func writeConfig(path, cluster string, c Candidate, pins *[]PinChoice, out io.Writer) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	src, err := os.ReadFile(real)
	if err != nil {
		return err
	}
	dst, changes, err := RewriteConfig(src, cluster, c)
	if err != nil {
		return fmt.Errorf("--write: %s: %w", path, err)
	}
	if pins != nil {
		var pc []Change
		dst, pc, err = RewritePins(dst, cluster, *pins)
		if err != nil {
			return fmt.Errorf("--write: %s: %w", path, err)
		}
		changes = append(changes, pc...)
	}
	if len(changes) == 0 {
		fmt.Fprintf(out, "\n%s already has these settings; not rewritten\n", path)
		return nil
	}
	cfg, err := config.Parse(path, dst)
	if err != nil {
		return fmt.Errorf("--write: the rewritten %s would not parse, left unchanged: %w", path, err)
	}
	got, ok := cfg.Cluster(cluster)
	if !ok || got.Hash.String() != c.Hash || (c.Hash != HashModulo && (got.Seed != c.Seed || got.Buckets != c.Buckets)) {
		return fmt.Errorf("--write: the rewritten %s does not read back as %s, left unchanged", path, c)
	}
	if pins != nil && !samePins(got.Pins, *pins) {
		return fmt.Errorf("--write: the rewritten %s does not read back with the recommended pins, left unchanged", path)
	}
	st, err := os.Stat(real)
	if err != nil {
		return err
	}
	err = writeFileAtomic(real, st.Mode().Perm(), func(w io.Writer) error {
		_, err := w.Write(dst)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s:\n", path)
	for _, ch := range changes {
		if ch.Key == "pin" {
			if ch.Old == "" {
				fmt.Fprintf(out, "  line %d: added [[cluster.pin]] %s\n", ch.Line, ch.New)
			} else {
				fmt.Fprintf(out, "  removed [[cluster.pin]] %s\n", ch.Old)
			}
			continue
		}
		if ch.Old == "" {
			fmt.Fprintf(out, "  line %d: added %s = %s\n", ch.Line, ch.Key, ch.New)
		} else {
			fmt.Fprintf(out, "  line %d: %s = %s (was %s)\n", ch.Line, ch.Key, ch.New, ch.Old)
		}
	}
	return nil
}

// writeFileAtomic writes path through a temporary file in the same
// directory and renames it into place.
func writeFileAtomic(path string, perm os.FileMode, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tune-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing left to remove
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// progress writes one self-overwriting status line to a terminal, at most
// five times a second. With tty false it writes nothing.
type progress struct {
	w    io.Writer
	tty  bool
	last time.Time
	on   bool
}

func newProgress(w io.Writer, tty bool) *progress { return &progress{w: w, tty: tty} }

func (p *progress) printf(format string, a ...any) {
	if !p.tty {
		return
	}
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		fmt.Fprintf(p.w, "\r\x1b[K"+format, a...)
		p.on = true
	}
}

// done clears the line.
func (p *progress) done() {
	if p.on {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.on = false
	}
}

// samePins reports whether the configured pins are exactly want.
func samePins(got []config.Pin, want []PinChoice) bool {
	if len(got) != len(want) {
		return false
	}
	m := make(map[netip.Addr]int, len(got))
	for _, p := range got {
		m[p.Client] = p.Server
	}
	for _, p := range want {
		if id, ok := m[p.Client.Addr]; !ok || id != p.ID {
			return false
		}
	}
	return true
}
