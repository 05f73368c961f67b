package core

import (
	"cmp"
	"math"
	"slices"
	"sync"
)

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

// topK is how many of a bucket's next best candidates deferred acceptance
// computes in one pass over the candidates once its first two have
// rejected it.
const topK = 8

// firstWindow is the length of a bucket's first window (see match).
var firstWindow = 2

// plan is a membership's preference lists: for every bucket, the servers at
// levels 0 to cappedDepth of its list. They depend on the membership (IDs
// and weights) and the bucket count only, never on health, so every table of
// one membership shares one plan, and a health change reads it instead of
// rebuilding. Level 0 is computed when the plan is made; a level-1 group
// (the buckets of one base owner) and a level-2 group (those of one base
// owner and one level-1 server) are computed the first time a table needs
// them, which is when those servers are down, and kept.
type plan struct {
	servers  []Server // sorted by ID; only ID and Weight are read
	buckets  int
	members  []int32   // indices of servers with Weight > 0, ascending ID
	hkey     []uint64  // by server index: rendezvous key of the server's ID
	weight   []float64 // by server index
	weighted bool      // members' weights differ: use weighted rendezvous scores
	gkey0    uint64    // group key of level 0
	totalW   int       // members' total weight
	maxW     int       // members' largest weight

	mu sync.Mutex // guards everything below
	// pref[l][bucket] is the server index at level l of the bucket's list,
	// or -1 while not computed (always -1 without members).
	pref [cappedDepth + 1][]int32
	// by[l][s] lists the buckets whose computed level-l entry is s.
	by    [cappedDepth + 1][][]uint32
	done1 []bool                // by server index: its level-1 group is computed
	done2 map[[2]int32]struct{} // level-2 groups computed, by (level 0, level 1) server

	// Deferred acceptance and apportionment scratch, reused across groups.
	heaps   [][]entry // by server index
	capsScr []int     // by server index
	appScr  []appItem
	excl    []bool  // by server index
	candScr []int32 // candidates' result
	// match's active candidates grouped by weight (weighted plans only):
	// ckey and cidx are their rendezvous keys and server indices, by
	// ascending (weight, index), and classes each weight's run.
	ckey    []uint64
	cidx    []int32
	classes []wclass
}

// wclass is one run of equal weight in plan.ckey and plan.cidx.
type wclass struct {
	start, end int
	w          float64
}

// liveSet is one table's view of which servers are live.
type liveSet struct {
	live    []bool  // by server index: Weight > 0 && Up
	liveIdx []int32 // indices of live servers, ascending
}

func newLiveSet(ss []Server) liveSet {
	h := liveSet{live: make([]bool, len(ss))}
	for i, s := range ss {
		if s.Weight > 0 && s.Up {
			h.live[i] = true
			h.liveIdx = append(h.liveIdx, int32(i))
		}
	}
	return h
}

// entry is a bucket held by a server during deferred acceptance.
type entry struct {
	key uint64
	pos int32 // position of the bucket in the group
}

type appItem struct {
	idx int32
	rem uint64
	tb  uint64
}

// newPlan computes level 0 of the lists of ss (valid, sorted by ID): the
// base table, the capacity-capped matching of all buckets to all members.
func newPlan(ss []Server, buckets int) *plan {
	p := &plan{
		servers: ss,
		buckets: buckets,
		hkey:    make([]uint64, len(ss)),
		weight:  make([]float64, len(ss)),
		gkey0:   mix64(saltGroup),
		done1:   make([]bool, len(ss)),
		done2:   map[[2]int32]struct{}{},
		heaps:   make([][]entry, len(ss)),
		capsScr: make([]int, len(ss)),
		excl:    make([]bool, len(ss)),
	}
	w0 := -1
	for i, s := range ss {
		p.hkey[i] = mix64(uint64(int64(s.ID)) ^ saltServer)
		p.weight[i] = float64(s.Weight)
		if s.Weight <= 0 {
			continue
		}
		p.members = append(p.members, int32(i))
		p.totalW += s.Weight
		p.maxW = max(p.maxW, s.Weight)
		if w0 >= 0 && s.Weight != w0 {
			p.weighted = true
		}
		w0 = s.Weight
	}
	for l := range p.pref {
		p.pref[l] = make([]int32, buckets)
		for b := range p.pref[l] {
			p.pref[l][b] = -1
		}
		p.by[l] = make([][]uint32, len(ss))
	}
	if len(p.members) == 0 {
		return p
	}
	all := make([]uint32, buckets)
	for i := range all {
		all[i] = uint32(i)
	}
	p.store(0, all, p.assign(all, p.members, p.gkey0))
	// The level-0 matching's heaps held every bucket; the groups computed
	// later are small, so let them start afresh rather than keep that.
	clear(p.heaps)
	return p
}

