// Package router owns the appliance's netstack: one NIC per configured
// interface over a TAP link endpoint, the addresses, the routing table,
// permanent neighbors, forwarding, and the lifecycle of all of it.
//
// Every inbound frame of every link passes a chain of stages before
// netstack sees it: the ones the router is given at construction
// (Options.Stages), then its own: the L2 policy (l2policy.go), the TTL
// guard (ttlguard.go), refragmentation (refrag.go), the forwarding fast
// path (fastpath.go) and the redirect policy (redirect.go). The contract
// every stage follows, their order, frame ownership and the lock order are
// in package router/stage; the chain itself is in chain.go.
//
// netstack then does what a router does: ARP, ICMP echo for its own
// addresses, longest-prefix routing, TTL decrement, ICMP unreachable errors.
// tcpip.Error values are converted to Go errors here, once.
package router

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	icmptransport "gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/ghostrouter/ghostrouter/icmp"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// BroadcastMAC is the Ethernet broadcast address, the permanent link address
// of a broadcast cluster's second ghost.
var BroadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Link is one interface of the router: its config, its netstack NIC and its
// link endpoint (and the TAP device behind it, when there is one).
type Link struct {
	Config config.Interface
	NIC    tcpip.NICID
	EP     *tap.Endpoint
	Dev    *tap.Device // nil when the endpoint was supplied by the caller

	v4 [4]byte // first IPv4 address: the source of ICMP errors sent from this link
	// hasV4 reports whether v4 is set.
	hasV4 bool
	v6    [16]byte // first IPv6 address: the source of ICMPv6 errors
	hasV6 bool
	icmp  *icmp.Budget // the ICMP errors sent from this link, per type
}

// Stats counts the router's own per-packet outcomes (netstack keeps its own).
type Stats struct {
	TTLExceeded      atomic.Uint64 // IPv4 packets in transit that arrived with TTL <= 1: time exceeded sent
	RedirectsSent    atomic.Uint64 // ICMP host redirects sent for ordinary traffic (send_redirects = true)
	ICMPRateLimited  atomic.Uint64 // ICMP errors not sent because of the rate limit
	MalformedDropped atomic.Uint64 // IPv4 packets in transit with a bad header: dropped
	// UnicastInGroupFrame: unicast IP packets for another host that arrived
	// in a link-layer broadcast or multicast frame: dropped (l2policy.go).
	UnicastInGroupFrame atomic.Uint64
	// Refragmented: IPv4 fragments in transit too big for their egress
	// link, cut keeping their offset (refrag.go).
	Refragmented atomic.Uint64
}

// Options are the parts of a router that other packages supply.
type Options struct {
	Logger *slog.Logger
	// Stages builds the stages that run, in order, on every inbound frame
	// of every link before the router's own and netstack; the first that
	// takes a frame ends its walk (package stage). New calls it once, after
	// the links are opened and before any of them receives a frame, so the
	// stages may look the links up; an error fails New.
	Stages func(r *Router) ([]stage.Stage, error)
	// Endpoints, when set, are used instead of opening TAP devices: one per
	// configured interface, by name (in-memory tests).
	Endpoints map[string]*tap.Endpoint
	// ICMPRate and ICMPBurst, when set, replace the configuration's
	// icmp_rate and icmp_burst: the ICMP errors the datapath generates
	// itself, per link and per type. netstack's own are limited separately.
	ICMPRate  float64
	ICMPBurst int
}

// Router is a running netstack router.
type Router struct {
	log   *slog.Logger
	stack *stack.Stack
	links []*Link
	// chain is the stages every link runs (chain.go); fixed by New.
	chain []chainStage
	local map[[4]byte]struct{} // the router's IPv4 addresses and directed broadcasts; fixed by New
	stats Stats
	// fib mirrors netstack's IPv4 routing table, longest prefix first, for
	// the redirect decision (only consulted when redirects are on).
	fib           atomic.Pointer[[]fibEntry]
	sendRedirects atomic.Bool
	statics       []static // permanent neighbors installed from the config
	faults        chan error
	fast          *fastPath                  // the forwarding fast path, the last stage (fastpath.go)
	policy        atomic.Pointer[addrPolicy] // ghosts and own IPv6 addresses (l2policy.go)
}

