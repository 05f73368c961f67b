package main

import (
	"context"
	"time"

	"github.com/ghostrouter/ghostrouter/cmd/internal/sdnotify"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// Readiness for systemd (Type=notify): READY=1 once the links are up, the
// first tables are published and every routing-mode server that is up has
// its MAC resolved (until then its clients' packets would be dropped), or
// after readyWait, so a server that never answers ARP does not hold the
// service in "activating"; RELOADING=1 and READY=1 around a reload;
// STOPPING=1 when a signal stops the appliance.

const readyWait = 10 * time.Second

// waitForwarding waits until every up server of every routing cluster has
// a MAC, at most max; it reports whether they all do.
func (a *appliance) waitForwarding(ctx context.Context, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for {
		ready := true
		for _, c := range a.m.State() {
			if c.Mode != config.ModeRouting {
				continue
			}
			for _, s := range c.Servers {
				if s.Up && s.MAC.IsZero() {
					ready = false
				}
			}
		}
		if ready {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// notifiedReload is reload bracketed by RELOADING=1 and READY=1.
func (a *appliance) notifiedReload(sd *sdnotify.Notifier, path string) ReloadReply {
	if err := sd.Reloading(); err != nil {
		a.log.Error("systemd notification", "err", err)
	}
	rep := a.reload(path)
	if err := sd.Send(sdnotify.Ready, sdnotify.Status(rep.Summary())); err != nil {
		a.log.Error("systemd notification", "err", err)
	}
	return rep
}
