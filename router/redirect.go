package router

import (
	"net/netip"

	"github.com/ghostrouter/ghostrouter/icmp"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// redirector is the redirect policy, the last stage before netstack: with
// send_redirects on, it sends an ICMP host redirect (RFC 1812 5.2.7.2) for
// an ordinary IPv4 packet in transit that will leave by the link it came in
// on, toward a next hop on the sender's own subnet: the sender could have
// sent it there directly. The packet is still forwarded: the verdict is
// always Pass. Cluster traffic never draws one: a routing-mode cluster's
// has been consumed by the dispatcher stage, and a packet to or from any
// ghost (a broadcast cluster's goes via its second ghost, on the LAN) is
// left alone here.
type redirector struct {
	r *Router
	l *Link
}

// Name implements stage.Stage.
func (redirector) Name() string { return "redirect" }

// Inbound implements stage.Stage.
func (s redirector) Inbound(_ *tap.Endpoint, frame []byte) stage.Verdict {
	if s.r.sendRedirects.Load() {
		s.r.maybeRedirect(s.l, frame)
	}
	return stage.Pass
}

// fibEntry is one IPv4 route as the redirect decision sees it.
type fibEntry struct {
	prefix netip.Prefix
	gw     netip.Addr // invalid: on-link
	link   *Link
}

// maybeRedirect sends the redirect for frame, received on l, when one is
// due (see redirector).
func (r *Router) maybeRedirect(l *Link, frame []byte) {
	if !hdr.IsIPv4(frame) || hdr.IsGroup(frame) {
		return
	}
	ip := hdr.IP4(frame[hdr.EthLen:])
	if ip[0] != 0x45 { // version 4, no options: options (e.g. source routing) never draw a redirect
		return
	}
	dst := netip.AddrFrom4(ip.Dst())
	if _, ok := r.local[dst.As4()]; ok || dst.IsMulticast() {
		return
	}
	if r.isGhost4(dst.As4()) || r.isGhost4(ip.Src()) {
		return
	}
	var route *fibEntry
	fib := *r.fib.Load()
	for i := range fib {
		if fib[i].prefix.Contains(dst) {
			route = &fib[i]
			break
		}
	}
	if route == nil || route.link != l {
		return
	}
	next := route.gw
	if !next.IsValid() {
		next = dst
	}
	src := netip.AddrFrom4(ip.Src())
	for _, p := range l.Config.Addresses {
		if p.Addr().Is4() && p.Masked().Contains(src) && p.Masked().Contains(next) && src != next {
			r.sendICMPOn(l, false, frame, icmp.TypeRedirect, icmp.CodeRedirectHost, next.As4())
			r.stats.RedirectsSent.Add(1)
			return
		}
	}
}
