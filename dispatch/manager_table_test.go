package dispatch

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// publishedTable is the table the forwarding path of the manager's first
// cluster reads.
func publishedTable(t *testing.T, m *Manager) *core.Table {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.clusters[0].c.view.Load()
	js, ok := v.Selector.(*core.JHashSelector)
	if !ok {
		t.Fatalf("published selector is %T, want a jhash table", v.Selector)
	}
	return js.Table()
}

// Health changes and reloads, interleaved: after each, the table the
// forwarding path reads equals a fresh build of the configured membership
// with the failed servers down, and a health change derived it from the
// previous table (the preference lists are shared, nothing was rebuilt).
func TestManagerTableFollowsHealthAndMembership(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cfg := testConfig(config.ModeRouting, 40)
	m := newTestManager(t, cfg, nil)
	down := map[int]bool{}
	check := func(what string) {
		t.Helper()
		got := publishedTable(t, m)
		want := mustTable(t, core.ServersFor(&cfg.Clusters[0], down), cfg.Clusters[0].Buckets)
		if !slices.Equal(ownerIDs(got), ownerIDs(want)) {
			t.Fatalf("%s: the published table differs from a fresh build in %d buckets", what, moved(got, want))
		}
	}
	check("start")
	for step := range 120 {
		cl := &cfg.Clusters[0]
		if step%10 == 9 {
			// A reload: a server added or removed, or a weight changed.
			next := *cfg
			next.Clusters = []config.Cluster{*cl}
			ncl := &next.Clusters[0]
			ncl.Servers = slices.Clone(cl.Servers)
			switch step % 30 {
			case 9:
				id := 100 + step
				ncl.Servers = append(ncl.Servers, config.Server{ID: id, Address: netip.AddrFrom4([4]byte{10, 0, 1, byte(step)}), Weight: 1})
			case 19:
				ncl.Servers = slices.Delete(ncl.Servers, 3, 4)
			default:
				ncl.Servers[5].Weight = 1 + step%3
			}
			if err := m.Apply(&next); err != nil {
				t.Fatalf("step %d: Apply: %v", step, err)
			}
			cfg = &next
			for id := range down {
				if _, ok := cfg.Clusters[0].Server(id); !ok {
					delete(down, id)
				}
			}
			check("reload")
			continue
		}
		s := cl.Servers[rng.IntN(len(cl.Servers))]
		up := down[s.ID]
		before := publishedTable(t, m)
		m.healthChanged(cl.Name, health.Event{ServerID: s.ID, Up: up, At: time.Now()})
		if up {
			delete(down, s.ID)
		} else {
			down[s.ID] = true
		}
		if after := publishedTable(t, m); !after.SamePlan(before) {
			t.Fatalf("step %d: server %d up=%v: the table was rebuilt, not updated", step, s.ID, up)
		}
		check("health")
	}
}

// Apply builds a new membership's table without holding the manager's lock:
// while a 1000-server table is being built, the lock is never held for more
// than a fraction of the build, and a server failing meanwhile is in the
// table Apply publishes.
func TestManagerApplyBuildsOutsideTheLock(t *testing.T) {
	cfg := testConfig(config.ModeRouting, 4)
	m := newTestManager(t, cfg, nil)
	big := *cfg
	big.Clusters = []config.Cluster{cfg.Clusters[0]}
	cl := &big.Clusters[0]
	cl.Buckets = core.MaxBuckets
	cl.Servers = nil
	for i := range 1000 {
		cl.Servers = append(cl.Servers, config.Server{ID: i, Address: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Weight: 1})
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- m.Apply(&big) }()
	free, failed := 0, false
	lastFree, longest := time.Now(), time.Duration(0)
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			t.Logf("Apply took %v; the lock was free %d times meanwhile, held at most %v at a stretch",
				took.Round(time.Millisecond), free, longest.Round(time.Millisecond))
			if free == 0 || longest > took*3/4 {
				t.Fatalf("the manager's lock was held for %v of Apply's %v: the table was built under it", longest, took)
			}
			if !failed {
				t.Fatal("no health change was applied while Apply ran")
			}
			want := mustTable(t, core.ServersFor(cl, map[int]bool{1: true}), cl.Buckets)
			if got := publishedTable(t, m); !slices.Equal(ownerIDs(got), ownerIDs(want)) {
				t.Fatalf("published table differs from a fresh build with server 1 down in %d buckets", moved(got, want))
			}
			return
		default:
		}
		if !m.mu.TryLock() {
			longest = max(longest, time.Since(lastFree))
		} else {
			m.mu.Unlock()
			lastFree = time.Now()
			free++
			if !failed {
				// Server 1 is in both memberships.
				m.healthChanged("web", health.Event{ServerID: 1, Up: false, At: time.Now()})
				failed = true
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkManagerHealthChange is a server of 1000 (65536 buckets, routing
// mode) failing and recovering through the manager, as a health checker
// reports it: the derived table, the event and the snapshot the forwarding
// path reads, published. Each op is one change; the servers failing are
// different each time, so no level-1 group is reused.
func BenchmarkManagerHealthChange(b *testing.B) {
	cfg := testConfig(config.ModeRouting, 0)
	cl := &cfg.Clusters[0]
	cl.Buckets = core.MaxBuckets
	for i := range 1000 {
		cl.Servers = append(cl.Servers, config.Server{ID: i, Address: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Weight: 1})
	}
	lan := nullLAN(b, "lan0")
	m, err := NewManager(cfg, Deps{
		Endpoint: func(string) (*tap.Endpoint, bool) { return lan, true },
		Resolver: fakeResolver{},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for i := 0; b.Loop(); i++ {
		id := (i / 2) % 1000
		m.healthChanged("web", health.Event{ServerID: id, Up: i%2 == 1, At: time.Now()})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/change")
}