// New builds the router described by cfg: it opens (or creates) the TAP
// devices, unless opts.Endpoints supplies the links, builds the stages
// (opts.Stages) and starts forwarding. Every link's stage chain is in place
// before its receive loop starts. On error everything opened so far is
// closed again.
func New(cfg *config.Config, opts Options) (_ *Router, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ICMPRate == 0 {
		opts.ICMPRate = float64(cmp.Or(cfg.Router.ICMPRate, config.DefaultICMPRate))
	}
	if opts.ICMPBurst == 0 {
		opts.ICMPBurst = cmp.Or(cfg.Router.ICMPBurst, config.DefaultICMPBurst)
	}
	mask := uint32(cmp.Or(cfg.Router.ICMPRateMask, config.DefaultICMPRateMask))
	r := &Router{
		log:    opts.Logger,
		local:  localAddresses(cfg),
		faults: make(chan error, 16),
	}
	r.fib.Store(&[]fibEntry{})
	r.sendRedirects.Store(cfg.Router.SendRedirects)
	r.setPolicy(cfg)
	r.stack = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmptransport.NewProtocol4, icmptransport.NewProtocol6},
	})
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	for _, p := range []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber} {
		if e := r.stack.SetForwardingDefaultAndAllNICs(p, true); e != nil {
			return nil, fmt.Errorf("router: enable forwarding: %s", e)
		}
	}
	// The links are opened, but not attached to netstack: their receive
	// loops start when their NIC is created, below, after the chain is in
	// place.
	for i, ic := range cfg.Interfaces {
		l := &Link{Config: ic, NIC: tcpip.NICID(i + 1), icmp: icmp.NewBudget(opts.ICMPRate, opts.ICMPBurst, mask)}
		l.setSources()
		if err := r.openLink(l, opts.Endpoints); err != nil {
			return nil, err
		}
		r.links = append(r.links, l)
	}
	r.fast = newFastPath(r)
	var given []stage.Stage
	if opts.Stages != nil {
		if given, err = opts.Stages(r); err != nil {
			return nil, fmt.Errorf("router: stages: %w", err)
		}
	}
	r.buildChain(given)
	for _, l := range r.links {
		if err := r.addNIC(l); err != nil {
			return nil, err
		}
	}
	if err := r.setRoutes(cfg); err != nil {
		return nil, err
	}
	if err := r.setStatics(wantStatics(cfg)); err != nil {
		return nil, err
	}
	return r, nil
}

// localAddresses are the router's IPv4 addresses and their subnets'
// directed broadcasts.
func localAddresses(cfg *config.Config) map[[4]byte]struct{} {
	local := map[[4]byte]struct{}{}
	for _, ic := range cfg.Interfaces {
		for _, p := range ic.Addresses {
			if !p.Addr().Is4() {
				continue
			}
			local[p.Addr().As4()] = struct{}{}
			if b, ok := config.SubnetBroadcast(p); ok {
				local[b.As4()] = struct{}{}
			}
		}
	}
	return local
}

// setSources records the link's first IPv4 and IPv6 addresses, the sources
// of the ICMP errors sent from it.
func (l *Link) setSources() {
	for _, p := range l.Config.Addresses {
		if p.Addr().Is6() && !l.hasV6 {
			l.v6, l.hasV6 = p.Addr().As16(), true
		}
		if p.Addr().Is4() && !l.hasV4 {
			l.v4, l.hasV4 = p.Addr().As4(), true
		}
	}
}

