package announce

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// Sender delivers one announcement datagram of cluster cl to the cluster's
// LAN: over UDP, to the LAN's subnet broadcast address, or to ff02::1 on an
// IPv6-only LAN (config.Interface.AnnounceTo of cl.Interface), and port
// cl.AnnouncePort. Acknowledgements come back to the socket it sends from
// and are handed to Announcer.HandleAck. It is called with the Announcer's
// lock (and sometimes the dispatch manager's) held and must not block for
// long; the datagram is not retained by the Announcer after the call.
type Sender func(cl *config.Cluster, datagram []byte) error

// Announcer is the appliance's side: for every broadcast cluster it runs a
// Transition (break before make), turns the announcement in force into
// authenticated datagrams and hands them to a Sender, and takes the
// servers' acknowledgements. It implements dispatch.Announcer: the manager
// calls Announce on every table change and again every announce_interval.
// While a change is in progress the Announcer repeats the announcement in
// force every RetransmitEvery(interval) on its own (Start), so that a lost
// release heals within a fraction of the interval. Safe for concurrent use.
type Announcer struct {
	epoch uint64
	send  Sender
	log   *slog.Logger
	now   func() time.Time
	// ackTimeout, when set, replaces AckTimeout(interval) (tests).
	ackTimeout time.Duration
	// onAck, when set, is told each server's first acknowledgement of an
	// announcement that changed what is granted, with the time since it
	// was issued (the announcement round trip). Called under the lock.
	onAck func(cluster string, rtt time.Duration)

	tx      atomic.Uint64 // the last Tx used, for all clusters
	sent    atomic.Uint64
	failed  atomic.Uint64
	failing atomic.Bool // the last send failed: log only the first failure of a run

	mu       sync.Mutex // guards clusters, seqs and stop
	clusters map[string]*clusterState
	// seqs keeps the last seq of a cluster whose state was dropped or
	// replaced: seqs only grow within an epoch, or servers would take the
	// new announcements for old ones.
	seqs     map[string]uint64
	ackDrops ackDrops
	// adopt holds, per cluster, another appliance's announcements to
	// continue (Adopt) when the cluster's state is created.
	adopt map[string][]*Message

	stop chan struct{}
	wg   sync.WaitGroup
}

// clusterState is one broadcast cluster's announcements.
type clusterState struct {
	cfg      config.Cluster
	tr       Transition
	lastSent time.Time
	lastCall time.Time // the manager's last Announce: a cluster no longer called is dropped
	from     map[int]netip.AddrPort
	addrs    map[int]netip.Addr // the members' addresses, from the last Announce
	// issuedSeq and issuedAt are the last announcement issued, and rttDone
	// the servers whose acknowledgement of it was timed already.
	issuedSeq uint64
	issuedAt  time.Time
	rttDone   map[int]bool
	acks      AckCounters
	// continued is the other appliance's announcement in force that this
	// one continued (nil: it started afresh).
	continued *Continued
}

// Continued names the announcement of another appliance (a master this one
// took over from) that a cluster's announcements continued.
type Continued struct {
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
	// Adopted is how many of its announcements were taken as possibly
	// still held by the servers.
	Adopted int `json:"adopted"`
}

// AckCounters count the acknowledgements of one cluster by outcome.
type AckCounters struct {
	Accepted      uint64 `json:"accepted"`
	BadSource     uint64 `json:"bad_source"` // not from the server's own address
	OtherEpoch    uint64 `json:"other_epoch"`
	UnknownServer uint64 `json:"unknown_server"`
	Future        uint64 `json:"future"`
}

// Counters of acknowledgements that name no cluster the Announcer serves.
type ackDrops struct {
	malformed, unknownCluster atomic.Uint64
}

// NewAnnouncer returns an announcer for one run of the appliance, named by
// epoch: NewEpoch's random number, a new one on every start (receivers
// treat a datagram of an epoch they heard before as a possible replay). A
// nil log discards.
func NewAnnouncer(epoch uint64, send Sender, log *slog.Logger) *Announcer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Announcer{epoch: epoch, send: send, log: log, now: time.Now, clusters: map[string]*clusterState{}, seqs: map[string]uint64{}}
}

// OnAck sets f to be told the round trip of each server's first
// acknowledgement of every announcement issued from now on: the time from
// issuing it to the acknowledgement. f runs under the Announcer's lock.
func (a *Announcer) OnAck(f func(cluster string, rtt time.Duration)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onAck = f
}

