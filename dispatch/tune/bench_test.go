package tune

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkTuneMillionLines runs the whole of `ghostrouter tune` (config,
// reading and parsing a million-line combined log from a file, the default
// search of 4096 seeds over the current, 1024 and 65536 bucket counts plus
// modulo, and the report) for a 64-server cluster. The log is generated once:
// a Zipf population of 100k addresses (about 70k of them appear) and three
// heavy hitters.
func BenchmarkTuneMillionLines(b *testing.B) {
	const lines = 1_000_000
	dir := b.TempDir()
	g := generate(genSpec{Lines: lines, Population: 100_000, Heavy: []float64{0.03, 0.02, 0.01}, Seed: 42})
	log := filepath.Join(dir, "access.log")
	cfg := filepath.Join(dir, "ghostrouter.toml")
	if err := os.WriteFile(log, g.Text, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(configText(64, "routing", "jhash", defaultSeed, 4096, false)), 0o600); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if code := Main([]string{"-c", cfg, log}, nil, io.Discard, io.Discard, false); code != 0 {
			b.Fatalf("exit %d", code)
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(len(g.Truth)), "clients")
}

// BenchmarkSearch is the search alone: 256 seeds x 3 bucket counts for 64
// servers over about 70k distinct clients.
func BenchmarkSearch(b *testing.B) {
	g := generate(genSpec{Lines: 1_000_000, Population: 100_000, Heavy: []float64{0.03, 0.02, 0.01}, Seed: 42})
	pop := readPop(b, g.Text)
	ev, err := NewEvaluator(servers(64), pop, ByRequests)
	if err != nil {
		b.Fatal(err)
	}
	opts := SearchOptions{Seeds: 256, Buckets: []int{4096, 1024, 65536}, Current: Candidate{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096}}
	b.ResetTimer()
	for b.Loop() {
		if _, err := ev.Search(opts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(pop.Clients))*256*float64(b.N)/b.Elapsed().Seconds(), "client-seeds/s")
}

// BenchmarkHoldOutSearch compares the whole log's search plus the three
// held-out folds' searches run one after another ("separate", what tune did
// before) against the same four searches in one sweep ("joint", what it does
// now): the ratio of the two ns/op is the gain of hashing each client once
// per seed instead of once per search.
func BenchmarkHoldOutSearch(b *testing.B) {
	g := generate(genSpec{Lines: 1_000_000, Population: 100_000, Heavy: []float64{0.03, 0.02, 0.01}, Seed: 42})
	pop := readPop(b, g.Text)
	srv := servers(64)
	ev, err := NewEvaluator(srv, pop, ByRequests)
	if err != nil {
		b.Fatal(err)
	}
	opts := SearchOptions{Seeds: 128, Buckets: []int{4096, 1024, 65536}, Current: Candidate{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096}}
	ws := pop.Windows(DefaultFolds + 1)
	if len(ws) != DefaultFolds+1 {
		b.Fatalf("%d windows, want %d", len(ws), DefaultFolds+1)
	}
	evs := []*Evaluator{}
	for i := 1; i < len(ws); i++ {
		e, err := NewEvaluator(srv, merge(ws[:i]), ByRequests)
		if err != nil {
			b.Fatal(err)
		}
		evs = append(evs, e)
	}
	evs = append(evs, ev)
	b.Run("separate", func(b *testing.B) {
		for b.Loop() {
			for _, e := range evs {
				if _, err := e.Search(opts); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("joint", func(b *testing.B) {
		for b.Loop() {
			if _, err := searchSets(evs, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}
