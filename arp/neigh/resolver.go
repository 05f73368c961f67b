package neigh

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ghostrouter/ghostrouter/arp"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// Target is one server address the appliance resolves.
type Target struct {
	Interface string     // the link the server is on
	Addr      netip.Addr // the server's address
	Role      string     // what it is, for status and logs: "server 3 of cluster web"
	// Pin, when not zero, is the server's MAC from the configuration: the
	// entry holds it for good, sends nothing and learns nothing.
	Pin [6]byte
	// External: netstack already has a permanent entry for Addr (a
	// [[neighbor]]); the resolver leaves netstack's table alone for it.
	External bool
}

// Port is the link a resolver sends its requests on (a *tap.Endpoint).
type Port interface {
	WriteFrame(frame []byte) error
	MACBytes() [6]byte
}

// Statics mirrors the resolver's entries into netstack's neighbor table as
// permanent entries, so that the appliance's own traffic to a server (health
// checks) goes to the MAC the guard holds, and nothing received changes it.
type Statics interface {
	SetStatic(ifname string, addr netip.Addr, mac [6]byte) error
	RemoveStatic(ifname string, addr netip.Addr)
}

// Deps are what a resolver uses from the rest of the appliance.
type Deps struct {
	// Port returns the link of an interface.
	Port func(ifname string) (Port, bool)
	// Source returns the appliance's address on ifname in the family of
	// like: the sender of requests, the address replies must be for.
	Source func(ifname string, like netip.Addr) (netip.Addr, bool)
	// Statics, when not nil, receives every entry's MAC.
	Statics Statics
	// OnChange, when not nil, is called (from the resolver's goroutine,
	// without its lock) after a new snapshot is published.
	OnChange func()
	Logger   *slog.Logger
}

// Params are the resolver's timers and rate. DefaultParams documents each.
type Params struct {
	Rate    float64       // requests per second on all links together
	Burst   int           // requests that may go out at once
	Retry   time.Duration // between requests for an unresolved address
	Retries int           // unanswered requests before backing off to Backoff
	Backoff time.Duration // between requests once Retries went unanswered
	Refresh time.Duration // a MAC is re-verified this long after its last answer (x0.75 to x1.25, by address)
	// Probe and Probes: verification sends Probes unicast requests to the
	// known MAC, Probe apart; when none is answered within Probe of the last,
	// the MAC is gone. That is the bound: Probes x Probe.
	Probe    time.Duration
	Probes   int
	Cooldown time.Duration // a claim starts a verification at most this often per address
}

// DefaultParams: 1000 requests/s (burst 100), so a thousand servers resolve
// in about a second; retries 1 s apart, 3 of them, then every 5 s; refresh
// every 30 s (22.5 to 37.5 s, spread by address); verification: 3 unicast
// probes 500 ms apart, so a MAC that stopped answering is replaced 1.5 s
// after the claim that started the verification (plus one round trip); a
// claim starts at most one verification per address per 2 s.
func DefaultParams() Params {
	return Params{
		Rate: 1000, Burst: 100,
		Retry: time.Second, Retries: 3, Backoff: 5 * time.Second,
		Refresh: 30 * time.Second,
		Probe:   500 * time.Millisecond, Probes: 3,
		Cooldown: 2 * time.Second,
	}
}

// States of an entry.
const (
	StateUnresolved = "unresolved" // no MAC known: broadcast requests
	StateReachable  = "reachable"  // known and answering
	StateVerifying  = "verifying"  // known; unicast probes to it outstanding
	StateGone       = "gone"       // known MAC stopped answering: broadcast requests, the first answer replaces it
	StatePinned     = "pinned"     // configured: mac = "..."
)

// Stats counts the resolver's outcomes.
type Stats struct {
	Requests    atomic.Uint64 // requests sent (broadcast and unicast)
	Deferred    atomic.Uint64 // times due requests were held back by the rate (sent a little later)
	Learned     atomic.Uint64 // MACs learned from answers to the appliance's requests
	Changed     atomic.Uint64 // known MACs replaced after the old one went away
	Confirmed   atomic.Uint64 // answers from the known MAC
	Claims      atomic.Uint64 // frames stating another MAC (or a broadcast/multicast one) for a server: not applied, dropped
	Unsolicited atomic.Uint64 // answers to no outstanding request, for a server with no MAC yet: not learned, dropped
	SendErrors  atomic.Uint64 // requests the link refused
}