// Epoch is the announcer's epoch.
func (a *Announcer) Epoch() uint64 { return a.epoch }

// AckTimeout is how long an acquisition waits for the old owners'
// acknowledgements of the release before it excuses them: three
// announcement intervals, at least 1s (an nft transaction on a busy server
// can take most of a second) and at most 10s.
func AckTimeout(interval time.Duration) time.Duration {
	return min(max(3*interval, time.Second), 10*time.Second)
}

// RetransmitEvery is how often the announcement in force is repeated while
// a change is in progress: a quarter of the interval, 20ms to 250ms.
func RetransmitEvery(interval time.Duration) time.Duration {
	return min(max(interval/4, 20*time.Millisecond), 250*time.Millisecond)
}

// message is the datagram content of cs's announcement in force, with the
// next Tx.
func (a *Announcer) message(cs *clusterState) *Message {
	m := cs.tr.Current()
	if m == nil {
		return nil
	}
	m.Cluster, m.Epoch, m.Tx = cs.cfg.Name, a.epoch, a.tx.Add(1)
	m.Interval, m.Ghost = cs.cfg.AnnounceInterval, cs.cfg.Address
	return m
}

// Announce sets cl's target table to the membership servers and sends the
// announcement in force (implementing dispatch.Announcer; version, the
// manager's table version, is only logged). Failures are counted; the
// first of a run of failures is logged, and so is the recovery.
func (a *Announcer) Announce(cl *config.Cluster, version uint64, servers []core.Server) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	cs := a.clusters[cl.Name]
	if cs == nil || cs.cfg.Address != cl.Address || !bytes.Equal(cs.cfg.AnnounceKey, cl.AnnounceKey) {
		if cs != nil {
			a.seqs[cl.Name] = cs.tr.Seq()
		}
		cs = &clusterState{from: map[int]netip.AddrPort{}}
		cs.tr.StartAfter(a.seqs[cl.Name])
		if heard := a.adopt[cl.Name]; len(heard) > 0 {
			delete(a.adopt, cl.Name)
			last := heard[len(heard)-1]
			if err := cs.tr.Adopt(heard); err != nil {
				a.log.Warn("announcement: cannot continue the previous master's; starting afresh", "cluster", cl.Name, "err", err)
			} else {
				cs.continued = &Continued{Epoch: last.Epoch, Seq: last.Seq, Adopted: len(heard)}
				a.log.Info("announcement: continuing the previous master's", "cluster", cl.Name,
					"epoch", last.Epoch, "seq", last.Seq, "adopted", len(heard))
			}
		}
		a.clusters[cl.Name] = cs
	}
	cs.cfg, cs.lastCall = *cl, now
	cs.addrs = make(map[int]netip.Addr, len(servers))
	for _, s := range servers {
		cs.addrs[s.ID] = s.Addr
	}
	cs.tr.AckTimeout = AckTimeout(cl.AnnounceInterval)
	if a.ackTimeout > 0 {
		cs.tr.AckTimeout = a.ackTimeout
	}
	changed, err := cs.tr.SetTargetPins(cl.Hash, cl.Seed, cl.Buckets, MembersFrom(servers), PinsFrom(cl.Pins))
	if err != nil {
		a.failed.Add(1)
		a.log.Error("announcement: target table not built", "cluster", cl.Name, "version", version, "err", err)
		return
	}
	if changed {
		a.log.Debug("announcement: new target table", "cluster", cl.Name, "version", version)
	}
	a.stepLocked(cs, now)
	a.sendLocked(cs, now)
}

// Adopt makes the first Announce of cluster continue heard, the
// announcements of the appliance this one takes over from (a Follower's
// Window), instead of starting with an announcement that grants nothing. It
// has no effect on a cluster already announced.
func (a *Announcer) Adopt(cluster string, heard []*Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.adopt == nil {
		a.adopt = map[string][]*Message{}
	}
	a.adopt[cluster] = heard
}

// Flush sends every cluster's announcement in force once more now (a
// master about to hand over: the backup hears the last table issued).
func (a *Announcer) Flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	for _, cs := range a.clusters {
		a.sendLocked(cs, now)
	}
}

