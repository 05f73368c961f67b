package router

import (
	"fmt"
	"net/netip"
	"reflect"

	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

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
// Interfaces cannot change without a restart; CheckReconfigure says so
// before anything is touched.
func (r *Router) Reconfigure(cfg *config.Config) error {
	if err := r.CheckReconfigure(cfg); err != nil {
		return err
	}
	if err := r.setRoutes(cfg); err != nil {
		return err
	}
	if err := r.setStatics(wantStatics(cfg)); err != nil {
		return err
	}
	r.setPolicy(cfg)
	r.sendRedirects.Store(cfg.Router.SendRedirects)
	return nil
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
