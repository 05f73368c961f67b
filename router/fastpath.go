package router

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// The forwarding fast path: the last stage before netstack, for ordinary
// IPv4 transit traffic (above all the servers' replies, most of the bytes).
//
//	frame ──> plain IPv4 unicast in transit? ──no──> netstack
//	            │ yes                                  ▲
//	            ▼                                      │
//	          next hop cached for the destination? ─no─┤ (miss noted: the
//	            │ yes                                  │  refresher caches it)
//	            ▼                                      │
//	          fits the egress MTU, no redirect due? ─no┘
//	            │ yes
//	            ▼
//	          TTL-1 (incremental checksum), Ethernet header rewritten,
//	          written to the egress link (super-frames whole)
//
// The cache is an immutable snapshot behind an atomic pointer, keyed by
// destination address, each entry naming the egress link and the next hop's
// MAC as netstack's neighbor table has it. A refresher goroutine builds it
// from the router's IPv4 routes (r.fib) and the neighbor table: for the
// destinations that missed, and again every second for those cached (which
// also keeps netstack verifying the next hops, which the fast path's own
// traffic never confirms). A snapshot built from another route table than
// the current one is not used: after a route change every packet takes the
// slow path until the refresher has rebuilt the cache. A next hop's MAC
// follows netstack's neighbor table within a refresh (about a second) of
// the table changing, e.g. a permanent neighbor replaced by a reload.
//
// What the fast path leaves to netstack, unchanged: anything but IPv4 with a
// 20-byte header and a valid checksum; TTL <= 1 (the TTL guard has answered
// those already); destinations that are the router's own, multicast,
// broadcast, loopback or "this network"; sources that are the router's own
// addresses or broadcasts, multicast, loopback or "this network"; packets
// larger than the egress MTU (netstack fragments them or sends
// fragmentation needed); packets that would leave by the link they came in
// on while send_redirects is on (a redirect may be due); destinations with
// no cached next hop or an unresolved one.

// FastPathStats counts the forwarding fast path's outcomes.
type FastPathStats struct {
	Forwarded   atomic.Uint64 // packets forwarded (a super-frame counts once)
	Bytes       atomic.Uint64 // IP bytes forwarded
	Missed      atomic.Uint64 // transit packets whose destination had no cached next hop: left to netstack
	WriteErrors atomic.Uint64 // the egress link refused the frame: dropped
	// Refused counts destinations not admitted to the cache because the
	// source that missed them already holds its share (fastMaxPerSource):
	// they stay on the slow path.
	Refused atomic.Uint64
}

// Bounds of the next-hop cache.
const (
	fastMaxHops     = 8192                   // destinations cached at most; beyond, misses stay on the slow path
	fastMissSlots   = 256                    // misses noted between two refreshes (lossy)
	fastRefresh     = time.Second            // cached next hops re-resolved
	fastRetry       = 100 * time.Millisecond // while a noted destination is unresolved
	fastMinInterval = 20 * time.Millisecond  // between two refreshes, however many misses
	fastPendingTTL  = 3 * time.Second        // an unresolvable destination is given up after this
	fastIdle        = 30 * time.Second       // a destination unused for this long leaves the cache
	// fastMaxPerSource is the most destinations one source address may
	// bring into the cache (cached or being resolved): one client alone
	// cannot keep the cache full and every other client on the slow path.
	fastMaxPerSource = fastMaxHops / 8
)

// fastPath is the forwarding fast path of one router. Its packet side
// (forward) is safe for concurrent use and allocates nothing; the refresher
// goroutine is its only writer.
type fastPath struct {
	r     *Router
	table atomic.Pointer[fastTable]
	stats FastPathStats

	misses  [fastMissSlots]atomic.Uint64 // destination<<32 | source of a miss (big endian); 0 is empty
	missPos atomic.Uint32
	kick    chan struct{} // capacity 1: wakes the refresher

	stop chan struct{}
	done chan struct{}

	// The refresher's own state.
	pending   map[[4]byte]pendingMiss // noted, not cached yet
	noRoute   map[[4]byte]time.Time   // noted, with no route: since when
	owner     map[[4]byte][4]byte     // cached destination → the source whose miss brought it in
	perSource int                     // fastMaxPerSource (tests lower it)
	lastSweep time.Time
}