// stepLocked lets cs's Transition issue what is due; it reports whether
// something was issued.
func (a *Announcer) stepLocked(cs *clusterState, now time.Time) bool {
	did := false
	for range 4 { // each step issues at most one announcement; a few are enough
		issued, err := cs.tr.Step(now)
		if err != nil {
			a.failed.Add(1)
			a.log.Error("announcement: transition step", "cluster", cs.cfg.Name, "err", err)
			return did
		}
		if !issued {
			break
		}
		did = true
	}
	if did {
		m := cs.tr.Current()
		cs.issuedSeq, cs.issuedAt, cs.rttDone = m.Seq, now, map[int]bool{}
		g := cs.tr.CurrentGrants()
		unowned := 0
		for _, o := range g {
			if o == Nobody {
				unowned++
			}
		}
		a.log.Info("announcement issued", "cluster", cs.cfg.Name, "seq", m.Seq, "tables", 1+len(m.Also),
			"unowned_buckets", unowned, "settled", cs.tr.Settled())
	}
	return did
}

func (a *Announcer) sendLocked(cs *clusterState, now time.Time) {
	m := a.message(cs)
	if m == nil {
		return
	}
	cs.lastSent = now
	b, err := m.Marshal(cs.cfg.AnnounceKey)
	if err == nil {
		err = a.send(&cs.cfg, b)
	}
	if err != nil {
		a.failed.Add(1)
		if !a.failing.Swap(true) {
			a.log.Warn("announcement not sent", "cluster", cs.cfg.Name, "seq", m.Seq, "err", err)
		}
		return
	}
	a.sent.Add(1)
	if a.failing.Swap(false) {
		a.log.Info("announcements sent again", "cluster", cs.cfg.Name, "seq", m.Seq)
	}
}

// HandleAck takes one datagram that arrived at an announcement socket from
// from: an acknowledgement is checked (length, form, cluster, HMAC, epoch,
// seq, server) and recorded; one that completes a release lets the
// acquisition go out at once. Everything else is counted and dropped. The
// Acknowledgements are not signed (servers hold no secret): one is taken
// only from the address of the server it names, for the epoch in force, and
// only one that tells something new makes the Transition work. b is not
// retained.
func (a *Announcer) HandleAck(b []byte, from netip.AddrPort) {
	if len(b) > MaxAck {
		a.ackDrops.malformed.Add(1)
		return
	}
	name, err := PeekAck(b)
	if err != nil {
		a.ackDrops.malformed.Add(1)
		return
	}
	ack, err := UnmarshalAck(b)
	a.mu.Lock()
	defer a.mu.Unlock()
	cs := a.clusters[name]
	switch {
	case cs == nil:
		a.ackDrops.unknownCluster.Add(1)
		return
	case err != nil:
		a.ackDrops.malformed.Add(1)
		return
	case cs.addrs[ack.Server] != from.Addr().Unmap() && cs.addrs[ack.Server].IsValid():
		cs.acks.BadSource++
		return
	case ack.Epoch != a.epoch:
		cs.acks.OtherEpoch++
		return
	}
	now := a.now()
	advanced, err := cs.tr.Ack(ack.Server, ack.Seq, now)
	switch {
	case errors.Is(err, ErrAckFuture):
		cs.acks.Future++
		return
	case err != nil:
		cs.acks.UnknownServer++
		return
	}
	cs.acks.Accepted++
	cs.from[ack.Server] = from
	if a.onAck != nil && ack.Seq == cs.issuedSeq && !cs.issuedAt.IsZero() && !cs.rttDone[ack.Server] {
		cs.rttDone[ack.Server] = true
		a.onAck(name, now.Sub(cs.issuedAt))
	}
	if advanced && !cs.tr.Settled() && a.stepLocked(cs, now) {
		a.sendLocked(cs, now)
	}
}

// Start runs the Announcer's own timer: while a cluster's change is in
// progress it issues what is due (excusing servers past AckTimeout) and
// repeats the announcement in force every RetransmitEvery; it forgets a
// cluster the manager has not announced for ten intervals. Close stops it.
func (a *Announcer) Start() {
	a.mu.Lock()
	if a.stop != nil {
		a.mu.Unlock()
		return
	}
	a.stop = make(chan struct{})
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-a.stop:
				return
			case <-t.C:
				a.Tick()
			}
		}
	}()
}

// Close stops what Start started.
func (a *Announcer) Close() {
	a.mu.Lock()
	stop := a.stop
	a.mu.Unlock()
	if stop == nil {
		return
	}
	select {
	case <-stop:
	default:
		close(stop)
	}
	a.wg.Wait()
}

