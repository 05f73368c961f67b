package tune

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// phases writes one log of several hours, hour h with its own heavy hitters
// (192.0.2.heavyFrom[h] and up); with sameTail every hour has the same long
// tail of clients, else each hour draws its own.
func phases(lines int, heavy []float64, heavyFrom []byte, sameTail bool) []byte {
	return phasesSeeded(11, lines, heavy, heavyFrom, sameTail)
}

func phasesSeeded(base uint64, lines int, heavy []float64, heavyFrom []byte, sameTail bool) []byte {
	var b bytes.Buffer
	for h, from := range heavyFrom {
		seed := base
		if !sameTail {
			seed += uint64(h)
		}
		g := generate(genSpec{Lines: lines, Population: 6_000, Heavy: heavy, Seed: seed, Hour: 8 + h, HeavyFrom: from})
		b.Write(g.Text)
	}
	return b.Bytes()
}

// tuneJSON runs tune --json and decodes its report.
func tuneJSON(t *testing.T, args ...string) jsonReport {
	t.Helper()
	r := runMain(t, nil, false, append([]string{"--json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("tune %q: exit %d, stderr %s", args, r.code, r.stderr)
	}
	var j jsonReport
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("tune --json output is not JSON: %v\n%s", err, r.stdout)
	}
	return j
}

// TestHoldOutPlantedShift: heavy clients that change from hour to hour. A
// search over the whole log finds a seed that spreads the heavy clients it
// saw, but on each later hour the heavy clients are new, so the gain is
// noise: tune must recommend no change and say why.
func TestHoldOutPlantedShift(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "g.toml", []byte(configText(8, "routing", "jhash", defaultSeed, 4096, false)))
	// Other logs of the same kind: heavy clients that change every hour, or
	// once, between the two halves.
	for _, base := range []uint64{21, 31, 41} {
		for _, from := range [][]byte{{10, 20, 30, 40}, {10, 10, 20, 20}} {
			log := writeFile(t, dir, "more.log", phasesSeeded(base, 12_000, []float64{0.06, 0.05, 0.04}, from, false))
			j := tuneJSON(t, "-c", cfg, "--seeds", "256", "--buckets", "4096", "--folds", "3", log)
			if j.Changed {
				t.Errorf("log %d, heavy clients %v: recommends %+v; held-out %+v", base, from, j.Recommended, j.HoldOut)
			}
		}
	}
	log := writeFile(t, dir, "shift.log", phases(12_000, []float64{0.06, 0.05, 0.04}, []byte{10, 20, 30, 40}, false))
	j := tuneJSON(t, "-c", cfg, "--seeds", "512", "--buckets", "4096", "--folds", "3", log)
	h := j.HoldOut
	if h == nil || len(h.Folds) != 3 {
		t.Fatalf("held-out: %+v, want 3 folds", h)
	}
	if j.Changed || h.Reliable || j.Recommended != setting(Candidate{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096}) {
		t.Errorf("recommends %+v (reliable %v) for a log whose heavy clients change every hour; want the current setting kept", j.Recommended, h.Reliable)
	}
	// The search did promise a gain in-sample: that is the trap.
	if j.BestFound.MaxMean >= j.Current.MaxMean {
		t.Logf("note: in-sample best %.3f, current %.3f", j.BestFound.MaxMean, j.Current.MaxMean)
	}
	why := strings.Join(h.Why, " ")
	if !strings.Contains(why, "were not heavy before") {
		t.Errorf("the reasons do not name the shift of heavy clients: %q", why)
	}
	for i, f := range h.Folds {
		if f.NewHeavy != 3 || f.HeavyCount != 3 {
			t.Errorf("fold %d: %d new of %d heavy clients, want the 3 planted ones", i+1, f.NewHeavy, f.HeavyCount)
		}
	}
	// The text report says it plainly.
	r := runMain(t, nil, false, "-c", cfg, "--seeds", "512", "--buckets", "4096", log)
	if !strings.Contains(r.stdout, "no setting is reliably better") || !strings.Contains(r.stdout, "keep the current settings") {
		t.Errorf("text report does not say no setting is reliably better:\n%s", r.stdout)
	}
}

