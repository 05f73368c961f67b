package router

import (
	"net/netip"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// Two policies that need to know which addresses are the appliance's own
// and which are cluster (ghost) addresses:
//
//   - A unicast IP packet that arrived in a link-layer broadcast or
//     multicast frame is never forwarded (RFC 1812 5.3.4: "A router SHOULD
//     NOT forward ... a packet which ... was received as a link-layer
//     broadcast"). The l2-policy stage drops it, counted
//     (Stats.UnicastInGroupFrame and its verdict).
//     Packets the appliance is meant to receive pass: to one of its own
//     addresses or directed broadcasts, to the limited broadcast, to a
//     multicast group, and IPv6 to a link-local address. Without this, a
//     broadcast cluster's ghost traffic (sent to the LAN broadcast MAC) that
//     reaches a second appliance or comes back through a hairpin port would be
//     routed again, and again, until its TTL runs out.
//   - No ICMP redirect for cluster traffic, in either mode (redirect.go): a packet to or
//     from a ghost never draws one. A broadcast cluster's ghost is routed via
//     its second ghost, an address on the LAN; a client on that LAN would be
//     told to use the second ghost as its gateway, whose MAC is the broadcast
//     address, and be cut off.

// addrPolicy is the immutable snapshot the two policies read.
type addrPolicy struct {
	ghosts map[[4]byte]struct{}  // IPv4 cluster addresses, both modes
	local6 map[[16]byte]struct{} // the router's IPv6 addresses
}

// setPolicy builds the snapshot from cfg and publishes it.
func (r *Router) setPolicy(cfg *config.Config) { r.policy.Store(r.policyFor(cfg)) }

// policyFor builds the snapshot of cfg without publishing it (its
// interfaces are the router's links: they never change while it runs).
func (r *Router) policyFor(cfg *config.Config) *addrPolicy {
	p := &addrPolicy{ghosts: map[[4]byte]struct{}{}, local6: map[[16]byte]struct{}{}}
	for _, cl := range cfg.Clusters {
		if cl.Address.Is4() {
			p.ghosts[cl.Address.As4()] = struct{}{}
		}
	}
	for _, ic := range cfg.Interfaces {
		for _, a := range ic.Addresses {
			if a.Addr().Is6() {
				p.local6[a.Addr().As16()] = struct{}{}
			}
		}
	}
	return p
}

// isGhost4 reports whether a is the address of a cluster.
func (r *Router) isGhost4(a [4]byte) bool {
	p := r.policy.Load()
	if p == nil {
		return false
	}
	_, ok := p.ghosts[a]
	return ok
}

// l2Policy is the stage that drops unicast IP in group frames.
type l2Policy struct{ r *Router }

// Name implements stage.Stage.
func (l2Policy) Name() string { return "l2-policy" }

// Inbound implements stage.Stage.
func (p l2Policy) Inbound(_ *tap.Endpoint, frame []byte) stage.Verdict {
	if p.r.unicastInGroupFrame(frame) {
		return stage.Drop(stage.UnicastInGroupFrame)
	}
	return stage.Pass
}

// unicastInGroupFrame drops and counts a unicast IP packet for someone else
// that arrived in a broadcast or multicast frame, and reports whether it
// did. Everything else, and every frame to a unicast MAC, passes.
func (r *Router) unicastInGroupFrame(frame []byte) bool {
	if len(frame) < hdr.EthLen || !hdr.IsGroup(frame) {
		return false
	}
	switch hdr.EtherType(frame) {
	case hdr.EtherIPv4:
		if !hdr.IsIPv4(frame) {
			return false // netstack drops it as malformed
		}
		dst := hdr.IP4(frame[hdr.EthLen:]).Dst()
		if dst[0] >= 224 && dst[0] < 240 || dst == [4]byte{255, 255, 255, 255} {
			return false // multicast, limited broadcast
		}
		if _, ok := r.local[dst]; ok {
			return false // the router's own address or a directed broadcast
		}
	case hdr.EtherIPv6:
		if !hdr.IsIPv6(frame) {
			return false
		}
		dst := netip.AddrFrom16(hdr.IP6(frame[hdr.EthLen:]).Dst())
		if dst.IsMulticast() || dst.IsLinkLocalUnicast() {
			return false
		}
		if p := r.policy.Load(); p != nil {
			if _, ok := p.local6[dst.As16()]; ok {
				return false
			}
		}
	default:
		return false
	}
	r.stats.UnicastInGroupFrame.Add(1)
	return true
}
