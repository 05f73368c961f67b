package tune

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// Hash names, as written in the config's hash key.
const (
	HashJHash  = "jhash"
	HashModulo = "modulo"
)

// ErrNoServers is returned when no server can take load (none up with a
// positive weight).
var ErrNoServers = errors.New("tune: no server is up with a positive weight")

// Candidate is one setting of a cluster's dispatch keys. Seed and Buckets are
// meaningless for HashModulo and are zero there.
type Candidate struct {
	Hash    string
	Seed    uint32
	Buckets int
}

func (c Candidate) String() string {
	if c.Hash == HashModulo {
		return `hash = "modulo"`
	}
	return fmt.Sprintf(`hash = %q, seed = %#x, buckets = %d`, c.Hash, c.Seed, c.Buckets)
}

// Score is how evenly a candidate spreads load. MaxMean is the largest
// server load divided by that server's fair share (total × weight ÷ sum of
// weights); with equal weights that is the plain max/mean, and 1 is perfect.
// CV is the coefficient of variation of the same ratios, each server weighted
// by its share (with equal weights, stddev/mean of the loads).
type Score struct {
	MaxMean float64
	CV      float64
}

// less orders scores best first.
func (s Score) less(t Score) bool {
	if s.MaxMean != t.MaxMean {
		return s.MaxMean < t.MaxMean
	}
	return s.CV < t.CV
}

// Result is one candidate evaluated in full.
type Result struct {
	Candidate
	// Requests and Bytes are per server, indexed like Evaluator.Servers.
	Requests, Bytes []uint64
	// Lost is the load that no server would take (its bucket has no live
	// owner).
	Lost Counts
	// ByRequests and ByBytes score the two loads.
	ByRequests, ByBytes Score
}

// Score returns r's score under m.
func (r *Result) Score(m Metric) Score {
	if m == ByBytes {
		return r.ByBytes
	}
	return r.ByRequests
}

// Loads returns r's per-server loads under m.
func (r *Result) Loads(m Metric) []uint64 {
	if m == ByBytes {
		return r.Bytes
	}
	return r.Requests
}

// Evaluator judges candidate settings for one cluster's servers against one
// client population. It is immutable after NewEvaluator and safe for
// concurrent use.
type Evaluator struct {
	servers []core.Server
	index   map[int]int // server ID -> index in servers
	share   []float64   // fair share of each server, 0 if it takes no load
	clients []Client    // heaviest first under by
	by      Metric
	total   Counts

	// The search's working set: the clients with a positive weight under
	// by, as raw address bytes (IPv4 and IPv6 apart, so the hot loop hashes
	// without branching on the family) with their weights.
	v4  [][4]byte
	v4w []uint64
	v6  [][16]byte
	v6w []uint64

	// tables holds the flattened table of each bucket count, built once
	// and shared by the evaluators of the same servers (sharing).
	tables *ownerCache
}

// ownerCache is the flattened tables (owners) by bucket count. They depend
// only on the servers, so evaluators of different populations of the same
// servers share them.
type ownerCache struct {
	mu sync.Mutex
	m  map[int][]uint16
}

// NewEvaluator prepares to evaluate candidates for servers (kept in the
// given order, which is the order of every per-server slice) against pop,
// judging balance by m.
func NewEvaluator(servers []core.Server, pop *Population, m Metric) (*Evaluator, error) {
	e := &Evaluator{
		servers: slices.Clone(servers),
		index:   make(map[int]int, len(servers)),
		share:   make([]float64, len(servers)),
		clients: pop.Sorted(m),
		by:      m,
		total:   Counts{Requests: pop.Requests, Bytes: pop.Bytes},
		tables:  &ownerCache{m: map[int][]uint16{}},
	}
	var sum int
	for i, s := range servers {
		if _, dup := e.index[s.ID]; dup {
			return nil, fmt.Errorf("tune: duplicate server id %d", s.ID)
		}
		e.index[s.ID] = i
		if s.Up && s.Weight > 0 {
			sum += s.Weight
		}
	}
	if sum == 0 {
		return nil, ErrNoServers
	}
	for i, s := range servers {
		if s.Up && s.Weight > 0 {
			e.share[i] = float64(s.Weight) / float64(sum)
		}
	}
	for _, c := range e.clients {
		w := m.Of(c.Counts)
		switch {
		case w == 0:
		case c.Addr.Is4():
			e.v4 = append(e.v4, c.Addr.As4())
			e.v4w = append(e.v4w, w)
		default:
			e.v6 = append(e.v6, c.Addr.As16())
			e.v6w = append(e.v6w, w)
		}
	}
	return e, nil
}