// store records choice (by position in bkts) as level l of those buckets.
func (p *plan) store(l int, bkts []uint32, choice []int32) {
	for i, b := range bkts {
		c := choice[i]
		p.pref[l][b] = c
		p.by[l][c] = append(p.by[l][c], b)
	}
}

// sameMembership reports whether ss (sorted by ID) has the plan's servers
// with the plan's weights.
func (p *plan) sameMembership(ss []Server) bool {
	if len(ss) != len(p.servers) {
		return false
	}
	for i := range ss {
		if ss[i].ID != p.servers[i].ID || ss[i].Weight != p.servers[i].Weight {
			return false
		}
	}
	return true
}

// resolve returns the first live server of bucket b's list (-1 if none is
// live) and whether it lies past the capped levels. The caller holds p.mu.
func (p *plan) resolve(b uint32, h liveSet) (owner int32, deep bool) {
	if len(h.liveIdx) == 0 {
		return -1, false
	}
	p0 := p.pref[0][b]
	if h.live[p0] {
		return p0, false
	}
	p.ensure1(p0)
	p1 := p.pref[1][b]
	if p1 >= 0 && h.live[p1] {
		return p1, false
	}
	if p1 >= 0 {
		p.ensure2(p0, p1)
		if p2 := p.pref[2][b]; p2 >= 0 && h.live[p2] {
			return p2, false
		}
	}
	// Past the capped levels: plain rendezvous, the live server with the
	// highest score for the bucket; liveIdx ascends, so ties go to the
	// larger ID.
	best, bestKey := int32(-1), uint64(0)
	for _, s := range h.liveIdx {
		if k := p.score(b, s); k >= bestKey {
			best, bestKey = s, k
		}
	}
	return best, true
}

// beats reports whether server u comes before server o in bucket b's plain
// rendezvous order.
func (p *plan) beats(b uint32, u, o int32) bool {
	ku, ko := p.score(b, u), p.score(b, o)
	return ku > ko || (ku == ko && u > o)
}

// ensure1 computes level 1 of the lists of base owner x's buckets: the
// capacity-capped matching of them to the other members.
func (p *plan) ensure1(x int32) {
	if p.done1[x] {
		return
	}
	p.done1[x] = true
	bkts := p.by[0][x]
	if len(bkts) == 0 || len(p.members) < 2 {
		return
	}
	p.excl[x] = true
	choice := p.assignExcl(bkts, mix64(p.gkey0^p.hkey[x]), p.servers[x].Weight)
	p.excl[x] = false
	p.store(1, bkts, choice)
}

// ensure2 computes level 2 of the lists of the buckets whose level 0 is x and
// level 1 is y: their matching to the members other than x and y.
func (p *plan) ensure2(x, y int32) {
	key := [2]int32{x, y}
	if _, ok := p.done2[key]; ok {
		return
	}
	p.done2[key] = struct{}{}
	var bkts []uint32
	for _, b := range p.by[0][x] {
		if p.pref[1][b] == y {
			bkts = append(bkts, b)
		}
	}
	if len(bkts) == 0 || len(p.members) < 3 {
		return
	}
	p.excl[x], p.excl[y] = true, true
	choice := p.assignExcl(bkts, mix64(mix64(p.gkey0^p.hkey[x])^p.hkey[y]), p.servers[x].Weight+p.servers[y].Weight)
	p.excl[x], p.excl[y] = false, false
	p.store(2, bkts, choice)
}

// assignExcl is assign of bkts over the members not in p.excl, whose
// weights add up to exclW. A group of a few buckets over many more members
// (most level-1 and level-2 groups of a big cluster) takes a shortcut that
// gives the same seats: when n*w < W for every member, every floor in
// apportion is 0 and every remainder is n*w, so the n seats go to the n
// candidates first by (weight, tie-break hash, -ID), found in one pass over
// the members without a candidate list, a division or a sort.
func (p *plan) assignExcl(bkts []uint32, gkey uint64, exclW int) []int32 {
	n := len(bkts)
	if total := p.totalW - exclW; n <= maxFewSeats && uint64(n)*uint64(p.maxW) < uint64(total) {
		seats := p.fewSeats(n, gkey)
		return p.match(bkts, seats, p.capsScr)
	}
	return p.assign(bkts, p.candidates(), gkey)
}

