package tune

import (
	"maps"
	"net/netip"
	"slices"
)

// MaxSlots is how many time slots a Timeline keeps at most; when a record
// would open one more, the slots are merged pairwise (the slot length
// doubles). Memory is therefore bounded by MaxSlots times the number of
// distinct clients, whatever the number of lines.
const MaxSlots = 64

// firstSlotLength is the slot length a Timeline starts with, in seconds.
const firstSlotLength = 60

// Timeline is a Population's counts per time slot: what held-out
// evaluation splits into earlier and later windows. Records without a time
// stamp are counted in Untimed and take no part in it.
type Timeline struct {
	// Length is the slot length in seconds (0 until the first record).
	Length int64
	// Slots maps a slot number (time / Length, rounded down) to its
	// per-client counts, the client by its number in Addrs: a slot's
	// entry is then 4 bytes of key instead of an address's 24.
	Slots map[int64]map[uint32]Counts
	// Addrs are the clients, numbered in the order first seen; ids is the
	// reverse.
	Addrs []netip.Addr
	ids   map[netip.Addr]uint32
	// Untimed counts the requests whose line had no time stamp.
	Untimed uint64
}

func (t *Timeline) add(r Record) {
	if !r.HasTime {
		t.Untimed++
		return
	}
	if t.Slots == nil {
		t.Slots = make(map[int64]map[uint32]Counts)
		t.ids = make(map[netip.Addr]uint32)
		t.Length = firstSlotLength
	}
	id, known := t.ids[r.Addr]
	if !known {
		id = uint32(len(t.Addrs))
		t.ids[r.Addr] = id
		t.Addrs = append(t.Addrs, r.Addr)
	}
	k := floorDiv(r.Time, t.Length)
	m, ok := t.Slots[k]
	if !ok {
		for len(t.Slots) >= MaxSlots {
			t.coarsen()
		}
		k = floorDiv(r.Time, t.Length)
		if m, ok = t.Slots[k]; !ok {
			m = make(map[uint32]Counts)
			t.Slots[k] = m
		}
	}
	c := m[id]
	c.Requests++
	c.Bytes += r.Bytes
	m[id] = c
}

// coarsen doubles the slot length, merging slots pairwise.
func (t *Timeline) coarsen() {
	t.Length *= 2
	merged := make(map[int64]map[uint32]Counts, len(t.Slots)/2+1)
	for _, k := range slices.Sorted(maps.Keys(t.Slots)) {
		nk := floorDiv(k, 2)
		dst, ok := merged[nk]
		if !ok {
			merged[nk] = t.Slots[k]
			continue
		}
		for a, c := range t.Slots[k] {
			d := dst[a]
			d.Requests += c.Requests
			d.Bytes += c.Bytes
			dst[a] = d
		}
	}
	t.Slots = merged
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// Window is a contiguous stretch of time and the traffic in it.
type Window struct {
	// From and To bound the window in seconds since the Unix epoch
	// (To excluded).
	From, To int64
	Pop      *Population
}

// Windows splits the timed traffic into at most n contiguous windows in
// time order, each holding close to an equal share of the requests (a slot
// is never split, so there may be fewer than n). It returns nil when fewer
// than two slots have traffic.
func (p *Population) Windows(n int) []Window {
	t := &p.Timeline
	if n < 1 || len(t.Slots) < 2 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(t.Slots))
	var total uint64
	per := make([]uint64, len(keys))
	for i, k := range keys {
		for _, c := range t.Slots[k] {
			per[i] += c.Requests
		}
		total += per[i]
	}
	var out []Window
	var cum uint64
	cur := Window{From: keys[0] * t.Length, Pop: NewPopulation()}
	for i, k := range keys {
		for id, c := range t.Slots[k] {
			cur.Pop.addClient(t.Addrs[id], c)
		}
		cum += per[i]
		cur.To = (k + 1) * t.Length
		// Close the window once it reaches its share, keeping at least one
		// slot for each window still to come.
		left := len(keys) - 1 - i
		if i < len(keys)-1 && (cum*uint64(n) >= total*uint64(len(out)+1) || left < n-len(out)-1) && len(out) < n-1 {
			out = append(out, cur)
			cur = Window{From: keys[i+1] * t.Length, Pop: NewPopulation()}
		}
	}
	out = append(out, cur)
	return out
}

// addClient adds a client's counts (not per line: Lines and Sized stay).
func (p *Population) addClient(a netip.Addr, c Counts) {
	d := p.Clients[a]
	d.Requests += c.Requests
	d.Bytes += c.Bytes
	p.Clients[a] = d
	p.Requests += c.Requests
	p.Bytes += c.Bytes
}

// merge returns the union of windows' traffic.
func merge(ws []Window) *Population {
	p := NewPopulation()
	for _, w := range ws {
		for a, c := range w.Pop.Clients {
			p.addClient(a, c)
		}
	}
	return p
}

// windowPops returns the windows' populations.
func windowPops(ws []Window) []*Population {
	out := make([]*Population, len(ws))
	for i, w := range ws {
		out[i] = w.Pop
	}
	return out
}
