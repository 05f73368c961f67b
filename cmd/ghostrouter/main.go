// Command ghostrouter is the appliance: a userspace IP router on gVisor's
// netstack over TAP devices, with the cluster dispatcher in its forwarding
// path.
//
// Its command line is a contract (operators' scripts, the systemd unit and
// the end-to-end tests rely on it); `ghostrouter help` prints it:
//
//	run    -c FILE           run the appliance in the foreground; SIGHUP
//	                         re-reads the file (a bad file keeps the running
//	                         configuration); SIGTERM or SIGINT shuts it down
//	                         and removes the TAP devices it created; a link
//	                         fault (a TAP device deleted or broken under it)
//	                         shuts it down the same way and exits 1, for its
//	                         supervisor to restart it (fault.go)
//	check  -c FILE           validate a configuration file: exit 0, or 1 with
//	                         every problem as FILE:LINE: KEY: MESSAGE
//	lookup -c FILE [--cluster NAME] [--down IDS] CLIENT...
//	                         which bucket and server each client maps to,
//	                         offline (--down: as if those servers had failed)
//	status [--socket PATH] [--json]
//	                         the running appliance: clusters, servers,
//	                         health, counters, neighbor table
//	reload [--socket PATH] [--json]
//	                         as SIGHUP, in two phases: the dispatcher and the
//	                         router each validate the file, and both commit
//	                         only if both accept it (reload.go); prints what
//	                         was validated and committed (--json: the reply
//	                         as sent), exits 1 if the file was not taken
//	capture [--socket PATH] -i IFACE [-w FILE] [-c COUNT] [-s SNAPLEN] [FILTER]
//	                         pcap of what a link of the running appliance
//	                         sends and receives
//	keygen --private FILE [--public FILE]
//	                         the key pair that signs a broadcast cluster's
//	                         announcements (announce_key_file)
//	tune   -c FILE [--cluster NAME] LOG...
//	                         choose seed, buckets and hash from access logs
//	version, --version       version, commit and Go version
//	help                     the usage text
//
// Exit codes: 0 success; 1 failure (a bad configuration, a start that
// failed, an appliance that refused or could not be reached, a link fault
// under `run`); 2 bad usage.
//
// The configuration file is described in router/config/README.md; the
// running appliance answers status, reload and capture on its control
// socket (the control_socket key of the configuration's router table).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ghostrouter/ghostrouter/arp"
	"github.com/ghostrouter/ghostrouter/arp/neigh"
	"github.com/ghostrouter/ghostrouter/cmd/internal/sdnotify"
	"github.com/ghostrouter/ghostrouter/cmd/internal/version"
	"github.com/ghostrouter/ghostrouter/dispatch"
	"github.com/ghostrouter/ghostrouter/dispatch/tune"
	"github.com/ghostrouter/ghostrouter/router"
	"github.com/ghostrouter/ghostrouter/router/capture"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/router/vrrp"
)

