// Command ghostnode is the server agent of a ghostrouter cluster: run on
// each server, it adds the cluster's ghost address, sets the ARP and
// reverse-path sysctls, and in broadcast mode installs and updates the
// nftables filter that accepts only this server's buckets; it undoes all of
// that exactly. `ghostnode run` keeps that filter in step with the
// appliance's table announcements (package dispatch/announce). The work is
// in package node (host changes and their undo records), package filter
// (the nftables ruleset) and package runloop (the announcement loop); this
// file and run.go are the command line. README.md describes the commands,
// the state file and the run's report.
//
// Its command line is a contract (provisioning scripts, the systemd unit
// and the end-to-end tests rely on it); `ghostnode -h` prints it in full:
//
//	setup     make this server serve a cluster (idempotent)
//	update    replace the owned buckets of a broadcast cluster's filter,
//	          atomically
//	teardown  undo exactly what setup did
//	run       setup, then keep a broadcast cluster's filter in step with the
//	          appliance's table announcements until SIGTERM or SIGINT
//	status    owned buckets and filter counters of the set-up clusters
//	ruleset   print the broadcast filter setup would load, without loading it
//	version   version, commit and Go version (also --version)
//	help      the usage text
//
// The cluster comes from the appliance's configuration (-c FILE --cluster
// NAME --id N [--down IDS]: the owned buckets are those of server N in the
// table of the cluster's membership, computed with package dispatch) or from
// flags (--cluster NAME --ghost ADDR [--mode routing|broadcast] [--buckets B
// --seed S --owned LIST]).
//
// Exit codes: 0 success; 1 failure (a change could not be made, a bad
// configuration file); 2 bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/node"
	"github.com/ghostrouter/ghostrouter/router/config"

	"github.com/ghostrouter/ghostrouter/cmd/internal/version"
)