// maxFewSeats bounds the groups fewSeats serves: it keeps its picks in a
// sorted array.
const maxFewSeats = 64

// fewSeats returns, ascending, the n members not in p.excl first by
// (weight, tie-break hash of (gkey, ID), -ID), and sets their capacity in
// p.capsScr to 1 (see assignExcl).
func (p *plan) fewSeats(n int, gkey uint64) []int32 {
	type pick struct {
		w  int
		tb uint64
		c  int32
	}
	var buf [maxFewSeats]pick
	best := buf[:0]
	for _, c := range p.members {
		if p.excl[c] {
			continue
		}
		w := p.servers[c].Weight
		if len(best) == n {
			// Members ascend by ID, so on an equal weight and hash the
			// one already held wins.
			if last := best[n-1]; w < last.w || (w == last.w && mix64(gkey^p.hkey[c]^saltTiebreak) <= last.tb) {
				continue
			}
			best = best[:n-1]
		}
		it := pick{w: w, tb: mix64(gkey ^ p.hkey[c] ^ saltTiebreak), c: c}
		i := len(best)
		best = append(best, it)
		for i > 0 && (best[i-1].w < it.w || (best[i-1].w == it.w && best[i-1].tb < it.tb)) {
			best[i] = best[i-1]
			i--
		}
		best[i] = it
	}
	seats := make([]int32, len(best))
	for i, it := range best {
		seats[i] = it.c
		p.capsScr[it.c] = 1
	}
	slices.Sort(seats)
	return seats
}

// candidates returns the members not in p.excl, in p.candScr (overwritten
// by the next call: a level-2 group is often one bucket over thousands of
// candidates, so a fresh slice per group would be most of the work).
func (p *plan) candidates() []int32 {
	cands := p.candScr[:0]
	for _, m := range p.members {
		if !p.excl[m] {
			cands = append(cands, m)
		}
	}
	p.candScr = cands
	return cands
}

// assign matches bkts to cands: each candidate's capacity is its
// weight-proportional share of len(bkts) (apportion), and within the caps
// each bucket gets the best candidate it can by rendezvous score (the unique
// stable matching under the scores, found by bucket-proposing deferred
// acceptance). It returns the chosen server index per position in bkts. gkey
// seeds the apportionment's tie-breaks.
func (p *plan) assign(bkts []uint32, cands []int32, gkey uint64) []int32 {
	return p.match(bkts, cands, p.apportion(len(bkts), cands, gkey))
}

// match is deferred acceptance of bkts over cands with capacities caps
// (indexed by server index, summing to len(bkts)). Buckets propose in their
// preference order, best (score, server) first; a server holds the buckets
// that score it highest (ties to the larger bucket number) up to its
// capacity. The stable matching this finds is unique, so neither the
// proposal order nor the topK windows change it.
func (p *plan) match(bkts []uint32, cands []int32, caps []int) []int32 {
	// At most len(bkts) candidates have a seat.
	active := make([]int32, 0, min(len(cands), len(bkts)))
	for _, c := range cands {
		if caps[c] > 0 {
			active = append(active, c)
			p.heaps[c] = p.heaps[c][:0]
		}
	}
	choice := make([]int32, len(bkts))
	if len(active) == 1 {
		for i := range choice {
			choice[i] = active[0]
		}
		return choice
	}
	akey := make([]uint64, len(active))
	for j, c := range active {
		akey[j] = p.hkey[c]
	}
	if p.weighted {
		p.groupByWeight(active)
	}
	// Each bucket's window: its next best candidates, best first.
	k := min(topK, len(active))
	// Most buckets are accepted by their first or second choice, so the
	// first window is short: a longer one costs more insertions than the
	// rare second pass it saves.
	k1 := min(firstWindow, k)
	keys := make([]uint64, len(bkts)*k)
	idxs := make([]int32, len(bkts)*k)
	cnt := make([]uint8, len(bkts))  // entries in the window
	next := make([]uint8, len(bkts)) // next entry to propose to
	for pos, bk := range bkts {
		w := pos * k
		cnt[pos] = uint8(p.top(bk, active, akey, keys[w:w+k1], idxs[w:w+k1], false, 0, 0))
	}
	free := make([]int32, len(bkts))
	for i := range free {
		free[i] = int32(len(bkts) - 1 - i) // pop order: ascending position
	}
	for len(free) > 0 {
		pos := free[len(free)-1]
		free = free[:len(free)-1]
		w := int(pos) * k
		if next[pos] == cnt[pos] {
			// Window used up: the next k strictly below its last entry.
			// Total capacity equals len(bkts), so a bucket is always
			// accepted before it runs out of candidates.
			last := w + int(cnt[pos]) - 1
			cnt[pos] = uint8(p.top(bkts[pos], active, akey, keys[w:w+k], idxs[w:w+k], true, keys[last], idxs[last]))
			next[pos] = 0
		}
		e := entry{key: keys[w+int(next[pos])], pos: pos}
		best := idxs[w+int(next[pos])]
		next[pos]++
		h := p.heaps[best]
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
		p.heaps[best] = h
	}
	for _, c := range active {
		for _, e := range p.heaps[c] {
			choice[e.pos] = c
		}
	}
	return choice
}

