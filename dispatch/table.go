package dispatch

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
)

// Limits on a table's inputs. They keep every intermediate product in 64 bits
// and a table build bounded; NewTable rejects anything outside them rather than
// clamping.
const (
	MaxBuckets = 1 << 20 // buckets per table
	MaxServers = 4096    // servers per table
	MaxWeight  = 1 << 20 // weight of one server
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
}

// NewTable assigns buckets to servers: every server with Weight > 0 gets a
// share of the buckets proportional to its weight, and the buckets of servers
// that are not Up are then handed to the live ones, evenly. buckets must be in
// [1, MaxBuckets], IDs must be unique, weights in [0, MaxWeight]. With no live
// server every bucket has owner -1.
func NewTable(servers []Server, buckets int) (*Table, error) {
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
	t := &Table{servers: ss, owner: make([]int32, buckets)}
	b := newBuilder(ss, buckets)
	b.build(t.owner)
	return t, nil
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

// cappedDepth is the deepest level of a bucket's preference list that is
// assigned with capacity caps (the base owner is level 0), so up to
// cappedDepth servers down spread their buckets evenly up to rounding. Deeper
// levels follow plain rendezvous order, which keeps a build with most servers
// down fast. See the package documentation.
const cappedDepth = 2

// Salts that keep the hash streams used for different purposes apart.
const (
	saltServer   = 0x67686f7374726f75 // "ghostrou": per-server rendezvous key
	saltTiebreak = 0x7465722d7469652d // "ter-tie-": apportionment tie-breaks
	saltGroup    = 0x67726f75702d6b65 // "group-ke": fallback group keys
)

// builder holds one table build's inputs and scratch space. It lives only
// for the duration of NewTable.
type builder struct {
	servers  []Server
	buckets  int
	members  []int32  // indices of servers with Weight > 0, ascending ID
	live     []bool   // by server index: Weight > 0 && Up
	liveIdx  []int32  // indices of live members
	hkey     []uint64 // by server index: rendezvous key of the server's ID
	weighted bool     // members' weights differ: use weighted rendezvous scores

	// DA scratch, reused across groups.
	heaps   [][]entry // by server index
	last    []pref    // by position in the group: last proposal
	appScr  []appItem // apportionment scratch
	capsScr []int     // by server index
}

// entry is a bucket held by a server during deferred acceptance.
type entry struct {
	key uint64
	pos int32 // position of the bucket in the group
}

// pref is the last server a bucket proposed to, as (key, server index); the
// next proposal goes to the best server strictly below it.
type pref struct {
	key uint64
	idx int32
	set bool
}

type appItem struct {
	idx int32
	rem uint64
	tb  uint64
}

func newBuilder(servers []Server, buckets int) *builder {
	b := &builder{
		servers: servers,
		buckets: buckets,
		live:    make([]bool, len(servers)),
		hkey:    make([]uint64, len(servers)),
		heaps:   make([][]entry, len(servers)),
		capsScr: make([]int, len(servers)),
	}
	w0 := -1
	for i, s := range servers {
		b.hkey[i] = mix64(uint64(int64(s.ID)) ^ saltServer)
		if s.Weight <= 0 {
			continue
		}
		b.members = append(b.members, int32(i))
		if w0 >= 0 && s.Weight != w0 {
			b.weighted = true
		}
		w0 = s.Weight
		if s.Up {
			b.live[i] = true
			b.liveIdx = append(b.liveIdx, int32(i))
		}
	}
	return b
}

// build fills owner (one entry per bucket).
func (b *builder) build(owner []int32) {
	for i := range owner {
		owner[i] = -1
	}
	if len(b.liveIdx) == 0 {
		return
	}
	all := make([]uint32, b.buckets)
	for i := range all {
		all[i] = uint32(i)
	}
	b.place(owner, all, make([]bool, len(b.servers)), 0, mix64(saltGroup))
}

// place gives each bucket in bkts the first live server of its preference
// list. All of bkts share the list's first depth entries, the servers marked
// in excl (all down); gkey identifies that prefix. Level depth of the lists
// is the capacity-capped matching of bkts to the servers not in excl (at
// depth 0: the base table over the whole membership); buckets matched to a
// live server stay there, the others recurse one level down with that server
// added to the prefix. The lists, and so the result, depend on the
// membership only; health only decides how far down each bucket looks.
func (b *builder) place(owner []int32, bkts []uint32, excl []bool, depth int, gkey uint64) {
	// Live servers are never excluded, so at least one live candidate
	// remains. With exactly one, every bucket ends on it whatever the rest of
	// its list says.
	if len(b.liveIdx) == 1 {
		for _, bk := range bkts {
			owner[bk] = b.liveIdx[0]
		}
		return
	}
	if depth > cappedDepth {
		// Past the capped levels: plain rendezvous, the live server with the
		// highest score for the bucket.
		for _, bk := range bkts {
			best, bestKey := int32(-1), uint64(0)
			for _, s := range b.liveIdx {
				k := b.score(bk, s)
				if k >= bestKey { // liveIdx ascends: ties go to the larger ID
					best, bestKey = s, k
				}
			}
			owner[bk] = best
		}
		return
	}
	cands := make([]int32, 0, len(b.members))
	for _, m := range b.members {
		if !excl[m] {
			cands = append(cands, m)
		}
	}
	choice := b.assign(bkts, cands, gkey)
	// Group the buckets by their choice (a counting sort, keeping bucket
	// order); recurse into choices that are down.
	start := make([]int, len(b.servers)+1)
	for _, o := range choice {
		start[o+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	sorted := make([]uint32, len(bkts))
	next := slices.Clone(start[:len(b.servers)])
	for i, o := range choice {
		if b.live[o] {
			owner[bkts[i]] = o
			continue
		}
		sorted[next[o]] = bkts[i]
		next[o]++
	}
	for _, c := range cands {
		sub := sorted[start[c]:next[c]]
		if b.live[c] || len(sub) == 0 {
			continue
		}
		excl[c] = true
		b.place(owner, sub, excl, depth+1, mix64(gkey^b.hkey[c]))
		excl[c] = false
	}
}

// assign matches bkts to cands: each candidate's capacity is its
// weight-proportional share of len(bkts) (apportion), and within the caps
// each bucket gets the best candidate it can by rendezvous score (the unique
// stable matching under the scores, found by bucket-proposing deferred
// acceptance). It returns the chosen server index per position in bkts. gkey
// seeds the apportionment's tie-breaks.
func (b *builder) assign(bkts []uint32, cands []int32, gkey uint64) []int32 {
	return b.match(bkts, cands, b.apportion(len(bkts), cands, gkey))
}

// match is deferred acceptance of bkts over cands with capacities caps
// (indexed by server index, summing to len(bkts)).
func (b *builder) match(bkts []uint32, cands []int32, caps []int) []int32 {
	active := make([]int32, 0, len(cands))
	for _, c := range cands {
		if caps[c] > 0 {
			active = append(active, c)
			b.heaps[c] = b.heaps[c][:0]
		}
	}
	choice := make([]int32, len(bkts))
	if len(active) == 1 {
		for i := range choice {
			choice[i] = active[0]
		}
		return choice
	}
	b.last = slices.Grow(b.last[:0], len(bkts))[:len(bkts)]
	clear(b.last)
	free := make([]int32, len(bkts))
	for i := range free {
		free[i] = int32(len(bkts) - 1 - i) // pop order: ascending position
	}
	for len(free) > 0 {
		pos := free[len(free)-1]
		free = free[:len(free)-1]
		bk := bkts[pos]
		lp := &b.last[pos]
		// The best candidate strictly below the last proposal in (score,
		// server) order. Servers are sorted by ID, so comparing indices is
		// comparing IDs; active is ascending, so ">=" keeps the larger.
		best, bestKey := int32(-1), uint64(0)
		if !lp.set {
			for _, c := range active {
				if k := b.score(bk, c); k >= bestKey {
					best, bestKey = c, k
				}
			}
		} else {
			lk, li := lp.key, lp.idx
			for _, c := range active {
				k := b.score(bk, c)
				if k > lk || (k == lk && c >= li) {
					continue
				}
				if best < 0 || k >= bestKey {
					best, bestKey = c, k
				}
			}
		}
		// Total capacity equals len(bkts), so a bucket is always accepted
		// before it runs out of candidates.
		*lp = pref{key: bestKey, idx: best, set: true}
		h := b.heaps[best]
		e := entry{key: bestKey, pos: pos}
		switch {
		case len(h) < caps[best]:
			h = heapPush(h, e, bkts)
		case entryLess(h[0], e, bkts):
			free = append(free, h[0].pos)
			h[0] = e
			heapDown(h, 0, bkts)
		default:
			free = append(free, pos)
		}
		b.heaps[best] = h
	}
	for _, c := range active {
		for _, e := range b.heaps[c] {
			choice[e.pos] = c
		}
	}
	return choice
}

// apportion splits n seats over cands in proportion to their weights by the
// largest-remainder (Hamilton) method: each gets floor(n*w/W), and the seats
// left go to the largest remainders, ties to the larger tie-break hash of
// (gkey, ID). The result is indexed by server index (b.capsScr, overwritten by
// the next call).
func (b *builder) apportion(n int, cands []int32, gkey uint64) []int {
	var total uint64
	for _, c := range cands {
		total += uint64(b.servers[c].Weight)
	}
	items := b.appScr[:0]
	left := n
	for _, c := range cands {
		q := uint64(n) * uint64(b.servers[c].Weight)
		b.capsScr[c] = int(q / total)
		left -= b.capsScr[c]
		items = append(items, appItem{idx: c, rem: q % total, tb: mix64(gkey ^ b.hkey[c] ^ saltTiebreak)})
	}
	if left > 0 {
		slices.SortFunc(items, func(x, y appItem) int {
			if c := cmp.Compare(y.rem, x.rem); c != 0 {
				return c
			}
			if c := cmp.Compare(y.tb, x.tb); c != 0 {
				return c
			}
			return cmp.Compare(x.idx, y.idx) // servers are sorted by ID
		})
		for _, it := range items[:left] {
			b.capsScr[it.idx]++
		}
	}
	b.appScr = items
	return b.capsScr
}

// score is the rendezvous score of bucket bk for server index s: a 64-bit
// hash of (server ID, bucket) or, when the members' weights differ, the
// weighted rendezvous score w / -log2(u) with u the hash mapped into (0, 1)
// (positive float64 bits order like the floats).
func (b *builder) score(bk uint32, s int32) uint64 {
	h := mix64(b.hkey[s] + uint64(bk)*0x9e3779b97f4a7c15)
	if b.weighted {
		return math.Float64bits(float64(b.servers[s].Weight) / negLog2(h))
	}
	return h
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