// pendingMiss is a destination noted by a miss: since when, and from which
// source.
type pendingMiss struct {
	since time.Time
	src   [4]byte
}

// fastTable is one snapshot of the next-hop cache.
type fastTable struct {
	fib  *[]fibEntry // the routes it was built from
	hops map[[4]byte]*fastHop
	// known are destinations the refresher is already working on (next hop
	// unresolved) or has found no route for: a miss on them is not noted
	// again, so traffic to them cannot keep the refresher busy.
	known map[[4]byte]struct{}
}

// fastHop is where packets for one destination go.
type fastHop struct {
	out  *Link
	eth  [12]byte // destination (next hop) MAC, source (egress link) MAC
	nh   netip.Addr
	used atomic.Bool // set by packets, cleared by the refresher's idle sweep
}

// newFastPath returns the router's fast path with an empty cache and starts
// its refresher. It also groups the router's link endpoints, so that frames
// the stages forward from one link to another keep their segmentation
// offload (tap.Group).
func newFastPath(r *Router) *fastPath {
	f := &fastPath{
		r:         r,
		kick:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		pending:   map[[4]byte]pendingMiss{},
		noRoute:   map[[4]byte]time.Time{},
		owner:     map[[4]byte][4]byte{},
		perSource: fastMaxPerSource,
	}
	eps := make([]*tap.Endpoint, 0, len(r.links))
	for _, l := range r.links {
		eps = append(eps, l.EP)
	}
	tap.Group(eps...)
	f.table.Store(&fastTable{fib: r.fib.Load(), hops: map[[4]byte]*fastHop{}, known: map[[4]byte]struct{}{}})
	go f.run()
	return f
}

// FastPathStats returns the forwarding fast path's counters.
func (r *Router) FastPathStats() *FastPathStats {
	if r.fast == nil {
		return &FastPathStats{}
	}
	return &r.fast.stats
}