// top fills keys and idxs with bucket bk's best candidates among active
// (whose rendezvous keys are akey), best first in (score, server index)
// order, strictly below (lk, li) if below, and returns how many it found (at
// most len(keys)). This loop is most of a build's time: one hash per
// (bucket, member).
func (p *plan) top(bk uint32, active []int32, akey []uint64, keys []uint64, idxs []int32, below bool, lk uint64, li int32) int {
	k, n := len(keys), 0
	var thr uint64 // keys[k-1] once the window is full
	bkm := uint64(bk) * 0x9e3779b97f4a7c15
	if p.weighted {
		if below {
			return p.topWeightedBelow(bkm, keys, idxs, lk, li)
		}
		return p.topWeighted(bkm, keys, idxs)
	}
	if !below {
		// The common pass, kept tight: one hash and one compare per
		// candidate.
		for j := 0; ; j++ {
			var s uint64
			if j, s = scan(akey, j, bkm, thr); j == len(akey) {
				break
			}
			c := active[j]
			if n == k {
				n--
			}
			i := n
			for i > 0 && (keys[i-1] < s || (keys[i-1] == s && idxs[i-1] < c)) {
				keys[i], idxs[i] = keys[i-1], idxs[i-1]
				i--
			}
			keys[i], idxs[i] = s, c
			n++
			if n == k {
				thr = keys[k-1]
			}
		}
		return n
	}
	// The pass below the last proposal (a bucket whose first
	// window was used up).
	akey = akey[:len(active)]
	for j, c := range active {
		s := mix64(akey[j] + bkm)
		if s < thr || s > lk || (s == lk && c >= li) {
			// Below the full window's worst (active ascends, so on an
			// equal score the later candidate wins and is not skipped), or
			// not below the last proposal.
			continue
		}
		if n == k {
			n-- // drop the worst
		}
		i := n
		for i > 0 && (keys[i-1] < s || (keys[i-1] == s && idxs[i-1] < c)) {
			keys[i], idxs[i] = keys[i-1], idxs[i-1]
			i--
		}
		keys[i], idxs[i] = s, c
		n++
		if n == k {
			thr = keys[k-1]
		}
	}
	return n
}

// groupByWeight fills p.ckey, p.cidx and p.classes from active: the
// candidates by ascending (weight, server index), and each weight's run.
func (p *plan) groupByWeight(active []int32) {
	p.cidx = append(p.cidx[:0], active...)
	slices.SortStableFunc(p.cidx, func(a, b int32) int { return cmp.Compare(p.servers[a].Weight, p.servers[b].Weight) })
	p.ckey = slices.Grow(p.ckey[:0], len(active))[:len(active)]
	p.classes = p.classes[:0]
	start := 0
	for j, c := range p.cidx {
		p.ckey[j] = p.hkey[c]
		if j > 0 && p.weight[p.cidx[j-1]] != p.weight[c] {
			p.classes = append(p.classes, wclass{start: start, end: j, w: p.weight[p.cidx[j-1]]})
			start = j
		}
	}
	if n := len(p.cidx); n > 0 {
		p.classes = append(p.classes, wclass{start: start, end: n, w: p.weight[p.cidx[n-1]]})
	}
}