// Servers returns the servers in the order of every per-server slice.
func (e *Evaluator) Servers() []core.Server { return e.servers }

// Share returns each server's fair share of the load (0 for a server that
// takes none), indexed like Servers.
func (e *Evaluator) Share() []float64 { return e.share }

// Clients returns the clients heaviest first under the evaluator's metric.
func (e *Evaluator) Clients() []Client { return e.clients }

// Metric returns the metric balance is judged on.
func (e *Evaluator) Metric() Metric { return e.by }

// Total returns the population's totals.
func (e *Evaluator) Total() Counts { return e.total }

// Bound is the floor that the heaviest client puts under MaxMean for any
// per-client hash: all of a client's requests go to one server, so whichever
// server gets it carries at least its load. The floor assumes it lands on the
// server with the largest share.
type Bound struct {
	Client Client
	// Share is the client's fraction of the total load.
	Share float64
	// FairShare is the largest server's fair fraction of the load.
	FairShare float64
	// MaxMean is max(1, Share/FairShare).
	MaxMean float64
}

// LowerBound returns the bound set by the heaviest client. It is zero if the
// population is empty.
func (e *Evaluator) LowerBound() Bound {
	total := e.by.Of(e.total)
	if len(e.clients) == 0 || total == 0 {
		return Bound{}
	}
	c := e.clients[0]
	b := Bound{Client: c, Share: float64(e.by.Of(c.Counts)) / float64(total), FairShare: slices.Max(e.share)}
	b.MaxMean = math.Max(1, b.Share/b.FairShare)
	return b
}

// score computes the Score of loads against the fair shares.
func (e *Evaluator) score(loads []uint64, total uint64) Score {
	return scoreLoads(e.share, loads, total)
}

// scoreLoads computes the Score of loads (indexed like share) against the
// fair shares.
func scoreLoads(share []float64, loads []uint64, total uint64) Score {
	if total == 0 {
		return Score{}
	}
	var s Score
	var ss float64
	for i, sh := range share {
		if sh == 0 {
			continue
		}
		r := float64(loads[i]) / (float64(total) * sh)
		s.MaxMean = math.Max(s.MaxMean, r)
		ss += sh * (r - 1) * (r - 1)
	}
	s.CV = math.Sqrt(ss)
	return s
}

// assigner maps a client to a server index, or -1 when no server takes it.
type assigner func(netip.Addr) int

// assign returns how c places clients.
func (e *Evaluator) assign(c Candidate) (assigner, error) {
	switch c.Hash {
	case HashJHash:
		owners, err := e.owners(c.Buckets)
		if err != nil {
			return nil, err
		}
		n := uint32(c.Buckets)
		return func(a netip.Addr) int {
			o := owners[core.Bucket(core.JHash(a, c.Seed), n)]
			if int(o) == len(e.servers) {
				return -1
			}
			return int(o)
		}, nil
	case HashModulo:
		sel := core.NewModuloSelector(e.servers)
		ss := sel.Servers() // what the selector's indices refer to
		return func(a netip.Addr) int {
			idx, _, ok := sel.Select(a)
			if !ok || idx < 0 || idx >= len(ss) {
				return -1
			}
			i, known := e.index[ss[idx].ID]
			if !known {
				return -1
			}
			return i
		}, nil
	}
	return nil, fmt.Errorf("tune: unknown hash %q (want jhash or modulo)", c.Hash)
}

// sharing returns an evaluator like NewEvaluator(e.Servers(), pop, m) that
// shares e's tables.
func (e *Evaluator) sharing(pop *Population, m Metric) (*Evaluator, error) {
	x, err := NewEvaluator(e.servers, pop, m)
	if err != nil {
		return nil, err
	}
	x.tables = e.tables
	return x, nil
}

// owners builds the table for n buckets once and flattens it to bucket ->
// server index, with len(servers) standing for "no owner". core.NewTable
// takes at most core.MaxServers (4096) servers, so an index fits 16 bits
// and even a 65536-bucket table stays in L2. The result is shared: read only.
func (e *Evaluator) owners(n int) ([]uint16, error) {
	e.tables.mu.Lock()
	defer e.tables.mu.Unlock()
	if o, ok := e.tables.m[n]; ok {
		return o, nil
	}
	o, err := e.buildOwners(n)
	if err != nil {
		return nil, err
	}
	e.tables.m[n] = o
	return o, nil
}

