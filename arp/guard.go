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
//
// It also owns duplicate-address detection: every claim is recorded as a
// conflict (address, role, the claiming MAC, the link, how often, when) for
// `status` and logged, at most once a second per address; and Probe sends
// RFC 5227 ARP probes, which a host holding the address answers, so a
// conflict present at start shows at once.
package arp

import (
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync/atomic"
	"time"

	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

const (
	ethHeader = hdr.EthLen
	arpSize   = hdr.ARPLen
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

// Guard is a datapath stage (stage.Stage) that drops every ARP packet
// claiming a protected address. The protected set is an immutable snapshot swapped whole.
type Guard struct {
	set   atomic.Pointer[map[[4]byte]*entry]
	stats Stats
	log   *slog.Logger // nil: conflicts are recorded, not logged
}

// Role says what a protected address is, for conflict reports.
type Role struct {
	Kind string // KindGhost, KindSecondGhost or KindInterface
	Name string // the cluster's or the interface's name
}

// Kinds of protected address.
const (
	KindGhost       = "ghost"        // a cluster's ghost: servers hold it but must never answer ARP for it
	KindSecondGhost = "second ghost" // a broadcast cluster's second ghost: must be a free LAN address
	KindInterface   = "interface"    // one of the appliance's own addresses
)

func (r Role) String() string {
	if r.Kind == KindInterface {
		return "address of interface " + r.Name
	}
	return r.Kind + " of cluster " + r.Name
}

// hint is what an operator should do about a conflict on an address of
// this role.
func (r Role) hint() string {
	switch r.Kind {
	case KindGhost:
		return "a server answers or announces ARP for the ghost: it needs arp_ignore=1 and arp_announce=2 (ghostnode setup sets them)"
	case KindSecondGhost:
		return "broadcast_address must be a free LAN address: another host uses it"
	default:
		return "another host on the link uses the appliance's address"
	}
}

// entry is one protected address's conflict record. Updated atomically by
// the receive goroutines; no allocation per claim.
type entry struct {
	role    Role
	claims  atomic.Uint64
	mac     atomic.Uint64 // the latest claimer, 6 bytes packed
	link    atomic.Pointer[tap.Endpoint]
	first   atomic.Int64 // unix nanoseconds of the first claim, 0 for none
	last    atomic.Int64
	logged  atomic.Int64  // when the last log line was written
	loggedM atomic.Uint64 // the MAC it named
}

// Conflict is what `status` shows of one address claimed by a LAN host.
type Conflict struct {
	Address   netip.Addr `json:"address"`
	Role      string     `json:"role"`
	MAC       string     `json:"mac"`       // the latest claimer
	Interface string     `json:"interface"` // where its claim arrived
	Claims    uint64     `json:"claims"`
	First     time.Time  `json:"first"`
	Last      time.Time  `json:"last"`
	Hint      string     `json:"hint"`
}

var _ stage.Stage = (*Guard)(nil)

// NewGuard returns a guard protecting addrs (IPv6 entries are ignored: there
// is no ARP for them). Conflicts are logged to log when it is not nil.
func NewGuard(addrs map[netip.Addr]Role, log *slog.Logger) *Guard {
	g := &Guard{log: log}
	g.Protect(addrs)
	return g
}

// Protect replaces the protected set. Addresses kept with the same role
// keep their conflict records.
func (g *Guard) Protect(addrs map[netip.Addr]Role) {
	old := g.set.Load()
	m := make(map[[4]byte]*entry, len(addrs))
	for a, r := range addrs {
		if !a.Is4() {
			continue
		}
		k := a.As4()
		if old != nil {
			if e := (*old)[k]; e != nil && e.role == r {
				m[k] = e
				continue
			}
		}
		m[k] = &entry{role: r}
	}
	g.set.Store(&m)
}

// Conflicts lists the protected addresses some LAN host has claimed, by
// address.
func (g *Guard) Conflicts() []Conflict {
	set := g.set.Load()
	if set == nil {
		return nil
	}
	var out []Conflict
	for k, e := range *set {
		n := e.claims.Load()
		if n == 0 {
			continue
		}
		c := Conflict{
			Address: netip.AddrFrom4(k), Role: e.role.String(), MAC: unpackMAC(e.mac.Load()).String(),
			Claims: n, First: time.Unix(0, e.first.Load()), Last: time.Unix(0, e.last.Load()), Hint: e.role.hint(),
		}
		if l := e.link.Load(); l != nil {
			c.Interface = l.Name()
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address.Less(out[j].Address) })
	return out
}

func packMAC(b []byte) uint64 {
	var v uint64
	for _, x := range b[:6] {
		v = v<<8 | uint64(x)
	}
	return v
}

func unpackMAC(v uint64) net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	for i := 5; i >= 0; i-- {
		m[i] = byte(v)
		v >>= 8
	}
	return m
}

// record notes one claim of e's address by the sender MAC in p (the ARP
// payload) arriving on ep, and logs it unless this address was logged less
// than a second ago (a minute, for the same MAC).
func (g *Guard) record(e *entry, ep *tap.Endpoint, p []byte, kind string) {
	now := time.Now().UnixNano()
	mac := packMAC(p[8:14])
	e.claims.Add(1)
	e.mac.Store(mac)
	if ep != nil {
		e.link.Store(ep)
	}
	e.first.CompareAndSwap(0, now)
	e.last.Store(now)
	if g.log == nil {
		return
	}
	prev := e.logged.Load()
	wait := int64(time.Second)
	if e.loggedM.Load() == mac {
		wait = int64(time.Minute)
	}
	if prev != 0 && now-prev < wait || !e.logged.CompareAndSwap(prev, now) {
		return
	}
	e.loggedM.Store(mac)
	link := ""
	if ep != nil {
		link = ep.Name()
	}
	g.log.Warn("address conflict: a LAN host claims a protected address; its ARP is dropped",
		"address", netip.AddrFrom4([4]byte(p[14:18])), "role", e.role.String(), "mac", unpackMAC(mac).String(),
		"interface", link, "arp", kind, "claims", e.claims.Load(), "hint", e.role.hint())
}

// Stats returns the guard's counters.
func (g *Guard) Stats() *Stats { return &g.stats }

// Name implements stage.Stage.
func (g *Guard) Name() string { return "arp-guard" }

// Inbound implements stage.Stage: an ARP packet claiming a protected
// address is recorded and dropped; everything else passes.
func (g *Guard) Inbound(ep *tap.Endpoint, frame []byte) stage.Verdict {
	if g.claim(ep, frame) {
		return stage.Drop(stage.AddressClaim)
	}
	return stage.Pass
}

// claim reports whether frame is an ARP packet claiming a protected
// address, and records it.
func (g *Guard) claim(ep *tap.Endpoint, frame []byte) bool {
	if len(frame) < ethHeader+arpSize || hdr.EtherType(frame) != hdr.EtherARP {
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
	e := (*set)[sender]
	if e == nil {
		return false
	}
	if ep != nil && [6]byte(p[8:14]) == ep.MACBytes() {
		return false // the appliance's own announcement, looped back (a hairpin bridge port): no claim
	}
	target := [4]byte(p[24:28])
	op := uint16(p[6])<<8 | uint16(p[7])
	kind := "request"
	switch {
	case sender == target:
		g.stats.Gratuitous.Add(1)
		kind = "gratuitous"
	case op == opReply:
		g.stats.Replies.Add(1)
		kind = "reply"
	default:
		g.stats.Requests.Add(1)
	}
	g.record(e, ep, p, kind)
	return true
}

// ProbeSize is the length of the frame AppendProbe builds (the Ethernet
// minimum, padding included).
const ProbeSize = 60

// AppendProbe builds into dst (ProbeSize bytes of capacity) an RFC 5227 ARP
// probe from srcMAC for target: a broadcast request whose sender address is
// 0.0.0.0, so no host learns anything from it, and which a host holding
// target answers.
func AppendProbe(dst []byte, srcMAC [6]byte, target netip.Addr) []byte {
	f := dst[:ProbeSize]
	clear(f)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], srcMAC[:])
	f[12], f[13] = 0x08, 0x06
	p := f[ethHeader:]
	p[0], p[1], p[2], p[3], p[4], p[5] = 0, 1, 0x08, 0, 6, 4
	p[6], p[7] = 0, opRequest
	copy(p[8:14], srcMAC[:])
	t := target.As4()
	copy(p[24:28], t[:])
	return f
}

// Probe sends a probe for every IPv4 address in targets on ep: a host that
// holds one answers, and the guard records and logs the conflict when the
// address is protected.
func Probe(ep *tap.Endpoint, targets []netip.Addr) {
	var buf [ProbeSize]byte
	for _, a := range targets {
		if a.Is4() {
			ep.WriteFrame(AppendProbe(buf[:0], ep.MACBytes(), a))
		}
	}
}