func (r *Router) openLink(l *Link, eps map[string]*tap.Endpoint) error {
	ic := l.Config
	if eps != nil {
		ep, ok := eps[ic.Name]
		if !ok {
			return fmt.Errorf("router: no endpoint supplied for interface %s", ic.Name)
		}
		l.EP = ep
		return nil
	}
	dev, err := tap.Open(tap.DeviceConfig{Name: ic.Name, MTU: ic.MTU, Bridge: ic.Bridge, Queues: ic.Queues})
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	l.Dev = dev
	ep, err := tap.NewEndpoint(tap.EndpointConfig{
		Name:    ic.Name,
		Files:   dev.Files(),
		MAC:     ic.MAC.HardwareAddr(),
		MTU:     uint32(ic.MTU),
		OnFault: r.fault,
	})
	if err != nil {
		dev.Close()
		l.Dev = nil
		return fmt.Errorf("router: %w", err)
	}
	l.EP = ep
	verb := "opened existing"
	if dev.Created() {
		verb = "created"
	}
	r.log.Info("tap device ready", "interface", ic.Name, "action", verb, "mac", ic.MAC.String(), "mtu", ic.MTU, "bridge", ic.Bridge, "queues", len(dev.Files()))
	return nil
}

// addNIC creates the link's NIC, which attaches its endpoint and so starts
// its receive loops, and adds its addresses.
func (r *Router) addNIC(l *Link) error {
	if e := r.stack.CreateNICWithOptions(l.NIC, l.EP, stack.NICOptions{Name: l.Config.Name}); e != nil {
		return fmt.Errorf("router: create NIC %s: %s", l.Config.Name, e)
	}
	for _, p := range l.Config.Addresses {
		pa := protocolAddress(p)
		if e := r.stack.AddProtocolAddress(l.NIC, pa, stack.AddressProperties{}); e != nil {
			return fmt.Errorf("router: interface %s: add address %s: %s", l.Config.Name, p, e)
		}
	}
	return nil
}

// routeTable computes the routing table cfg asks for, without installing
// it: the connected routes of every interface and the configured routes,
// longest prefix first (netstack scans the table in order), and the IPv4
// part of it as the redirect decision reads it.
func (r *Router) routeTable(cfg *config.Config) ([]tcpip.Route, []fibEntry, error) {
	type row struct {
		route tcpip.Route
		bits  int
	}
	var rows []row
	for _, l := range r.links {
		for _, p := range l.Config.Addresses {
			rows = append(rows, row{route: tcpip.Route{Destination: subnet(p.Masked()), NIC: l.NIC}, bits: p.Bits()})
		}
	}
	for _, cl := range cfg.Clusters {
		if cl.Mode != config.ModeBroadcast {
			continue
		}
		l, err := r.link(cl.Interface)
		if err != nil {
			return nil, nil, err
		}
		host := netip.PrefixFrom(cl.Address, cl.Address.BitLen())
		rows = append(rows, row{route: tcpip.Route{Destination: subnet(host), Gateway: address(cl.BroadcastAddress), NIC: l.NIC}, bits: host.Bits()})
	}
	for _, rt := range cfg.Routes {
		l, err := r.link(rt.Interface)
		if err != nil {
			return nil, nil, err
		}
		tr := tcpip.Route{Destination: subnet(rt.To), NIC: l.NIC}
		if rt.Via.IsValid() {
			tr.Gateway = address(rt.Via)
		}
		rows = append(rows, row{route: tr, bits: rt.To.Bits()})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].bits > rows[j].bits })
	var fib []fibEntry
	table := make([]tcpip.Route, len(rows))
	for i, rw := range rows {
		table[i] = rw.route
		if rw.route.Destination.ID().Len() != 4 {
			continue
		}
		fe := fibEntry{link: r.links[rw.route.NIC-1]}
		fe.prefix = netip.PrefixFrom(netip.AddrFrom4(rw.route.Destination.ID().As4()), rw.route.Destination.Prefix())
		if rw.route.Gateway.Len() == 4 {
			fe.gw = netip.AddrFrom4(rw.route.Gateway.As4())
		}
		fib = append(fib, fe)
	}
	return table, fib, nil
}