func (e *Evaluator) buildOwners(n int) ([]uint16, error) {
	if n <= 0 || n > math.MaxUint32 {
		return nil, fmt.Errorf("tune: bad bucket count %d", n)
	}
	t, err := core.NewTable(e.servers, n)
	if err != nil {
		return nil, fmt.Errorf("tune: %d buckets: %w", n, err)
	}
	if len(e.servers) >= math.MaxUint16 {
		return nil, fmt.Errorf("tune: %d servers: too many", len(e.servers))
	}
	owners := make([]uint16, n)
	for b := range owners {
		owners[b] = uint16(len(e.servers))
		if id, ok := t.OwnerID(uint32(b)); ok {
			if i, known := e.index[id]; known {
				owners[b] = uint16(i)
			}
		}
	}
	return owners, nil
}

// Evaluate places every client under c and returns the per-server loads in
// both metrics.
func (e *Evaluator) Evaluate(c Candidate) (Result, error) {
	assign, err := e.assign(c)
	if err != nil {
		return Result{}, err
	}
	return e.place(c, assign), nil
}

// place sums every client's load on the server assign gives it (an index
// into Servers; negative: no server, counted as lost) and scores c by it.
func (e *Evaluator) place(c Candidate, assign func(netip.Addr) int) Result {
	r := Result{
		Candidate: c,
		Requests:  make([]uint64, len(e.servers)),
		Bytes:     make([]uint64, len(e.servers)),
	}
	for _, cl := range e.clients {
		i := assign(cl.Addr)
		if i < 0 {
			r.Lost.Requests += cl.Requests
			r.Lost.Bytes += cl.Bytes
			continue
		}
		r.Requests[i] += cl.Requests
		r.Bytes[i] += cl.Bytes
	}
	r.ByRequests = e.score(r.Requests, e.total.Requests)
	r.ByBytes = e.score(r.Bytes, e.total.Bytes)
	return r
}

// Placer returns a function giving the index (into Servers) of the server
// that c sends a client to, or -1 when no server takes it. The function is
// safe for concurrent use.
func (e *Evaluator) Placer(c Candidate) (func(netip.Addr) int, error) {
	return e.assign(c)
}

// SearchOptions bounds a search.
type SearchOptions struct {
	// Seeds is how many jhash seeds to try per bucket count: 0 .. Seeds-1,
	// plus the current seed.
	Seeds int
	// Buckets lists the bucket counts to try.
	Buckets []int
	// Modulo also tries hash = "modulo" (routing mode only).
	Modulo bool
	// Current is the cluster's present setting; it is always evaluated and
	// wins ties against other bucket counts.
	Current Candidate
	// Workers is how many goroutines hash in parallel; 0 means GOMAXPROCS.
	Workers int
	// Progress, if not nil, is called from the calling goroutine with the
	// seeds done so far and the total, about five times a second and once
	// at the end.
	Progress func(done, total int)
}

// Tried is one candidate's score, as kept for every candidate in a search.
type Tried struct {
	Candidate
	Score
}

// SearchResult is the outcome of a search.
type SearchResult struct {
	Current Result
	Best    Result
	// PerBuckets holds the best seed for each bucket count searched, in
	// the order of SearchOptions.Buckets (bucket counts the table refused
	// are in Skipped instead).
	PerBuckets []Tried
	// Modulo is the modulo hash's score, if it was tried.
	Modulo *Tried
	// Skipped lists bucket counts that could not be built, with the reason.
	Skipped []error
	// Candidates is how many candidates were scored.
	Candidates int
}

// Search scores every candidate in opts and returns the best under the
// evaluator's metric. The order is total and fixed: lower MaxMean, then lower
// CV, then the current hash, then the current bucket count, then fewer
// buckets, then the smaller seed; so the same input always gives the same answer.
func (e *Evaluator) Search(opts SearchOptions) (SearchResult, error) {
	rs, err := searchSets([]*Evaluator{e}, opts)
	if err != nil {
		return SearchResult{}, err
	}
	return rs[0], nil
}

