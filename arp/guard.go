// Package arp owns the appliance's ARP policy beyond what netstack does by
// itself: the guard that keeps LAN hosts from binding a cluster's ghost
// address (or a broadcast cluster's second ghost) to a MAC in the appliance's
// neighbor cache. The patent requires it: every server holds the ghost as a
// secondary address, and a server that answers or announces ARP for it would
// otherwise pull the whole cluster's traffic to itself.
//
// Permanent neighbor entries (from [[neighbor]] and from broadcast clusters)
// are netstack static entries, which received ARP never changes; the guard
// drops and counts the claims before netstack sees them all the same, so an
// operator can see who is misconfigured.
package arp

import (
	"net/netip"
	"sync/atomic"

	"github.com/ghostrouter/ghostrouter/router/tap"
)

const (
	ethHeader = 14
	arpSize   = 28
	opRequest = 1
	opReply   = 2
)

// Stats counts the ARP claims the guard dropped.
type Stats struct {
	Requests   atomic.Uint64 // ARP requests whose sender address is protected
	Replies    atomic.Uint64 // ARP replies whose sender address is protected
	Gratuitous atomic.Uint64 // gratuitous ARP (sender == target) for a protected address
}

// Total is the number of claims dropped.
func (s *Stats) Total() uint64 {
	return s.Requests.Load() + s.Replies.Load() + s.Gratuitous.Load()
}

// Guard is a tap.Hook that drops every ARP packet claiming a protected
// address. The protected set is an immutable snapshot swapped whole.
type Guard struct {
	set   atomic.Pointer[map[[4]byte]struct{}]
	stats Stats
}

var _ tap.Hook = (*Guard)(nil)

// NewGuard returns a guard protecting addrs (IPv6 entries are ignored: there
// is no ARP for them).
func NewGuard(addrs []netip.Addr) *Guard {
	g := &Guard{}
	g.Protect(addrs)
	return g
}

// Protect replaces the protected set.
func (g *Guard) Protect(addrs []netip.Addr) {
	m := make(map[[4]byte]struct{}, len(addrs))
	for _, a := range addrs {
		if a.Is4() {
			m[a.As4()] = struct{}{}
		}
	}
	g.set.Store(&m)
}

// Stats returns the guard's counters.
func (g *Guard) Stats() *Stats { return &g.stats }

// Inbound implements tap.Hook.
func (g *Guard) Inbound(_ *tap.Endpoint, frame []byte) bool {
	if len(frame) < ethHeader+arpSize || frame[12] != 0x08 || frame[13] != 0x06 {
		return false
	}
	p := frame[ethHeader:]
	// htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4
	if p[0] != 0 || p[1] != 1 || p[2] != 0x08 || p[3] != 0 || p[4] != 6 || p[5] != 4 {
		return false
	}
	set := g.set.Load()
	if set == nil {
		return false
	}
	sender := [4]byte(p[14:18])
	if _, ok := (*set)[sender]; !ok {
		return false
	}
	target := [4]byte(p[24:28])
	op := uint16(p[6])<<8 | uint16(p[7])
	switch {
	case sender == target:
		g.stats.Gratuitous.Add(1)
	case op == opReply:
		g.stats.Replies.Add(1)
	default:
		g.stats.Requests.Add(1)
	}
	return true
}
