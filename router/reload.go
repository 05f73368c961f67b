package router

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// static is one permanent neighbor entry.
type static struct {
	ifname string
	addr   netip.Addr
	mac    config.MAC
}

// wantStatics lists the permanent neighbors cfg asks for: its [[neighbor]]
// entries and, for each broadcast cluster, the second ghost bound to the LAN
// broadcast MAC (the patent's FIG. 5), through which the route to the ghost
// goes.
func wantStatics(cfg *config.Config) []static {
	var out []static
	for _, n := range cfg.Neighbors {
		out = append(out, static{n.Interface, n.Address, n.MAC})
	}
	for _, cl := range cfg.Clusters {
		if cl.Mode == config.ModeBroadcast {
			out = append(out, static{cl.Interface, cl.BroadcastAddress, config.MAC(BroadcastMAC)})
		}
	}
	return out
}

// setStatics makes the permanent neighbor entries exactly want: entries no
// longer wanted are removed, new ones added.
func (r *Router) setStatics(want []static) error {
	keep := map[static]bool{}
	for _, s := range want {
		keep[s] = true
	}
	for _, s := range r.statics {
		if keep[s] {
			continue
		}
		l, err := r.link(s.ifname)
		if err != nil {
			continue
		}
		proto := ipv4.ProtocolNumber
		if s.addr.Is6() {
			proto = ipv6.ProtocolNumber
		}
		r.stack.RemoveNeighbor(l.NIC, proto, address(s.addr))
	}
	have := map[static]bool{}
	for _, s := range r.statics {
		have[s] = true
	}
	for _, s := range want {
		if have[s] {
			continue
		}
		if err := r.AddStaticNeighbor(s.ifname, s.addr, s.mac[:]); err != nil {
			return err
		}
	}
	r.statics = want
	return nil
}

// Reconfigure applies what can change while the router runs: routes
// (broadcast clusters' included), permanent neighbors and send_redirects.
// It is Prepare followed by Commit (without CheckNextHops).
func (r *Router) Reconfigure(cfg *config.Config) error {
	p, err := r.Prepare(cfg)
	if err != nil {
		return err
	}
	return p.Commit()
}

// Plan is a reconfiguration the router has computed and validated without
// changing anything: Commit installs it. A plan is committed at most once;
// one that is dropped changes nothing.
type Plan struct {
	r        *Router
	cfg      *config.Config
	table    []tcpip.Route
	fib      []fibEntry
	statics  []static
	policy   *addrPolicy
	redirect bool
	done     bool
}

// Prepare computes what cfg asks of the running router and checks that it
// can be installed, touching nothing: the interfaces are the running ones
// (CheckReconfigure), and no route's next hop is a cluster's ghost or
// second ghost. No host answers ARP for a ghost (its servers hold it
// without announcing it, and the ARP guard drops claims of it), and a
// second ghost is bound to the LAN broadcast MAC: routing through either
// would black-hole the route or flood it. CheckNextHops adds the check that
// needs the live links.
func (r *Router) Prepare(cfg *config.Config) (*Plan, error) {
	if err := r.CheckReconfigure(cfg); err != nil {
		return nil, err
	}
	table, fib, err := r.routeTable(cfg)
	if err != nil {
		return nil, err
	}
	statics := wantStatics(cfg)
	for _, s := range statics {
		if _, err := r.link(s.ifname); err != nil {
			return nil, err
		}
	}
	for _, rt := range cfg.Routes {
		for _, cl := range cfg.Clusters {
			switch rt.Via {
			case cl.Address:
				return nil, fmt.Errorf("router: route to %s: next hop %s is cluster %s's ghost: no host answers for it", rt.To, rt.Via, cl.Name)
			case cl.BroadcastAddress:
				return nil, fmt.Errorf("router: route to %s: next hop %s is cluster %s's second ghost, bound to the LAN broadcast MAC", rt.To, rt.Via, cl.Name)
			}
		}
	}
	return &Plan{r: r, cfg: cfg, table: table, fib: fib, statics: statics, policy: r.policyFor(cfg), redirect: cfg.Router.SendRedirects}, nil
}

// Running is a plan of what the router runs now: committing it later puts
// the routes, permanent neighbors, address policy and send_redirects back
// as they are (the way back when a reload fails after the router committed).
func (r *Router) Running() *Plan {
	fib := *r.fib.Load()
	return &Plan{r: r, table: r.stack.GetRouteTable(), fib: fib, statics: slices.Clone(r.statics),
		policy: r.policy.Load(), redirect: r.sendRedirects.Load()}
}

// CheckNextHops checks, touching nothing, that every next hop of the plan
// that no running route uses yet, and that is not given a permanent
// neighbor entry, answers address resolution (ARP or NDP) on its link
// before ctx ends. A next hop that does not answer is unreachable: routing
// through it would black-hole the route. Only the live link can tell; the
// configuration file's checks cannot. Next hops the running routes already
// use are not asked again, so a next hop that is down does not block
// reloads that keep it.
func (p *Plan) CheckNextHops(ctx context.Context) error {
	if p.cfg == nil {
		return nil // Running: nothing new
	}
	return p.r.checkNextHops(ctx, p.cfg)
}

