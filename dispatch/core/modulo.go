package core

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/ghostrouter/ghostrouter/dispatch/limits"
)

// MaxModuloServers is the most servers of a cluster that uses the modulo
// function (see ModuloSelector's cost).
const MaxModuloServers = limits.ModuloServers

// ModuloSelector is the patent's own dispatching function (EP 0 865 180 A2,
// "routing-based dispatching"): with N configured servers in ID order and CA
// the client address as an unsigned big-endian integer, the client goes to
// server k = CA mod N. The bucket Select reports is k.
//
// Failure rule, quoting the patent: "if a server k fails, the new dispatching
// function may check to see if the hash value CA mod N equals k. If it does, a
// new hash value j = CA mod (N-1) is computed. If j is less than k, the packet
// goes to server j. Otherwise, the packet goes to server j+1." That is: drop k
// from the list of servers and take entry CA mod (N-1) of the N-1 left.
//
// The patent adds that the technique "can be readily extended to handle
// multiple server failures"; ModuloSelector extends it by applying the same
// step again while the chosen server is down: the list L_0 is every configured
// server in ID order; at step i the candidate is L_i[CA mod len(L_i)]; if it
// is down, L_(i+1) is L_i without it. With one failure this is the patent's
// rule exactly. With any number, each client has a fixed fallback order that
// depends only on its address, and goes to the first live server in it, so:
// clients of live servers never move; a failure moves only the clients on the
// failed server; recovery moves them back; and the result depends on which
// servers are down, not on the order they failed in. Evenness is the patent's
// too: exact in distribution over addresses for one failure (N and N-1 are
// coprime), approximate for more (e.g. N = 4 with servers 1 and 3 down: their
// clients are the odd addresses, and the second step sends 2/3 of them to
// server 2 and 1/3 to server 0).
//
// A server is live when Up and Weight > 0; weights otherwise play no part
// (the patent's function has none). N counts every configured server. IPv6
// clients use the 128-bit address as CA.
//
// Cost: a client whose k is live costs one division. Otherwise each step of
// the rule costs a division and a walk over the servers dropped so far, and a
// client takes about N/live steps, so with most servers down a packet costs
// O(N^2): 2 ms at 4096 servers. A cluster using this function therefore has
// at most MaxModuloServers servers (the configuration rejects more), which
// bounds a packet's worst case to 63 steps (BenchmarkModuloWorstCase) and
// keeps Select free of allocations; NewModuloSelector itself takes any number,
// for analysis tools. Up to 64 servers a step is a division and six
// population counts (the list is one bit word). The jhash table has no such cost: its lookup is one
// hash and one array read whatever the health.
type ModuloSelector struct {
	servers []Server // sorted by ID
	liveIdx []int    // indices of live servers, ascending
	live    []bool
}

// NewModuloSelector returns the patent's modulo selector over servers (sorted
// by ID; the caller's slice is not kept). Duplicate IDs are the
// configuration's to reject; here they keep their input order.
func NewModuloSelector(servers []Server) *ModuloSelector {
	ss := slices.Clone(servers)
	slices.SortStableFunc(ss, func(a, b Server) int { return cmp.Compare(a.ID, b.ID) })
	m := &ModuloSelector{servers: ss, live: make([]bool, len(ss))}
	for i, s := range ss {
		if s.Up && s.Weight > 0 {
			m.live[i] = true
			m.liveIdx = append(m.liveIdx, i)
		}
	}
	return m
}

// Servers returns the servers sorted by ID; Select's idx indexes it. The
// caller must not modify the slice.
func (m *ModuloSelector) Servers() []Server { return m.servers }

// Select implements Selector.
func (m *ModuloSelector) Select(client netip.Addr) (idx int, bucket uint32, ok bool) {
	n := uint64(len(m.servers))
	if n == 0 || len(m.liveIdx) == 0 {
		return -1, 0, false
	}
	var hi, lo uint64 // CA as a 128-bit integer
	switch {
	case client.Is4():
		a := client.As4()
		lo = uint64(binary.BigEndian.Uint32(a[:]))
	case client.Is6():
		a := client.As16()
		hi, lo = binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	default:
		return -1, 0, false
	}
	k := bits.Rem64(hi, lo, n)
	if m.live[k] {
		return int(k), uint32(k), true
	}
	if n <= 64 {
		return m.selectSmall(hi, lo, n, k)
	}
	return m.selectLarge(hi, lo, n, k)
}

// selectLarge is Select's failure rule for any number of servers, k being
// down.
func (m *ModuloSelector) selectLarge(hi, lo, n, k uint64) (idx int, bucket uint32, ok bool) {
	// The patent's step, repeated: removed holds the indices dropped so
	// far, ascending; entry j of the remaining list is j shifted past them.
	var buf [64]uint64
	removed := append(buf[:0], k)
	for left := n - 1; left > 0; left-- {
		c := bits.Rem64(hi, lo, left)
		at := len(removed)
		for i, r := range removed {
			if r > c {
				at = i
				break
			}
			c++
		}
		if m.live[c] {
			return int(c), uint32(k), true
		}
		removed = slices.Insert(removed, at, c)
	}
	return -1, uint32(k), false // unreachable: a live server exists
}

// selectSmall is Select's failure rule for at most 64 servers, k being down:
// the servers still in the list are the set bits of one word, and entry c of
// the list is its c-th set bit, found by halving (selectBit). A step costs a
// division and six population counts, so a packet costs at most 63 of them.
func (m *ModuloSelector) selectSmall(hi, lo, n, k uint64) (idx int, bucket uint32, ok bool) {
	left := ^uint64(0) >> (64 - n) &^ (1 << k) // the list L_1
	for size := n - 1; size > 0; size-- {
		c := selectBit(left, int(bits.Rem64(hi, lo, size)))
		if m.live[c] {
			return c, uint32(k), true
		}
		left &^= 1 << c
	}
	return -1, uint32(k), false // unreachable: a live server exists
}

// selectBit returns the position of the j-th (0-based) set bit of x, which
// has more than j set bits.
func selectBit(x uint64, j int) int {
	pos := 0
	for w := 32; w > 0; w >>= 1 {
		low := x & (1<<w - 1)
		if c := bits.OnesCount64(low); j >= c {
			j -= c
			x >>= w
			pos += w
		} else {
			x = low
		}
	}
	return pos
}
