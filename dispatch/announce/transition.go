package announce

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// Transition is the appliance's side of break-before-make for one
// broadcast cluster: it decides which table to announce, so that no two
// servers ever accept new connections for the same bucket, whatever
// announcements are lost, duplicated, delayed or reordered. It does no I/O
// and reads no clock: the Announcer feeds it the target tables, the
// servers' acknowledgements and the time, and sends what it issues. Not
// safe for concurrent use.
//
// The rule it keeps: an announcement may give bucket b to server s only if
// no other server may still hold b. A server t may hold b when some
// announcement issued at or after the last one t acknowledged (Ack) gives
// b to t, or when t has acknowledged nothing in this epoch (its filter may
// be left from before the appliance started). Releases (announcements that
// only take buckets away) are always safe and are issued at once; an
// acquisition waits until every blocking server has acknowledged a
// release, or until AckTimeout has passed since the release was issued:
// then the blocking servers are excused (counted, shown as late) and the
// acquisition goes out. That bound is the one place where safety yields
// to availability: a server whose agent is dead but whose filter still
// accepts new connections would otherwise stop every change.
type Transition struct {
	// AckTimeout bounds how long an acquisition waits for old owners.
	AckTimeout time.Duration

	target   []Member // sorted by ID, present members only
	pins     []Pin    // the target's pins, by ascending client
	hash     config.Hash
	seed     uint32
	buckets  int
	tgrants  []int32 // grants of the target table alone: buckets, then pins (allGrants)
	hasTgt   bool
	seq      uint64
	hist     []*issued // issued announcements still needed, ascending; the last is the current one
	parties  map[int]*Party
	excused  uint64
	stalls   uint64 // acquisitions that had to wait for an acknowledgement
	waitFrom time.Time

	// The release last computed, for the announcement in force (relSeq)
	// and target (relGen): computing it builds up to four tables.
	gen            uint64 // counts target changes
	relSeq, relGen uint64
	rel            [][]Member
	relGrants      []int32
}

// issued is one announcement as issued.
type issued struct {
	seq     uint64
	at      time.Time
	hash    config.Hash
	seed    uint32
	buckets int
	pins    []Pin
	tables  [][]Member  // the target first; each sorted by ID, present members only
	msg     Message     // without Cluster, Epoch, Tx, Interval, Ghost
	grants  []int32     // allGrants: the buckets', then the pins'
	holds   map[int]int // buckets and pins granted per server id
}

// Party is one server the Transition waits for: every server named by an
// issued announcement or by the target.
type Party struct {
	ID int
	// Acked is the last seq this server acknowledged (0: none in this
	// epoch); AckedAt when the last acknowledgement arrived.
	Acked   uint64
	AckedAt time.Time
	// Excused counts the times the server was declared past its bound
	// instead of acknowledging; Late is set from the last excuse until the
	// server acknowledges the current announcement itself.
	Excused uint64
	Late    bool
	// Real is the last seq it really acknowledged (Acked may be more: an
	// excuse counts as an acknowledgement).
	Real uint64
}

// Errors of Ack.
var (
	ErrAckFuture  = errors.New("announce: acknowledgement of an announcement not issued")
	ErrAckUnknown = errors.New("announce: acknowledgement from a server that is no party")
)

// maxHistory bounds the announcements kept for the rule; when exceeded,
// the servers that acknowledged none of those kept are excused.
const maxHistory = 16

// SetTarget makes members (the table's view of the servers; drained ones
// with weight 0, failed ones not up) with hash, seed and buckets the
// table the Transition works towards. It reports whether the target
// changed.
func (t *Transition) SetTarget(hash config.Hash, seed uint32, buckets int, members []Member) (bool, error) {
	return t.SetTargetPins(hash, seed, buckets, members, nil)
}

