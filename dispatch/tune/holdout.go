package tune

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// A search fits the log it is given: which clients happened to be busy in it.
// A seed that balances one day's heavy clients is no better than any other
// on the next day's if those clients change. Held-out evaluation measures
// what a recommendation does for traffic it was not chosen on: the logs are
// split by time into windows, and for each later window (a fold) the search
// runs on all the windows before it and is scored on that window alone.

// DefaultFolds is how many held-out folds --folds asks for by default.
const DefaultFolds = 3

// RandomSeeds is how many random seeds make the baseline in each fold.
const RandomSeeds = 32

// HoldOutOptions shape a held-out evaluation.
type HoldOutOptions struct {
	// Folds is how many later windows are scored (the logs are split into
	// Folds+1 windows).
	Folds int
	// Search is what each fold's search tries; Progress is ignored.
	Search SearchOptions
	// Pins is how many pins may be recommended (0: none are considered).
	// They are placed on top of Search.Current.
	Pins int
}

// Fold is one held-out fold: search on Train, score on Test.
type Fold struct {
	TrainFrom, TrainTo int64
	TestFrom, TestTo   int64
	// Chosen is what the search on the training windows picked, and
	// InSample its max/mean there.
	Chosen   Candidate
	InSample float64
	// Current and Searched are the held-out max/mean of the current setting
	// and of Chosen on the test window.
	Current, Searched float64
	// RandomMean and RandomSD describe RandomSeeds random seeds (at the
	// current bucket count) on the test window: what a seed picked blindly
	// achieves.
	RandomMean, RandomSD float64
	// Floor is the max/mean the test window's heaviest client alone forces
	// on any per-client hash.
	Floor float64
	// Heavy counts the test window's heavy clients: those that alone carry
	// at least a quarter of a server's fair share. NewHeavy counts those of
	// them that were not heavy in the training windows.
	NewHeavy, Heavy int
	// Pins is how many pins were chosen on the training windows, Pinned
	// the held-out max/mean with them and Unpinned without them, on top
	// of the setting recommended (Current, or Searched when the search's
	// choice held up).
	Pins             int
	Pinned, Unpinned float64
}

// heavyFraction is the part of a server's fair share that makes a client
// heavy: a client that alone fills a quarter of a server moves max/mean by
// at least 0.25 wherever it lands.
const heavyFraction = 0.25

// heavySet returns the clients of e that are heavy, heaviest first.
func heavySet(e *Evaluator) []Client {
	total := e.Metric().Of(e.Total())
	fair := 1.0
	for _, sh := range e.Share() {
		if sh > 0 {
			fair = min(fair, sh)
		}
	}
	var out []Client
	for _, c := range e.Clients() {
		if float64(e.Metric().Of(c.Counts)) < heavyFraction*fair*float64(total) {
			break
		}
		out = append(out, c)
	}
	return out
}

// Spread is a mean and standard deviation over folds.
type Spread struct{ Mean, SD float64 }

func (s Spread) String() string { return fmt.Sprintf("%.3f ± %.3f", s.Mean, s.SD) }

// HoldOut is the outcome of a held-out evaluation.
type HoldOut struct {
	Folds []Fold
	// Windows is how many windows the logs were split into; Untimed the
	// requests that had no time stamp and were left out.
	Windows int
	Untimed uint64
	// Current, Searched and Random are the held-out max/mean over the folds;
	// Gain is Current minus Searched, fold by fold.
	Current, Searched, Random, Gain Spread
	// Reliable is true when the search's choice beat the current setting
	// on every fold, on average by more than the spread of the held-out
	// scores over the folds (of the current setting and of the searched
	// one), and did better on average than random seeds.
	Reliable bool
	// Why explains, when Reliable is false, why no change is recommended.
	Why []string
	// Pins is the verdict on pins; nil when they were not considered.
	Pins *PinsOutcome
}

// EvaluateHoldOut runs the held-out evaluation of pop for servers under m.
func EvaluateHoldOut(servers []core.Server, pop *Population, m Metric, o HoldOutOptions) (HoldOut, error) {
	ho, _, err := holdOut(servers, pop, m, o, nil)
	return ho, err
}

// SearchHoldOut runs ev's search (ev judges pop) and the held-out
// evaluation of pop together: the whole log's search and every fold's
// search share one sweep over the seeds, so each distinct client is hashed
// once per seed rather than once per search. The results are those of
// ev.Search and EvaluateHoldOut.
func SearchHoldOut(ev *Evaluator, pop *Population, o HoldOutOptions) (SearchResult, HoldOut, error) {
	ho, sr, err := holdOut(ev.Servers(), pop, ev.Metric(), o, ev)
	if err != nil {
		return SearchResult{}, ho, err
	}
	return *sr, ho, nil
}