// checkNextHops is Plan.CheckNextHops.
func (r *Router) checkNextHops(ctx context.Context, cfg *config.Config) error {
	type hop struct {
		ifname string
		addr   netip.Addr
	}
	running := map[hop]bool{}
	for _, rt := range r.stack.GetRouteTable() {
		if rt.Gateway.BitLen() > 0 {
			a, _ := netip.AddrFromSlice(rt.Gateway.AsSlice())
			running[hop{r.stack.FindNICNameFromID(rt.NIC), a}] = true
		}
	}
	permanent := map[hop]bool{}
	for _, s := range wantStatics(cfg) {
		permanent[hop{s.ifname, s.addr}] = true
	}
	var probe []hop
	for _, rt := range cfg.Routes {
		if !rt.Via.IsValid() {
			continue
		}
		h := hop{rt.Interface, rt.Via}
		if !running[h] && !permanent[h] && !slices.Contains(probe, h) {
			probe = append(probe, h)
		}
	}
	if len(probe) == 0 {
		return nil
	}
	type result struct {
		h   hop
		err error
	}
	done := make(chan result, len(probe))
	for _, h := range probe {
		l, err := r.link(h.ifname)
		if err != nil {
			return err
		}
		proto := ipv4.ProtocolNumber
		if h.addr.Is6() {
			proto = ipv6.ProtocolNumber
		}
		h := h
		e := r.stack.GetLinkAddress(l.NIC, address(h.addr), tcpip.Address{}, proto, func(res stack.LinkResolutionResult) {
			var err error
			if res.Err != nil {
				err = fmt.Errorf("%s", res.Err)
			}
			done <- result{h, err} // buffered for every probe: never blocks
		})
		if e != nil {
			if _, wait := e.(*tcpip.ErrWouldBlock); !wait {
				return fmt.Errorf("router: next hop %s on %s: resolve: %s", h.addr, h.ifname, e)
			}
		}
	}
	pending := map[hop]bool{}
	for _, h := range probe {
		pending[h] = true
	}
	for len(pending) > 0 {
		select {
		case res := <-done:
			if res.err != nil {
				return fmt.Errorf("router: next hop %s on %s is unreachable: address resolution failed (%v)", res.h.addr, res.h.ifname, res.err)
			}
			delete(pending, res.h)
		case <-ctx.Done():
			var names []string
			for _, h := range probe {
				if pending[h] {
					names = append(names, h.addr.String()+" on "+h.ifname)
				}
			}
			return fmt.Errorf("router: next hop %s unreachable: no answer to address resolution (%v)", strings.Join(names, ", "), ctx.Err())
		}
	}
	return nil
}

// Commit installs the plan: the routing table, the permanent neighbors,
// the address policy and send_redirects. A netstack refusal while adding
// a permanent neighbor restores what was running and is returned.
func (p *Plan) Commit() error {
	if p.done {
		return errors.New("router: plan already committed")
	}
	p.done = true
	r := p.r
	oldTable, oldFib, oldStatics := r.stack.GetRouteTable(), r.fib.Load(), r.statics
	r.installRoutes(p.table, p.fib)
	if err := r.setStatics(p.statics); err != nil {
		r.installRoutes(oldTable, *oldFib)
		// Any wanted entry may be in: diffing from them removes the new
		// ones and puts back the old ones already removed.
		r.statics = p.statics
		if rerr := r.setStatics(oldStatics); rerr != nil {
			return fmt.Errorf("router: %w; restoring the permanent neighbors: %v", err, rerr)
		}
		return fmt.Errorf("router: %w (the running configuration is restored)", err)
	}
	r.policy.Store(p.policy)
	r.sendRedirects.Store(p.redirect)
	return nil
}

// setRoutes computes and installs the routing table of cfg.
func (r *Router) setRoutes(cfg *config.Config) error {
	table, fib, err := r.routeTable(cfg)
	if err != nil {
		return err
	}
	r.installRoutes(table, fib)
	return nil
}

// installRoutes publishes a routing table to netstack and the redirect
// decision.
func (r *Router) installRoutes(table []tcpip.Route, fib []fibEntry) {
	r.fib.Store(&fib)
	r.stack.SetRouteTable(table)
}

// CheckReconfigure reports whether cfg can be applied live: its interfaces
// must be the running ones.
func (r *Router) CheckReconfigure(cfg *config.Config) error {
	if len(cfg.Interfaces) != len(r.links) {
		return fmt.Errorf("router: interfaces changed (%d configured, %d running): restart to apply", len(cfg.Interfaces), len(r.links))
	}
	for i, ic := range cfg.Interfaces {
		run := r.links[i].Config
		ic.Line, run.Line = 0, 0
		if !reflect.DeepEqual(ic, run) {
			return fmt.Errorf("router: interface %s changed: restart to apply", ic.Name)
		}
	}
	return nil
}

// RouteRow is one row of the routing table as `status` shows it.
type RouteRow struct {
	To        string `json:"to"`
	Via       string `json:"via,omitempty"`
	Interface string `json:"interface"`
}

// Routes lists netstack's routing table, longest prefix first (the order it
// is searched in).
func (r *Router) Routes() []RouteRow {
	var out []RouteRow
	for _, rt := range r.stack.GetRouteTable() {
		row := RouteRow{To: rt.Destination.String(), Interface: r.stack.FindNICNameFromID(rt.NIC)}
		if rt.Gateway.BitLen() > 0 {
			row.Via = rt.Gateway.String()
		}
		out = append(out, row)
	}
	return out
}
