package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/ghostrouter/ghostrouter/arp/neigh"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// newNeighbors returns the resolver of the servers' MACs (not started),
// with cfg's servers as its targets.
func newNeighbors(r *router.Router, cfg *config.Config, log *slog.Logger, onChange func()) *neigh.Resolver {
	nb := neigh.New(neigh.Deps{
		Port: func(name string) (neigh.Port, bool) {
			ep, ok := r.Endpoint(name)
			if !ok {
				return nil, false
			}
			return ep, true
		},
		Source:   r.SourceAddress,
		Statics:  r.ServerNeighbors(),
		OnChange: onChange,
		Logger:   log,
	}, neigh.DefaultParams())
	nb.SetTargets(serverTargets(cfg))
	return nb
}

// serverTargets lists the servers of routing-mode clusters, whose MACs the
// appliance resolves and guards: a server's mac pins it; a [[neighbor]] for
// its address is netstack's already, and pins it too when unicast.
// A server in several clusters is one target, named by all of them, pinned
// by the first mac given.
func serverTargets(cfg *config.Config) []neigh.Target {
	var out []neigh.Target
	type key struct {
		ifname string
		addr   netip.Addr
	}
	seen := map[key]int{}
	for _, cl := range cfg.Clusters {
		if cl.Mode != config.ModeRouting {
			continue
		}
		for _, s := range cl.Servers {
			role := fmt.Sprintf("server %d of cluster %s", s.ID, cl.Name)
			if i, dup := seen[key{cl.Interface, s.Address}]; dup {
				out[i].Role += ", " + role
				if !s.MAC.IsZero() && out[i].Pin == ([6]byte{}) {
					out[i].Pin = [6]byte(s.MAC)
				}
				continue
			}
			seen[key{cl.Interface, s.Address}] = len(out)
			t := neigh.Target{Interface: cl.Interface, Addr: s.Address, Role: role}
			if !s.MAC.IsZero() {
				t.Pin = [6]byte(s.MAC)
			}
			for _, n := range cfg.Neighbors {
				if n.Interface == cl.Interface && n.Address == s.Address {
					t.External = true
					if m := [6]byte(n.MAC); neigh.Unicast(m) && t.Pin == ([6]byte{}) {
						t.Pin = m
					}
				}
			}
			out = append(out, t)
		}
	}
	return out
}

// printServerNeighbors writes the status section of the servers' MACs.
func printServerNeighbors(w io.Writer, entries []neigh.Entry) {
	resolved := 0
	var unresolved []string
	for _, e := range entries {
		if e.MAC != "" {
			resolved++
		} else {
			unresolved = append(unresolved, e.Address.String())
		}
	}
	fmt.Fprintf(w, "\nserver neighbors (resolved by the appliance): %d of %d resolved\n", resolved, len(entries))
	if len(unresolved) > 0 {
		fmt.Fprintf(w, "  unresolved: %s\n", strings.Join(unresolved, " "))
	}
	if len(entries) == 0 {
		return
	}
	fmt.Fprintln(w, "  INTERFACE\tADDRESS\tMAC\tSTATE\tAGE\tANSWERED\tCHANGES\tROLE")
	for _, e := range entries {
		mac, age, ans := e.MAC, e.Age, e.Answered
		if mac == "" {
			mac, age = "(unresolved)", "-"
		}
		if ans == "" {
			ans = "-"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Interface, e.Address, mac, e.State, age, ans, e.Changes, e.Role)
	}
}

// errUnresolved is a health check of a server whose MAC the appliance does
// not hold: it is not sent, and fails.
var errUnresolved = errors.New("the server's MAC is not resolved: not checked")

// resolvedProber sends the health checks of routing-mode servers only once
// their MAC is resolved (and while it is not gone): before that the check
// fails without a packet. A server the appliance cannot send to is not
// healthy, and netstack, which would otherwise resolve each checked server
// by itself, never floods the LAN with requests its 512-entry cache keeps
// forgetting.
type resolvedProber struct {
	p  health.Prober
	nb *neigh.Resolver
}

func (g resolvedProber) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if g.nb.Unresolved(dst.Addr()) {
		return nil, errUnresolved
	}
	return g.p.DialTCP(ctx, dst)
}

func (g resolvedProber) Ping(ctx context.Context, dst netip.Addr, seq uint16) error {
	if g.nb.Unresolved(dst) {
		return errUnresolved
	}
	return g.p.Ping(ctx, dst, seq)
}