// TestHoldOutPersistentHeavy: the same heavy clients every hour, and a
// current seed that puts the two heaviest on one server. Moving them apart
// helps every later hour too: tune must recommend the change, with a held-out
// gain beyond the spread.
func TestHoldOutPersistentHeavy(t *testing.T) {
	dir := t.TempDir()
	text := phases(12_000, []float64{0.06, 0.05, 0.04}, []byte{10, 10, 10, 10}, true)
	// Find a seed under which the two heaviest clients share a server.
	pop := NewPopulation()
	if err := pop.ReadLog("x", bytes.NewReader(text), nil); err != nil {
		t.Fatal(err)
	}
	ev, err := NewEvaluator(servers(8), pop, ByRequests)
	if err != nil {
		t.Fatal(err)
	}
	heavy := ev.Clients()[:2]
	var bad uint32
	for seed := uint32(1); ; seed++ {
		at, err := ev.Placer(Candidate{Hash: HashJHash, Seed: seed, Buckets: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if at(heavy[0].Addr) == at(heavy[1].Addr) {
			bad = seed
			break
		}
	}
	cfg := writeFile(t, dir, "g.toml", []byte(configText(8, "routing", "jhash", bad, 4096, false)))
	log := writeFile(t, dir, "steady.log", text)
	j := tuneJSON(t, "-c", cfg, "--seeds", "512", "--buckets", "4096", "--folds", "3", log)
	h := j.HoldOut
	if h == nil || len(h.Folds) != 3 {
		t.Fatalf("held-out: %+v, want 3 folds", h)
	}
	if !h.Reliable || !j.Changed {
		t.Fatalf("no change recommended (why: %q) though seed %#x puts %v and %v on one server every hour", h.Why, bad, heavy[0].Addr, heavy[1].Addr)
	}
	bar := max(h.Current.SD, h.Searched.SD)
	if h.Gain.Mean <= bar {
		t.Errorf("held-out gain %.3f is not beyond the spread %.3f", h.Gain.Mean, bar)
	}
	for i, f := range h.Folds {
		if f.NewHeavy != 0 {
			t.Errorf("fold %d: %d new heavy clients, want none", i+1, f.NewHeavy)
		}
		if f.Searched >= f.Current {
			t.Errorf("fold %d: searched %.3f not better than current %.3f", i+1, f.Searched, f.Current)
		}
	}
}

// TestHoldOutNeedsTime: address-only logs have no time stamps: nothing can
// be held out, so nothing is recommended (unless --in-sample).
func TestHoldOutNeedsTime(t *testing.T) {
	dir := t.TempDir()
	g := generate(genSpec{Lines: 20_000, Population: 3_000, Heavy: []float64{0.05, 0.05}, Seed: 5})
	var b strings.Builder
	for _, a := range g.Addrs {
		b.WriteString(a.String() + "\n")
	}
	cfg := writeFile(t, dir, "g.toml", []byte(configText(6, "routing", "jhash", defaultSeed, 4096, false)))
	log := writeFile(t, dir, "addrs.log", []byte(b.String()))
	j := tuneJSON(t, "-c", cfg, "--seeds", "256", "--buckets", "4096", log)
	if j.Changed || j.HoldOut == nil || j.HoldOut.Reliable || !strings.Contains(strings.Join(j.HoldOut.Why, " "), "no time stamps") {
		t.Errorf("address-only log: changed %v, held-out %+v; want no change, because there are no time stamps", j.Changed, j.HoldOut)
	}
	in := tuneJSON(t, "-c", cfg, "--seeds", "256", "--buckets", "4096", "--in-sample", log)
	if best := in.BestFound; in.HoldOut != nil || in.Recommended != setting(Candidate{best.Hash, best.Seed, best.Buckets}) {
		t.Errorf("--in-sample: recommended %+v, best found %+v", in.Recommended, in.BestFound)
	}
}

// TestWindows: windows are contiguous, in time order, cover every timed
// request once, and hold about equal traffic.
func TestWindows(t *testing.T) {
	text := phases(6_000, nil, []byte{10, 10, 10, 10, 10}, true)
	pop := NewPopulation()
	if err := pop.ReadLog("x", bytes.NewReader(text), nil); err != nil {
		t.Fatal(err)
	}
	if len(pop.Timeline.Slots) > MaxSlots {
		t.Fatalf("%d slots, want at most %d", len(pop.Timeline.Slots), MaxSlots)
	}
	for _, n := range []int{2, 3, 4, 7} {
		ws := pop.Windows(n)
		if len(ws) != n {
			t.Fatalf("Windows(%d) = %d windows", n, len(ws))
		}
		var sum uint64
		for i, w := range ws {
			if w.From >= w.To || (i > 0 && w.From < ws[i-1].To) {
				t.Errorf("Windows(%d): window %d [%d, %d) after [%d, %d)", n, i, w.From, w.To, ws[max(i-1, 0)].From, ws[max(i-1, 0)].To)
			}
			sum += w.Pop.Requests
			share := float64(w.Pop.Requests) / float64(pop.Requests)
			if share < 0.5/float64(n) || share > 1.5/float64(n) {
				t.Errorf("Windows(%d): window %d holds %.3f of the requests", n, i, share)
			}
		}
		if sum != pop.Requests {
			t.Errorf("Windows(%d) hold %d requests, the log %d", n, sum, pop.Requests)
		}
	}
}