// topWeighted is top's first pass (below false) with weighted scores over
// the active candidates grouped by weight (groupByWeight). A candidate of
// weight w scores w / negLog2(h), which falls as h falls, so for one weight
// and the window's worst score the candidates that cannot enter the window
// are those whose hash is below one bound: within a weight's run the test
// is one integer comparison, as in the unweighted pass, and the logarithm
// is computed only for the few candidates above it. The window orders by
// (score, server index) whatever order the candidates come in, so the
// result is top's.
func (p *plan) topWeighted(bkm uint64, keys []uint64, idxs []int32) int {
	k, n := len(keys), 0
	var thr uint64 // keys[k-1] once the window is full
	// Heaviest weight first: its candidates score highest, so the window's
	// worst score rises soonest and the lighter runs skip the most.
	for ci := len(p.classes) - 1; ci >= 0; ci-- {
		cl := p.classes[ci]
		ckey, cidx := p.ckey[cl.start:cl.end], p.cidx[cl.start:cl.end]
		w := cl.w
		var hlim uint64 // skip a hash below it
		if n == k {
			hlim = skipHashBelow(w, math.Float64frombits(thr))
		}
		for j := 0; ; j++ {
			var h uint64
			if j, h = scan(ckey, j, bkm, hlim); j == len(ckey) {
				break
			}
			s := math.Float64bits(w / negLog2(h))
			if s < thr {
				continue
			}
			c := cidx[j]
			if n == k {
				if s == thr && c < idxs[k-1] {
					continue // ties go to the larger index
				}
				n-- // drop the worst
			}
			i := n
			for i > 0 && (keys[i-1] < s || (keys[i-1] == s && idxs[i-1] < c)) {
				keys[i], idxs[i] = keys[i-1], idxs[i-1]
				i--
			}
			keys[i], idxs[i] = s, c
			n++
			if n == k {
				thr = keys[k-1]
				hlim = skipHashBelow(w, math.Float64frombits(thr))
			}
		}
	}
	return n
}

// scan returns the first j >= from with h = mix64(keys[j]+bkm) >= lim, and
// h; len(keys) when there is none. It hashes four keys per step, so that
// the processor overlaps their multiplications and the loop branches once
// per four candidates: the build's inner loop, where most candidates are
// below lim.
func scan(keys []uint64, from int, bkm, lim uint64) (int, uint64) {
	j := from
	for ; j+4 <= len(keys); j += 4 {
		k4 := keys[j : j+4 : j+4]
		h0 := mix64(k4[0] + bkm)
		h1 := mix64(k4[1] + bkm)
		h2 := mix64(k4[2] + bkm)
		h3 := mix64(k4[3] + bkm)
		if max(h0, h1, h2, h3) >= lim {
			switch {
			case h0 >= lim:
				return j, h0
			case h1 >= lim:
				return j + 1, h1
			case h2 >= lim:
				return j + 2, h2
			}
			return j + 3, h3
		}
	}
	for ; j < len(keys); j++ {
		if h := mix64(keys[j] + bkm); h >= lim {
			return j, h
		}
	}
	return len(keys), 0
}

// skipHashBelow is skipBelow as a bound on the hash itself: h < it implies
// h>>10|1 < skipBelow(w, thr).
func skipHashBelow(w, thr float64) uint64 {
	y := skipBelow(w, thr)
	if y <= 1 {
		return 0
	}
	return (y - 1) << 10
}

// topWeightedBelow is topWeighted below (lk, li): the pass for a bucket
// whose first window was used up, kept apart so that the first pass stays
// tight.
func (p *plan) topWeightedBelow(bkm uint64, keys []uint64, idxs []int32, lk uint64, li int32) int {
	k, n := len(keys), 0
	var thr uint64 // keys[k-1] once the window is full
	// Heaviest weight first: its candidates score highest, so the window's
	// worst score rises soonest and the lighter runs skip the most.
	for ci := len(p.classes) - 1; ci >= 0; ci-- {
		cl := p.classes[ci]
		ckey, cidx := p.ckey[cl.start:cl.end], p.cidx[cl.start:cl.end]
		w := cl.w
		var ylim uint64 // skip a hash h when h>>10|1 < ylim
		if n == k {
			ylim = skipBelow(w, math.Float64frombits(thr))
		}
		for j, hk := range ckey {
			h := mix64(hk + bkm)
			if h>>10|1 < ylim {
				continue
			}
			s := math.Float64bits(w / negLog2(h))
			if s < thr {
				continue
			}
			c := cidx[j]
			if s > lk || (s == lk && c >= li) {
				continue // not below the last proposal
			}
			if n == k {
				if s == thr && c < idxs[k-1] {
					continue // ties go to the larger index
				}
				n-- // drop the worst
			}
			i := n
			for i > 0 && (keys[i-1] < s || (keys[i-1] == s && idxs[i-1] < c)) {
				keys[i], idxs[i] = keys[i-1], idxs[i-1]
				i--
			}
			keys[i], idxs[i] = s, c
			n++
			if n == k {
				thr = keys[k-1]
				ylim = skipBelow(w, math.Float64frombits(thr))
			}
		}
	}
	return n
}

