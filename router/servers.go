package router

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// ServerNeighbors installs the servers' MACs that the appliance's own
// resolver holds as permanent netstack entries (neigh.Statics), so that
// netstack's traffic to a server (health checks) uses the guarded MAC and no
// received ARP or NDP changes it.
type ServerNeighbors struct{ r *Router }

// ServerNeighbors returns the router's neigh.Statics.
func (r *Router) ServerNeighbors() ServerNeighbors { return ServerNeighbors{r} }

// SetStatic makes mac the permanent entry of addr on ifname.
func (s ServerNeighbors) SetStatic(ifname string, addr netip.Addr, mac [6]byte) error {
	return s.r.AddStaticNeighbor(ifname, addr, mac[:])
}

// RemoveStatic removes addr's entry on ifname.
func (s ServerNeighbors) RemoveStatic(ifname string, addr netip.Addr) {
	l, err := s.r.link(ifname)
	if err != nil {
		return
	}
	proto := ipv4.ProtocolNumber
	if addr.Is6() {
		proto = ipv6.ProtocolNumber
	}
	s.r.stack.RemoveNeighbor(l.NIC, proto, address(addr))
}

// SourceAddress is the appliance's first address on ifname in the family of
// like: the sender of its neighbor requests there.
func (r *Router) SourceAddress(ifname string, like netip.Addr) (netip.Addr, bool) {
	p, err := r.InterfaceAddress(ifname, like)
	if err != nil {
		return netip.Addr{}, false
	}
	return p.Addr(), true
}
