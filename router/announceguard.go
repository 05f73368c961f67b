package router

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// PortRule protects one broadcast cluster's announcement port: UDP to Port
// at any address in Dst (the LAN's subnets, the ghost, the second ghost)
// is only for datagrams that arrive on the LAN itself (LAN); arriving on
// any other link, it is dropped.
type PortRule struct {
	LAN  *tap.Endpoint
	Port uint16
	Dst  []netip.Prefix
}

// PortGuard is the stage that keeps outside traffic away from the servers'
// announcement agents: the appliance never routes a datagram from a client
// network to a cluster's announce port on its LAN, so only the LAN's own
// hosts can reach it (and the agents accept only the appliance's address).
// It parses IPv4 and IPv6 (through up to four extension headers); a
// non-first fragment carries no port and passes (it is useless without the
// first, which is dropped). Safe for concurrent use; Set may run while
// frames pass. No allocation per frame.
type PortGuard struct {
	rules   atomic.Pointer[[]PortRule]
	dropped atomic.Uint64
}

// NewPortGuard returns a guard with no rules.
func NewPortGuard() *PortGuard {
	g := &PortGuard{}
	g.Set(nil)
	return g
}

// Set replaces the rules.
func (g *PortGuard) Set(rules []PortRule) { g.rules.Store(&rules) }

// Dropped counts the datagrams dropped.
func (g *PortGuard) Dropped() uint64 { return g.dropped.Load() }

// Name implements stage.Stage.
func (g *PortGuard) Name() string { return "announce-guard" }

// Inbound implements stage.Stage: it drops a frame that a rule forbids.
func (g *PortGuard) Inbound(ep *tap.Endpoint, frame []byte) stage.Verdict {
	rules := *g.rules.Load()
	if len(rules) == 0 {
		return stage.Pass
	}
	dst, port, ok := udpDst(frame)
	if !ok {
		return stage.Pass
	}
	for i := range rules {
		r := &rules[i]
		if r.LAN == ep || r.Port != port {
			continue
		}
		for _, p := range r.Dst {
			if p.Contains(dst) {
				g.dropped.Add(1)
				return stage.Drop(stage.AnnouncePort)
			}
		}
	}
	return stage.Pass
}

// udpDst returns the destination address and UDP port of an Ethernet frame
// carrying a UDP datagram's first (or only) fragment.
func udpDst(frame []byte) (netip.Addr, uint16, bool) {
	switch {
	case hdr.IsIPv4(frame):
		ip := hdr.IP4(frame[hdr.EthLen:])
		if ip.Version() != 4 || ip.Protocol() != hdr.ProtoUDP {
			return netip.Addr{}, 0, false
		}
		if ip.FragOffset() != 0 { // not the first fragment
			return netip.Addr{}, 0, false
		}
		hl := ip.HeaderLen()
		if hl < hdr.IPv4Min || len(ip) < hl+4 {
			return netip.Addr{}, 0, false
		}
		return netip.AddrFrom4(ip.Dst()), binary.BigEndian.Uint16(ip[hl+2:]), true
	case hdr.IsIPv6(frame):
		ip := hdr.IP6(frame[hdr.EthLen:])
		if ip.Version() != 6 {
			return netip.Addr{}, 0, false
		}
		dst := netip.AddrFrom16(ip.Dst())
		next, off := ip.NextHeader(), hdr.IPv6Len
		for range 4 {
			switch next {
			case hdr.ProtoUDP:
				if len(ip) < off+4 {
					return netip.Addr{}, 0, false
				}
				return dst, binary.BigEndian.Uint16(ip[off+2:]), true
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(ip) < off+8 {
					return netip.Addr{}, 0, false
				}
				next, off = ip[off], off+8+int(ip[off+1])*8
			case 44: // fragment
				if len(ip) < off+8 || binary.BigEndian.Uint16(ip[off+2:])&0xfff8 != 0 {
					return netip.Addr{}, 0, false
				}
				next, off = ip[off], off+8
			default:
				return netip.Addr{}, 0, false
			}
		}
	}
	return netip.Addr{}, 0, false
}
