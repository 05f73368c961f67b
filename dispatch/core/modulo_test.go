package core

import (
	"fmt"
	"math/big"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// idsUpDown returns servers with the given IDs, all weight 1, those in down
// not Up.
func idsUpDown(ids []int, down ...int) []Server {
	s := make([]Server, len(ids))
	for i, id := range ids {
		s[i] = Server{ID: id, Weight: 1, Up: !slices.Contains(down, id)}
	}
	return s
}

// ca writes a small integer as an IPv4 address, so hand-worked cases read as
// the patent's arithmetic.
func ca(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// The patent's rule worked by hand. Servers are indexed 0..N-1 in ID order.
func TestModuloPatentRule(t *testing.T) {
	four := []int{10, 20, 30, 40} // indices 0, 1, 2, 3
	five := []int{1, 2, 3, 4, 5}
	tests := []struct {
		name    string
		ids     []int
		down    []int
		client  netip.Addr
		wantK   uint32 // CA mod N
		wantIdx int
	}{
		{"all up: 13 mod 4 = 1", four, nil, ca(13), 1, 1},
		{"k=1 down: j = 13 mod 3 = 1, not < 1, so j+1", four, []int{20}, ca(13), 1, 2},
		{"k=1 down, client of server 0 stays", four, []int{20}, ca(12), 0, 0},
		{"k=1 down: j = 9 mod 3 = 0 < 1, so j", four, []int{20}, ca(9), 1, 0},
		{"k=3 down: j = 15 mod 3 = 0", four, []int{40}, ca(15), 3, 0},
		{"k=3 down: j = 11 mod 3 = 2", four, []int{40}, ca(11), 3, 2},
		{"k=3 down: j = 7 mod 3 = 1", four, []int{40}, ca(7), 3, 1},
		// 198.51.100.12 = 3325256716; mod 4 = 0; mod 3 = 1 (digit sum 40).
		{"198.51.100.12, all up", four, nil, netip.MustParseAddr("198.51.100.12"), 0, 0},
		{"198.51.100.12, k=0 down: j=1, not < 0, so 2", four, []int{10}, netip.MustParseAddr("198.51.100.12"), 0, 2},
		// 198.51.100.13 = 3325256717; mod 5 = 2; mod 4 = 1.
		{"N=5: 198.51.100.13 mod 5 = 2", five, nil, netip.MustParseAddr("198.51.100.13"), 2, 2},
		{"N=5, k=2 down: j = CA mod 4 = 1 < 2", five, []int{3}, netip.MustParseAddr("198.51.100.13"), 2, 1},
		{"N=5, another server down: unaffected", five, []int{2}, netip.MustParseAddr("198.51.100.13"), 2, 2},

		// The extension to several failures: the same step repeated on the
		// list without the servers already tried. Indices 1 and 3 down.
		{"two down: 13: k=1 down; [0 2 3][13 mod 3 = 1] = 2", four, []int{20, 40}, ca(13), 1, 2},
		{"two down: 15: k=3 down; [0 1 2][15 mod 3 = 0] = 0", four, []int{20, 40}, ca(15), 3, 0},
		{"two down: 7: k=3 down; [0 1 2][7 mod 3 = 1] = 1 down; [0 2][7 mod 2 = 1] = 2", four, []int{20, 40}, ca(7), 3, 2},
		{"two down: 5: k=1 down; [0 2 3][5 mod 3 = 2] = 3 down; [0 2][5 mod 2 = 1] = 2", four, []int{20, 40}, ca(5), 1, 2},
		{"two down: 9: k=1 down; [0 2 3][9 mod 3 = 0] = 0", four, []int{20, 40}, ca(9), 1, 0},
		{"one live left", four, []int{10, 20, 40}, ca(4), 0, 2},

		// IPv6: CA is the 128-bit address. 2001:db8::d mod 4 = 0xd mod 4.
		{"IPv6", four, nil, netip.MustParseAddr("2001:db8::d"), 1, 1},
	}
	for _, tc := range tests {
		m := NewModuloSelector(idsUpDown(tc.ids, tc.down...))
		idx, k, ok := m.Select(tc.client)
		if !ok || k != tc.wantK || idx != tc.wantIdx {
			t.Errorf("%s: servers %v, down %v: Select(%s) = idx %d, k %d, ok %v; want idx %d, k %d",
				tc.name, tc.ids, tc.down, tc.client, idx, k, ok, tc.wantIdx, tc.wantK)
		}
	}
}

// patentLiteral is the patent's sentence as code, for one failed server k
// (or none, k = -1).
func patentLiteral(ca uint64, n, k int) int {
	if int(ca%uint64(n)) != k {
		return int(ca % uint64(n))
	}
	j := int(ca % uint64(n-1))
	if j < k {
		return j
	}
	return j + 1
}

// With at most one server down, ModuloSelector is exactly the patent's rule,
// and the failed server's clients are spread exactly evenly over the others
// across any N*(N-1) consecutive addresses (N and N-1 are coprime).
func TestModuloSingleFailureIsThePatent(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for n := 2; n <= 12; n++ {
		ids := make([]int, n)
		for i := range ids {
			ids[i] = 100 + 7*i
		}
		for k := -1; k < n; k++ {
			var down []int
			if k >= 0 {
				down = []int{ids[k]}
			}
			m := NewModuloSelector(idsUpDown(ids, down...))
			for range 500 {
				c := rng.Uint32()
				if idx, _, _ := m.Select(ca(c)); idx != patentLiteral(uint64(c), n, k) {
					t.Fatalf("N=%d, server %d down: Select(%s = %d) = %d, patent says %d", n, k, ca(c), c, idx, patentLiteral(uint64(c), n, k))
				}
			}
			if k < 0 {
				continue
			}
			gained := make([]int, n)
			base := rng.Uint32() / 2
			for c := base; c < base+uint32(3*n*(n-1)); c++ {
				if idx, kk, _ := m.Select(ca(c)); int(kk) == k {
					gained[idx]++
				}
			}
			for i, g := range gained {
				if want := 3; i != k && g != want {
					t.Errorf("N=%d, server %d down: server %d took %d of the failed server's %d clients, want %d each",
						n, k, i, g, 3*(n-1), want)
				}
			}
		}
	}
}

// Several failures: each failure moves only the clients on the failed
// server, the result depends only on which servers are down, and CA mod N is
// computed as a big integer for IPv6.
func TestModuloMultipleFailures(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	ids := []int{3, 1, 4, 15, 9, 2, 6, 5}
	clients := make([]netip.Addr, 3000)
	for i := range clients {
		if i%2 == 0 {
			clients[i] = ca(rng.Uint32())
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			clients[i] = netip.AddrFrom16(b)
		}
	}
	picks := func(m *ModuloSelector) []int {
		out := make([]int, len(clients))
		for i, c := range clients {
			idx, _, ok := m.Select(c)
			if !ok {
				t.Fatalf("Select(%s) not ok with a live server", c)
			}
			out[i] = m.Servers()[idx].ID
		}
		return out
	}
	for round := range 5 {
		order := slices.Clone(ids)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		order = order[:len(order)-1] // one stays up
		prev := picks(NewModuloSelector(idsUpDown(ids)))
		for i, victim := range order {
			cur := picks(NewModuloSelector(idsUpDown(ids, order[:i+1]...)))
			for c := range clients {
				if prev[c] != cur[c] && prev[c] != victim {
					t.Fatalf("round %d: %d failing after %v moved %s from server %d to %d",
						round, victim, order[:i], clients[c], prev[c], cur[c])
				}
				if cur[c] == victim {
					t.Fatalf("round %d: %s still on %d, which is down", round, clients[c], victim)
				}
			}
			// Failing in another order gives the same picks.
			other := slices.Clone(order[:i+1])
			slices.Reverse(other)
			if again := picks(NewModuloSelector(idsUpDown(ids, other...))); !slices.Equal(again, cur) {
				t.Fatalf("round %d: picks with %v down depend on their order", round, order[:i+1])
			}
			prev = cur
		}
	}

	// k against a big-integer reference.
	m := NewModuloSelector(idsUpDown(ids))
	for _, c := range clients {
		want := new(big.Int).Mod(new(big.Int).SetBytes(c.AsSlice()), big.NewInt(int64(len(ids))))
		if _, k, _ := m.Select(c); uint64(k) != want.Uint64() {
			t.Fatalf("Select(%s): k = %d, want CA mod %d = %s", c, k, len(ids), want)
		}
	}
}

func TestModuloNoLiveServer(t *testing.T) {
	for _, s := range [][]Server{
		nil,
		idsUpDown([]int{1, 2}, 1, 2),
		{{ID: 1, Weight: 0, Up: true}},
	} {
		m := NewModuloSelector(s)
		if idx, k, ok := m.Select(ca(7)); ok {
			t.Errorf("servers %v: Select = %d, %d, true; want not ok", s, idx, k)
		}
	}
	m := NewModuloSelector(idsUpDown([]int{1, 2}))
	if idx, k, ok := m.Select(netip.Addr{}); ok {
		t.Errorf("Select(zero Addr) = %d, %d, true; want not ok", idx, k)
	}
	// Weight 0 counts in N but never receives clients.
	m = NewModuloSelector([]Server{{ID: 1, Weight: 1, Up: true}, {ID: 2, Weight: 0, Up: true}})
	if idx, k, ok := m.Select(ca(3)); !ok || k != 1 || idx != 0 {
		t.Errorf("weight 0 server: Select(3) = %d, %d, %v; want 0, 1, true", idx, k, ok)
	}
}

// More than 64 servers down exercises the slow path beyond the stack
// buffer.
func TestModuloManyDown(t *testing.T) {
	ids := make([]int, 200)
	for i := range ids {
		ids[i] = i
	}
	m := NewModuloSelector(idsUpDown(ids, ids[:199]...))
	for c := range uint32(500) {
		if idx, _, ok := m.Select(ca(c * 7919)); !ok || idx != 199 {
			t.Fatalf("only 199 up: Select(%d) = %d, %v", c*7919, idx, ok)
		}
	}
}

// BenchmarkModuloWorstCase is the modulo selector with all servers but one
// down, at the configuration's limit (MaxModuloServers) and, for
// comparison, at the table's (MaxServers), where a packet costs
// milliseconds: the reason for the limit.
func BenchmarkModuloWorstCase(b *testing.B) {
	for _, n := range []int{MaxModuloServers, MaxServers} {
		b.Run(fmt.Sprintf("servers=%d/live=1", n), func(b *testing.B) {
			ids := make([]int, n)
			for i := range ids {
				ids[i] = i
			}
			m := NewModuloSelector(idsUpDown(ids, ids[1:]...))
			b.ReportAllocs()
			var sink int
			for i := 0; b.Loop(); i++ {
				idx, _, _ := m.Select(ca(uint32(i) * 2654435761))
				sink += idx
			}
			_ = sink
		})
	}
}

// The one-word failure rule (up to 64 servers) walks the same lists as the
// general one.
func TestModuloSmallMatchesLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for range 300 {
		n := 1 + rng.IntN(64)
		ids := make([]int, n)
		var down []int
		for i := range ids {
			ids[i] = 3*i + 1
			if rng.IntN(4) > 0 {
				down = append(down, ids[i])
			}
		}
		m := NewModuloSelector(idsUpDown(ids, down...))
		if len(m.liveIdx) == 0 {
			continue
		}
		for range 200 {
			hi, lo := rng.Uint64()>>rng.IntN(64), rng.Uint64()
			k := bits.Rem64(hi, lo, uint64(n))
			if m.live[k] {
				continue
			}
			i1, b1, ok1 := m.selectSmall(hi, lo, uint64(n), k)
			i2, b2, ok2 := m.selectLarge(hi, lo, uint64(n), k)
			if i1 != i2 || b1 != b2 || ok1 != ok2 || !ok1 {
				t.Fatalf("N=%d, down %v, CA %#x%016x: one word %d %d %v, general %d %d %v", n, down, hi, lo, i1, b1, ok1, i2, b2, ok2)
			}
		}
	}
}