// skipBelow is the bound of topWeighted: every hash h with h>>10|1 below it
// gives weight w a score below thr. With u = (h>>10|1)/2^54 and
// D = 2^54 - (h>>10|1), negLog2(h) >= -log2(u) >= (1-u)/ln 2 (less
// rounding), so the score w/negLog2(h) is below thr when
// D*thr/(ln 2*2^54)*(1-1e-9) > w*(1+1e-9) + thr*1e-14 (the margins cover
// the rounding), that is when D exceeds a limit; the limit is raised by a
// further 1e-12 and rounded up, so the integer test never skips a
// candidate that test keeps. 0 (skip nothing) when no hash qualifies.
func skipBelow(w, thr float64) uint64 {
	fa := thr * (1 / math.Ln2) * (1 - 1e-9) / (1 << 54)
	if !(fa > 0) {
		return 0
	}
	dlim := math.Ceil((w*(1+1e-9)+thr*1e-14)/fa*(1+1e-12)) + 1
	if !(dlim < 1<<54) {
		return 0
	}
	return 1<<54 - uint64(dlim)
}

// apportion splits n seats over cands in proportion to their weights by the
// largest-remainder (Hamilton) method: each gets floor(n*w/W), and the seats
// left go to the largest remainders, ties to the larger tie-break hash of
// (gkey, ID). The result is indexed by server index (p.capsScr, overwritten by
// the next call).
func (p *plan) apportion(n int, cands []int32, gkey uint64) []int {
	var total uint64
	for _, c := range cands {
		total += uint64(p.servers[c].Weight)
	}
	items := p.appScr[:0]
	left := n
	for _, c := range cands {
		q := uint64(n) * uint64(p.servers[c].Weight)
		p.capsScr[c] = int(q / total)
		left -= p.capsScr[c]
		items = append(items, appItem{idx: c, rem: q % total, tb: mix64(gkey ^ p.hkey[c] ^ saltTiebreak)})
	}
	p.appScr = items
	if left == 0 {
		return p.capsScr
	}
	if left <= 16 {
		// Few seats left (small groups over many servers): select the best
		// left items in one pass rather than sorting them all.
		best := make([]appItem, 0, left)
		for _, it := range items {
			if len(best) == left {
				if !appBefore(it, best[left-1]) {
					continue
				}
				best = best[:left-1]
			}
			i := len(best)
			best = append(best, it)
			for i > 0 && appBefore(it, best[i-1]) {
				best[i] = best[i-1]
				i--
			}
			best[i] = it
		}
		for _, it := range best {
			p.capsScr[it.idx]++
		}
		return p.capsScr
	}
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
		p.capsScr[it.idx]++
	}
	return p.capsScr
}

// appBefore orders apportionment items: larger remainder first, then larger
// tie-break, then smaller index (ID).
func appBefore(x, y appItem) bool {
	if x.rem != y.rem {
		return x.rem > y.rem
	}
	if x.tb != y.tb {
		return x.tb > y.tb
	}
	return x.idx < y.idx
}

// score is the rendezvous score of bucket bk for server index s: a 64-bit
// hash of (server ID, bucket) or, when the members' weights differ, the
// weighted rendezvous score w / -log2(u) with u the hash mapped into (0, 1)
// (positive float64 bits order like the floats).
func (p *plan) score(bk uint32, s int32) uint64 {
	h := mix64(p.hkey[s] + uint64(bk)*0x9e3779b97f4a7c15)
	if p.weighted {
		return math.Float64bits(p.weight[s] / negLog2(h))
	}
	return h
}