// holdOut evaluates the folds; with full set, full's search runs in the same
// sweep and its result is returned too.
func holdOut(servers []core.Server, pop *Population, m Metric, o HoldOutOptions, full *Evaluator) (HoldOut, *SearchResult, error) {
	ho := HoldOut{Untimed: pop.Timeline.Untimed}
	ws := pop.Windows(o.Folds + 1)
	ho.Windows = len(ws)
	sopts := o.Search
	type fold struct {
		i          int
		test       *Population
		ev, evTest *Evaluator
	}
	var folds []fold
	var evs []*Evaluator
	// Every evaluator shares one set of tables (they depend on the servers
	// alone): full's, or the first one's.
	like := full
	evaluator := func(p *Population) (*Evaluator, error) {
		if like == nil {
			var err error
			like, err = NewEvaluator(servers, p, m)
			return like, err
		}
		return like.sharing(p, m)
	}
	for i := 1; i < len(ws); i++ {
		train := merge(ws[:i])
		test := ws[i].Pop
		if m.Total(train) == 0 || m.Total(test) == 0 {
			continue
		}
		ev, err := evaluator(train)
		if err != nil {
			return ho, nil, err
		}
		folds = append(folds, fold{i: i, test: test, ev: ev})
		evs = append(evs, ev)
	}
	if full != nil {
		evs = append(evs, full)
	} else {
		sopts.Progress = nil
	}
	var srs []SearchResult
	if len(evs) > 0 {
		var err error
		if srs, err = searchSets(evs, sopts); err != nil {
			return ho, nil, err
		}
	}
	sopts.Progress = nil
	for k, fd := range folds {
		evTest, err := evaluator(fd.test)
		if err != nil {
			return ho, nil, err
		}
		folds[k].evTest = evTest
		f, err := holdOutFold(fd.ev, evTest, srs[k], m, sopts, uint64(fd.i))
		if err != nil {
			return ho, nil, err
		}
		f.TrainFrom, f.TrainTo = ws[0].From, ws[fd.i-1].To
		f.TestFrom, f.TestTo = ws[fd.i].From, ws[fd.i].To
		ho.Folds = append(ho.Folds, f)
	}
	ho.summarise()
	if o.Pins > 0 {
		// Pins go on top of the setting that will be recommended: the
		// current one, or, when the search's choice held up, that.
		for k, fd := range folds {
			f := &ho.Folds[k]
			base, without := sopts.Current, f.Current
			if ho.Reliable {
				base, without = f.Chosen, f.Searched
			}
			var err error
			if f.Pins, f.Pinned, err = pinsFold(servers, windowPops(ws[:fd.i]), fd.ev, fd.evTest, base, o.Pins); err != nil {
				return ho, nil, err
			}
			f.Unpinned = without
		}
		whole, base := full, sopts.Current
		if whole == nil {
			var err error
			if whole, err = evaluator(pop); err != nil {
				return ho, nil, err
			}
		}
		if ho.Reliable {
			if full != nil {
				base = srs[len(srs)-1].Best.Candidate
			} else {
				base = ho.Folds[len(ho.Folds)-1].Chosen
			}
		}
		heavy, err := persistentHeavy(servers, windowPops(ws), m, o.Pins)
		if err != nil {
			return ho, nil, err
		}
		final, err := whole.PlacePins(base, heavy)
		if err != nil {
			return ho, nil, err
		}
		ho.summarisePins(base, final)
	}
	if full != nil {
		return ho, &srs[len(srs)-1], nil
	}
	return ho, nil, nil
}