const usage = `usage: ghostrouter COMMAND [flags]

commands:
  run    -c FILE                      run the appliance in the foreground
  check  -c FILE                      validate a configuration file
  lookup -c FILE [--cluster NAME] [--down IDS] CLIENT...
                                      which bucket and server each client maps to
                                      (--down: as if those servers had failed)
  status [--socket PATH] [--json]     the running appliance: clusters, servers,
                                      counters, neighbor table
  reload [--socket PATH] [--json]     re-read the running appliance's file (as SIGHUP);
                                      exit 1 if the dispatcher or the router refused it
  capture [--socket PATH] -i IFACE [-w FILE] [-c COUNT] [-s SNAPLEN] [FILTER]
                                      pcap of what a link of the running appliance
                                      sends and receives (ghostrouter capture -h)
  keygen --private FILE [--public FILE]
                                      write a key pair that signs a broadcast
                                      cluster's announcements (announce_key_file)
  tune   -c FILE [--cluster NAME] LOG...
                                      choose seed/buckets/hash from access logs
                                      (ghostrouter tune -h for the details)
  version, --version                  version, commit and Go version
  help                                this text

exit codes: 0 success; 1 failure (bad configuration, start failed, the
appliance refused or could not be reached); 2 bad usage.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "lookup":
		return cmdLookup(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "reload":
		return cmdReload(args[1:], stdout, stderr)
	case "capture":
		return cmdCapture(args[1:], stdout, stderr)
	case "keygen":
		return cmdKeygen(args[1:], stdout, stderr)
	case "tune":
		return tune.Main(args[1:], os.Stdin, stdout, stderr, isTerminal(os.Stderr))
	case "--version", "version":
		fmt.Fprintln(stdout, version.Get().Line("ghostrouter"))
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "ghostrouter: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

// configFlag registers -c/--config on fs.
func configFlag(fs *flag.FlagSet) *string {
	p := fs.String("c", "", "configuration `FILE`")
	fs.StringVar(p, "config", "", "configuration `FILE` (same as -c)")
	return p
}

// loadConfig loads path, printing every problem to stderr as FILE:LINE lines.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	return loadConfigWith(config.Load, path, stderr)
}

// loadConfigWith is loadConfig with another loader: lookup uses
// config.LoadWithoutKeys, since it needs no private key (and an operator
// running it may not be allowed to read one).
func loadConfigWith(load func(string) (*config.Config, error), path string, stderr io.Writer) (*config.Config, bool) {
	if path == "" {
		fmt.Fprintln(stderr, "ghostrouter: -c FILE is required")
		return nil, false
	}
	cfg, err := load(path)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(stderr, p.Error())
			}
			fmt.Fprintf(stderr, "%s: %d problem(s)\n", path, len(ps))
		} else {
			fmt.Fprintf(stderr, "ghostrouter: %v\n", err)
		}
		return nil, false
	}
	return cfg, true
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d interfaces, %d routes, %d neighbors, %d clusters)\n",
		*path, len(cfg.Interfaces), len(cfg.Routes), len(cfg.Neighbors), len(cfg.Clusters))
	return 0
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 1
	}
	log := config.NewLogger(strings.ToLower(cfg.Router.LogLevel), stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	sd, err := sdnotify.FromEnv()
	if err != nil {
		log.Error("systemd notification disabled", "err", err)
	}
	return runAppliance(ctx, cfg, *path, log, runOptions{hup: hup, notify: sd, dropPrivileges: true})
}

// appliance is the running router plus what hangs off it.
type appliance struct {
	log    *slog.Logger
	cfg    *config.Config
	r      *router.Router
	m      *dispatch.Manager
	guard  *arp.Guard
	nb     *neigh.Resolver
	ports  *router.PortGuard // no outside traffic to the servers' announce ports
	ann    *announceGate
	sender *announceSender
	vr     *vrrp.Set
	bgp    *bgpAnnouncer // nil without [bgp]
	faults linkFaults    // links whose receive loop stopped (fault.go)

	captures *capture.Hub
}

func newAppliance(cfg *config.Config, log *slog.Logger, obs dispatch.Observer, eps map[string]*tap.Endpoint) (*appliance, error) {
	a := &appliance{log: log, cfg: cfg}
	r, err := router.New(cfg, router.Options{Logger: log, Endpoints: eps, Stages: func(r *router.Router) ([]stage.Stage, error) {
		return a.buildStages(r, obs)
	}})
	if err != nil {
		if a.sender != nil {
			a.sender.close()
		}
		if a.m != nil {
			a.m.Close()
		}
		return nil, err
	}
	a.r = r
	a.nb.Start()
	a.m.Start()
	a.vr.Start()
	a.ann.Start()
	r.AnnounceAddresses()
	probe(r, cfg)
	a.bgp = startBGP(cfg, r, a.m, log)
	a.captures = capture.NewHub()
	return a, nil
}

// buildStages builds the parts of the appliance that judge inbound frames,
// and returns them as the router's stages, in their order: the router calls
// it once its links are open and before any of them receives a frame, so
// no frame reaches netstack before every stage is in place.
func (a *appliance) buildStages(r *router.Router, obs dispatch.Observer) ([]stage.Stage, error) {
	cfg, log := a.cfg, a.log
	a.sender = newAnnounceSender(r)
	var m *dispatch.Manager                              // set below, before the virtual routers start
	nb := newNeighbors(r, cfg, log, func() { m.Kick() }) // started once m is set
	var ann *announceGate                                // set below, before the virtual routers start
	vr, err := newVRRP(cfg, r, log, func() bool { return dispatchReady(m) && ann.readyToLead() })
	if err != nil {
		return nil, err
	}
	warnVRRP(cfg, log)
	var onAck func(string, time.Duration)
	if ao, ok := obs.(interface{ AckObserved(string, time.Duration) }); ok {
		onAck = ao.AckObserved
	}
	ann = newAnnounceGate(vr, a.sender.send, log, onAck)
	a.sender.onAck = ann.HandleAck
	if !vr.Empty() {
		own := ownAddresses(cfg)
		ann.listen, ann.own, a.sender.onHeard = a.sender.listen, func(addr netip.Addr) bool { return own[addr] }, ann.hear
	}
	m, err = dispatch.NewManager(cfg, dispatch.Deps{
		Endpoint: r.Endpoint,
		Resolver: nb,
		Errors:   r,
		Prober:   resolvedProber{r, nb},
		Announce: ann,
		Logger:   log,
		Observer: obs,
	})
	if err != nil {
		return nil, err
	}
	for _, cl := range cfg.Clusters {
		if cl.Mode == config.ModeBroadcast && cl.AnnounceKey == nil {
			log.Warn("broadcast cluster without announce_key_file: servers' filters will not follow failures or reloads", "cluster", cl.Name)
		}
	}
	a.m, a.nb, a.vr, a.ann = m, nb, vr, ann
	a.guard = arp.NewGuard(protectedAddresses(cfg), log)
	a.ports = router.NewPortGuard()
	a.ports.Set(announcePortRules(r, cfg))
	stages := []stage.Stage{a.guard, a.ports, nb, m.Forwarder()}
	if !vr.Empty() {
		stages = append([]stage.Stage{vr}, stages...)
	}
	return stages, nil
}

// ownAddresses are the appliance's interface addresses (interfaces change
// only with a restart).
func ownAddresses(cfg *config.Config) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, ifc := range cfg.Interfaces {
		for _, p := range ifc.Addresses {
			out[p.Addr()] = true
		}
	}
	return out
}

// protectedAddresses are the addresses no LAN host may claim by ARP, with
// what they are: every ghost, every broadcast cluster's second ghost, and
// the appliance's own IPv4 addresses.
func protectedAddresses(cfg *config.Config) map[netip.Addr]arp.Role {
	out := map[netip.Addr]arp.Role{}
	for _, ifc := range cfg.Interfaces {
		for _, p := range ifc.Addresses {
			out[p.Addr()] = arp.Role{Kind: arp.KindInterface, Name: ifc.Name}
		}
	}
	for _, cl := range cfg.Clusters {
		out[cl.Address] = arp.Role{Kind: arp.KindGhost, Name: cl.Name}
		if cl.BroadcastAddress.IsValid() {
			out[cl.BroadcastAddress] = arp.Role{Kind: arp.KindSecondGhost, Name: cl.Name}
		}
	}
	return out
}

// probe sends RFC 5227 ARP probes for the protected addresses, each on the
// link where a conflicting host would be: an interface's addresses on that
// interface, a cluster's ghost and second ghost on its LAN. Answers are
// claims: the guard records and logs them (see status).
func probe(r *router.Router, cfg *config.Config) {
	for _, ifc := range cfg.Interfaces {
		if ep, ok := r.Endpoint(ifc.Name); ok {
			var addrs []netip.Addr
			for _, p := range ifc.Addresses {
				addrs = append(addrs, p.Addr())
			}
			arp.Probe(ep, addrs)
		}
	}
	for _, cl := range cfg.Clusters {
		if ep, ok := r.Endpoint(cl.Interface); ok {
			arp.Probe(ep, []netip.Addr{cl.Address, cl.BroadcastAddress})
		}
	}
}

func (a *appliance) close() error {
	a.ann.handover() // the last announcement goes out before priority 0
	a.vr.Close()     // a master hands over first: priority 0 while the links are up
	a.bgp.close()    // withdraw the ghosts while the datapath still forwards
	a.captures.Close()
	a.m.Close()
	a.nb.Close()
	a.ann.Close()
	a.sender.close()
	return a.r.Close()
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
