package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// A reload is two-phase. The file is read and checked; then the router and
// the dispatcher each prepare what the new file asks of them and validate it
// against what is running, changing nothing; only when both accept it are
// both committed, the router first. A part that refuses leaves both on the
// running configuration, and the reply says which part refused and why.

// Reload steps, as ReloadReply names them.
const (
	stepConfig   = "config"   // reading and checking the file
	stepRestart  = "restart"  // a change that needs a restart ([[interface]] or [[vrrp]])
	stepRouter   = "router"   // routes, permanent neighbors, send_redirects
	stepDispatch = "dispatch" // clusters: servers, weights, tables, health checks
	stepShutdown = "shutdown" // the appliance is stopping
)

// reloadPrepareWait bounds the router's check that new next hops answer.
const reloadPrepareWait = 3 * time.Second

// ReloadReply is what the control socket answers to "reload", and what
// `ghostrouter reload --json` prints.
type ReloadReply struct {
	Config string `json:"config"`
	// OK: the file is now the running configuration.
	OK bool `json:"ok"`
	// Failed is the step that refused the file (config, restart, router,
	// dispatch, shutdown); empty when OK.
	Failed string `json:"failed,omitempty"`
	Error  string `json:"error,omitempty"`
	// Problems are the file's problems as FILE:LINE: KEY: MESSAGE.
	Problems []string `json:"problems,omitempty"`
	// Validated are the parts that accepted the file; Committed the parts
	// that now run it (both or none); RolledBack a part that had committed
	// and was put back because the other failed to.
	Validated  []string `json:"validated"`
	Committed  []string `json:"committed"`
	RolledBack []string `json:"rolled_back,omitempty"`
	// Clusters and Routes count the configuration running after the reload.
	Clusters int `json:"clusters"`
	Routes   int `json:"routes"`
}

// Summary is the reply in one line: the CLI's first line and systemd's
// STATUS.
func (r ReloadReply) Summary() string {
	if r.OK {
		return fmt.Sprintf("reloaded %s: %d clusters, %d routes", r.Config, r.Clusters, r.Routes)
	}
	why := map[string]string{
		stepConfig:   "rejected (the file)",
		stepRestart:  "rejected (needs a restart)",
		stepRouter:   "rejected by the router",
		stepDispatch: "rejected by the dispatcher",
		stepShutdown: "rejected (shutting down)",
	}[r.Failed]
	if why == "" {
		why = "rejected (" + r.Failed + ")"
	}
	return why + ": " + r.Error
}

// print writes the reply for a person: the summary, the problems, and
// what ran afterwards.
func (r ReloadReply) print(w io.Writer) {
	fmt.Fprintln(w, r.Summary())
	for _, p := range r.Problems {
		fmt.Fprintln(w, "  "+p)
	}
	if r.OK {
		return
	}
	list := func(s []string) string {
		if len(s) == 0 {
			return "none"
		}
		return strings.Join(s, ", ")
	}
	fmt.Fprintf(w, "  validated: %s; committed: %s\n", list(r.Validated), list(r.Committed))
	if len(r.RolledBack) > 0 {
		fmt.Fprintf(w, "  rolled back: %s\n", list(r.RolledBack))
	}
	fmt.Fprintf(w, "  the running configuration is kept: %d clusters, %d routes\n", r.Clusters, r.Routes)
}

