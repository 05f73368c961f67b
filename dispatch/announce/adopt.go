package announce

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// Taking over from another appliance (a VRRP backup that becomes master).
//
// A new master cannot ask the servers what their filters hold; a fresh
// Transition therefore starts with an announcement that grants nothing and
// grants the table only once the servers acknowledged it: every new
// connection in that gap is dropped. A backup on the same LAN hears the
// master's announcements (they are broadcast) and can check them: it holds
// the same key. A Follower records what it heard; at takeover Window gives
// the announcements the servers may still be running, and Transition.Adopt
// continues from them, so the new master's first announcement already
// grants what the servers hold, under its own epoch: no gap.
//
// Why that keeps break before make: every announcement the old master
// issued kept the rule (no bucket granted while another server may hold
// it), with the old master's knowledge of the acknowledgements. The
// adopting Transition knows no acknowledgement, so it assumes every server
// may hold any bucket that any announcement of the window grants it, where
// the window is everything the old master issued that a server may still
// run: the announcement in force and those it replaced less than
// AckTimeout ago (the old master itself stops waiting for a server after
// AckTimeout). It grants a bucket that no adopted announcement gives
// another server only; everything else waits for acknowledgements, as
// usual. What the old master may have issued after the last announcement
// heard is covered as well: after a release the only announcement that can
// grant something new is the acquisition of the release's target, so the
// window includes it; after a settled table only a release (which takes
// buckets away) can follow.
//
// A window is refused (and the takeover starts afresh, granting nothing
// first) when the Follower cannot vouch for it: nothing heard recently, not
// listening for the whole window, a seq missing in it, or the old master's
// epoch started within it (its servers may then still hold tables from
// before that epoch, which only their acknowledgements would rule out).

// Window errors: why a Follower's announcements cannot be adopted.
var (
	ErrNothingHeard  = errors.New("announce: no announcement of the master heard")
	ErrHeardTooShort = errors.New("announce: not listening long enough to know what the servers may hold")
	ErrSilent        = errors.New("announce: the master fell silent too long ago")
	ErrSeqGap        = errors.New("announce: an announcement of the master was missed")
	ErrEpochStart    = errors.New("announce: the master's epoch started within the window")
)

// maxAdopt bounds the announcements a Follower keeps for one epoch (and so
// a window): fewer than maxHistory, so that Adopt never excuses anyone.
const maxAdopt = maxHistory - 2

// heardMsg is one announcement (one seq) of the followed epoch.
type heardMsg struct {
	msg        *Message
	first      time.Time // when first heard
	replacedAt time.Time // when a later seq was first heard (zero: in force)
}

// FollowerCounters count what a Follower heard.
type FollowerCounters struct {
	Heard     uint64 `json:"heard"`      // authentic and fresh
	Stale     uint64 `json:"stale"`      // authentic, tx not after the last heard in its epoch, or a retired epoch
	Refused   uint64 `json:"refused"`    // bad signature, malformed, another cluster
	NewEpochs uint64 `json:"new_epochs"` // times the master's epoch changed
}

// Follower records the announcements of one cluster that another appliance
// (the master) broadcasts, so that this one can continue them when it takes
// over. It checks each datagram's signature (with the public half of the
// cluster's key) and freshness (tx), like a server's Receiver; the caller
// checks the source. Not safe for concurrent use.
type Follower struct {
	cluster string
	key     ed25519.PublicKey

	epoch   uint64
	lastTx  uint64
	since   time.Time // first datagram heard of epoch
	last    time.Time // last fresh datagram heard
	msgs    []heardMsg
	retired []uint64 // epochs followed before, newest last: their datagrams are stale
	ctr     FollowerCounters
}

// maxRetired bounds the retired epochs remembered.
const maxRetired = 8

// NewFollower follows cluster's announcements signed by key's holder (the
// public key: an appliance passes the public half of its private key).
func NewFollower(cluster string, key ed25519.PublicKey) (*Follower, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: a %d-byte public key", ErrKey, len(key))
	}
	return &Follower{cluster: cluster, key: key}, nil
}