type key struct {
	ifname string
	addr   netip.Addr
}

// entry is one server address. Guarded by Resolver.mu.
type entry struct {
	t        Target
	state    string
	mac      [6]byte   // the known MAC; zero when none
	learned  time.Time // when mac was learned
	answered time.Time // the last answer from mac
	changes  int       // times mac was replaced
	due      time.Time // when the next request goes out
	tries    int       // requests sent in the current state
	window   time.Time // an answer before this is an answer to our request
	probeTo  [6]byte   // where the outstanding request went (zero: broadcast)
	sent     time.Time // when the last request went out
	quiet    time.Time // no claim-started verification before this
	spread   float64   // 0..1, from the address: spreads refreshes
	conflict conflict
}

type conflict struct {
	claims      uint64
	mac         [6]byte
	kind        string
	first, last time.Time
	logged      time.Time
	loggedMAC   [6]byte
}

// Resolver resolves and guards servers' MACs. See the package documentation.
type Resolver struct {
	d   Deps
	p   Params
	log *slog.Logger

	mu      sync.Mutex // guards everything below it
	entries map[key]*entry
	order   []*entry // for the scan, in target order
	next    int      // where the next scan starts (fairness under the rate)
	tokens  float64
	refill  time.Time
	dirty   bool
	statics map[key][6]byte // what netstack has from us

	snap     atomic.Pointer[map[key][6]byte]     // the published MACs
	addrs    atomic.Pointer[map[key]bool]        // the targets, for the hook's lock-free filter
	resolved atomic.Pointer[map[netip.Addr]bool] // every target address: whether a MAC is published for it
	stats    Stats

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

var _ stage.Stage = (*Resolver)(nil)

// New returns a resolver with no targets; Start starts it.
func New(d Deps, p Params) *Resolver {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Resolver{d: d, p: p, log: d.Logger, entries: map[key]*entry{}, statics: map[key][6]byte{},
		tokens: float64(p.Burst), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	empty := map[key][6]byte{}
	r.snap.Store(&empty)
	none := map[key]bool{}
	r.addrs.Store(&none)
	nothing := map[netip.Addr]bool{}
	r.resolved.Store(&nothing)
	return r
}

// Stats returns the resolver's counters.
func (r *Resolver) Stats() *Stats { return &r.stats }

// SetTargets makes targets the resolved set. Entries kept (same interface,
// address and pin) keep their MAC, state and conflict record; new ones are
// due at once; removed ones leave netstack's table.
func (r *Resolver) SetTargets(targets []Target) {
	r.mu.Lock()
	now := time.Now()
	old := r.entries
	r.entries = make(map[key]*entry, len(targets))
	r.order = r.order[:0]
	addrs := make(map[key]bool, len(targets))
	for _, t := range targets {
		k := key{t.Interface, t.Addr}
		if _, dup := r.entries[k]; dup {
			continue
		}
		e := old[k]
		if e == nil || e.t.Pin != t.Pin {
			e = &entry{state: StateUnresolved, spread: spreadOf(t.Addr)} // due at once
			if t.Pin != ([6]byte{}) {
				e.state, e.mac, e.learned = StatePinned, t.Pin, now
			}
		}
		e.t = t
		r.entries[k] = e
		r.order = append(r.order, e)
		addrs[k] = true
	}
	r.addrs.Store(&addrs)
	// Which targets have a MAC, at once: health checks may start before
	// the goroutine publishes.
	resolved := make(map[netip.Addr]bool, len(r.entries))
	for k, e := range r.entries {
		resolved[k.addr] = resolved[k.addr] || e.mac != ([6]byte{}) && e.state != StateGone && (*r.snap.Load())[k] == e.mac
	}
	r.resolved.Store(&resolved)
	r.dirty = true
	r.mu.Unlock()
	r.kick()
}

// Resync installs every entry in netstack's table again (at the next
// publication): the router may have removed some (a [[neighbor]] for a
// server's address dropped by a reload).
func (r *Resolver) Resync() {
	r.mu.Lock()
	for k := range r.statics {
		r.statics[k] = [6]byte{}
	}
	r.dirty = true
	r.mu.Unlock()
	r.kick()
}

// spreadOf is a fraction in [0, 1) from the address: refreshes of many
// servers learned at once spread over half the refresh interval.
func spreadOf(a netip.Addr) float64 {
	b := a.As16()
	h := uint32(2166136261)
	for _, x := range b {
		h = (h ^ uint32(x)) * 16777619
	}
	return float64(h%1024) / 1024
}

// LinkAddress returns the MAC the resolver holds for addr on ifname (the
// dispatcher's dispatch.Resolver). It reads the published snapshot: no lock,
// no side effect.
func (r *Resolver) LinkAddress(ifname string, addr netip.Addr) ([6]byte, bool) {
	mac, ok := (*r.snap.Load())[key{ifname, addr}]
	return mac, ok
}

// Unresolved reports whether addr is a server address (on any link) for
// which no MAC is published: not yet resolved, or its MAC gone. The
// appliance's own traffic to such a server would make netstack resolve it
// by itself (and, with more servers than its cache holds, again and again).
func (r *Resolver) Unresolved(addr netip.Addr) bool {
	ok, tracked := (*r.resolved.Load())[addr]
	return tracked && !ok
}

// Start starts the resolver's goroutine; Close stops it.
func (r *Resolver) Start() {
	r.wg.Add(1)
	go r.loop()
}

// Close stops the resolver. Netstack's entries stay (the router goes with it).
func (r *Resolver) Close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

func (r *Resolver) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Resolver) loop() {
	defer r.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		wait := r.step(time.Now())
		r.publish()
		t.Reset(wait)
		select {
		case <-r.stop:
			return
		case <-r.wake:
			t.Stop() // Reset above discards any value it left (Go 1.23 timers)
		case <-t.C:
		}
	}
}

