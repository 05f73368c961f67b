package core

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// An incremental change equals a fresh build: random histories of failures,
// recoveries (one or several at once), additions, removals, drains and
// weight changes, over many cluster and table sizes. After every step the
// table Update derives from the previous one must equal NewTable of the
// same servers bucket for bucket, and the previous table must be untouched
// (it may still be serving packets).
func TestTableUpdateEqualsFreshBuild(t *testing.T) {
	type size struct{ n, buckets, steps int }
	sizes := []size{
		{1, 16, 60}, {2, 7, 150}, {3, 64, 300}, {5, 1, 100}, {5, 1000, 400}, {8, 4096, 300}, {13, 333, 500},
		{17, 2048, 300}, {40, 4096, 150}, {64, 16384, 50}, {150, 4096, 60}, {300, 16384, 15}, {1000, 65536, 5},
	}
	if testing.Short() {
		sizes = []size{{3, 64, 150}, {8, 1024, 200}, {40, 4096, 40}}
	}
	start := time.Now()
	total := 0
	for si, sz := range sizes {
		t0 := time.Now()
		rng := rand.New(rand.NewPCG(uint64(si), 0x7ab1e))
		servers := cluster(sz.n)
		nextID := 10 + 3*sz.n
		cur := mustTable(t, servers, sz.buckets)
		for step := range sz.steps {
			what := mutate(rng, &servers, &nextID)
			before := slices.Clone(cur.owner)
			next, err := cur.Update(servers)
			if err != nil {
				t.Fatalf("N=%d, %d buckets, step %d (%s): Update: %v", sz.n, sz.buckets, step, what, err)
			}
			fresh := mustTable(t, servers, sz.buckets)
			if !slices.Equal(cur.owner, before) {
				t.Fatalf("N=%d, %d buckets, step %d (%s): Update modified the table it started from", sz.n, sz.buckets, step, what)
			}
			got, want := ownerIDs(next), ownerIDs(fresh)
			if !slices.Equal(got, want) {
				b := 0
				for got[b] == want[b] {
					b++
				}
				t.Fatalf("N=%d, %d buckets, step %d (%s): %d buckets differ from a fresh build, first %d: owner %d, want %d",
					sz.n, sz.buckets, step, what, moved(next, fresh), b, got[b], want[b])
			}
			if !slices.Equal(next.Servers(), fresh.Servers()) {
				t.Fatalf("N=%d, step %d (%s): Servers() = %v, want %v", sz.n, step, what, next.Servers(), fresh.Servers())
			}
			cur = next
			total++
		}
		t.Logf("N=%d, %d buckets: %d steps in %v", sz.n, sz.buckets, sz.steps, time.Since(t0).Round(time.Millisecond))
	}
	t.Logf("%d steps over %d sizes in %v", total, len(sizes), time.Since(start).Round(time.Millisecond))
}