const usage = `usage: ghostnode COMMAND [flags]

commands:
  setup     make this server serve a cluster (idempotent)
  update    replace the owned buckets of a broadcast cluster's filter, atomically
  teardown  undo exactly what setup did
  run       setup, then keep a broadcast cluster's filter in step with the
            appliance's table announcements until SIGTERM or SIGINT
  status    owned buckets and filter counters of the set-up clusters
  ruleset   print the broadcast filter setup would load, without loading it
  version   version, commit and Go version (also --version)
  help      this text

the cluster, from the appliance's configuration:
  -c FILE --cluster NAME --id N [--down IDS]
      the ghost, mode, buckets and seed of cluster NAME, and (broadcast mode)
      the buckets server N owns in the table of the cluster's membership,
      with the servers in IDS (e.g. 2,3) marked failed
or given by flags:
  --cluster NAME --ghost ADDR [--mode routing|broadcast]
      [--buckets B --seed S --owned LIST] [--id N]
      broadcast mode needs --buckets, --seed and --owned (e.g. 1,2,5-9)

setup     [cluster flags] [--dev lo] [--lan IFACE] [--address ADDR] [--state-dir DIR]
              --dev: the interface for the ghost (default lo)
              --lan: the interface facing the appliance (default: the one holding
                     the server's address: --address, or the server's in FILE)
update    [cluster flags] | --cluster NAME --owned LIST   [--state-dir DIR]
teardown  --cluster NAME [--state-dir DIR]
status    [--cluster NAME] [--json] [--state-dir DIR]
ruleset   [cluster flags]
run       -c FILE --cluster NAME --id N [--key-file PUB] [--appliance ADDRS] [--listen ADDR:PORT]
          | --cluster NAME --ghost ADDR --id N --key-file PUB --appliance ADDRS
            [--buckets B --seed S] [--listen ADDR:PORT]
          | --cluster NAME --ghost ADDR --mode routing
          [--dev lo] [--lan IFACE] [--address ADDR] [--state-dir DIR]
          [--teardown-on-exit] [--log-level debug|info|warn|error]
              --key-file:  the public key of the cluster's announce_key_file
                           (default with -c: that path with .pub for its extension,
                           as ghostrouter keygen names it); never the private key
              --appliance: the appliance's LAN addresses, the only accepted sources
                           (default with -c: the cluster interface's addresses)
              --listen:    where announcements arrive, on the LAN interface only
                           (default 0.0.0.0:announce_port, 9470)
              -c reads only the cluster's parameters from FILE, never a key file
              broadcast mode without -c and without --buckets/--seed sets the
              filter up from the first announcement

Exit codes: 0 success; 1 failure (a change could not be made, a bad
configuration file); 2 bad usage.

Under systemd (Type=notify), run reports READY=1 once the cluster is set up
(or, in broadcast mode without a table yet, once it waits for the first
announcement) and STOPPING=1 when it stops.

Every change is printed as it is made. Undo records are kept in
STATE_DIR/CLUSTER.json (default ` + node.DefaultStateDir + `).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env is what a command needs from outside: the host to change, output,
// and whether it runs as root. Tests substitute all three.
type env struct {
	host   node.Host
	stdout io.Writer
	stderr io.Writer
	root   bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, env{host: node.System{}, stdout: stdout, stderr: stderr, root: os.Geteuid() == 0}, args)
}

func runEnv(ctx context.Context, e env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "setup", "update", "teardown", "status", "ruleset", "run":
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return 0
	case "version", "--version":
		fmt.Fprintln(e.stdout, version.Get().Line("ghostnode"))
		return 0
	default:
		fmt.Fprintf(e.stderr, "ghostnode: unknown command %q\n%s", cmd, usage)
		return 2
	}
	f, err := parseFlags(cmd, args, e.stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if !errors.Is(err, errFlagParse) {
			fmt.Fprintf(e.stderr, "ghostnode %s: %v\n", cmd, err)
		}
		return 2
	}
	if err := runCommand(ctx, e, cmd, f); err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(e.stderr, p.Error())
			}
			fmt.Fprintf(e.stderr, "%s: %d problem(s)\n", f.config, len(ps))
			return 1
		}
		fmt.Fprintf(e.stderr, "ghostnode %s: %v\n", cmd, err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

var (
	errFlagParse = errors.New("flag parse error") // already reported by the flag package
	errUsage     = errors.New("usage")
)

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// flags are every command's flags; set records which were given.
type flags struct {
	config, cluster, down        string
	id                           int
	ghost, mode, owned, buckets  string
	seed, dev, lan, address, dir string
	json                         bool
	keyFile, listen, logLevel    string // run
	appliance                    string // run
	teardownOnExit               bool   // run
	set                          map[string]bool
}

func parseFlags(cmd string, args []string, stderr io.Writer) (*flags, error) {
	f := &flags{set: map[string]bool{}}
	fs := flag.NewFlagSet("ghostnode "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "usage of ghostnode %s (see ghostnode help):\n", cmd); fs.PrintDefaults() }
	fs.StringVar(&f.cluster, "cluster", "", "cluster `NAME`")
	fs.StringVar(&f.dir, "state-dir", node.DefaultStateDir, "directory of the undo records")
	cluster := cmd == "setup" || cmd == "update" || cmd == "ruleset" || cmd == "run"
	if cluster {
		fs.StringVar(&f.config, "c", "", "the appliance's configuration `FILE`")
		fs.StringVar(&f.config, "config", "", "same as -c")
		fs.IntVar(&f.id, "id", -1, "this server's id in the cluster")
		fs.StringVar(&f.down, "down", "", "server `IDS` marked failed when computing the table (with -c)")
		fs.StringVar(&f.ghost, "ghost", "", "the cluster (ghost) `ADDR`ess (without -c)")
		fs.StringVar(&f.mode, "mode", "", "routing or broadcast (without -c; default: broadcast if --buckets, --seed or --owned is given)")
		fs.StringVar(&f.buckets, "buckets", "", "number of buckets `B` (without -c)")
		fs.StringVar(&f.seed, "seed", "", "hash seed `S`, decimal or 0x hex (without -c)")
		fs.StringVar(&f.owned, "owned", "", "owned buckets, e.g. 1,2,5-9 (without -c)")
	}
	if cmd == "run" {
		fs.StringVar(&f.keyFile, "key-file", "", "the public key `FILE` of the cluster's announce_key_file (default with -c: that file's name with .pub)")
		fs.StringVar(&f.appliance, "appliance", "", "the appliance's LAN `ADDRS`, comma-separated: the only sources of announcements (default with -c: the cluster interface's addresses)")
		fs.StringVar(&f.listen, "listen", "", "UDP `ADDR:PORT` to read announcements on, on the LAN interface only (default 0.0.0.0:announce_port)")
		fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
		fs.BoolVar(&f.teardownOnExit, "teardown-on-exit", false, "undo the setup when stopped by SIGTERM or SIGINT")
	}
	if cmd == "setup" || cmd == "run" {
		fs.StringVar(&f.dev, "dev", node.DefaultDev, "interface for the ghost address")
		fs.StringVar(&f.lan, "lan", "", "the LAN interface facing the appliance")
		fs.StringVar(&f.address, "address", "", "this server's primary `ADDR`ess (finds --lan)")
	}
	if cmd == "status" {
		fs.BoolVar(&f.json, "json", false, "print JSON")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errFlagParse
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if f.set["c"] {
		f.set["config"] = true
	}
	return f, nil
}

func runCommand(ctx context.Context, e env, cmd string, f *flags) error {
	n := &node.Node{Host: e.host, StateDir: f.dir, Out: e.stdout}
	needRoot := func() error {
		if !e.root {
			return node.ErrNotRoot
		}
		return nil
	}
	switch cmd {
	case "setup":
		spec, err := clusterSpec(f, true)
		if err != nil {
			return err
		}
		spec.Dev, spec.LAN = f.dev, f.lan
		if f.set["address"] {
			a, err := netip.ParseAddr(f.address)
			if err != nil {
				return usageErr("--address %q: %v", f.address, err)
			}
			if spec.Primary.IsValid() && spec.Primary != a {
				return usageErr("--address %s differs from server %d's address %s in %s", a, f.id, spec.Primary, f.config)
			}
			spec.Primary = a
		}
		if spec.LAN == "" && !spec.Primary.IsValid() {
			return usageErr("give --lan IFACE or --address ADDR (the server's primary address) to find the LAN interface")
		}
		if err := needRoot(); err != nil {
			return err
		}
		return n.Setup(ctx, spec)
	case "update":
		if f.cluster == "" {
			return usageErr("--cluster NAME is required")
		}
		var owned []uint32
		if f.set["config"] {
			spec, err := clusterSpec(f, false)
			if err != nil {
				return err
			}
			if spec.Filter == nil {
				return fmt.Errorf("cluster %s is in %s mode: it has no filter to update", spec.Cluster, spec.Mode)
			}
			owned = spec.Filter.Owned
		} else {
			if !f.set["owned"] {
				return usageErr("give -c FILE --id N, or --owned LIST")
			}
			if bad := setAmong(f, "ghost", "mode", "buckets", "seed", "id", "down"); bad != "" {
				return usageErr("--%s: update --owned takes the cluster's other parameters from its setup", bad)
			}
			// The range is checked against the recorded bucket count by
			// Update; here only the syntax.
			var err error
			if owned, err = filter.ParseList(f.owned, filter.MaxBuckets); err != nil {
				return usageErr("--owned: %v", err)
			}
		}
		if err := needRoot(); err != nil {
			return err
		}
		return n.Update(ctx, f.cluster, owned)
	case "teardown":
		if f.cluster == "" {
			return usageErr("--cluster NAME is required")
		}
		if err := needRoot(); err != nil {
			return err
		}
		if n.RunActive(f.cluster) {
			// Its next announcement would set the cluster up again.
			return fmt.Errorf("cluster %s: %w: stop it first (run --teardown-on-exit tears down as it stops)", f.cluster, node.ErrRunning)
		}
		return n.Teardown(ctx, f.cluster)
	case "run":
		return runRun(ctx, e, f)
	case "status":
		reports, err := n.Status(ctx, f.cluster)
		if err != nil {
			return err
		}
		if f.json {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			if reports == nil {
				reports = []node.Report{}
			}
			return enc.Encode(reports)
		}
		if len(reports) == 0 {
			fmt.Fprintf(e.stdout, "no cluster is set up (no state in %s)\n", f.dir)
		}
		for _, r := range reports {
			printReport(e.stdout, r)
		}
		return nil
	case "ruleset":
		spec, err := clusterSpec(f, false)
		if err != nil {
			return err
		}
		if spec.Filter == nil {
			return fmt.Errorf("cluster %s is in %s mode: it has no filter", spec.Cluster, spec.Mode)
		}
		fmt.Fprint(e.stdout, spec.Filter.Ruleset())
		return nil
	}
	return usageErr("unknown command %q", cmd)
}

// setAmong returns the first of names that was given on the command line.
func setAmong(f *flags, names ...string) string {
	for _, nm := range names {
		if f.set[nm] {
			return nm
		}
	}
	return ""
}

// clusterSpec builds the cluster part of a Spec from -c FILE or from flags.
// setup is true for the setup command, whose routing mode needs no
// bucket flags.
func clusterSpec(f *flags, setup bool) (node.Spec, error) {
	if f.cluster == "" {
		return node.Spec{}, usageErr("--cluster NAME is required")
	}
	if f.set["config"] {
		if bad := setAmong(f, "ghost", "mode", "buckets", "seed", "owned"); bad != "" {
			return node.Spec{}, usageErr("--%s: with -c the cluster's parameters come from the file", bad)
		}
		if !f.set["id"] {
			return node.Spec{}, usageErr("-c needs --id N, this server's id in the cluster")
		}
		down := map[int]bool{}
		if f.down != "" {
			ids, err := filter.ParseList(f.down, config.MaxServerID+1)
			if err != nil {
				return node.Spec{}, usageErr("--down: %v", err)
			}
			for _, id := range ids {
				down[int(id)] = true
			}
		}
		cfg, err := config.LoadWithoutKeys(f.config)
		if err != nil {
			return node.Spec{}, err
		}
		return node.FromConfig(cfg, f.cluster, f.id, down)
	}
	if f.set["down"] {
		return node.Spec{}, usageErr("--down needs -c FILE")
	}
	if !f.set["ghost"] {
		return node.Spec{}, usageErr("give -c FILE --id N, or --ghost ADDR")
	}
	ghost, err := netip.ParseAddr(f.ghost)
	if err != nil {
		return node.Spec{}, usageErr("--ghost %q: %v", f.ghost, err)
	}
	s := node.Spec{Cluster: f.cluster, Ghost: ghost}
	if f.mode != "" {
		if s.Mode, err = config.ParseMode(f.mode); err != nil {
			return node.Spec{}, usageErr("--mode %q: want routing or broadcast", f.mode)
		}
	} else {
		s.Mode = node.ModeRouting
		if !setup || setAmong(f, "buckets", "seed", "owned") != "" {
			s.Mode = node.ModeBroadcast
		}
	}
	switch s.Mode {
	case node.ModeRouting:
		if bad := setAmong(f, "buckets", "seed", "owned"); bad != "" {
			return node.Spec{}, usageErr("--%s: routing mode has no filter", bad)
		}
		return s, nil
	case node.ModeBroadcast:
	default:
		return node.Spec{}, usageErr("--mode %q: want routing or broadcast", s.Mode)
	}
	for _, need := range []string{"buckets", "seed", "owned"} {
		if !f.set[need] {
			return node.Spec{}, usageErr("broadcast mode without -c needs --buckets, --seed and --owned (missing --%s)", need)
		}
	}
	buckets, err := strconv.Atoi(f.buckets)
	if err != nil || buckets < 1 || buckets > filter.MaxBuckets {
		return node.Spec{}, usageErr("--buckets %q: want 1..%d", f.buckets, filter.MaxBuckets)
	}
	seed, err := strconv.ParseUint(f.seed, 0, 32)
	if err != nil {
		return node.Spec{}, usageErr("--seed %q: want a 32-bit number, decimal or 0x hex", f.seed)
	}
	owned, err := filter.ParseList(f.owned, buckets)
	if err != nil {
		return node.Spec{}, usageErr("--owned: %v", err)
	}
	id := -1
	if f.set["id"] {
		if f.id < 0 || f.id > config.MaxServerID {
			return node.Spec{}, usageErr("--id %d: want 0..%d", f.id, config.MaxServerID)
		}
		id = f.id
	}
	s.Filter = &filter.Spec{Cluster: s.Cluster, Ghost: ghost, Buckets: buckets, Seed: uint32(seed), Server: id, Owned: owned}
	if err := s.Filter.Check(); err != nil {
		return node.Spec{}, usageErr("%v", err)
	}
	return s, nil
}

// maxListed is how many ranges of owned buckets status prints before
// eliding the rest (status --json has them all).
const maxListed = 32

func printReport(w io.Writer, r node.Report) {
	st := r.State
	fmt.Fprintf(w, "cluster %s: %s mode, ghost %s on %s, LAN %s\n", st.Cluster, st.Mode, st.Ghost, st.Dev, st.LAN)
	if a := st.Address; a != nil {
		how := "there before setup"
		if a.Added {
			how = "added by setup"
		}
		fmt.Fprintf(w, "  address  %s on %s (%s)\n", a.Prefix, a.Dev, how)
	}
	for _, s := range st.Sysctls {
		how := "as found"
		if s.Changed {
			how = "was " + s.Old
		}
		fmt.Fprintf(w, "  sysctl   %s = %s (%s)\n", node.SysctlName(s.Key), s.Set, how)
	}
	t := st.Table
	if t == nil {
		return
	}
	spec := st.FilterSpec(nil)
	fmt.Fprintf(w, "  filter   table %s %s: %s\n", t.Family, t.Name, spec.Hash())
	if !r.FilterOK {
		fmt.Fprintf(w, "  PROBLEM  %s\n", r.FilterNote)
	}
	if r.Owned != nil {
		rs := filter.Ranges(r.Owned)
		list := make([]string, 0, min(len(rs), maxListed))
		for _, x := range rs[:min(len(rs), maxListed)] {
			list = append(list, x.String())
		}
		more := ""
		if len(rs) > maxListed {
			more = fmt.Sprintf(",... (%d ranges)", len(rs))
		}
		fmt.Fprintf(w, "  owned    %d of %d buckets: %s%s\n", len(r.Owned), t.Buckets, strings.Join(list, ","), more)
	}
	if c := r.Counters; c != nil {
		for _, x := range []struct {
			name string
			c    filter.Counter
		}{{"accepted new        ", c.New}, {"accepted established", c.Established}, {"accepted related    ", c.Related},
			{"accepted datagram   ", c.Datagram}, {"unowned (waiting)   ", c.Unowned}, {"dropped             ", c.Dropped}} {
			fmt.Fprintf(w, "  %s %d packets, %d bytes\n", x.name, x.c.Packets, x.c.Bytes)
		}
	}
	printRun(w, r, time.Now())
}

// printRun prints what `ghostnode run` reported about the cluster.
func printRun(w io.Writer, r node.Report, now time.Time) {
	if r.RunNote != "" {
		fmt.Fprintf(w, "  PROBLEM  %s\n", r.RunNote)
	}
	rs := r.Run
	if rs == nil {
		if r.RunActive {
			fmt.Fprintf(w, "  run      active, no report yet\n")
		}
		return
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	switch {
	case r.RunActive:
		fmt.Fprintf(w, "  run      pid %d, running since %s", rs.PID, ts(rs.Started))
	case !rs.Stopped.IsZero():
		fmt.Fprintf(w, "  run      pid %d, stopped at %s", rs.PID, ts(rs.Stopped))
	default:
		fmt.Fprintf(w, "  run      pid %d, gone (last report %s)", rs.PID, ts(rs.Updated))
	}
	if rs.Listen != "" {
		fmt.Fprintf(w, ", server %d, announcements on %s", rs.Server, rs.Listen)
	}
	fmt.Fprintln(w)
	if rs.Mode != node.ModeBroadcast {
		return
	}
	if a := rs.Applied; a != nil {
		fmt.Fprintf(w, "  table    epoch %d seq %d, applied %s from %s: owns %d of %d buckets (%d members, %d live)\n",
			a.Epoch, a.Seq, ts(a.At), a.From, a.Owned, a.Buckets, a.Members, a.Live)
	} else {
		fmt.Fprintf(w, "  table    none announced yet\n")
	}
	if !rs.Heard.IsZero() {
		quiet := ""
		if rs.Quiet {
			quiet = "; QUIET: the last table stays"
		}
		fmt.Fprintf(w, "  heard    %s ago (the appliance repeats every %v%s)\n",
			now.Sub(rs.Heard).Round(100*time.Millisecond), time.Duration(rs.IntervalMS)*time.Millisecond, quiet)
	}
	c := rs.Counters
	fmt.Fprintf(w, "  announcements received %d: applied %d, repeats %d, stale %d, bad signature %d, malformed %d, other cluster %d, unsupported %d, foreign %d, apply errors %d\n",
		c.Received, c.Applied, c.Repeats, c.Stale, c.BadMAC, c.Malformed, c.OtherCluster, c.Unsupported, c.Foreign, c.ApplyErrors)
	if sg := rs.Segments; sg.Segments > 0 {
		fmt.Fprintf(w, "  segments received %d: reassembled %d announcements, held %d, duplicates %d, malformed %d, conflicts %d, late %d; incomplete dropped: superseded %d, expired %d, evicted %d\n",
			sg.Segments, sg.Completed, sg.Held, sg.Duplicates, sg.Malformed, sg.Conflicts, sg.Late, sg.Superseded, sg.Expired, sg.Evicted)
	}
	if rs.LastError != "" {
		fmt.Fprintf(w, "  PROBLEM  last table not applied: %s\n", rs.LastError)
	}
}