// AddStaticNeighbor adds a permanent neighbor entry that nothing received
// from the link can change.
func (r *Router) AddStaticNeighbor(ifname string, addr netip.Addr, mac []byte) error {
	l, err := r.link(ifname)
	if err != nil {
		return err
	}
	proto := ipv4.ProtocolNumber
	if addr.Is6() {
		proto = ipv6.ProtocolNumber
	}
	if e := r.stack.AddStaticNeighbor(l.NIC, proto, address(addr), tcpip.LinkAddress(mac)); e != nil {
		return fmt.Errorf("router: interface %s: permanent neighbor %s: %s", ifname, addr, e)
	}
	return nil
}

func (r *Router) link(name string) (*Link, error) {
	for _, l := range r.links {
		if l.Config.Name == name {
			return l, nil
		}
	}
	return nil, fmt.Errorf("router: no interface %q", name)
}

// Link returns the named link.
func (r *Router) Link(name string) (*Link, bool) {
	l, err := r.link(name)
	return l, err == nil
}

// Endpoint returns the link endpoint of the named interface.
func (r *Router) Endpoint(name string) (*tap.Endpoint, bool) {
	l, err := r.link(name)
	if err != nil {
		return nil, false
	}
	return l.EP, true
}

// Links returns the router's links in configuration order.
func (r *Router) Links() []*Link { return r.links }

// Stack is the router's netstack, for the packages that add to it.
func (r *Router) Stack() *stack.Stack { return r.stack }

// Stats returns the router's own counters.
func (r *Router) Stats() *Stats { return &r.stats }

// Faults delivers link faults (a receive loop that stopped). The caller
// should log them and decide whether to shut down.
func (r *Router) Faults() <-chan error { return r.faults }

func (r *Router) fault(err error) {
	select {
	case r.faults <- err:
	default:
	}
}

// Close stops the router: the NICs are removed, the link endpoints closed and
// the TAP devices it created disappear.
func (r *Router) Close() error {
	var errs []error
	r.fast.close()
	for _, l := range r.links {
		if l.EP != nil {
			l.EP.SetHook(nil)
		}
	}
	if r.stack != nil {
		r.stack.Close()
		for _, l := range r.links {
			if l.EP != nil {
				l.EP.Close()
			}
		}
		r.stack.Wait()
	}
	for _, l := range r.links {
		if l.Dev != nil {
			if err := l.Dev.Close(); err != nil {
				errs = append(errs, err)
			}
			r.log.Info("tap device closed", "interface", l.Config.Name, "removed", l.Dev.Created())
		}
	}
	return errors.Join(errs...)
}

// SendICMPError sends an ICMPv4 error about the packet in frame (as received
// on the link of ep) back to the frame's sender, from that link's address,
// within the rate limit.
func (r *Router) SendICMPError(ep *tap.Endpoint, frame []byte, typ, code uint8, rest [4]byte) {
	r.sendICMP(ep, false, frame, typ, code, rest)
}

// SendICMPv6Error is SendICMPError for IPv6 packets (from the link's first
// IPv6 address).
func (r *Router) SendICMPv6Error(ep *tap.Endpoint, frame []byte, typ, code uint8, rest [4]byte) {
	r.sendICMP(ep, true, frame, typ, code, rest)
}

// sendICMP builds the ICMPv4 or ICMPv6 error and writes it back out of the
// link of ep, when that link has an address of the family and the rate limit
// allows.
func (r *Router) sendICMP(ep *tap.Endpoint, v6 bool, frame []byte, typ, code uint8, rest [4]byte) {
	for _, l := range r.links {
		if l.EP == ep {
			r.sendICMPOn(l, v6, frame, typ, code, rest)
			return
		}
	}
}