// Hear takes one datagram heard at now. It returns an error for one that is
// not the cluster's authentic announcement; a stale one is counted and
// returns nil. b is not retained.
func (f *Follower) Hear(b []byte, now time.Time) error {
	m, err := Open(b, f.cluster, f.key)
	if err != nil {
		f.ctr.Refused++
		return err
	}
	switch {
	case slices.Contains(f.retired, m.Epoch):
		f.ctr.Stale++
		return nil
	case m.Epoch != f.epoch:
		if f.epoch != 0 {
			f.retired = append(f.retired, f.epoch)
			if len(f.retired) > maxRetired {
				f.retired = slices.Delete(f.retired, 0, len(f.retired)-maxRetired)
			}
		}
		f.ctr.NewEpochs++
		f.epoch, f.lastTx, f.since, f.msgs = m.Epoch, 0, now, nil
	case m.Tx <= f.lastTx:
		f.ctr.Stale++
		return nil
	}
	f.ctr.Heard++
	f.lastTx, f.last = m.Tx, now
	i, found := slices.BinarySearchFunc(f.msgs, m.Seq, func(h heardMsg, seq uint64) int {
		switch {
		case h.msg.Seq < seq:
			return -1
		case h.msg.Seq > seq:
			return 1
		}
		return 0
	})
	if found {
		return nil
	}
	h := heardMsg{msg: m, first: now}
	if i < len(f.msgs) {
		// An older seq heard late (reordered): it was replaced already.
		h.replacedAt = now
	} else if i > 0 {
		f.msgs[i-1].replacedAt = now
	}
	f.msgs = slices.Insert(f.msgs, i, h)
	if len(f.msgs) > maxAdopt {
		f.msgs = slices.Delete(f.msgs, 0, len(f.msgs)-maxAdopt)
	}
	return nil
}

// Counters are what the Follower heard.
func (f *Follower) Counters() FollowerCounters { return f.ctr }

// Last is the epoch and seq of the last announcement heard, and when it was
// heard (zero: nothing).
func (f *Follower) Last() (epoch, seq uint64, at time.Time) {
	if len(f.msgs) == 0 {
		return 0, 0, time.Time{}
	}
	return f.epoch, f.msgs[len(f.msgs)-1].msg.Seq, f.last
}

// Window is what a new master may adopt at now (Transition.Adopt): the
// announcements the servers may still be running, ascending by seq, the
// last the one in force. ackTimeout is the old master's bound (AckTimeout
// of the cluster's interval), maxSilence the longest the master may have
// been silent before now (its repetition interval plus the time its death
// takes to be noticed). It fails with one of the Window errors when it
// cannot vouch for the result.
func (f *Follower) Window(now time.Time, ackTimeout, maxSilence time.Duration) ([]*Message, error) {
	if len(f.msgs) == 0 {
		return nil, ErrNothingHeard
	}
	if d := now.Sub(f.last); d > maxSilence {
		return nil, fmt.Errorf("%w: %v ago (at most %v)", ErrSilent, d.Round(time.Millisecond), maxSilence)
	}
	// An announcement replaced before from stopped counting for the old
	// master; the margin covers the retransmission of its successor.
	from := now.Add(-ackTimeout - RetransmitEvery(ackTimeout/3) - 50*time.Millisecond)
	if f.since.After(from) {
		return nil, fmt.Errorf("%w: since %v, the window reaches back %v", ErrHeardTooShort,
			now.Sub(f.since).Round(time.Millisecond), now.Sub(from).Round(time.Millisecond))
	}
	i := len(f.msgs) - 1
	for i > 0 && !f.msgs[i-1].replacedAt.Before(from) {
		i--
	}
	win := f.msgs[i:]
	for j := 1; j < len(win); j++ {
		if win[j].msg.Seq != win[j-1].msg.Seq+1 {
			return nil, fmt.Errorf("%w: seq %d follows %d", ErrSeqGap, win[j].msg.Seq, win[j-1].msg.Seq)
		}
	}
	if i == 0 && !f.msgs[0].first.After(f.since) {
		// The first announcement heard in this epoch is in the window, and
		// nothing heard before it: if it was the epoch's first (which
		// grants nothing) the servers may hold tables from before.
		g, err := f.msgs[0].msg.Grants()
		if err != nil {
			return nil, err
		}
		if len(Unowned(g)) == len(g) {
			return nil, ErrEpochStart
		}
	}
	out := make([]*Message, len(win))
	for j, h := range win {
		out[j] = h.msg
	}
	return out, nil
}