// SetTargetPins is SetTarget with the cluster's pins (by ascending
// client). Pins are parameters of the table, like the seed: a change of
// pins releases every bucket and pin first, then acquires once every
// server has acknowledged. A pinned server's failure or recovery moves its
// pinned clients like buckets: released, then acquired once the old owner
// has acknowledged.
func (t *Transition) SetTargetPins(hash config.Hash, seed uint32, buckets int, members []Member, pins []Pin) (bool, error) {
	tgt := make([]Member, 0, len(members))
	for _, m := range members {
		if !m.Absent {
			tgt = append(tgt, m)
		}
	}
	slices.SortFunc(tgt, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	if t.hasTgt && hash == t.hash && seed == t.seed && buckets == t.buckets && slices.Equal(tgt, t.target) && slices.Equal(pins, t.pins) {
		return false, nil
	}
	m := Message{Hash: hash, Seed: seed, Buckets: buckets, Members: tgt, Pins: pins}
	g, err := allGrants(&m)
	if err != nil {
		return false, err
	}
	t.pins = slices.Clone(pins)
	t.target, t.hash, t.seed, t.buckets, t.tgrants, t.hasTgt = tgt, hash, seed, buckets, g, true
	t.gen++
	if t.parties == nil {
		t.parties = map[int]*Party{}
	}
	for _, m := range tgt {
		t.party(m.ID)
	}
	return true, nil
}

func (t *Transition) party(id int) *Party {
	p := t.parties[id]
	if p == nil {
		p = &Party{ID: id}
		t.parties[id] = p
	}
	return p
}

// StartAfter makes the first announcement's seq follow seq: a cluster
// whose Transition is replaced within an epoch (its key or ghost changed)
// keeps counting up. Call it before anything else.
func (t *Transition) StartAfter(seq uint64) {
	if len(t.hist) == 0 && t.seq < seq {
		t.seq = seq
	}
}

// Seq is the last seq issued (0: none).
func (t *Transition) Seq() uint64 { return t.seq }

// Current is the announcement in force (nil before the first): its Seq,
// Hash, Seed, Buckets, Members and Also; the caller fills in the rest.
func (t *Transition) Current() *Message {
	if len(t.hist) == 0 {
		return nil
	}
	m := t.cur().msg
	return &m
}

// CurrentGrants is the grants of the announcement in force (nil before
// the first). The caller must not modify it.
func (t *Transition) CurrentGrants() []int32 {
	if len(t.hist) == 0 {
		return nil
	}
	c := t.cur()
	return c.grants[:c.buckets]
}

// allGrants is m's grants of buckets followed by those of its pins: what
// the rule of break before make keeps, for buckets and pinned clients alike.
func allGrants(m *Message) ([]int32, error) {
	g, err := m.Grants()
	if err != nil {
		return nil, err
	}
	pg, err := m.PinGrants()
	if err != nil {
		return nil, err
	}
	return append(g, pg...), nil
}

func (t *Transition) cur() *issued { return t.hist[len(t.hist)-1] }

// Settled reports whether the announcement in force is the target table
// itself: no bucket is waiting for an owner.
func (t *Transition) Settled() bool {
	if !t.hasTgt || len(t.hist) == 0 {
		return false
	}
	c := t.cur()
	return len(c.tables) == 1 && t.sameParams(c) && slices.Equal(c.tables[0], t.target)
}

func (t *Transition) sameParams(c *issued) bool {
	return c.hash == t.hash && c.seed == t.seed && c.buckets == t.buckets && slices.Equal(c.pins, t.pins)
}

// Due reports whether Step has something to do because time passed: a
// change has waited AckTimeout for acknowledgements.
// (Targets and acknowledgements call for a Step of their own.)
func (t *Transition) Due(now time.Time) bool {
	return !t.waitFrom.IsZero() && !t.Settled() && now.Sub(t.waitFrom) >= t.AckTimeout
}

// Step issues the next announcement if one is due and reports whether it
// did: the first (which grants nothing: servers may hold anything from
// before this epoch), a release, an acquisition once nothing blocks it, or,
// past AckTimeout, the acquisition with the blocking servers excused.
func (t *Transition) Step(now time.Time) (bool, error) {
	if !t.hasTgt {
		return false, nil
	}
	if len(t.hist) == 0 {
		t.waitFrom = now
		return true, t.issue(now, [][]Member{t.target, {}})
	}
	if t.Settled() {
		return false, nil
	}
	c := t.cur()
	if t.sameParams(c) {
		blockers := t.blockers(c)
		if len(blockers) == 0 {
			if !slices.Equal(c.grants, t.tgrants) {
				if !t.waitFrom.IsZero() {
					t.stalls++
				}
			}
			t.waitFrom = time.Time{}
			return true, t.issue(now, [][]Member{t.target})
		}
		rel, g, err := t.release(c)
		if err != nil {
			return false, err
		}
		if !slices.Equal(g, c.grants) {
			t.waitFrom = now // each release gets the whole bound
			return true, t.issue(now, rel)
		}
		if t.waitFrom.IsZero() {
			t.waitFrom = now
		}
		if now.Sub(t.waitFrom) < t.AckTimeout {
			return false, nil
		}
		for _, id := range blockers {
			p := t.parties[id]
			p.Acked, p.Late = c.seq, true
			p.Excused++
			t.excused++
		}
		t.prune()
		return t.Step(now)
	}
	// New bucket count, seed or hash: the buckets of the two tables are not
	// comparable. Release everything under the new parameters, then
	// acquire once every server has acknowledged (or was excused).
	t.waitFrom = now
	return true, t.issue(now, [][]Member{t.target, {}})
}

// release is the release from c towards the target: the target together
// with the tables in force, so that only buckets on which they all agree
// keep their owner; and its grants.
func (t *Transition) release(c *issued) ([][]Member, []int32, error) {
	if t.rel != nil && t.relSeq == c.seq && t.relGen == t.gen {
		return t.rel, t.relGrants, nil
	}
	rel := append([][]Member{t.target}, c.tables...)
	if len(rel) > 1+MaxAlso || t.tooBig(rel) {
		// More changes in flight than one announcement carries: release
		// every bucket instead (still only a release).
		rel = [][]Member{t.target, {}}
	}
	g, err := t.grantsOf(rel)
	if err != nil {
		return nil, nil, err
	}
	t.rel, t.relGrants, t.relSeq, t.relGen = rel, g, c.seq, t.gen
	return rel, g, nil
}

// tooBig reports whether the announcement of tables would be longer than
// MaxBody (with the longest cluster name and an IPv6 ghost).
func (t *Transition) tooBig(tables [][]Member) bool {
	m := compose(t.hash, t.seed, t.buckets, t.pins, tables)
	m.Cluster, m.Ghost = strings.Repeat("x", MaxName), netip.IPv6Unspecified()
	return m.wireSize() > MaxBody
}

// grantsOf composes tables into a message and returns its grants.
func (t *Transition) grantsOf(tables [][]Member) ([]int32, error) {
	m := compose(t.hash, t.seed, t.buckets, t.pins, tables)
	return allGrants(&m)
}

// compose builds the message of tables (the first the target): members
// are the union, by ascending ID, with the target's weights; each further
// table is a list of shares.
func compose(hash config.Hash, seed uint32, buckets int, pins []Pin, tables [][]Member) Message {
	byID := map[int]Member{}
	for i := len(tables) - 1; i >= 0; i-- {
		for _, m := range tables[i] {
			byID[m.ID] = m
		}
	}
	ids := make([]int, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	find := func(tbl []Member, id int) (Member, bool) {
		i, ok := slices.BinarySearchFunc(tbl, id, func(m Member, id int) int { return cmp.Compare(m.ID, id) })
		if !ok {
			return Member{}, false
		}
		return tbl[i], true
	}
	m := Message{Hash: hash, Seed: seed, Buckets: buckets, Members: make([]Member, len(ids)), Pins: pins}
	for i, id := range ids {
		if x, ok := find(tables[0], id); ok {
			m.Members[i] = x
		} else {
			m.Members[i] = Member{ID: id, Addr: byID[id].Addr, Absent: true}
		}
	}
	for _, tbl := range tables[1:] {
		shares := make([]Share, len(ids))
		for i, id := range ids {
			if x, ok := find(tbl, id); ok {
				shares[i] = Share{Weight: x.Weight, Up: x.Up}
			} else {
				shares[i] = Share{Absent: true}
			}
		}
		m.Also = append(m.Also, shares)
	}
	return m
}

func (t *Transition) issue(now time.Time, tables [][]Member) error {
	m := compose(t.hash, t.seed, t.buckets, t.pins, tables)
	g, err := allGrants(&m)
	if err != nil {
		return err
	}
	t.seq++
	m.Seq = t.seq
	v := &issued{seq: t.seq, at: now, hash: t.hash, seed: t.seed, buckets: t.buckets, pins: t.pins, tables: tables, msg: m, grants: g, holds: map[int]int{}}
	for _, o := range g {
		if o != Nobody {
			v.holds[int(o)]++
		}
	}
	for _, x := range m.Members {
		t.party(x.ID)
	}
	t.hist = append(t.hist, v)
	t.prune()
	return nil
}

// blockers are the servers that may still hold a bucket the target gives
// to another server, which the announcement in force c does not give it
// already; sorted.
func (t *Transition) blockers(c *issued) []int {
	set := map[int]bool{}
	var never []int
	for id, p := range t.parties {
		if p.Acked == 0 {
			never = append(never, id)
		}
	}
	for b, s := range t.tgrants {
		if s == Nobody || c.grants[b] == s {
			continue
		}
		for _, id := range never {
			if id != int(s) {
				set[id] = true
			}
		}
		for _, u := range t.hist {
			if u.seed != t.seed || u.buckets != t.buckets || u.hash != t.hash || !slices.Equal(u.pins, t.pins) {
				// Other parameters: whoever held any bucket then may hold this one.
				for id, n := range u.holds {
					if n > 0 && id != int(s) && t.parties[id].Acked <= u.seq {
						set[id] = true
					}
				}
				continue
			}
			o := u.grants[b]
			if o != Nobody && o != s && t.parties[int(o)].Acked <= u.seq {
				set[int(o)] = true
			}
		}
	}
	out := make([]int, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Ints(out)
	return out
}

func minU(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

// prune drops the announcements no server may still be running: those
// older than every acknowledgement. At most maxHistory are kept; servers
// that acknowledged none of the kept ones are excused.
func (t *Transition) prune() {
	if len(t.hist) > maxHistory {
		keep := t.hist[len(t.hist)-maxHistory:]
		for _, p := range t.parties {
			if p.Acked < keep[0].seq {
				p.Acked, p.Late = keep[0].seq, true
				p.Excused++
				t.excused++
			}
		}
		t.hist = slices.Clone(keep)
	}
	// A server that may hold nothing (no announcement since its last
	// acknowledgement grants it a bucket) is as good as up to date: the
	// announcements it skips grant it nothing either.
	for _, p := range t.parties {
		if p.Acked == 0 || p.Acked == t.seq {
			continue
		}
		holds := false
		for _, u := range t.hist {
			if u.seq >= p.Acked && u.holds[p.ID] > 0 {
				holds = true
				break
			}
		}
		if !holds {
			p.Acked = t.seq
		}
	}
	// A server that acknowledged nothing yet may later acknowledge an old
	// announcement: keep all until it does (or is excused).
	min := t.seq
	for _, p := range t.parties {
		min = minU(min, p.Acked)
	}
	i := 0
	for i < len(t.hist)-1 && t.hist[i].seq < min {
		i++
	}
	if i > 0 {
		t.hist = slices.Clone(t.hist[i:])
	}
}

// Ack records that server id has applied announcement seq (ErrAckFuture
// for a seq not issued yet, ErrAckUnknown for a server that is no party).
// It reports whether that may unblock something (the server had not
// acknowledged as much before); later acknowledgements of older
// announcements change nothing.
func (t *Transition) Ack(id int, seq uint64, now time.Time) (bool, error) {
	if seq == 0 || seq > t.seq {
		return false, fmt.Errorf("%w: server %d seq %d, the last issued is %d", ErrAckFuture, id, seq, t.seq)
	}
	p := t.parties[id]
	if p == nil {
		return false, fmt.Errorf("%w: server %d", ErrAckUnknown, id)
	}
	p.AckedAt = now
	if seq > p.Real {
		p.Real = seq
	}
	if p.Real >= t.seq {
		p.Late = false
	}
	if seq <= p.Acked {
		return false, nil
	}
	p.Acked = seq
	t.prune()
	return true, nil
}

// Parties is every server the Transition knows, by ascending ID.
func (t *Transition) Parties() []Party {
	out := make([]Party, 0, len(t.parties))
	for _, p := range t.parties {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Party) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Counts are the excuses made and the acquisitions that waited for an
// acknowledgement.
func (t *Transition) Counts() (excused, stalls uint64) { return t.excused, t.stalls }

// Waiting is since when the current change has been waiting for
// acknowledgements; zero when it is not.
func (t *Transition) Waiting() time.Time { return t.waitFrom }