// step sends the requests due at now, as the rate allows, and returns how
// long until the next is due (at most 100 ms).
func (r *Resolver) step(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.refill.IsZero() {
		r.tokens = min(float64(r.p.Burst), r.tokens+now.Sub(r.refill).Seconds()*r.p.Rate)
	}
	r.refill = now
	next := now.Add(100 * time.Millisecond)
	n := len(r.order)
	var buf [FrameSize]byte
	for i := range n {
		e := r.order[(r.next+i)%n]
		if e.state == StatePinned {
			continue
		}
		if e.state == StateVerifying && e.tries >= r.p.Probes && !now.Before(e.due) {
			// Probes unicast requests, Probe apart, none answered: the MAC is gone.
			e.state, e.tries = StateGone, 0
			r.changed() // not dispatched to while gone
			r.log.Warn("server MAC no longer answers; the first answer to a broadcast request replaces it",
				"interface", e.t.Interface, "address", e.t.Addr, "role", e.t.Role, "mac", macString(e.mac),
				"probes", r.p.Probes, "interval", r.p.Probe)
		}
		if e.state == StateReachable && !now.Before(e.due) {
			e.state, e.tries = StateVerifying, 0
		}
		if now.Before(e.due) {
			if e.due.Before(next) {
				next = e.due
			}
			continue
		}
		if r.tokens < 1 {
			r.stats.Deferred.Add(1)
			r.next = (r.next + i) % n // resume here: no entry starves behind others
			wait := time.Duration((1 - r.tokens) / r.p.Rate * float64(time.Second))
			return max(wait, time.Millisecond)
		}
		r.tokens--
		var to [6]byte
		switch e.state {
		case StateVerifying:
			to = e.mac
			e.due = now.Add(r.p.Probe)
			e.window = now.Add(r.p.Probe)
		default: // unresolved, gone
			e.due = now.Add(r.p.Retry)
			if e.tries+1 >= r.p.Retries {
				e.due = now.Add(r.p.Backoff)
			}
			// An answer counts until the next request: a LAN host
			// swamped by broadcasts may answer seconds late.
			e.window = e.due
		}
		e.tries++
		e.probeTo, e.sent = to, now
		r.send(e, to, buf[:0])
		if e.due.Before(next) {
			next = e.due
		}
	}
	return max(next.Sub(now), time.Millisecond)
}