// searchSets runs Search for several evaluators of the same servers (the
// same metric, different client populations: the whole log and each fold's
// training windows) in one sweep over the seeds: each distinct client is
// hashed once per seed and its bucket found once per bucket count, and its
// weight in every population is added to that population's loads. The
// results are those Search gives for each evaluator alone.
func searchSets(evs []*Evaluator, opts SearchOptions) ([]SearchResult, error) {
	res := make([]SearchResult, len(evs))
	e := evs[0]
	for i, ev := range evs {
		var err error
		if res[i].Current, err = ev.Evaluate(opts.Current); err != nil {
			return nil, fmt.Errorf("tune: current setting: %w", err)
		}
	}
	seeds := make([]uint32, 0, opts.Seeds+1)
	for s := 0; s < opts.Seeds; s++ {
		seeds = append(seeds, uint32(s))
	}
	if opts.Current.Hash == HashJHash && int64(opts.Current.Seed) >= int64(opts.Seeds) {
		seeds = append(seeds, opts.Current.Seed)
	}

	// One flattened table per bucket count, built once.
	var counts []int
	var owners [][]uint16
	var skipped []error
	for _, n := range opts.Buckets {
		if slices.Contains(counts, n) {
			continue
		}
		o, err := e.owners(n)
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		counts = append(counts, n)
		owners = append(owners, o)
	}

	// scores[i][s*len(counts)+k] is evaluator i's score of seed s with
	// bucket count k.
	scores := make([][]Score, len(evs))
	for i := range scores {
		scores[i] = make([]Score, len(seeds)*len(counts))
	}
	if len(counts) > 0 && len(seeds) > 0 {
		sweepSeeds(e.servers, e.share, joinSets(evs), seeds, counts, owners, scores, opts)
	}
	for i, ev := range evs {
		res[i].Skipped = skipped
		if err := ev.pick(&res[i], opts, seeds, counts, scores[i]); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// pick fills res from the sweep's scores: the best seed per bucket count,
// modulo when asked, and the best overall, evaluated in full.
func (e *Evaluator) pick(res *SearchResult, opts SearchOptions, seeds []uint32, counts []int, scores []Score) error {
	res.Candidates = len(scores)
	best := Tried{Candidate: opts.Current, Score: res.Current.Score(e.by)}
	better := func(a, b Tried) bool { // a strictly before b
		if a.Score != b.Score {
			return a.Score.less(b.Score)
		}
		if a.Hash != b.Hash {
			return a.Hash == opts.Current.Hash
		}
		if ac, bc := a.Buckets == opts.Current.Buckets, b.Buckets == opts.Current.Buckets; ac != bc {
			return ac
		}
		if a.Buckets != b.Buckets {
			return a.Buckets < b.Buckets
		}
		return a.Seed < b.Seed
	}
	for k, n := range counts {
		var kb *Tried
		for s, seed := range seeds {
			t := Tried{Candidate: Candidate{Hash: HashJHash, Seed: seed, Buckets: n}, Score: scores[s*len(counts)+k]}
			if kb == nil || better(t, *kb) {
				kb = &t
			}
		}
		res.PerBuckets = append(res.PerBuckets, *kb)
		if better(*kb, best) {
			best = *kb
		}
	}
	if opts.Modulo {
		r, err := e.Evaluate(Candidate{Hash: HashModulo})
		if err != nil {
			return err
		}
		t := Tried{Candidate: r.Candidate, Score: r.Score(e.by)}
		res.Modulo = &t
		res.Candidates++
		if better(t, best) {
			best = t
		}
	}
	var err error
	res.Best, err = e.Evaluate(best.Candidate)
	return err
}

// clientSets is the search's working set for one or more populations: the
// distinct clients with a positive weight in any of them, as raw address
// bytes (IPv4 and IPv6 apart, so the hot loop hashes without branching on
// the family), and their weights, w[client*sets+set].
type clientSets struct {
	sets   int
	totals []uint64
	v4     [][4]byte
	v4w    []uint64
	v6     [][16]byte
	v6w    []uint64
}

// joinSets gathers evs' clients into one working set.
func joinSets(evs []*Evaluator) *clientSets {
	cs := &clientSets{sets: len(evs), totals: make([]uint64, len(evs))}
	for i, ev := range evs {
		cs.totals[i] = ev.by.Of(ev.total)
	}
	if len(evs) == 1 {
		cs.v4, cs.v4w, cs.v6, cs.v6w = evs[0].v4, evs[0].v4w, evs[0].v6, evs[0].v6w
		return cs
	}
	idx4 := make(map[[4]byte]int)
	idx6 := make(map[[16]byte]int)
	for i, ev := range evs {
		for j, a := range ev.v4 {
			k, ok := idx4[a]
			if !ok {
				k = len(cs.v4)
				idx4[a] = k
				cs.v4 = append(cs.v4, a)
				cs.v4w = append(cs.v4w, make([]uint64, cs.sets)...)
			}
			cs.v4w[k*cs.sets+i] += ev.v4w[j]
		}
		for j, a := range ev.v6 {
			k, ok := idx6[a]
			if !ok {
				k = len(cs.v6)
				idx6[a] = k
				cs.v6 = append(cs.v6, a)
				cs.v6w = append(cs.v6w, make([]uint64, cs.sets)...)
			}
			cs.v6w[k*cs.sets+i] += ev.v6w[j]
		}
	}
	return cs
}

// seedChunk is how many seeds a worker takes at a time.
const seedChunk = 16

// hashBlock is how many clients are hashed before their weights are
// scattered: the hashes stay in L1 while every bucket count reads them.
const hashBlock = 2048

// searchSeeds fills scores for every seed and bucket count.
func (e *Evaluator) searchSeeds(seeds []uint32, counts []int, owners [][]uint16, scores []Score, opts SearchOptions) {
	sweepSeeds(e.servers, e.share, joinSets([]*Evaluator{e}), seeds, counts, owners, [][]Score{scores}, opts)
}

// sweepSeeds fills scores[set] for every seed and bucket count, hashing each
// client once per seed. Workers take chunks of seeds; each writes only its
// own seeds' scores, so the result does not depend on scheduling.
func sweepSeeds(servers []core.Server, share []float64, cs *clientSets, seeds []uint32, counts []int, owners [][]uint16, scores [][]Score, opts SearchOptions) {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	chunks := (len(seeds) + seedChunk - 1) / seedChunk
	workers = min(workers, chunks)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			nsrv := len(servers) + 1 // the last slot collects lost load
			loads := make([]uint64, nsrv*len(counts)*cs.sets)
			one := make([]uint64, nsrv)
			hs := make([]uint32, hashBlock)
			for {
				c := int(next.Add(1) - 1)
				if c >= chunks {
					return
				}
				end := min((c+1)*seedChunk, len(seeds))
				for s := c * seedChunk; s < end; s++ {
					clear(loads)
					seed := seeds[s]
					for i := 0; i < len(cs.v4); i += hashBlock {
						keys := cs.v4[i:min(i+hashBlock, len(cs.v4))]
						h := hs[:len(keys)]
						for j, a := range keys {
							h[j] = core.JHash4(a, seed)
						}
						scatter(loads, nsrv, cs.sets, counts, owners, h, cs.v4w[i*cs.sets:(i+len(keys))*cs.sets])
					}
					for i := 0; i < len(cs.v6); i += hashBlock {
						keys := cs.v6[i:min(i+hashBlock, len(cs.v6))]
						h := hs[:len(keys)]
						for j, a := range keys {
							h[j] = core.JHash16(a, seed)
						}
						scatter(loads, nsrv, cs.sets, counts, owners, h, cs.v6w[i*cs.sets:(i+len(keys))*cs.sets])
					}
					for k := range counts {
						lk := loads[k*nsrv*cs.sets : (k+1)*nsrv*cs.sets]
						for set := range cs.sets {
							l := lk
							if cs.sets > 1 {
								for i := range one {
									one[i] = lk[i*cs.sets+set]
								}
								l = one
							}
							scores[set][s*len(counts)+k] = scoreLoads(share, l, cs.totals[set])
						}
					}
				}
				done.Add(int64(end - c*seedChunk))
			}
		})
	}
	if opts.Progress == nil {
		wg.Wait()
		return
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-finished:
			opts.Progress(len(seeds), len(seeds))
			return
		case <-tick.C:
			opts.Progress(int(done.Load()), len(seeds))
		}
	}
}

