package tune

import (
	"bytes"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

const defaultSeed = 0x5eed // the seed of the hash contract's worked example (package dispatch/core's doc)

func readPop(t testing.TB, text []byte) *Population {
	t.Helper()
	p := NewPopulation()
	if err := p.ReadLog("gen.log", bytes.NewReader(text), nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// skewed is the standard generated population: 200k requests, 20k Zipf
// clients and three heavy hitters.
func skewed(t testing.TB) (genLog, *Population) {
	g := generate(genSpec{Lines: 200_000, Population: 20_000, Heavy: []float64{0.03, 0.02, 0.015}, Seed: 1})
	return g, readPop(t, g.Text)
}

func TestSearchBeatsDefaultSeed(t *testing.T) {
	g, pop := skewed(t)
	for _, n := range []int{8, 32, 64} {
		for _, by := range []Metric{ByRequests, ByBytes} {
			ev, err := NewEvaluator(servers(n), pop, by)
			if err != nil {
				t.Fatal(err)
			}
			cur := Candidate{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096}
			res, err := ev.Search(SearchOptions{Seeds: 512, Buckets: []int{4096, 1024}, Modulo: true, Current: cur})
			if err != nil {
				t.Fatal(err)
			}
			c, b := res.Current.Score(by), res.Best.Score(by)
			bound := ev.LowerBound()
			t.Logf("%d servers by %s: current %v max/mean %.3f cv %.4f; best %v max/mean %.3f cv %.4f; bound %.3f",
				n, by, cur, c.MaxMean, c.CV, res.Best.Candidate, b.MaxMean, b.CV, bound.MaxMean)
			if !(b.MaxMean < c.MaxMean) {
				t.Errorf("%d servers by %s: best max/mean %.4f not below the default seed's %.4f", n, by, b.MaxMean, c.MaxMean)
			}
			if b.MaxMean < bound.MaxMean {
				t.Errorf("%d servers by %s: best max/mean %.4f below the heaviest client's floor %.4f", n, by, b.MaxMean, bound.MaxMean)
			}
			if by == ByRequests && bound.Client.Addr != g.Heavy[0] {
				t.Errorf("LowerBound client = %v, want the heaviest hitter %v", bound.Client.Addr, g.Heavy[0])
			}
		}
	}
}

// TestResultMatchesDirectCount checks Evaluate against the appliance's own
// selector applied to every generated line, one by one.
func TestResultMatchesDirectCount(t *testing.T) {
	g, pop := skewed(t)
	srv := servers(16)
	srv[3].Weight = 3
	srv[5].Up = false
	srv[7].Weight = 0
	ev, err := NewEvaluator(srv, pop, ByRequests)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Candidate{
		{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096},
		{Hash: HashJHash, Seed: 77, Buckets: 1000},
		{Hash: HashModulo},
	} {
		var sel core.Selector
		var selServers []core.Server
		if c.Hash == HashModulo {
			m := core.NewModuloSelector(srv)
			sel, selServers = m, m.Servers()
		} else {
			tb, err := core.NewTable(srv, c.Buckets)
			if err != nil {
				t.Fatal(err)
			}
			sel, selServers = core.NewJHashSelector(tb, c.Seed), tb.Servers()
		}
		want := map[int]Counts{}
		for i, a := range g.Addrs {
			idx, _, ok := sel.Select(a)
			if !ok {
				t.Fatalf("%v: selector drops %v", c, a)
			}
			w := want[selServers[idx].ID]
			w.Requests++
			w.Bytes += g.Sizes[i]
			want[selServers[idx].ID] = w
		}
		r, err := ev.Evaluate(c)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range ev.Servers() {
			if got := (Counts{r.Requests[i], r.Bytes[i]}); got != want[s.ID] {
				t.Errorf("%v: server %d: Evaluate = %+v, direct count = %+v", c, s.ID, got, want[s.ID])
			}
		}
		// The shares the report prints are these loads over the totals.
		if pop.Requests != uint64(len(g.Addrs)) {
			t.Errorf("population requests = %d, want %d lines", pop.Requests, len(g.Addrs))
		}
	}
}

// TestSearchScoresMatchEvaluate checks the fast search path (per-seed bucket
// sums through a flattened table) against Evaluate for every candidate.
func TestSearchScoresMatchEvaluate(t *testing.T) {
	_, pop := skewed(t)
	srv := servers(12)
	srv[2].Weight = 2
	srv[4].Up = false
	for _, by := range []Metric{ByRequests, ByBytes} {
		ev, err := NewEvaluator(srv, pop, by)
		if err != nil {
			t.Fatal(err)
		}
		seeds := []uint32{0, 1, 2, 3, 0xdeadbeef, defaultSeed, 40}
		counts := []int{64, 4096, 1000}
		var owners [][]uint16
		for _, n := range counts {
			o, err := ev.owners(n)
			if err != nil {
				t.Fatal(err)
			}
			owners = append(owners, o)
		}
		scores := make([]Score, len(seeds)*len(counts))
		ev.searchSeeds(seeds, counts, owners, scores, SearchOptions{Workers: 3})
		for s, seed := range seeds {
			for k, n := range counts {
				c := Candidate{Hash: HashJHash, Seed: seed, Buckets: n}
				r, err := ev.Evaluate(c)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := scores[s*len(counts)+k], r.Score(by); got != want {
					t.Errorf("by %s %v: search score %+v, Evaluate %+v", by, c, got, want)
				}
			}
		}
	}
}

func TestSearchDeterministic(t *testing.T) {
	_, pop := skewed(t)
	ev, err := NewEvaluator(servers(20), pop, ByRequests)
	if err != nil {
		t.Fatal(err)
	}
	opts := SearchOptions{Seeds: 300, Buckets: []int{4096, 256}, Current: Candidate{Hash: HashJHash, Seed: 1 << 30, Buckets: 4096}}
	var first SearchResult
	for i, w := range []int{1, 2, 7, 0} {
		opts.Workers = w
		res, err := ev.Search(opts)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = res
			if res.Candidates != 301*2 {
				t.Errorf("Candidates = %d, want %d (300 seeds and the current one, 2 bucket counts)", res.Candidates, 301*2)
			}
			continue
		}
		if res.Best.Candidate != first.Best.Candidate || res.Best.ByRequests != first.Best.ByRequests {
			t.Errorf("workers %d: best %v %+v, with 1 worker %v %+v", w, res.Best.Candidate, res.Best.ByRequests, first.Best.Candidate, first.Best.ByRequests)
		}
		for k := range res.PerBuckets {
			if res.PerBuckets[k] != first.PerBuckets[k] {
				t.Errorf("workers %d: per-bucket best %+v, with 1 worker %+v", w, res.PerBuckets[k], first.PerBuckets[k])
			}
		}
	}
}

// TestSearchTies: with a population of one client every seed scores the
// same, so the order decides: the current hash and bucket count, then the
// smallest seed.
func TestSearchTies(t *testing.T) {
	pop := NewPopulation()
	pop.Add(Record{Addr: netip.MustParseAddr("192.0.2.1")})
	ev, err := NewEvaluator(servers(1), pop, ByRequests)
	if err != nil {
		t.Fatal(err)
	}
	cur := Candidate{Hash: HashJHash, Seed: 99, Buckets: 4096}
	res, err := ev.Search(SearchOptions{Seeds: 50, Buckets: []int{16, 4096}, Modulo: true, Current: cur})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Candidate{Hash: HashJHash, Seed: 0, Buckets: 4096}); res.Best.Candidate != want {
		t.Errorf("best = %v, want %v", res.Best.Candidate, want)
	}
}

func TestScoreWeighted(t *testing.T) {
	srv := []core.Server{
		{ID: 1, Weight: 1, Up: true},
		{ID: 2, Weight: 2, Up: true},
		{ID: 3, Weight: 3, Up: true},
		{ID: 4, Weight: 0, Up: true},
		{ID: 5, Weight: 5, Up: false},
	}
	pop := NewPopulation()
	pop.Add(Record{Addr: netip.MustParseAddr("192.0.2.1")})
	ev, err := NewEvaluator(srv, pop, ByRequests)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		loads       []uint64
		maxMean, cv float64
	}{
		{[]uint64{10, 20, 30, 0, 0}, 1, 0},
		{[]uint64{20, 20, 20, 0, 0}, 2, math.Sqrt(1.0/6*1 + 2.0/6*0 + 3.0/6*(1.0/9))},
		{[]uint64{0, 0, 60, 0, 0}, 2, math.Sqrt(1.0/6 + 2.0/6 + 3.0/6)},
	} {
		s := ev.score(tc.loads, 60)
		if math.Abs(s.MaxMean-tc.maxMean) > 1e-12 || math.Abs(s.CV-tc.cv) > 1e-12 {
			t.Errorf("score(%v) = %+v, want max/mean %v cv %v", tc.loads, s, tc.maxMean, tc.cv)
		}
	}
	if _, err := NewEvaluator([]core.Server{{ID: 1, Weight: 0, Up: true}}, pop, ByRequests); err != ErrNoServers {
		t.Errorf("NewEvaluator(no live weight) error = %v, want ErrNoServers", err)
	}
}

