package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/ghostrouter/ghostrouter/cmd/internal/sdnotify"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// runOptions are what `run` takes from the process, and what a test
// supplies instead.
type runOptions struct {
	hup    <-chan os.Signal         // SIGHUP: reload (nil: none)
	notify *sdnotify.Notifier       // systemd notifications (nil: none)
	eps    map[string]*tap.Endpoint // the links instead of TAP devices (tests); nil: open TAPs
	// dropPrivileges becomes [router] user once the devices are open.
	dropPrivileges bool
	// started, when set, is called once the appliance is ready, with the
	// metrics listener's address (nil without metrics).
	started func(metrics net.Addr)
}

// runAppliance runs the appliance of cfg until ctx ends or a link fails
// (fault.go) and returns the exit status. It owns every goroutine it
// starts, directly or through the parts it builds: the control socket's
// accept loop and its requests, the metrics server, and, through
// appliance.close, the dispatcher's loop and health checkers, the neighbor
// resolver, the announcements, VRRP and BGP. When it returns they have all
// ended.
func runAppliance(ctx context.Context, cfg *config.Config, path string, log *slog.Logger, opts runOptions) (code int) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup // the goroutines started here
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: stops the metrics server
	sd := opts.notify
	var app *appliance
	met := newMetrics(func() Status { return app.status(path) }, func() (uint64, uint64, uint64) {
		st := app.captures.Stats()
		return st.Sessions.Load(), st.Captured.Load(), st.Dropped.Load()
	})
	app, err := newAppliance(cfg, log, met, opts.eps)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	ctl, err := listenControl(cfg.Router.ControlSocket)
	if err != nil {
		log.Error("start failed", "err", err)
		app.close()
		return 1
	}
	created, _ := os.Lstat(cfg.Router.ControlSocket)
	stopControl := func() { closeUnixSafely(ctl, cfg.Router.ControlSocket, created) }
	reloads := make(chan chan ReloadReply)
	wg.Add(1)
	go func() {
		defer wg.Done()
		app.serveControl(ctl, path, func() ReloadReply {
			reply := make(chan ReloadReply, 1)
			select {
			case reloads <- reply:
				return <-reply
			case <-ctx.Done():
				return ReloadReply{Config: path, Failed: stepShutdown, Error: "the appliance is shutting down"}
			}
		})
	}()
	// On every way out: the control socket closes (its requests end), the
	// appliance's parts stop, then the metrics server (cancel) and wg.
	fail := func(err error) int {
		log.Error("start failed", "err", err)
		cancel()
		stopControl()
		app.close()
		return 1
	}
	var metricsAddr net.Addr
	if cfg.Router.MetricsAddress != "" {
		if metricsAddr, err = app.serveMetrics(ctx, &wg, cfg.Router.MetricsAddress, met.Handler()); err != nil {
			return fail(err)
		}
	}
	if opts.dropPrivileges {
		if err := dropPrivileges(cfg.Router.UID, cfg.Router.GID); err != nil {
			return fail(err)
		}
		if caps, err := effectiveCaps(); err == nil && caps != 0 {
			// Started without root but with capabilities (or user = "root"):
			// Go cannot drop them from every thread; starting as root can.
			log.Warn("running with capabilities; start as root with [router] user set to have them dropped", "cap_eff", fmt.Sprintf("%#x", caps), "uid", os.Geteuid())
		}
	}
	if !app.waitForwarding(ctx, readyWait) {
		log.Warn("not every server's MAC is resolved; reporting ready anyway", "waited", readyWait)
	}
	if err := sd.Send(sdnotify.Ready, sdnotify.Status(fmt.Sprintf("forwarding: %d interfaces, %d clusters", len(cfg.Interfaces), len(cfg.Clusters)))); err != nil {
		log.Error("systemd notification", "err", err)
	}
	log.Info("ghostrouter running", "config", path, "uid", os.Geteuid(), "gid", os.Getegid(), "interfaces", len(cfg.Interfaces), "clusters", len(cfg.Clusters), "control_socket", cfg.Router.ControlSocket)
	if opts.started != nil {
		opts.started(metricsAddr)
	}
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "reason", "signal")
			break loop
		case <-opts.hup:
			app.notifiedReload(sd, path)
		case reply := <-reloads:
			reply <- app.notifiedReload(sd, path)
		case err := <-app.r.Faults():
			// See fault.go: mark it, withdraw, shut down, exit 1 for the
			// supervisor to restart the appliance.
			link := app.linkFault(err)
			log.Error("link fault: shutting down so that the supervisor restarts the appliance", "interface", link, "err", err)
			sd.Send(sdnotify.Status("link fault on " + link + ": " + err.Error() + "; exiting for a restart"))
			code = exitLinkFault
			break loop
		}
	}
	sd.Send(sdnotify.Stopping)
	cancel()
	stopControl()
	if err := app.close(); err != nil {
		log.Error("shutdown", "err", err)
		code = 1
	}
	log.Info("stopped", "exit", code)
	return code
}