// mutate applies one random change to servers and says what it was.
func mutate(rng *rand.Rand, servers *[]Server, nextID *int) string {
	s := *servers
	pick := func(f func(Server) bool) int {
		var idx []int
		for i, sv := range s {
			if f(sv) {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			return -1
		}
		return idx[rng.IntN(len(idx))]
	}
	switch r := rng.IntN(100); {
	case r < 35: // one failure
		if i := pick(func(sv Server) bool { return sv.Up }); i >= 0 {
			s[i].Up = false
			return fmt.Sprintf("server %d fails", s[i].ID)
		}
	case r < 65: // one recovery
		if i := pick(func(sv Server) bool { return !sv.Up }); i >= 0 {
			s[i].Up = true
			return fmt.Sprintf("server %d recovers", s[i].ID)
		}
	case r < 75: // several health changes at once
		var ids []int
		for range 1 + rng.IntN(4) {
			i := rng.IntN(len(s))
			s[i].Up = !s[i].Up
			ids = append(ids, s[i].ID)
		}
		return fmt.Sprintf("servers %v flip", ids)
	case r < 82: // addition
		if len(s) < MaxServers {
			id := *nextID
			if rng.IntN(2) == 0 {
				id = -id // below every other ID
			}
			*nextID += 1 + rng.IntN(5)
			*servers = append(s, Server{ID: id, Weight: 1 + rng.IntN(3)/2, Up: rng.IntN(4) > 0})
			return fmt.Sprintf("server %d added", id)
		}
	case r < 88: // removal
		if len(s) > 1 {
			i := rng.IntN(len(s))
			id := s[i].ID
			*servers = slices.Delete(s, i, i+1)
			return fmt.Sprintf("server %d removed", id)
		}
	case r < 94: // weight change, drains included
		i := rng.IntN(len(s))
		s[i].Weight = rng.IntN(4)
		return fmt.Sprintf("server %d weight %d", s[i].ID, s[i].Weight)
	default: // nothing changes but the order of the list and an address
		rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
		s[0].Addr = s[0].Addr.Next()
		return "shuffled"
	}
	return "no change"
}

// Tables sharing a plan may be updated from several goroutines at once (the
// manager's reload builds outside its lock while health changes arrive):
// each result is still the fresh build of its servers. Run with -race.
func TestTableUpdateConcurrent(t *testing.T) {
	servers := cluster(50)
	base := mustTable(t, servers, 4096)
	const workers = 4
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			cur, s := base, slices.Clone(servers)
			for range 30 {
				i := rng.IntN(len(s))
				s[i].Up = !s[i].Up
				next, err := cur.Update(s)
				if err != nil {
					errs <- err
					return
				}
				fresh, err := NewTable(s, 4096)
				if err != nil {
					errs <- err
					return
				}
				if !slices.Equal(ownerIDs(next), ownerIDs(fresh)) {
					errs <- fmt.Errorf("worker %d: an update differs from a fresh build", w)
					return
				}
				cur = next
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzTableUpdate drives Update with arbitrary histories: each byte pair of
// ops is a change (health flip, weight, addition or removal) of a cluster of
// up to 24 servers over 1 to 300 buckets, and after every change the derived
// table must equal NewTable of the same servers and the table it came from
// must be unchanged.
func FuzzTableUpdate(f *testing.F) {
	f.Add(uint8(5), uint16(64), []byte{0, 1, 0, 2, 1, 1, 0, 1})
	f.Add(uint8(1), uint16(1), []byte{0, 0, 0, 0})
	f.Add(uint8(24), uint16(299), []byte{0, 3, 0, 4, 0, 5, 2, 9, 0, 3, 3, 1, 1, 7, 0, 4})
	f.Add(uint8(8), uint16(7), []byte{4, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0})
	f.Fuzz(func(t *testing.T, n uint8, buckets uint16, ops []byte) {
		servers := cluster(int(n%24) + 1)
		b := int(buckets%300) + 1
		cur := mustTable(t, servers, b)
		nextID := 1000
		for len(ops) >= 2 {
			op, arg := ops[0]%5, int(ops[1])
			ops = ops[2:]
			switch op {
			case 0, 1: // health flip
				servers[arg%len(servers)].Up = !servers[arg%len(servers)].Up
			case 2: // weight
				servers[arg%len(servers)].Weight = arg % 4
			case 3: // addition
				if len(servers) < 32 {
					servers = append(servers, Server{ID: nextID - arg, Weight: 1 + arg%2, Up: arg%3 > 0})
					nextID += 300
				}
			case 4: // removal
				if len(servers) > 1 {
					servers = slices.Delete(servers, arg%len(servers), arg%len(servers)+1)
				}
			}
			before := ownerIDs(cur)
			next, err := cur.Update(servers)
			if err != nil {
				t.Fatalf("Update(%v): %v", servers, err)
			}
			if !slices.Equal(ownerIDs(cur), before) {
				t.Fatal("Update modified the table it started from")
			}
			if got, want := ownerIDs(next), ownerIDs(mustTable(t, servers, b)); !slices.Equal(got, want) {
				t.Fatalf("servers %v, %d buckets: Update gives %v, a fresh build %v", servers, b, got, want)
			}
			cur = next
		}
	})
}

// The pass that finds a bucket's best candidates (top: the weight-grouped
// pass with its hash bounds, the four-at-a-time scan, and the pass below a
// bucket's last proposal) agrees with a plain sort of every candidate by
// (score, server index), for random memberships with equal weights, a few
// weights, and weights spread over the whole range, windows of 1 to 8, and
// random last proposals.
func TestTopMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for round := range 60 {
		n := 1 + rng.IntN(300)
		ss := cluster(n)
		for i := range ss {
			switch round % 3 {
			case 0:
				ss[i].Weight = 1
			case 1:
				ss[i].Weight = 1 + rng.IntN(4)
			default:
				ss[i].Weight = 1 + rng.IntN(MaxWeight)
			}
		}
		p := newPlan(ss, 64)
		active := p.members
		akey := make([]uint64, len(active))
		for j, c := range active {
			akey[j] = p.hkey[c]
		}
		if p.weighted {
			p.groupByWeight(active)
		}
		for range 40 {
			bk := uint32(rng.IntN(MaxBuckets))
			type cand struct {
				s uint64
				c int32
			}
			all := make([]cand, len(active))
			for j, c := range active {
				all[j] = cand{p.score(bk, c), c}
			}
			slices.SortFunc(all, func(a, b cand) int {
				if a.s != b.s {
					return cmp.Compare(b.s, a.s)
				}
				return cmp.Compare(b.c, a.c)
			})
			k := 1 + rng.IntN(topK)
			below := rng.IntN(2) == 1
			var lk uint64
			var li int32
			from := 0
			if below {
				from = rng.IntN(len(all))
				lk, li = all[from].s, all[from].c
				from++
			}
			want := all[from:min(len(all), from+k)]
			keys, idxs := make([]uint64, k), make([]int32, k)
			got := p.top(bk, active, akey, keys, idxs, below, lk, li)
			if got != len(want) {
				t.Fatalf("round %d (%d servers, weighted %v), bucket %d, window %d, below %v: %d candidates, want %d", round, n, p.weighted, bk, k, below, got, len(want))
			}
			for i, w := range want {
				if keys[i] != w.s || idxs[i] != w.c {
					t.Fatalf("round %d (%d servers, weighted %v), bucket %d, window %d, below %v: entry %d is (%#x, %d), want (%#x, %d)",
						round, n, p.weighted, bk, k, below, i, keys[i], idxs[i], w.s, w.c)
				}
			}
		}
	}
}
