package core

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/ghostrouter/ghostrouter/dispatch/limits"
)

// Limits on a table's inputs: the appliance's limits (package limits), which
// the configuration's validation enforces too, so a table is never refused
// for a file `ghostrouter check` accepted. They keep every intermediate
// product in 64 bits and a table build bounded; NewTable rejects anything
// outside them rather than clamping.
const (
	MaxBuckets = limits.Buckets // buckets per table
	MaxServers = limits.Servers // servers per table
	MaxWeight  = limits.Weight  // weight of one server
)

// Errors NewTable returns, wrapped with the offending value.
var (
	ErrBuckets     = errors.New("bucket count out of range")
	ErrServers     = errors.New("too many servers")
	ErrDuplicateID = errors.New("duplicate server id")
	ErrWeight      = errors.New("server weight out of range")
)

// Server is one member of a cluster as the table sees it. A server with
// Weight 0 or !Up owns no buckets; Addr is carried along for the caller (the
// forwarding hook sends to it) and does not affect the table.
type Server struct {
	ID     int
	Addr   netip.Addr
	Weight int
	Up     bool
}

// Table is an immutable assignment of buckets to servers. NewTable builds it
// from the set of servers alone (sorted internally by ID), never from their
// input order or the time; see the package documentation for the algorithm.
// A Table is safe for concurrent use; it is meant to be published whole
// behind an atomic.Pointer and replaced, never modified.
type Table struct {
	servers []Server // sorted by ID
	owner   []int32  // bucket -> index into servers, or -1
	plan    *plan    // the membership's preference lists, shared by the tables Update derives
	deep    []uint32 // ascending: buckets whose owner lies past the capped levels of their lists
}

// NewTable assigns buckets to servers: every server with Weight > 0 gets a
// share of the buckets proportional to its weight, and the buckets of servers
// that are not Up are then handed to the live ones, evenly. buckets must be in
// [1, MaxBuckets], IDs must be unique, weights in [0, MaxWeight]. With no live
// server every bucket has owner -1.
func NewTable(servers []Server, buckets int) (*Table, error) {
	ss, err := normalize(servers, buckets)
	if err != nil {
		return nil, err
	}
	return newTable(ss, buckets), nil
}

// normalize checks a table's inputs and returns a copy of servers sorted by
// ID.
func normalize(servers []Server, buckets int) ([]Server, error) {
	if buckets < 1 || buckets > MaxBuckets {
		return nil, fmt.Errorf("dispatch: table: %w: %d (want 1..%d)", ErrBuckets, buckets, MaxBuckets)
	}
	if len(servers) > MaxServers {
		return nil, fmt.Errorf("dispatch: table: %w: %d (want at most %d)", ErrServers, len(servers), MaxServers)
	}
	ss := slices.Clone(servers)
	slices.SortStableFunc(ss, func(a, b Server) int { return cmp.Compare(a.ID, b.ID) })
	for i, s := range ss {
		if i > 0 && ss[i-1].ID == s.ID {
			return nil, fmt.Errorf("dispatch: table: %w: %d", ErrDuplicateID, s.ID)
		}
		if s.Weight < 0 || s.Weight > MaxWeight {
			return nil, fmt.Errorf("dispatch: table: server %d: %w: %d (want 0..%d)", s.ID, ErrWeight, s.Weight, MaxWeight)
		}
	}
	return ss, nil
}

// newTable builds the table of valid, sorted servers from scratch: the
// membership's plan, then every bucket's first live server.
func newTable(ss []Server, buckets int) *Table {
	p := newPlan(ss, buckets)
	t := &Table{servers: ss, owner: make([]int32, buckets), plan: p}
	h := newLiveSet(ss)
	p.mu.Lock()
	defer p.mu.Unlock()
	for b := range t.owner {
		o, deep := p.resolve(uint32(b), h)
		t.owner[b] = o
		if deep {
			t.deep = append(t.deep, uint32(b))
		}
	}
	return t
}

// Update returns the table of servers over the same number of buckets,
// equal to NewTable(servers, t.Buckets()), reusing t's work. When servers
// are t's membership (the same IDs with the same weights; Up and Addr may
// differ), only the buckets whose preference lists name a server whose
// health changed are looked at: a failure recomputes the failed server's
// buckets, a recovery those that list the recovered server before their
// owner. Otherwise it builds a new table. t itself is not modified and stays
// valid; Update may be called concurrently with readers of t.
func (t *Table) Update(servers []Server) (*Table, error) {
	ss, err := normalize(servers, len(t.owner))
	if err != nil {
		return nil, err
	}
	if !t.plan.sameMembership(ss) {
		return newTable(ss, len(t.owner)), nil
	}
	return t.update(ss), nil
}

// update is Update for the same membership.
func (t *Table) update(ss []Server) *Table {
	p := t.plan
	h := newLiveSet(ss)
	var downs, ups []int32 // servers whose health changed, by index
	for i := range ss {
		was, is := t.servers[i].Up && ss[i].Weight > 0, h.live[i]
		switch {
		case was && !is:
			downs = append(downs, int32(i))
		case !was && is:
			ups = append(ups, int32(i))
		}
	}
	nt := &Table{servers: ss, owner: t.owner, plan: p, deep: t.deep}
	if len(downs) == 0 && len(ups) == 0 {
		return nt
	}
	nt.owner = slices.Clone(t.owner)

	p.mu.Lock()
	defer p.mu.Unlock()
	var affected []uint32
	if !t.anyLive() {
		// Nothing was resolved: every bucket was unowned.
		affected = make([]uint32, len(t.owner))
		for b := range affected {
			affected[b] = uint32(b)
		}
	} else {
		affected = t.affected(downs, ups)
	}
	slices.Sort(affected)
	affected = slices.Compact(affected)

	var deep []uint32
	for _, b := range affected {
		o, d := p.resolve(b, h)
		nt.owner[b] = o
		if d {
			deep = append(deep, b)
		}
	}
	// The new deep list: the old one less the affected buckets, plus the
	// affected ones that are deep now.
	kept := make([]uint32, 0, len(t.deep)+len(deep))
	for _, b := range t.deep {
		if _, found := slices.BinarySearch(affected, b); !found {
			kept = append(kept, b)
		}
	}
	kept = append(kept, deep...)
	slices.Sort(kept)
	nt.deep = kept
	return nt
}