func (r *Router) sendICMPOn(l *Link, v6 bool, frame []byte, typ, code uint8, rest [4]byte) {
	if v6 && !l.hasV6 || !v6 && !l.hasV4 {
		return
	}
	if !l.icmp.Allow(v6, typ, code, time.Now()) {
		r.stats.ICMPRateLimited.Add(1)
		return
	}
	var buf [max(icmp.MaxErrorFrame, icmp.MaxErrorFrame6)]byte
	var out []byte
	if v6 {
		out = icmp.AppendError6(buf[:0], frame, l.EP.MACBytes(), l.v6, typ, code, rest)
	} else {
		out = icmp.AppendError4(buf[:0], frame, l.EP.MACBytes(), l.v4, typ, code, rest)
	}
	if out != nil {
		l.EP.WriteFrame(out)
	}
}

func protocolAddress(p netip.Prefix) tcpip.ProtocolAddress {
	proto := ipv4.ProtocolNumber
	if p.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: address(p.Addr()), PrefixLen: p.Bits()},
	}
}

func address(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

func subnet(p netip.Prefix) tcpip.Subnet {
	p = p.Masked()
	return tcpip.AddressWithPrefix{Address: address(p.Addr()), PrefixLen: p.Bits()}.Subnet()
}

// LinkAddress returns the MAC netstack has resolved for addr on the named
// interface. When it has none usable, it starts resolution (ARP or NDP) and
// reports false; a stale entry is returned and re-verified in the background.
func (r *Router) LinkAddress(ifname string, addr netip.Addr) ([6]byte, bool) {
	l, err := r.link(ifname)
	if err != nil {
		return [6]byte{}, false
	}
	proto := ipv4.ProtocolNumber
	if addr.Is6() {
		proto = ipv6.ProtocolNumber
	}
	want := address(addr)
	var mac [6]byte
	found := false
	entries, e := r.stack.Neighbors(l.NIC, proto)
	if e == nil {
		for _, n := range entries {
			if n.Addr != want || len(n.LinkAddr) != 6 {
				continue
			}
			switch n.State {
			case stack.Reachable, stack.Stale, stack.Delay, stack.Probe, stack.Static:
				copy(mac[:], n.LinkAddr)
				found = true
			}
		}
	}
	// Ask again every time: this starts resolution of an unknown address and
	// keeps a stale entry verified (the dispatcher's own sends bypass
	// netstack, so netstack would never re-check it otherwise).
	r.stack.GetLinkAddress(l.NIC, want, tcpip.Address{}, proto, nil)
	return mac, found
}

// Neighbor is one row of the neighbor table.
type Neighbor struct {
	Interface string
	Addr      netip.Addr
	MAC       string
	State     string
	Permanent bool
}

// Neighbors lists the neighbor table of every interface.
func (r *Router) Neighbors() []Neighbor {
	var out []Neighbor
	for _, l := range r.links {
		for _, proto := range []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber} {
			entries, e := r.stack.Neighbors(l.NIC, proto)
			if e != nil {
				continue
			}
			for _, n := range entries {
				a, _ := netip.AddrFromSlice(n.Addr.AsSlice())
				out = append(out, Neighbor{
					Interface: l.Config.Name,
					Addr:      a,
					MAC:       n.LinkAddr.String(),
					State:     n.State.String(),
					Permanent: n.State == stack.Static,
				})
			}
		}
	}
	return out
}

// AnnounceAddresses sends a gratuitous ARP request (sender = target = the
// address) for every IPv4 address of every link, so that hosts and switches
// that knew another MAC for it (a replaced or backup appliance) update at
// once rather than when their cache entry expires.
func (r *Router) AnnounceAddresses() {
	for _, l := range r.links {
		ep, e := r.stack.GetNetworkEndpoint(l.NIC, arp.ProtocolNumber)
		if e != nil {
			continue
		}
		res, ok := ep.(stack.LinkAddressResolver)
		if !ok {
			continue
		}
		for _, p := range l.Config.Addresses {
			if !p.Addr().Is4() {
				continue
			}
			a := address(p.Addr())
			if e := res.LinkAddressRequest(a, a, ""); e != nil {
				r.log.Warn("gratuitous ARP", "interface", l.Config.Name, "address", p.Addr(), "err", e.String())
			}
		}
	}
}