// close stops the refresher. It may be called on a nil fast path.
func (f *fastPath) close() {
	if f == nil {
		return
	}
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

// fastStage is the fast path as the stage of one link.
type fastStage struct {
	f *fastPath
	l *Link
}

// Name implements stage.Stage.
func (fastStage) Name() string { return "fast-path" }

// Inbound implements stage.Stage.
func (s fastStage) Inbound(_ *tap.Endpoint, frame []byte) stage.Verdict {
	return s.f.forward(s.l, frame)
}

// forward forwards frame, received on in, when it is ordinary IPv4 transit
// traffic with a cached next hop: Consumed, or Dropped on a write error;
// Pass when it is not the fast path's. It allocates nothing.
func (f *fastPath) forward(in *Link, frame []byte) stage.Verdict {
	if f == nil || len(frame) < hdr.EthLen+hdr.IPv4Min+8 || !hdr.IsIPv4(frame) || hdr.IsGroup(frame) {
		return stage.Pass
	}
	ip := hdr.IP4(frame[hdr.EthLen:])
	if ip[0] != 0x45 || ip.TTL() <= 1 { // IPv4 without options; TTL <= 1 is the TTL guard's
		return stage.Pass
	}
	tot := ip.TotalLen()
	if tot < hdr.IPv4Min || tot > len(ip) {
		return stage.Pass
	}
	dst, src := ip.Dst(), ip.Src()
	t := f.table.Load()
	h := t.hops[dst]
	if h == nil {
		f.noteMiss(t, dst, src)
		return stage.Pass
	}
	if t.fib != f.r.fib.Load() {
		// The routes changed since the snapshot: slow path until rebuilt.
		f.wake()
		return stage.Pass
	}
	if !ordinarySource(src) || checksum.Checksum(ip[:hdr.IPv4Min], 0) != 0xffff {
		return stage.Pass
	}
	if _, ok := f.r.local[src]; ok {
		return stage.Pass
	}
	out := h.out
	// Only a packet longer than the MTU (a super-frame always is) needs its
	// segment size looked up.
	if mtu := out.EP.MTU(); tot > int(mtu) && hdr.Exceeds(ip, hdr.IPv4Min, tot, ip.Protocol(), in.EP.SegmentSize(frame), mtu) {
		return stage.Pass
	}
	if out == in && f.r.sendRedirects.Load() {
		return stage.Pass
	}
	hdr.DecTTL(ip) // as the dispatcher and Linux's ip_decrease_ttl do
	copy(frame[0:12], h.eth[:])
	if !h.used.Load() {
		h.used.Store(true)
	}
	if err := out.EP.WriteFrame(frame[:hdr.EthLen+tot]); err != nil {
		f.stats.WriteErrors.Add(1)
		return stage.Drop(stage.WriteError)
	}
	f.stats.Forwarded.Add(1)
	f.stats.Bytes.Add(uint64(tot))
	return stage.Consumed
}

// noteMiss records a destination the refresher should cache, and the
// source that missed it, unless the packet is not one the fast path could
// ever take.
func (f *fastPath) noteMiss(t *fastTable, dst, src [4]byte) {
	if !ordinaryDestination(dst) {
		return
	}
	if _, ok := f.r.local[dst]; ok {
		return
	}
	f.stats.Missed.Add(1)
	if _, ok := t.known[dst]; ok {
		return
	}
	i := f.missPos.Add(1) % fastMissSlots
	f.misses[i].Store(uint64(binary.BigEndian.Uint32(dst[:]))<<32 | uint64(binary.BigEndian.Uint32(src[:])))
	f.wake()
}

func (f *fastPath) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// ordinarySource reports whether a is a source address a router forwards
// without a second look: not "this network" (0/8), loopback, multicast,
// reserved or broadcast.
func ordinarySource(a [4]byte) bool {
	return a[0] != 0 && a[0] != 127 && a[0] < 224
}

// ordinaryDestination is the same test for destinations, which also must
// not be link-local (RFC 3927: never forwarded).
func ordinaryDestination(a [4]byte) bool {
	return ordinarySource(a) && !(a[0] == 169 && a[1] == 254)
}

// run is the refresher: it rebuilds the cache when woken by a miss or a
// route change, and on a timer.
func (f *fastPath) run() {
	defer close(f.done)
	timer := time.NewTimer(fastRefresh)
	defer timer.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-f.kick:
		case <-timer.C:
		}
		start := time.Now()
		wait := fastRefresh
		if f.refresh(start) {
			wait = fastRetry
		}
		// However often misses wake it, the refresher runs at most every
		// fastMinInterval.
		if d := fastMinInterval - time.Since(start); d > 0 {
			select {
			case <-f.stop:
				return
			case <-time.After(d):
			}
		}
		timer.Reset(wait)
	}
}

