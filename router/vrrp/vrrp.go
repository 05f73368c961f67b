package vrrp

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// Link is what a virtual router needs of the link it lives on.
type Link struct {
	EP *tap.Endpoint
	// V4 and V6 are the link's own addresses the advertisements are sent
	// from (V6 preferably link-local); invalid when the link has none.
	V4, V6 netip.Addr
	// Broadcasts are the link's IPv4 subnet broadcast addresses: IP
	// broadcasts a link-layer broadcast may carry.
	Broadcasts []netip.Addr
}

// Deps are what the virtual routers use from the rest of the appliance.
type Deps struct {
	// Link returns the named interface's link.
	Link func(ifname string) (Link, bool)
	// Resolve returns a unicast peer's MAC, starting resolution when it is
	// not known (then ok is false and that advertisement is not sent).
	Resolve func(ifname string, a netip.Addr) (mac [6]byte, ok bool)
	// Local, when set, makes a virtual address one of the appliance's own
	// while it is master (so it answers ping and TCP to it), and not again
	// when it is not.
	Local func(ifname string, a netip.Addr, on bool) error
	// Ready, when set, holds the virtual routers in Initialize (they neither
	// advertise nor take over) until it reports true or ReadyWait passes:
	// an appliance takes part in the election only once it can dispatch
	// (e.g. its servers' MACs are resolved).
	Ready     func() bool
	ReadyWait time.Duration // default 10s
	Logger    *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Counters of one virtual router. All are updated atomically.
type Counters struct {
	AdvertsIn   atomic.Uint64 // valid advertisements for this virtual router
	AdvertsOut  atomic.Uint64
	ShutdownsIn atomic.Uint64 // priority 0 received
	ChecksumOld atomic.Uint64 // valid advertisements with the IPv4 message-only checksum
	// ChecksumOldUnicast counts unicast advertisements whose pseudo-header
	// named the multicast group (older keepalived): accepted.
	ChecksumOldUnicast atomic.Uint64
	AddrMismatch       atomic.Uint64 // advertisements whose address list differs from ours (accepted, logged once)
	IntervalDiffer     atomic.Uint64 // advertisements with another interval than ours (accepted: a backup adopts the master's)
	SendErrors         atomic.Uint64
	ARPReplies         atomic.Uint64 // ARP / NDP answers for the virtual addresses
	Gratuitous         atomic.Uint64 // gratuitous ARPs / unsolicited NAs sent
	Transitions        atomic.Uint64
}

// Stats counts what the stage dropped, for all virtual routers.
type Stats struct {
	BadHeader   atomic.Uint64 // IP header invalid, or a fragment
	BadTTL      atomic.Uint64 // TTL / hop limit not 255: dropped (RFC 5798 7.1)
	Malformed   atomic.Uint64 // Parse failed (not v3 advertisement, short, zero fields)
	BadChecksum atomic.Uint64
	UnknownVRID atomic.Uint64 // no virtual router with that VRID and family on the link, or we own its addresses (priority 255: RFC 5798 7.1)
	OwnLooped   atomic.Uint64 // our own advertisement, looped back
	QueueFull   atomic.Uint64 // the state machines' queue was full: dropped
	ToVirtual   atomic.Uint64 // IP packets addressed to a virtual address (not the owner's): dropped (Accept_Mode false)
	// BcastUnicast counts unicast IP packets received in a link-layer
	// broadcast (another appliance's broadcast-mode cluster traffic on a
	// shared LAN): not forwarded (RFC 1812 5.3.4), or two appliances would
	// send each other's frames back and forth until the TTL ran out.
	BcastUnicast atomic.Uint64
}

// Transition is one change of state.
type Transition struct {
	At     time.Time `json:"at"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
}

// maxTransitions are kept per virtual router (the oldest are forgotten).
const maxTransitions = 32

// Gratuitous ARPs / unsolicited NAs on becoming master: one at once, then
// garpRepeats more garpSpacing apart (the advertisement interval, within
// 100ms..1s).
const garpRepeats = 2

// instance is one configured virtual router.
type instance struct {
	cfg  config.VRRP
	link Link
	v6   bool
	vmac [6]byte
	src  netip.Addr // advertisements' source
	dst  netip.Addr // the group
	vip4 [][4]byte  // virtual IPv4 addresses, for the ARP check
	vip6 [][16]byte

	master atomic.Bool // the datapath's view: answer ARP/NDP for the VIPs
	ctr    Counters

	// Owned by the run goroutine:
	m        *Machine
	garpLeft int
	garpAt   time.Time
	buf      []byte
	ipID     uint16
	warned   bool // the address mismatch was logged

	// Guarded by Set.mu:
	transitions []Transition
	view        view
}

// view is what Status shows of the machine, copied by the run goroutine.
type view struct {
	state  string
	master string
	prio   uint8
	mai    time.Duration
}

// event is one advertisement handed from the datapath to the run goroutine.
type event struct {
	in       *instance
	src      netip.Addr
	priority uint8
	interval time.Duration
}

// Set is the appliance's virtual routers: the datapath stage that takes
// their advertisements and answers ARP/NDP for their addresses, and the
// goroutine that runs their state machines and sends their
// advertisements.
type Set struct {
	d     Deps
	log   *slog.Logger
	insts []*instance
	links []linkInsts // per endpoint, for the datapath
	stats Stats

	events chan event
	stop   chan struct{}
	done   chan struct{}
	closed atomic.Bool

	mu       sync.Mutex // guards transitions, watchers
	watchers []func()
}

type linkInsts struct {
	ep     *tap.Endpoint
	insts  []*instance
	bcasts [][4]byte // the link's IPv4 subnet broadcasts
}

// New checks the configured virtual routers against the links and returns
// them, not yet running.
func New(cfgs []config.VRRP, d Deps) (*Set, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &Set{d: d, log: d.Logger, events: make(chan event, 256), stop: make(chan struct{}), done: make(chan struct{})}
	for _, c := range cfgs {
		l, ok := d.Link(c.Interface)
		if !ok {
			return nil, fmt.Errorf("vrrp %s: no interface %q", c.Name(), c.Interface)
		}
		in := &instance{cfg: c, link: l, v6: c.IPv6()}
		in.vmac = VirtualMAC(c.VRID, in.v6)
		if in.v6 {
			in.src, in.dst = l.V6, Group6()
		} else {
			in.src, in.dst = l.V4, Group4()
		}
		if !in.src.IsValid() {
			return nil, fmt.Errorf("vrrp %s: interface %s has no address of the family to send from", c.Name(), c.Interface)
		}
		for _, a := range c.Addresses {
			if a.Is4() {
				in.vip4 = append(in.vip4, a.As4())
			} else {
				in.vip6 = append(in.vip6, a.As16())
			}
		}
		in.m = NewMachine(c.Priority, c.Interval, c.Preempt, in.src)
		s.insts = append(s.insts, in)
		found := false
		for i := range s.links {
			if s.links[i].ep == l.EP {
				s.links[i].insts = append(s.links[i].insts, in)
				found = true
			}
		}
		if !found {
			li := linkInsts{ep: l.EP, insts: []*instance{in}}
			for _, b := range l.Broadcasts {
				li.bcasts = append(li.bcasts, b.As4())
			}
			s.links = append(s.links, li)
		}
	}
	return s, nil
}

// Watch registers f, called (from the run goroutine, not holding any lock)
// after every change of any virtual router's state.
func (s *Set) Watch(f func()) {
	s.mu.Lock()
	s.watchers = append(s.watchers, f)
	s.mu.Unlock()
}

// Start runs the state machines.
func (s *Set) Start() {
	go s.run()
}

// Close shuts every virtual router down: a master sends priority 0, so its
// backup takes over after its skew time, and gives its addresses and MAC
// up. It returns when that is done.
func (s *Set) Close() {
	if s.closed.Swap(true) {
		return
	}
	close(s.stop)
	<-s.done
}

// Empty reports whether no virtual router is configured.
func (s *Set) Empty() bool { return len(s.insts) == 0 }

// Master reports whether this appliance is master for the interface:
// every virtual router on it is master (any virtual router at all when it
// has none). With no virtual routers configured, it always is.
func (s *Set) Master(ifname string) bool {
	if len(s.insts) == 0 {
		return true
	}
	on, any := false, false
	for _, in := range s.insts {
		if in.cfg.Interface == ifname {
			if !in.master.Load() {
				return false
			}
			on = true
		}
		any = any || in.master.Load()
	}
	return on || any
}

// GroupMaster is Master for the interface, and moreover every virtual
// router in a sync group with one on it is master too: a group in the
// middle of changing state together is not yet master. With no virtual
// routers configured, it always is.
func (s *Set) GroupMaster(ifname string) bool {
	if !s.Master(ifname) || len(s.insts) == 0 {
		return len(s.insts) == 0 || s.Master(ifname)
	}
	groups := map[string]bool{}
	for _, in := range s.insts {
		if in.cfg.Interface == ifname && in.cfg.Group != "" {
			groups[in.cfg.Group] = true
		}
	}
	for _, in := range s.insts {
		if groups[in.cfg.Group] && !in.master.Load() {
			return false
		}
	}
	return true
}

func (s *Set) run() {
	defer close(s.done)
	if !s.waitReady() {
		return
	}
	for drained := false; !drained; { // advertisements queued while waiting are stale
		select {
		case <-s.events:
		default:
			drained = true
		}
	}
	now := s.d.Now()
	for _, in := range s.insts {
		act := in.m.Start(now)
		if act&BecameMaster == 0 {
			s.record(now, in, Initialize, Backup, "startup")
		}
		s.apply(now, in, act, "startup")
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now = s.d.Now()
		next := now.Add(time.Hour)
		for _, in := range s.insts {
			if d := in.m.Deadline(); !d.IsZero() && d.Before(next) {
				next = d
			}
			if in.garpLeft > 0 && in.garpAt.Before(next) {
				next = in.garpAt
			}
		}
		timer.Reset(max(0, next.Sub(now)))
		select {
		case <-s.stop:
			s.shutdown()
			return
		case ev := <-s.events:
			now = s.d.Now()
			act := ev.in.m.Receive(now, ev.src, ev.priority, ev.interval)
			reason := ""
			if act != 0 { // most advertisements change nothing: no message to build
				reason = fmt.Sprintf("advertisement from %s priority %d", ev.src, ev.priority)
			}
			s.apply(now, ev.in, act, reason)
		case <-timer.C:
			now = s.d.Now()
			for _, in := range s.insts {
				if d := in.m.Deadline(); !d.IsZero() && !now.Before(d) {
					was := in.m.State()
					reason := "advertisement timer"
					if was == Backup {
						reason = fmt.Sprintf("master down: nothing heard for %s", MasterDownInterval(in.cfg.Priority, in.m.MasterAdverInterval()))
					}
					s.apply(now, in, in.m.Tick(now), reason)
				}
				if in.garpLeft > 0 && !now.Before(in.garpAt) {
					s.gratuitous(in)
					in.garpLeft--
					in.garpAt = now.Add(garpSpacing(in.cfg.Interval))
				}
			}
		}
	}
}

// waitReady polls Deps.Ready until it is true (or ReadyWait passed); false
// when the set was closed meanwhile.
func (s *Set) waitReady() bool {
	if s.d.Ready == nil {
		return true
	}
	wait := s.d.ReadyWait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	end := time.Now().Add(wait)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !s.d.Ready() {
		if time.Now().After(end) {
			s.log.Warn("vrrp: starting the election although the dispatcher is not ready", "waited", wait)
			return true
		}
		select {
		case <-s.stop:
			return false
		case <-tick.C:
		}
	}
	return true
}

// shutdown ends every virtual router. A master sends priority 0 and keeps
// its addresses and MAC (forwarding what still reaches it) until it hears
// the backup that took over advertise, at most the down interval of a
// priority-1 backup; then it gives them up. So a graceful stop loses
// nothing: the new master's gratuitous ARP moves the traffic before the old
// one stops taking it.
func (s *Set) shutdown() {
	now := s.d.Now()
	pending := map[*instance]time.Time{}
	end := now
	for _, in := range s.insts {
		act := in.m.Shutdown()
		if act&SendShutdown != 0 {
			s.advertise(in, 0)
			pending[in] = now
			end = maxTime(end, now.Add(MasterDownInterval(1, in.cfg.Interval)))
		}
		s.publish(in)
	}
	timer := time.NewTimer(max(0, end.Sub(now)))
	defer timer.Stop()
	for len(pending) > 0 {
		select {
		case ev := <-s.events:
			if _, ok := pending[ev.in]; ok && ev.priority > 0 {
				delete(pending, ev.in)
				s.release(s.d.Now(), ev.in, fmt.Sprintf("shutdown: priority 0 sent, %s (priority %d) took over", ev.src, ev.priority))
			}
		case <-timer.C:
			for in := range pending {
				delete(pending, in)
				s.release(s.d.Now(), in, "shutdown: priority 0 sent, no new master heard")
			}
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func garpSpacing(interval time.Duration) time.Duration {
	return min(max(interval, 100*time.Millisecond), time.Second)
}

// apply carries out a machine's actions for in, and takes its sync group
// along on a change of state.
func (s *Set) apply(now time.Time, in *instance, act Action, reason string) {
	s.do(now, in, act, reason)
	if in.cfg.Group == "" || act&(BecameMaster|BecameBackup) == 0 || act&SendShutdown != 0 {
		return
	}
	to := Backup
	if act&BecameMaster != 0 {
		to = Master
	}
	for _, o := range s.insts {
		if o != in && o.cfg.Group == in.cfg.Group {
			s.do(now, o, o.m.Force(now, to), fmt.Sprintf("sync group %q: %s became %s", in.cfg.Group, in.cfg.Name(), to))
		}
	}
}

func (s *Set) do(now time.Time, in *instance, act Action, reason string) {
	if act&SendShutdown != 0 {
		s.advertise(in, 0)
	}
	if act&BecameBackup != 0 {
		s.release(now, in, reason)
	}
	if act&BecameMaster != 0 {
		s.take(now, in, reason)
	}
	if act&SendAdvert != 0 {
		s.advertise(in, in.cfg.Priority)
	}
	s.publish(in)
	if act&SawLowerMaster != 0 {
		s.log.Warn("vrrp: another master with a lower priority on the link (a partition healing?); it will yield to our advertisements",
			"vrrp", in.cfg.Name(), "reason", reason)
		s.notify()
	}
}

// publish copies in's machine state for Status.
func (s *Set) publish(in *instance) {
	v := view{state: in.m.State().String(), mai: in.m.MasterAdverInterval()}
	if a, p := in.m.Master(); a.IsValid() {
		v.master, v.prio = a.String(), p
	}
	s.mu.Lock()
	in.view = v
	s.mu.Unlock()
}

func (s *Set) take(now time.Time, in *instance, reason string) {
	in.master.Store(true)
	s.updateMACs(in.link.EP)
	in.garpLeft = garpRepeats
	in.garpAt = now.Add(garpSpacing(in.cfg.Interval))
	s.gratuitous(in)
	prev := Backup
	if reason == "startup" {
		prev = Initialize
	}
	s.record(now, in, prev, Master, reason)
}

func (s *Set) release(now time.Time, in *instance, reason string) {
	in.master.Store(false)
	in.garpLeft = 0
	s.updateMACs(in.link.EP)
	to := in.m.State()
	s.record(now, in, Master, to, reason)
}

// updateMACs sets the additional MACs ep takes in: the virtual MACs of its
// virtual routers that are master.
func (s *Set) updateMACs(ep *tap.Endpoint) {
	var macs [][6]byte
	for _, in := range s.insts {
		if in.link.EP == ep && in.master.Load() {
			macs = append(macs, in.vmac)
		}
	}
	ep.SetAcceptMACs(macs)
}

func (s *Set) record(now time.Time, in *instance, from, to State, reason string) {
	in.ctr.Transitions.Add(1)
	s.mu.Lock()
	in.transitions = append(in.transitions, Transition{At: now, From: from.String(), To: to.String(), Reason: reason})
	if len(in.transitions) > maxTransitions {
		in.transitions = append(in.transitions[:0], in.transitions[len(in.transitions)-maxTransitions:]...)
	}
	s.mu.Unlock()
	master, prio := in.m.Master()
	s.log.Info("vrrp transition", "vrrp", in.cfg.Name(), "from", from.String(), "to", to.String(), "reason", reason,
		"master", master.String(), "master_priority", prio)
	s.notify()
}

func (s *Set) notify() {
	s.mu.Lock()
	ws := append([]func(){}, s.watchers...)
	s.mu.Unlock()
	for _, f := range ws {
		f()
	}
}

// advertise sends one advertisement of in with the given priority: to the
// group, or to each unicast peer.
func (s *Set) advertise(in *instance, priority uint8) {
	msg := Message{VRID: in.cfg.VRID, Priority: priority, Interval: uint16(in.cfg.Interval / (10 * time.Millisecond)), Addrs: in.cfg.Addresses, Checksum: PseudoHeader}
	if in.cfg.Checksum == config.ChecksumRFC9568 {
		msg.Checksum = MessageOnly
	}
	if len(in.cfg.UnicastPeers) == 0 {
		s.sendAdvert(in, &msg, in.dst, multicastMAC(in.dst))
		return
	}
	for _, p := range in.cfg.UnicastPeers {
		mac, ok := s.d.Resolve(in.cfg.Interface, p)
		if !ok {
			in.ctr.SendErrors.Add(1)
			continue
		}
		s.sendAdvert(in, &msg, p, mac)
	}
}

func (s *Set) sendAdvert(in *instance, msg *Message, dst netip.Addr, ethDst [6]byte) {
	var vrrp [HeaderLen + 255*16]byte
	body, err := Append(vrrp[:0], msg, in.src, dst)
	if err != nil {
		in.ctr.SendErrors.Add(1)
		return
	}
	typ := uint16(0x0800)
	if in.v6 {
		typ = 0x86dd
	}
	in.ipID++
	b := appendEth(in.buf[:0], ethDst, in.vmac, typ)
	b = appendIP(b, in.src, dst, Protocol, len(body), in.ipID)
	b = append(b, body...)
	in.buf = b
	if err := in.link.EP.WriteFrame(b); err != nil {
		in.ctr.SendErrors.Add(1)
		return
	}
	in.ctr.AdvertsOut.Add(1)
}

// gratuitous announces the virtual addresses with the virtual MAC:
// gratuitous ARP requests (RFC 5227's announcement form) for IPv4,
// unsolicited neighbor advertisements to all nodes for IPv6.
func (s *Set) gratuitous(in *instance) {
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for _, a := range in.vip4 {
		b := appendARP(in.buf[:0], bcast, in.vmac, 1, in.vmac, a, [6]byte{}, a)
		in.buf = b
		s.write(in, b, &in.ctr.Gratuitous)
	}
	for _, a := range in.vip6 {
		b := appendNA(in.buf[:0], multicastMAC(allNodes()), in.vmac, in.src, allNodes(), netip.AddrFrom16(a), false)
		in.buf = b
		s.write(in, b, &in.ctr.Gratuitous)
	}
}

func (s *Set) write(in *instance, b []byte, ctr *atomic.Uint64) {
	if err := in.link.EP.WriteFrame(b); err != nil {
		in.ctr.SendErrors.Add(1)
		return
	}
	ctr.Add(1)
}