// send writes one request for e to to (zero: broadcast). Called with mu held.
func (r *Resolver) send(e *entry, to [6]byte, buf []byte) {
	port, ok := r.d.Port(e.t.Interface)
	if !ok {
		r.stats.SendErrors.Add(1)
		return
	}
	src, ok := r.d.Source(e.t.Interface, e.t.Addr)
	if !ok {
		r.stats.SendErrors.Add(1)
		return
	}
	f := AppendRequest(buf, port.MACBytes(), src, e.t.Addr, to)
	if f == nil {
		r.stats.SendErrors.Add(1)
		return
	}
	if err := port.WriteFrame(f); err != nil {
		r.stats.SendErrors.Add(1)
		return
	}
	r.stats.Requests.Add(1)
}

// publish stores a new snapshot when an entry's MAC changed, mirrors the
// MACs into netstack's table, and calls OnChange.
func (r *Resolver) publish() {
	r.mu.Lock()
	if !r.dirty {
		r.mu.Unlock()
		return
	}
	r.dirty = false
	snap := make(map[key][6]byte, len(r.entries))
	resolved := make(map[netip.Addr]bool, len(r.entries))
	type op struct {
		k   key
		mac [6]byte
		del bool
	}
	var ops []op
	for k, e := range r.entries {
		if _, seen := resolved[k.addr]; !seen {
			resolved[k.addr] = false
		}
		if e.mac == ([6]byte{}) || e.state == StateGone {
			continue
		}
		snap[k] = e.mac
		resolved[k.addr] = true
		if !e.t.External && r.statics[k] != e.mac {
			r.statics[k] = e.mac
			ops = append(ops, op{k: k, mac: e.mac})
		}
	}
	for k := range r.statics {
		e := r.entries[k]
		switch {
		case e != nil && e.t.External:
			delete(r.statics, k) // a [[neighbor]] now: the router's entry, not ours to remove
		case e == nil || e.mac == ([6]byte{}) || e.state == StateGone:
			delete(r.statics, k)
			ops = append(ops, op{k: k, del: true})
		}
	}
	r.snap.Store(&snap)
	r.resolved.Store(&resolved)
	r.mu.Unlock()
	if r.d.Statics != nil {
		for _, o := range ops {
			if o.del {
				r.d.Statics.RemoveStatic(o.k.ifname, o.k.addr)
			} else if err := r.d.Statics.SetStatic(o.k.ifname, o.k.addr, o.mac); err != nil {
				r.log.Error("server neighbor entry", "interface", o.k.ifname, "address", o.k.addr, "err", err)
			}
		}
	}
	if r.d.OnChange != nil {
		r.d.OnChange()
	}
}

// Name implements stage.Stage.
func (r *Resolver) Name() string { return "neighbors" }

// Inbound implements stage.Stage: it takes the ARP and NDP frames that state a
// MAC for a server address on ep's link. Answers to the appliance's own
// requests teach or confirm a MAC; every frame stating a MAC other than the
// known one, or a broadcast or multicast one, is a claim: recorded, not
// applied, dropped. A server's own ARP request or neighbor solicitation
// stating its known MAC (or, before one is known, a unicast one) goes on to
// netstack, which answers it. Other frames pass.
func (r *Resolver) Inbound(ep *tap.Endpoint, frame []byte) stage.Verdict {
	if len(frame) < hdr.EthLen+arpLen {
		return stage.Pass
	}
	switch {
	case hdr.EtherType(frame) == hdr.EtherARP:
	case hdr.IsIPv6(frame) && len(frame) >= hdr.EthLen+hdr.IPv6Len+24 &&
		hdr.IP6(frame[hdr.EthLen:]).NextHeader() == hdr.ProtoICMPv6 && (frame[hdr.EthLen+hdr.IPv6Len] == icmp6NS || frame[hdr.EthLen+hdr.IPv6Len] == icmp6NA):
	default:
		return stage.Pass
	}
	return r.input(ep.Name(), ep.MACBytes(), frame, time.Now())
}

