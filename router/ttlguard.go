package router

import (
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/icmp"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// ttlGuard is the stage that answers IPv4 packets in transit that arrived
// with TTL <= 1 with ICMP time exceeded and drops them: RFC 1812 5.3.1
// requires it, and netstack would forward a TTL 1 packet with TTL 0. It
// passes everything else on.
type ttlGuard struct {
	r *Router
	l *Link
}

// Name implements stage.Stage.
func (ttlGuard) Name() string { return "ttl-guard" }

// Inbound implements stage.Stage.
func (g ttlGuard) Inbound(_ *tap.Endpoint, frame []byte) stage.Verdict {
	r := g.r
	if !hdr.IsIPv4(frame) {
		return stage.Pass
	}
	ip := hdr.IP4(frame[hdr.EthLen:])
	if ip.TTL() > 1 || ip.Version() != 4 {
		return stage.Pass
	}
	dst := ip.Dst()
	if _, ok := r.local[dst]; ok || dst[0] >= 224 || hdr.IsGroup(frame) {
		return stage.Pass // for the router itself, or multicast/broadcast: not in transit
	}
	if !header.IPv4(ip).IsValid(len(ip)) || !header.IPv4(ip).IsChecksumValid() {
		r.stats.MalformedDropped.Add(1)
		return stage.Drop(stage.Malformed)
	}
	r.sendICMPOn(g.l, false, frame, icmp.TypeTimeExceeded, icmp.CodeTTLExceeded, [4]byte{})
	r.stats.TTLExceeded.Add(1)
	return stage.Answer(stage.TTLExceeded)
}