func TestLowerBound(t *testing.T) {
	pop := NewPopulation()
	heavy := netip.MustParseAddr("2001:db8::bad")
	for i := range 100 {
		a := heavy
		if i >= 5 {
			a = netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		}
		pop.Add(Record{Addr: a, Bytes: 10, HasBytes: true})
	}
	ev, err := NewEvaluator(servers(64), pop, ByRequests)
	if err != nil {
		t.Fatal(err)
	}
	b := ev.LowerBound()
	if b.Client.Addr != heavy || math.Abs(b.MaxMean-3.2) > 1e-9 || math.Abs(b.Share-0.05) > 1e-12 {
		t.Errorf("LowerBound = %+v, want %v at 5%% of 64 servers = 3.2", b, heavy)
	}
}

func TestReportNamesHeavyHitters(t *testing.T) {
	g, pop := skewed(t)
	ev, err := NewEvaluator(servers(64), pop, ByRequests)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ev.Search(SearchOptions{Seeds: 64, Buckets: []int{4096}, Current: Candidate{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{Cluster: "web", Mode: "routing", Files: []string{"gen.log"}, Pop: pop, Eval: ev, Search: res, Seeds: 64, Top: 5}
	var out strings.Builder
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	place, _ := ev.Placer(res.Best.Candidate)
	for _, h := range g.Heavy {
		row := lineWith(text, "  "+h.String()+" ")
		if row == "" {
			t.Errorf("report does not list heavy hitter %v:\n%s", h, text)
			continue
		}
		if want := "server " + strconv.Itoa(ev.Servers()[place(h)].ID); !strings.HasSuffix(strings.TrimSpace(row), want) {
			t.Errorf("heavy hitter row %q does not end in its recommended %q", row, want)
		}
	}
	if !strings.Contains(text, "192.0.2.10 sent ") || !strings.Contains(text, "can bring max/mean below") {
		t.Errorf("report does not state the heaviest client's floor:\n%s", text)
	}
	// The shares printed for the heaviest client equal its direct count.
	share := pct(float64(g.Truth[g.Heavy[0]].Requests) / float64(len(g.Addrs)))
	if row := lineWith(text, "  "+g.Heavy[0].String()+" "); !strings.Contains(row, share) {
		t.Errorf("heavy row %q lacks its direct-count share %s", row, share)
	}
	t.Log("\n" + text)
}

func lineWith(text, sub string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) && strings.Contains(l, "server ") {
			return l
		}
	}
	return ""
}