// input handles one ARP or NDP frame received on ifname by the appliance's
// MAC self: Consumed when it answers the appliance's own request, Dropped
// when it is a claim or unsolicited, Pass when netstack should see it.
func (r *Resolver) input(ifname string, self [6]byte, frame []byte, now time.Time) stage.Verdict {
	m, ok := Parse(frame, self)
	if !ok || !(*r.addrs.Load())[key{ifname, m.Addr}] {
		return stage.Pass
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[key{ifname, m.Addr}]
	if e == nil {
		return stage.Pass
	}
	known := e.mac != ([6]byte{})
	switch {
	case !Unicast(m.MAC):
		r.claim(e, m, now, false)
		return stage.Drop(stage.MACClaim)
	case m.Kind == KindARPRequest || m.Kind == KindNS:
		// The server asking for someone (the appliance, usually): it
		// goes on to netstack unless it states another MAC.
		if known && m.MAC != e.mac {
			r.claim(e, m, now, true)
			return stage.Drop(stage.MACClaim)
		}
		if (e.state == StateUnresolved || e.state == StateGone) && !now.Before(e.sent.Add(r.p.Retry)) && now.Before(e.due) {
			// A server we have no (live) MAC for is talking: ask it now
			// rather than at the next retry.
			e.due = now
			r.kick()
		}
		return stage.Pass
	case m.Reply && now.Before(e.window) && r.forUs(e, m):
		r.answer(e, m, now)
		return stage.Consumed
	case known && m.MAC != e.mac:
		r.claim(e, m, now, true)
		return stage.Drop(stage.MACClaim)
	default:
		// Unsolicited (gratuitous, unsolicited advertisement, a late or
		// stray reply) stating the known MAC, or any MAC before one is
		// known: never learned, and netstack must not learn it either.
		if !known {
			r.stats.Unsolicited.Add(1)
		}
		return stage.Drop(stage.Unsolicited)
	}
}

// forUs reports whether an answer is addressed to the address the
// appliance's requests come from.
func (r *Resolver) forUs(e *entry, m Message) bool {
	src, ok := r.d.Source(e.t.Interface, e.t.Addr)
	return ok && m.To == src
}

// answer applies an answer to the appliance's own outstanding request.
func (r *Resolver) answer(e *entry, m Message, now time.Time) {
	switch e.state {
	case StatePinned:
		if m.MAC != e.mac {
			r.claim(e, m, now, false)
		}
	case StateUnresolved:
		e.mac, e.learned = m.MAC, now
		r.stats.Learned.Add(1)
		r.changed()
		r.reachable(e, now)
		r.log.Info("server resolved", "interface", e.t.Interface, "address", e.t.Addr, "role", e.t.Role, "mac", macString(m.MAC))
	case StateGone:
		if m.MAC != e.mac {
			old := e.mac
			e.mac, e.learned = m.MAC, now
			e.changes++
			r.stats.Changed.Add(1)
			if e.conflict.mac == m.MAC {
				e.conflict = conflict{} // the claimer was the server itself: no conflict left
			}
			r.log.Warn("server MAC changed: the old one stopped answering, the new one answered the appliance's request",
				"interface", e.t.Interface, "address", e.t.Addr, "role", e.t.Role, "old", macString(old), "new", macString(m.MAC))
		}
		r.changed() // published again, changed or not
		r.reachable(e, now)
	default: // reachable, verifying
		if m.MAC != e.mac {
			r.claim(e, m, now, true)
			return
		}
		if e.state == StateVerifying && e.probeTo != e.mac {
			return // a unicast probe went elsewhere: cannot be its answer
		}
		r.stats.Confirmed.Add(1)
		r.reachable(e, now)
	}
}

// changed asks the goroutine to publish a new snapshot.
func (r *Resolver) changed() {
	r.dirty = true
	r.kick()
}

// reachable marks e's MAC as just answered and schedules its refresh.
func (r *Resolver) reachable(e *entry, now time.Time) {
	e.state, e.tries, e.answered = StateReachable, 0, now
	e.window = time.Time{}
	e.due = now.Add(time.Duration(float64(r.p.Refresh) * (0.75 + 0.5*e.spread)))
}

// claim records a frame stating m.MAC for e's address, which is not applied.
// With verify, and a known MAC not verified lately, it starts a
// verification: the known MAC keeps the address for as long as it answers.
func (r *Resolver) claim(e *entry, m Message, now time.Time, verify bool) {
	r.stats.Claims.Add(1)
	c := &e.conflict
	c.claims++
	c.mac, c.kind, c.last = m.MAC, m.Kind, now
	if c.first.IsZero() {
		c.first = now
	}
	if verify && e.state == StateReachable && !now.Before(e.quiet) {
		e.state, e.tries, e.due = StateVerifying, 0, now
		e.quiet = now.Add(r.p.Cooldown)
		r.kick()
	}
	wait := time.Second
	if c.loggedMAC == m.MAC {
		wait = time.Minute
	}
	if !c.logged.IsZero() && now.Sub(c.logged) < wait {
		return
	}
	c.logged, c.loggedMAC = now, m.MAC
	r.log.Warn("address conflict: a LAN host claims a server's address with another MAC; not applied",
		"interface", e.t.Interface, "address", e.t.Addr, "role", e.t.Role, "mac", macString(m.MAC), "known", macString(e.mac),
		"kind", m.Kind, "claims", c.claims)
}

func macString(m [6]byte) string {
	if m == ([6]byte{}) {
		return ""
	}
	return net.HardwareAddr(m[:]).String()
}

// Entry is one server address as `status` shows it.
type Entry struct {
	Interface string     `json:"interface"`
	Address   netip.Addr `json:"address"`
	Role      string     `json:"role"`
	MAC       string     `json:"mac,omitempty"`
	State     string     `json:"state"`
	// Age is how long ago MAC was learned (or pinned); Answered how long
	// ago it last answered the appliance. Rounded to milliseconds.
	Age      string `json:"age,omitempty"`
	AgeMS    int64  `json:"age_ms"`
	Answered string `json:"answered,omitempty"`
	Changes  int    `json:"changes"`
}

// Entries lists every server address, by interface and address.
func (r *Resolver) Entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	out := make([]Entry, 0, len(r.order))
	for _, e := range r.order {
		x := Entry{Interface: e.t.Interface, Address: e.t.Addr, Role: e.t.Role, MAC: macString(e.mac), State: e.state, Changes: e.changes}
		if x.MAC != "" {
			age := now.Sub(e.learned).Round(time.Millisecond)
			x.Age, x.AgeMS = age.String(), age.Milliseconds()
		}
		if !e.answered.IsZero() {
			x.Answered = now.Sub(e.answered).Round(time.Millisecond).String() + " ago"
		}
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Interface != out[j].Interface {
			return out[i].Interface < out[j].Interface
		}
		return out[i].Address.Less(out[j].Address)
	})
	return out
}

// Conflicts lists the server addresses some LAN host claimed with another
// MAC, in the form of the appliance's address-conflict table.
func (r *Resolver) Conflicts() []arp.Conflict {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []arp.Conflict
	for _, e := range r.order {
		c := e.conflict
		if c.claims == 0 {
			continue
		}
		out = append(out, arp.Conflict{
			Address: e.t.Addr, Role: e.t.Role, MAC: macString(c.mac), Interface: e.t.Interface,
			Claims: c.claims, First: c.first, Last: c.last,
			Hint: fmt.Sprintf("a LAN host states another MAC (%s) for a server whose MAC %s answers; not applied (pin it with mac = in [[cluster.server]])",
				c.kind, macString(e.mac)),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address.Less(out[j].Address) })
	return out
}