// refresh rebuilds the cache: every cached destination and every noted miss
// is looked up again in the routes and the neighbor table, idle entries are
// swept out. It reports whether some noted destination is still unresolved.
func (f *fastPath) refresh(now time.Time) bool {
	// Each source's share: what its misses brought in, cached or pending.
	share := map[[4]byte]int{}
	for _, src := range f.owner {
		share[src]++
	}
	for _, p := range f.pending {
		share[p.src]++
	}
	for i := range f.misses {
		if v := f.misses[i].Swap(0); v != 0 {
			var dst, src [4]byte
			binary.BigEndian.PutUint32(dst[:], uint32(v>>32))
			binary.BigEndian.PutUint32(src[:], uint32(v))
			_, p := f.pending[dst]
			_, n := f.noRoute[dst]
			if p || n || len(f.pending) >= fastMaxHops {
				continue
			}
			if _, cached := f.owner[dst]; cached {
				continue
			}
			if share[src] >= f.perSource {
				f.stats.Refused.Add(1)
				continue
			}
			share[src]++
			f.pending[dst] = pendingMiss{since: now, src: src}
		}
	}
	old := f.table.Load()
	sweep := now.Sub(f.lastSweep) >= fastIdle
	if sweep {
		f.lastSweep = now
	}
	fibp := f.r.fib.Load()
	fib := *fibp
	for dst, since := range f.noRoute {
		if fibp != old.fib || now.Sub(since) > fastPendingTTL {
			delete(f.noRoute, dst) // the routes changed, or time to look again
		}
	}

	// Every destination wanted, with its route.
	type want struct {
		l  *Link
		nh netip.Addr
	}
	wants := map[[4]byte]want{}
	route := func(dst [4]byte) (want, bool) {
		a := netip.AddrFrom4(dst)
		if _, ok := f.r.local[dst]; ok || !ordinaryDestination(dst) {
			return want{}, false
		}
		for i := range fib {
			if fib[i].prefix.Contains(a) {
				nh := fib[i].gw
				if !nh.IsValid() {
					nh = a
				}
				return want{l: fib[i].link, nh: nh}, true
			}
		}
		return want{}, false
	}
	for dst, h := range old.hops {
		if sweep {
			if !h.used.Swap(false) {
				continue // idle for a whole sweep period
			}
		}
		if w, ok := route(dst); ok {
			wants[dst] = w
		}
	}
	for dst, pm := range f.pending {
		if _, ok := wants[dst]; ok || now.Sub(pm.since) > fastPendingTTL {
			delete(f.pending, dst)
			continue
		}
		if len(wants) >= fastMaxHops {
			break
		}
		w, ok := route(dst)
		if !ok {
			// No route (netstack answers net unreachable), or one of the
			// router's own addresses.
			delete(f.pending, dst)
			if len(f.noRoute) < fastMaxHops {
				f.noRoute[dst] = now
			}
			continue
		}
		wants[dst] = w
	}

	// The next hops' MACs: one neighbor table read per link, one
	// resolution request per next hop (starting ARP, or keeping a stale
	// entry verified).
	macs := map[want][6]byte{}
	resolved := map[want]bool{}
	neigh := map[*Link]map[netip.Addr][6]byte{}
	for _, w := range wants {
		if _, done := resolved[w]; done {
			continue
		}
		nt, ok := neigh[w.l]
		if !ok {
			nt = f.neighbors(w.l)
			neigh[w.l] = nt
		}
		mac, ok := nt[w.nh]
		resolved[w] = ok
		if ok {
			macs[w] = mac
		}
		f.r.stack.GetLinkAddress(w.l.NIC, address(w.nh), tcpip.Address{}, ipv4.ProtocolNumber, nil)
	}

	hops := make(map[[4]byte]*fastHop, len(wants))
	changed := fibp != old.fib
	unresolved := false
	for dst, w := range wants {
		if !resolved[w] {
			if _, ok := f.pending[dst]; ok {
				unresolved = true
			}
			changed = changed || old.hops[dst] != nil
			continue
		}
		var eth [12]byte
		mac := macs[w]
		src := w.l.EP.MACBytes()
		copy(eth[0:6], mac[:])
		copy(eth[6:12], src[:])
		if h := old.hops[dst]; h != nil && h.out == w.l && h.eth == eth && h.nh == w.nh {
			hops[dst] = h
		} else {
			hops[dst] = &fastHop{out: w.l, eth: eth, nh: w.nh}
			changed = true
		}
		if pm, ok := f.pending[dst]; ok {
			f.owner[dst] = pm.src
			delete(f.pending, dst)
		}
	}
	for dst := range f.owner {
		if hops[dst] == nil {
			delete(f.owner, dst) // swept, unroutable or unresolved: its share is free again
		}
	}
	if len(hops) != len(old.hops) {
		changed = true
	}
	known := make(map[[4]byte]struct{}, len(f.pending)+len(f.noRoute))
	for dst := range f.pending {
		known[dst] = struct{}{}
	}
	for dst := range f.noRoute {
		known[dst] = struct{}{}
	}
	if len(known) != len(old.known) {
		changed = true
	} else {
		for dst := range known {
			if _, ok := old.known[dst]; !ok {
				changed = true
				break
			}
		}
	}
	if changed {
		f.table.Store(&fastTable{fib: fibp, hops: hops, known: known})
	}
	return unresolved
}

// neighbors returns the usable IPv4 neighbor entries of link l.
func (f *fastPath) neighbors(l *Link) map[netip.Addr][6]byte {
	out := map[netip.Addr][6]byte{}
	entries, e := f.r.stack.Neighbors(l.NIC, ipv4.ProtocolNumber)
	if e != nil {
		return out
	}
	for _, n := range entries {
		if n.Addr.Len() != 4 || len(n.LinkAddr) != 6 {
			continue
		}
		switch n.State {
		case stack.Reachable, stack.Stale, stack.Delay, stack.Probe, stack.Static:
			out[netip.AddrFrom4(n.Addr.As4())] = [6]byte([]byte(n.LinkAddr))
		}
	}
	return out
}