// reload re-reads the configuration file and applies it in two phases (see
// above). Clusters (added, removed, servers, weights, drain, health
// settings), routes, permanent neighbors and send_redirects change live;
// interfaces and virtual routers need a restart, and a file that changes
// them is rejected whole.
func (a *appliance) reload(path string) ReloadReply {
	rep := ReloadReply{Config: path, Validated: []string{}, Committed: []string{}}
	reject := func(step string, err error) ReloadReply {
		rep.Failed, rep.Error = step, err.Error()
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				rep.Problems = append(rep.Problems, p.Error())
			}
			rep.Error = fmt.Sprintf("%d problem(s) in %s", len(ps), path)
		}
		rep.Clusters, rep.Routes = len(a.cfg.Clusters), len(a.cfg.Routes)
		a.log.Error("reload rejected; keeping the running configuration", "config", path, "step", step, "err", err,
			"validated", strings.Join(rep.Validated, ","), "rolled_back", strings.Join(rep.RolledBack, ","))
		return rep
	}
	cfg, err := config.Reload(path, a.cfg)
	if err != nil {
		return reject(stepConfig, err)
	}
	if err := a.r.CheckReconfigure(cfg); err != nil {
		return reject(stepRestart, err)
	}
	if vrrpChanged(a.cfg.VRRP, cfg.VRRP) {
		return reject(stepRestart, errors.New("[[vrrp]] changed: virtual routers need a restart (stop this appliance with SIGTERM; its backup takes over meanwhile)"))
	}

	// Phase one: each part validates the file; nothing changes.
	ctx, cancel := context.WithTimeout(context.Background(), reloadPrepareWait)
	defer cancel()
	// An open dispatcher plan holds off other reconfigurations (health
	// changes go on); it is committed or discarded below.
	mplan, err := a.m.Prepare(cfg)
	if err != nil {
		return reject(stepDispatch, err)
	}
	rep.Validated = append(rep.Validated, stepDispatch)
	rplan, err := a.r.Prepare(cfg)
	if err == nil {
		err = rplan.CheckNextHops(ctx)
	}
	if err != nil {
		mplan.Discard()
		return reject(stepRouter, err)
	}
	rep.Validated = append(rep.Validated, stepRouter)
	// The way back, should the dispatcher fail to commit after the router
	// has.
	rback := a.r.Running()

	// Phase two: commit both, the router first.
	if err := rplan.Commit(); err != nil {
		mplan.Discard()
		return reject(stepRouter, err)
	}
	rep.Committed = append(rep.Committed, stepRouter)
	// New servers are targets before their health checks start, so none is
	// checked before its MAC is known.
	a.nb.SetTargets(serverTargets(cfg))
	if err := mplan.Commit(); err != nil {
		a.nb.SetTargets(serverTargets(a.cfg))
		rep.Committed = rep.Committed[:0]
		if rerr := rback.Commit(); rerr != nil {
			err = fmt.Errorf("%w; and the router could not be put back: %v", err, rerr)
			rep.Committed = append(rep.Committed, stepRouter)
		} else {
			rep.RolledBack = append(rep.RolledBack, stepRouter)
		}
		a.nb.Resync()
		return reject(stepDispatch, err)
	}
	rep.Committed = append(rep.Committed, stepDispatch)

	a.nb.Resync() // the router's permanent entries changed: the servers' go in again
	a.guard.Protect(protectedAddresses(cfg))
	a.ports.Set(announcePortRules(a.r, cfg))
	probe(a.r, cfg)
	a.bgp = reconfigureBGP(a.bgp, cfg, a.r, a.m, a.log)
	a.cfg = cfg
	rep.OK = true
	rep.Clusters, rep.Routes = len(cfg.Clusters), len(cfg.Routes)
	a.log.Info("reloaded", "config", path, "clusters", len(cfg.Clusters), "routes", len(cfg.Routes))
	return rep
}

// requestReload asks the appliance at sock to reload.
func requestReload(sock string) (*ReloadReply, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (is the appliance running?): %w", sock, err)
	}
	defer c.Close()
	// The router may wait reloadPrepareWait for new next hops.
	c.SetDeadline(time.Now().Add(10*time.Second + reloadPrepareWait))
	if _, err := fmt.Fprintln(c, "reload"); err != nil {
		return nil, fmt.Errorf("send reload: %w", err)
	}
	var rep ReloadReply
	if err := json.NewDecoder(io.LimitReader(c, 1<<20)).Decode(&rep); err != nil {
		return nil, fmt.Errorf("read reload answer: %w", err)
	}
	return &rep, nil
}

func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print the reply as a JSON document")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rep, err := requestReload(*sock)
	if err != nil {
		fmt.Fprintf(stderr, "ghostrouter reload: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		rep.print(stdout)
	}
	if !rep.OK {
		return 1
	}
	return 0
}