func holdOutFold(evTrain, evTest *Evaluator, sr SearchResult, m Metric, sopts SearchOptions, fold uint64) (Fold, error) {
	var f Fold
	f.Chosen = sr.Best.Candidate
	f.InSample = sr.Best.Score(m).MaxMean

	cur, err := evTest.Evaluate(sopts.Current)
	if err != nil {
		return f, err
	}
	f.Current = cur.Score(m).MaxMean
	got, err := evTest.Evaluate(f.Chosen)
	if err != nil {
		return f, err
	}
	f.Searched = got.Score(m).MaxMean

	// The random baseline, at the current bucket count (jhash), or at the
	// searched one when the current hash is modulo.
	n := sopts.Current.Buckets
	if sopts.Current.Hash != HashJHash {
		n = max(f.Chosen.Buckets, 1)
	}
	rng := rand.New(rand.NewPCG(0x686f6c64, fold))
	seeds := make([]uint32, RandomSeeds)
	for i := range seeds {
		seeds[i] = rng.Uint32()
	}
	scores, err := evTest.scoreSeeds(seeds, n)
	if err != nil {
		return f, err
	}
	xs := make([]float64, len(scores))
	for i, s := range scores {
		xs[i] = s.MaxMean
	}
	sp := spread(xs)
	f.RandomMean, f.RandomSD = sp.Mean, sp.SD
	f.Floor = evTest.LowerBound().MaxMean

	before := make(map[netip.Addr]bool)
	for _, c := range heavySet(evTrain) {
		before[c.Addr] = true
	}
	for _, c := range heavySet(evTest) {
		f.Heavy++
		if !before[c.Addr] {
			f.NewHeavy++
		}
	}
	return f, nil
}

// scoreSeeds scores each jhash seed at n buckets.
func (e *Evaluator) scoreSeeds(seeds []uint32, n int) ([]Score, error) {
	owners, err := e.owners(n)
	if err != nil {
		return nil, err
	}
	scores := make([]Score, len(seeds))
	e.searchSeeds(seeds, []int{n}, [][]uint16{owners}, scores, SearchOptions{})
	return scores, nil
}

// spread returns the mean and the sample standard deviation of xs.
func spread(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	if len(xs) == 1 {
		return Spread{Mean: mean}
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return Spread{Mean: mean, SD: math.Sqrt(ss / float64(len(xs)-1))}
}

// minFolds is how many folds a recommendation needs: with one, there is no
// spread to beat.
const minFolds = 2

func (h *HoldOut) summarise() {
	var cur, got, rnd, gain []float64
	allBetter := true
	for _, f := range h.Folds {
		cur = append(cur, f.Current)
		got = append(got, f.Searched)
		rnd = append(rnd, f.RandomMean)
		gain = append(gain, f.Current-f.Searched)
		if f.Searched >= f.Current {
			allBetter = false
		}
	}
	h.Current, h.Searched, h.Gain = spread(cur), spread(got), spread(gain)
	// The random baseline's spread pools the seeds' spread within folds
	// with the spread of their means across folds.
	r := spread(rnd)
	var within float64
	for _, f := range h.Folds {
		within += f.RandomSD * f.RandomSD
	}
	if len(h.Folds) > 0 {
		r.SD = math.Sqrt(r.SD*r.SD + within/float64(len(h.Folds)))
	}
	h.Random = r

	bar := max(h.Current.SD, h.Searched.SD)
	switch {
	case len(h.Folds) < minFolds:
		if h.Untimed > 0 && h.Windows == 0 {
			h.Why = append(h.Why, "the logs have no time stamps (or all fall in one minute), so nothing can be held out: a choice made on them cannot be checked on later traffic")
		} else {
			h.Why = append(h.Why, fmt.Sprintf("the logs span too little time for held-out validation (%d windows, %d folds; at least %d folds are needed)", h.Windows, len(h.Folds), minFolds))
		}
	case !allBetter || h.Gain.Mean <= bar:
		h.Why = append(h.Why, fmt.Sprintf("on later windows the searched settings scored %s against the current %s: a gain of %s, not more than the spread of %.3f over the folds, or not on every fold",
			h.Searched, h.Current, h.Gain, bar))
	case h.Searched.Mean >= h.Random.Mean:
		h.Why = append(h.Why, fmt.Sprintf("on later windows the searched settings (%s) did no better than a seed picked at random (%s)", h.Searched, h.Random))
	default:
		h.Reliable = true
		return
	}
	var floor float64
	var newHeavy, heavy int
	for _, f := range h.Folds {
		floor = max(floor, f.Floor)
		newHeavy += f.NewHeavy
		heavy += f.Heavy
	}
	if len(h.Folds) > 0 && floor >= 0.9*h.Current.Mean {
		h.Why = append(h.Why, fmt.Sprintf("the heaviest client of a later window alone forces max/mean to %.3f: all of one client's requests go to one server, so no per-client hash can even that out", floor))
	}
	if heavy > 0 && 2*newHeavy >= heavy {
		h.Why = append(h.Why, fmt.Sprintf("%d of the %d heavy clients of the later windows (each alone a quarter of a server's fair share or more) were not heavy before: the search fits which clients happened to be busy, not those to come", newHeavy, heavy))
	}
}

// WhyText joins the reasons into one paragraph.
func (h *HoldOut) WhyText() string { return strings.Join(h.Why, "; ") }