// tablesOf is the tables of m: the target first, then each of Also; each
// sorted by ID, present members only (compose's inverse).
func tablesOf(m *Message) [][]Member {
	out := make([][]Member, 1+len(m.Also))
	for _, x := range m.Members {
		if !x.Absent {
			out[0] = append(out[0], x)
		}
	}
	for i, sh := range m.Also {
		out[i+1] = []Member{}
		for j, x := range m.Members {
			if !sh[j].Absent {
				out[i+1] = append(out[i+1], Member{ID: x.ID, Addr: x.Addr, Weight: sh[j].Weight, Up: sh[j].Up})
			}
		}
	}
	if out[0] == nil {
		out[0] = []Member{}
	}
	for i := range out {
		slices.SortFunc(out[i], func(a, b Member) int { return a.ID - b.ID })
	}
	return out
}

// Adopt makes a Transition that has issued nothing yet continue another
// appliance's announcements (a Follower's Window, ascending by seq, the
// last the one in force): they become its history under its own seqs, the
// last its announcement in force, and every server the oldest names is
// taken to hold whatever any of them grants it, until it acknowledges (one
// they name later may hold anything, as a server new to an epoch). If the last
// is a release, the acquisition of its target is added as possibly issued
// (the old master may have sent it unheard). The caller then sets the
// target and steps as usual: a target equal to the announcement in force
// is settled at once.
func (t *Transition) Adopt(heard []*Message) error {
	if len(t.hist) > 0 {
		return errors.New("announce: Adopt after the first announcement")
	}
	if len(heard) == 0 {
		return errors.New("announce: nothing to adopt")
	}
	if len(heard) > maxAdopt {
		heard = heard[len(heard)-maxAdopt:]
	}
	type entry struct {
		hash    config.Hash
		seed    uint32
		buckets int
		pins    []Pin
		tables  [][]Member
	}
	var es []entry
	last := heard[len(heard)-1]
	if len(last.Also) > 0 {
		es = append(es, entry{last.Hash, last.Seed, last.Buckets, last.Pins, tablesOf(last)[:1]})
	}
	for _, m := range heard {
		es = append(es, entry{m.Hash, m.Seed, m.Buckets, m.Pins, tablesOf(m)})
	}
	hist := make([]*issued, 0, len(es))
	seq := t.seq
	ids := map[int]bool{}
	for _, e := range es {
		m := compose(e.hash, e.seed, e.buckets, e.pins, e.tables)
		g, err := allGrants(&m)
		if err != nil {
			return fmt.Errorf("announce: adopting seq %d: %w", seq+1, err)
		}
		seq++
		m.Seq = seq
		v := &issued{seq: seq, hash: e.hash, seed: e.seed, buckets: e.buckets, pins: e.pins, tables: e.tables, msg: m, grants: g, holds: map[int]int{}}
		for _, o := range g {
			if o != Nobody {
				v.holds[int(o)]++
			}
		}
		hist = append(hist, v)
	}
	if t.parties == nil {
		t.parties = map[int]*Party{}
	}
	// The members of the oldest announcement heard had it in force for
	// the whole window: the old master had their acknowledgements or had
	// excused them. One that appears later may be new to the old master's
	// epoch (it may hold anything until it acknowledges), and is taken so.
	for _, x := range heard[0].Members {
		ids[x.ID] = true
	}
	first := hist[0].seq
	for _, v := range hist {
		for _, x := range v.msg.Members {
			if ids[x.ID] {
				t.party(x.ID).Acked = first
			} else {
				t.party(x.ID)
			}
		}
	}
	t.hist, t.seq, t.waitFrom = hist, seq, time.Time{}
	t.gen++ // the cached release belongs to no announcement of these
	return nil
}