// Tick is one round of Start's timer (exported for tests that drive the
// clock themselves).
func (a *Announcer) Tick() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	for name, cs := range a.clusters {
		iv := cs.cfg.AnnounceInterval
		if iv <= 0 {
			iv = time.Second
		}
		if now.Sub(cs.lastCall) > 10*iv {
			a.seqs[name] = cs.tr.Seq()
			delete(a.clusters, name)
			continue
		}
		if cs.tr.Settled() {
			continue
		}
		issued := cs.tr.Due(now) && a.stepLocked(cs, now)
		if issued || now.Sub(cs.lastSent) >= RetransmitEvery(iv) {
			a.sendLocked(cs, now)
		}
	}
}

// Stats are the datagrams sent and those that failed (to encode or send).
func (a *Announcer) Stats() (sent, failed uint64) { return a.sent.Load(), a.failed.Load() }

// ServerStatus is one server as the announcements see it.
type ServerStatus struct {
	ID int `json:"id"`
	// AckedSeq is the last announcement the server acknowledged (0: none
	// in this epoch); AckedAt when; From where from.
	AckedSeq uint64 `json:"acked_seq"`
	AckedAt  string `json:"acked_at,omitempty"`
	From     string `json:"from,omitempty"`
	// Behind is how many announcements the server is behind the one in
	// force.
	Behind uint64 `json:"behind"`
	// Excused counts the changes that went ahead without its
	// acknowledgement (it was past the bound); Late is set from then until
	// it acknowledges the announcement in force.
	Excused uint64 `json:"excused"`
	Late    bool   `json:"late,omitempty"`
	Owned   int    `json:"owned"` // buckets the announcement in force grants it
}

// ClusterStatus is one broadcast cluster's announcements.
type ClusterStatus struct {
	Cluster string `json:"cluster"`
	Epoch   uint64 `json:"epoch"`
	Seq     uint64 `json:"seq"` // the announcement in force
	// Settled: the announcement in force is the target table; otherwise
	// Unowned buckets wait for their new owner, since WaitingSince.
	Settled      bool           `json:"settled"`
	Unowned      int            `json:"unowned"`
	WaitingSince string         `json:"waiting_since,omitempty"`
	AckTimeoutMS int64          `json:"ack_timeout_ms"`
	Excused      uint64         `json:"excused"`
	Stalls       uint64         `json:"stalls"`
	Acks         AckCounters    `json:"acks"`
	Servers      []ServerStatus `json:"servers"`
	// Continued is the previous master's announcement these continued,
	// when this appliance took over without starting afresh.
	Continued *Continued `json:"continued,omitempty"`
}

// AckDrops are the acknowledgements dropped before a cluster was known:
// malformed ones and those of clusters not announced here.
func (a *Announcer) AckDrops() (malformed, unknownCluster uint64) {
	return a.ackDrops.malformed.Load(), a.ackDrops.unknownCluster.Load()
}

// Status reports every cluster the Announcer serves, by name.
func (a *Announcer) Status() []ClusterStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ClusterStatus, 0, len(a.clusters))
	for name, cs := range a.clusters {
		st := ClusterStatus{Cluster: name, Epoch: a.epoch, Settled: cs.tr.Settled(), Acks: cs.acks,
			AckTimeoutMS: cs.tr.AckTimeout.Milliseconds(), Continued: cs.continued}
		st.Excused, st.Stalls = cs.tr.Counts()
		if w := cs.tr.Waiting(); !w.IsZero() && !st.Settled {
			st.WaitingSince = w.UTC().Format(time.RFC3339Nano)
		}
		owned := map[int]int{}
		if m := cs.tr.Current(); m != nil {
			st.Seq = m.Seq
			for _, o := range cs.tr.CurrentGrants() {
				if o == Nobody {
					st.Unowned++
				} else {
					owned[int(o)]++
				}
			}
		}
		for _, p := range cs.tr.Parties() {
			ss := ServerStatus{ID: p.ID, AckedSeq: p.Real, Excused: p.Excused, Late: p.Late, Owned: owned[p.ID]}
			if st.Seq > p.Real {
				ss.Behind = st.Seq - p.Real
			}
			if !p.AckedAt.IsZero() {
				ss.AckedAt = p.AckedAt.UTC().Format(time.RFC3339Nano)
			}
			if f, ok := cs.from[p.ID]; ok {
				ss.From = f.String()
			}
			st.Servers = append(st.Servers, ss)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}