// affected returns the buckets of t that may change when the servers downs
// fail and ups recover (indices into t.servers), unsorted, with repeats: those
// a failed server owns (it is on one of the first levels of their lists, or
// they are deep), those whose list names a recovered server on one of the
// first levels, and deep ones where a recovered server's score beats the
// owner's. The caller holds t.plan.mu.
func (t *Table) affected(downs, ups []int32) []uint32 {
	p := t.plan
	wentDown := make([]bool, len(t.servers))
	for _, s := range downs {
		wentDown[s] = true
	}
	var out []uint32
	for _, s := range downs {
		for l := range p.by {
			for _, b := range p.by[l][s] {
				if t.owner[b] == s {
					out = append(out, b)
				}
			}
		}
	}
	for _, u := range ups {
		for l := range p.by {
			out = append(out, p.by[l][u]...)
		}
	}
	for _, b := range t.deep {
		o := t.owner[b]
		if wentDown[o] {
			out = append(out, b)
			continue
		}
		for _, u := range ups {
			if p.beats(b, u, o) {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

// anyLive reports whether some server of t owns buckets.
func (t *Table) anyLive() bool {
	for _, s := range t.servers {
		if s.Up && s.Weight > 0 {
			return true
		}
	}
	return false
}

// Buckets is the number of buckets.
func (t *Table) Buckets() int { return len(t.owner) }

// Servers returns the servers the table was built from, sorted by ID. The
// caller must not modify the slice.
func (t *Table) Servers() []Server { return t.servers }

// Owner returns the index into Servers() of the server owning bucket, or -1
// if no live server owns it or bucket is out of range.
func (t *Table) Owner(bucket uint32) int {
	if int(bucket) >= len(t.owner) { // int is 64 bits on every platform we build for
		return -1
	}
	return int(t.owner[bucket])
}

// OwnerID returns the ID of the server owning bucket; ok is false if no live
// server owns it or bucket is out of range.
func (t *Table) OwnerID(bucket uint32) (id int, ok bool) {
	i := t.Owner(bucket)
	if i < 0 {
		return 0, false
	}
	return t.servers[i].ID, true
}

// Owned returns the buckets owned by server id in ascending order (nil if it
// owns none or is unknown). The caller owns the slice.
func (t *Table) Owned(id int) []uint32 {
	i, found := slices.BinarySearchFunc(t.servers, id, func(s Server, id int) int { return cmp.Compare(s.ID, id) })
	if !found {
		return nil
	}
	var out []uint32
	for b, o := range t.owner {
		if int(o) == i {
			out = append(out, uint32(b))
		}
	}
	return out
}

// Counts returns, for every server of the table (owning buckets or not), its
// ID mapped to the number of buckets it owns.
func (t *Table) Counts() map[int]int {
	n := make([]int, len(t.servers))
	for _, o := range t.owner {
		if o >= 0 {
			n[o]++
		}
	}
	m := make(map[int]int, len(t.servers))
	for i, s := range t.servers {
		m[s.ID] = n[i]
	}
	return m
}

// negLog2 is -log2(u) for u = (h>>10 | 1) / 2^54 in (0, 1), to about 1e-5,
// at least 2^-40. It needs no math.Log (4 million calls per big table), and
// every floating-point step is an exactly rounded IEEE operation with no
// fused multiply-add, so every architecture computes the same bits.
func negLog2(h uint64) float64 {
	y := h>>10 | 1 // 54 bits, odd: u = y / 2^54
	lz := bits.LeadingZeros64(y)
	m := y << lz // 1.f in 1.63 fixed point
	f := float64(m<<1>>11) / (1 << 53)
	// log2(1+f) = 2/ln2 * (t + t^3/3 + t^5/5 + t^7/7 + ...), t = f/(2+f) < 1/3.
	t := f / (2 + f)
	t2 := float64(t * t)
	p := 1.0 / 7
	p = 1.0/5 + float64(t2*p)
	p = 1.0/3 + float64(t2*p)
	p = 1 + float64(t2*p)
	l := float64(float64(t*p) * (2 / math.Ln2))
	r := float64(lz-10) + 1 - l // -log2(u) = 54 - (63 - lz) - log2(1+f)
	return max(r, 1.0/(1<<40))
}

// mix64 is the splitmix64 finalizer: a bijective 64-bit mixer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// entryLess orders held buckets for a server's min-heap: lower score first,
// equal scores by bucket number.
func entryLess(x, y entry, bkts []uint32) bool {
	if x.key != y.key {
		return x.key < y.key
	}
	return bkts[x.pos] < bkts[y.pos]
}

func heapPush(h []entry, e entry, bkts []uint32) []entry {
	h = append(h, e)
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !entryLess(h[i], h[p], bkts) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	return h
}

func heapDown(h []entry, i int, bkts []uint32) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && entryLess(h[r], h[l], bkts) {
			m = r
		}
		if !entryLess(h[m], h[i], bkts) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