// scatter adds each client's weights to the server owning hash h[j]'s
// bucket, for every bucket count k: with one set, w[j] into
// loads[k*nsrv+server]; with several, w[j*sets+set] into
// loads[(k*nsrv+server)*sets+set].
func scatter(loads []uint64, nsrv, sets int, counts []int, owners [][]uint16, h []uint32, w []uint64) {
	w = w[:len(h)*sets]
	if sets == 1 {
		for k, own := range owners {
			l := loads[k*nsrv : (k+1)*nsrv]
			n := uint32(counts[k])
			for j, hj := range h {
				l[own[core.Bucket(hj, n)]] += w[j]
			}
		}
		return
	}
	for k, own := range owners {
		l := loads[k*nsrv*sets : (k+1)*nsrv*sets]
		n := uint32(counts[k])
		if sets == 4 { // the default: three folds and the whole log
			for j, hj := range h {
				base := int(own[core.Bucket(hj, n)]) * 4
				dst := (*[4]uint64)(l[base : base+4])
				src := (*[4]uint64)(w[j*4 : j*4+4])
				dst[0] += src[0]
				dst[1] += src[1]
				dst[2] += src[2]
				dst[3] += src[3]
			}
			continue
		}
		for j, hj := range h {
			base := int(own[core.Bucket(hj, n)]) * sets
			dst := l[base : base+sets]
			for i, x := range w[j*sets : (j+1)*sets] {
				dst[i] += x
			}
		}
	}
}
