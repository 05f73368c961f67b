package tune

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// Pins are tune's answer to heavy clients that no per-client hash can even
// out: a few clients that are heavy in every window of the logs (crawlers,
// proxies, corporate NATs: clients that keep coming) are placed on servers
// deliberately, while the long tail stays hashed. Clients heavy in one
// window only are never pinned: a pin fitted to who happened to be busy
// helps no more than a fitted seed.
//
// Placement is greedy and deterministic: the unpinned clients are placed by
// the cluster's hash; then the pinned clients, heaviest first, each go to the
// server whose load after taking it is smallest against its fair share
// (ties: the lower server ID). Pins are validated like a seed: chosen on the
// earlier windows, scored on the next one, fold by fold.

// DefaultMaxPins is how many pins --pins allows by default.
const DefaultMaxPins = 16

// PinChoice is one recommended pin.
type PinChoice struct {
	Client Client // with its counts in the logs the pins were chosen on
	// Server is the index into the evaluator's servers; ID that server's id.
	Server, ID int
}

// persistentHeavy returns the clients heavy (heavySet) in every one of
// windows, heaviest first by their total over them, at most n.
func persistentHeavy(servers []core.Server, windows []*Population, m Metric, n int) ([]netip.Addr, error) {
	if len(windows) == 0 || n <= 0 {
		return nil, nil
	}
	count := map[netip.Addr]int{}
	total := map[netip.Addr]uint64{}
	for _, w := range windows {
		ev, err := NewEvaluator(servers, w, m)
		if err != nil {
			return nil, err
		}
		for _, c := range heavySet(ev) {
			count[c.Addr]++
			total[c.Addr] += m.Of(c.Counts)
		}
	}
	var out []netip.Addr
	for a, k := range count {
		if k == len(windows) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int {
		if c := cmp.Compare(total[b], total[a]); c != 0 {
			return c
		}
		return a.Compare(b)
	})
	return out[:min(len(out), n)], nil
}

// PlacePins places clients (heaviest first) on top of setting c for e's
// population, as described above. Clients e has not seen are skipped.
func (e *Evaluator) PlacePins(c Candidate, clients []netip.Addr) ([]PinChoice, error) {
	assign, err := e.assign(c)
	if err != nil {
		return nil, err
	}
	want := make(map[netip.Addr]bool, len(clients))
	for _, a := range clients {
		want[a] = true
	}
	loads := make([]uint64, len(e.servers))
	byAddr := make(map[netip.Addr]Client, len(clients))
	for _, cl := range e.clients {
		if want[cl.Addr] {
			byAddr[cl.Addr] = cl
			continue
		}
		if i := assign(cl.Addr); i >= 0 {
			loads[i] += e.by.Of(cl.Counts)
		}
	}
	var out []PinChoice
	for _, a := range clients {
		cl, ok := byAddr[a]
		if !ok {
			continue
		}
		w := e.by.Of(cl.Counts)
		best := -1
		var bestRatio float64
		for i, sh := range e.share {
			if sh == 0 {
				continue
			}
			r := float64(loads[i]+w) / sh
			if best < 0 || r < bestRatio || (r == bestRatio && e.servers[i].ID < e.servers[best].ID) {
				best, bestRatio = i, r
			}
		}
		if best < 0 {
			return nil, ErrNoServers
		}
		loads[best] += w
		out = append(out, PinChoice{Client: cl, Server: best, ID: e.servers[best].ID})
	}
	return out, nil
}

// EvaluatePinned is Evaluate with pins: a pinned client goes to its server
// (by ID, if e has it and it takes load), every other client by c.
func (e *Evaluator) EvaluatePinned(c Candidate, pins []PinChoice) (Result, error) {
	assign, err := e.assign(c)
	if err != nil {
		return Result{}, err
	}
	to := make(map[netip.Addr]int, len(pins))
	for _, p := range pins {
		if i, ok := e.index[p.ID]; ok && e.share[i] > 0 {
			to[p.Client.Addr] = i
		}
	}
	return e.place(c, func(a netip.Addr) int {
		if i, pinned := to[a]; pinned {
			return i
		}
		return assign(a)
	}), nil
}

// pinsFold chooses pins on the training windows (clients heavy in each of
// them, placed on top of c over their union) and scores them on test: the
// held-out max/mean of c with the pins.
func pinsFold(servers []core.Server, trainWindows []*Population, train *Evaluator, test *Evaluator, c Candidate, n int) (pins int, pinned float64, err error) {
	heavy, err := persistentHeavy(servers, trainWindows, train.Metric(), n)
	if err != nil {
		return 0, 0, err
	}
	ps, err := train.PlacePins(c, heavy)
	if err != nil {
		return 0, 0, err
	}
	r, err := test.EvaluatePinned(c, ps)
	if err != nil {
		return 0, 0, err
	}
	return len(ps), r.Score(test.Metric()).MaxMean, nil
}

// PinsOutcome is the held-out verdict on pins.
type PinsOutcome struct {
	// Base is the setting the pins are placed on: the one recommended.
	Base Candidate
	// Unpinned and Pinned are the held-out max/mean of Base without and
	// with the pins chosen on each fold's training windows; Gain is their
	// difference, fold by fold.
	Unpinned, Pinned, Gain Spread
	// Reliable is true when the pins lowered the held-out max/mean on every
	// fold, on average by more than both the spread of that gain over the
	// folds and the spread of random seeds' held-out max/mean.
	Reliable bool
	// Why explains, when Reliable is false, why no pins are recommended.
	Why string
	// Pins are chosen on the whole logs (clients heavy in every window),
	// placed on top of Base; recommended only if Reliable.
	Pins []PinChoice
}

// summarisePins fills h.Pins from its folds (Fold.Pins, Fold.Pinned).
func (h *HoldOut) summarisePins(base Candidate, final []PinChoice) {
	var without, got, gain []float64
	every := true
	for _, f := range h.Folds {
		without = append(without, f.Unpinned)
		got = append(got, f.Pinned)
		gain = append(gain, f.Unpinned-f.Pinned)
		if f.Pinned >= f.Unpinned {
			every = false
		}
	}
	o := &PinsOutcome{Base: base, Unpinned: spread(without), Pinned: spread(got), Gain: spread(gain), Pins: final}
	bar := max(o.Gain.SD, h.Random.SD)
	switch {
	case len(final) == 0:
		o.Why = "no client is heavy (a quarter of a server's fair share or more) in every window of the logs"
	case len(h.Folds) < minFolds:
		o.Why = fmt.Sprintf("too few held-out folds (%d; at least %d are needed)", len(h.Folds), minFolds)
	case !every || o.Gain.Mean <= bar:
		o.Why = fmt.Sprintf("on later windows pins chosen on the earlier ones scored %s against %s without: a gain of %s, not on every fold or not more than the spread of %.3f (of the gain over the folds, and of random seeds)",
			o.Pinned, o.Unpinned, o.Gain, bar)
	default:
		o.Reliable = true
	}
	h.Pins = o
}
