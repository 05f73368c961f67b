package dispatch

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// flowKey names one flow as the dispatcher sees it: the client's address
// (IPv4 as a v4-mapped IPv6 address), its port, the ghost's port and the
// protocol. The ghost address itself is the cluster's, so it is not part of
// the key.
type flowKey struct {
	addr  [16]byte
	sport uint16
	dport uint16
	proto uint8
}

// hash is a 64-bit hash of k: the shard is its top bits, the slot its low
// bits.
func (k *flowKey) hash() uint64 {
	a := binary.LittleEndian.Uint64(k.addr[0:8])
	b := binary.LittleEndian.Uint64(k.addr[8:16])
	c := uint64(k.sport)<<24 | uint64(k.dport)<<8 | uint64(k.proto)
	return core.Mix64(core.Mix64(a^0x666c6f772d6d656d) ^ b ^ core.Mix64(c))
}

// Entry states.
const (
	slotEmpty   = 0
	slotLive    = 1
	slotClosing = 2 // the client sent FIN: released after finLinger without packets
)

type flowEntry struct {
	key    flowKey
	state  uint8
	server int32 // server ID
	last   int64 // nanoseconds since the memory's epoch
}

// flowShards is the number of independently locked parts of a memory; a
// power of two. Packets of different flows rarely wait for each other.
const flowShards = 64

type flowShard struct {
	mu    sync.Mutex
	slots []flowEntry // open addressing, linear probing; len is a power of two
	n     int         // slots in use
	max   int         // n never exceeds it (a load factor of 3/4)
	_     [32]byte    // keep neighbouring shards' locks off one cache line
}

// flowMemory is the bounded flow table of a transition window: flow ->
// server ID. It holds at most its capacity; an insert beyond that fails and
// the caller counts it. It allocates only when built; lookups, inserts and
// deletes take one shard's lock and allocate nothing. Lock order: the
// manager's lock (sweeps run under it), then one shard's lock at a time; the
// packet path takes only a shard's lock.
type flowMemory struct {
	shards   [flowShards]flowShard
	capacity int
	entries  atomic.Int64 // entries held now
	clock    atomic.Int64 // nanoseconds since the window opened, advanced by the manager
	closed   atomic.Bool  // the window closed: nothing more is remembered
}

// newFlowMemory returns a memory that holds at least capacity entries
// (spread over the shards, so about capacity; at least flowShards).
func newFlowMemory(capacity int) *flowMemory {
	per := (capacity + flowShards - 1) / flowShards
	per = max(per, 1)
	slots := 1
	for slots*3/4 < per { // load factor at most 3/4
		slots *= 2
	}
	m := &flowMemory{capacity: per * flowShards}
	for i := range m.shards {
		m.shards[i].slots = make([]flowEntry, slots)
		m.shards[i].max = per
	}
	return m
}

func (m *flowMemory) shard(h uint64) *flowShard { return &m.shards[h>>58] }

// find returns the slot of k in s, or -1. s.mu is held.
func (s *flowShard) find(k *flowKey, h uint64) int {
	mask := len(s.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		e := &s.slots[i]
		if e.state == slotEmpty {
			return -1
		}
		if e.key == *k {
			return i
		}
	}
}

// remove empties slot i and shifts the entries after it back so that no
// probe sequence is broken (deletion without tombstones). s.mu is held.
func (s *flowShard) remove(i int) {
	mask := len(s.slots) - 1
	s.slots[i] = flowEntry{}
	for j := (i + 1) & mask; s.slots[j].state != slotEmpty; j = (j + 1) & mask {
		home := int(s.slots[j].key.hash()) & mask
		// j stays where it is if its home lies cyclically in (i, j].
		if i <= j && i < home && home <= j || i > j && (i < home || home <= j) {
			continue
		}
		s.slots[i], s.slots[j] = s.slots[j], flowEntry{}
		i = j
	}
	s.n--
}

// flowResult is what a packet's lookup found or did.
type flowResult uint8

const (
	flowMissed      flowResult = iota // not remembered (and not inserted)
	flowHit                           // remembered: server is its server
	flowInserted                      // newly remembered with the given server
	flowOverflow                      // not remembered: the memory is full
	flowReleasedR                     // remembered, and released by this packet (RST)
	flowReleasedSYN                   // was remembered as closing; released for a new connection
	flowClosed                        // not remembered: the window has closed
)

// lookup returns the server remembered for k, refreshing its time; with fin
// it marks the entry closing, with rst it releases it. A SYN (syn) for a
// closing entry opens a new connection on the same ports: the entry is
// released and the lookup misses.
func (m *flowMemory) lookup(k *flowKey, now int64, fin, rst, syn bool) (server int32, res flowResult) {
	h := k.hash()
	s := m.shard(h)
	s.mu.Lock()
	i := s.find(k, h)
	if i < 0 {
		s.mu.Unlock()
		return -1, flowMissed
	}
	e := &s.slots[i]
	server = e.server
	e.last = now
	switch {
	case syn && e.state == slotClosing:
		s.remove(i)
		s.mu.Unlock()
		m.entries.Add(-1)
		return -1, flowReleasedSYN
	case rst:
		s.remove(i)
		s.mu.Unlock()
		m.entries.Add(-1)
		return server, flowReleasedR
	case fin:
		e.state = slotClosing
	}
	s.mu.Unlock()
	return server, flowHit
}

// peek returns the server remembered for k without touching the entry.
func (m *flowMemory) peek(k *flowKey) (int32, bool) {
	h := k.hash()
	s := m.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := s.find(k, h); i >= 0 {
		return s.slots[i].server, true
	}
	return -1, false
}

// insert remembers k -> server unless k is already remembered (then the
// remembered server wins and is returned) or the shard is full.
func (m *flowMemory) insert(k *flowKey, server int32, now int64, closing bool) (int32, flowResult) {
	h := k.hash()
	s := m.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.closed.Load() { // checked under the lock: close's sweep then sees every entry
		return server, flowClosed
	}
	mask := len(s.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		e := &s.slots[i]
		if e.state != slotEmpty {
			if e.key == *k {
				e.last = now
				return e.server, flowHit
			}
			continue
		}
		if s.n >= s.max {
			return -1, flowOverflow
		}
		*e = flowEntry{key: *k, server: server, last: now, state: slotLive}
		if closing {
			e.state = slotClosing
		}
		s.n++
		m.entries.Add(1)
		return server, flowInserted
	}
}

// sweep releases the entries for which drop returns true and returns how
// many it released. It takes one shard's lock at a time.
func (m *flowMemory) sweep(drop func(e *flowEntry) bool) int {
	released := 0
	for si := range m.shards {
		s := &m.shards[si]
		s.mu.Lock()
		for i := 0; i < len(s.slots); {
			e := &s.slots[i]
			if e.state != slotEmpty && drop(e) {
				s.remove(i) // slot i now holds a shifted entry (or is empty): look again
				released++
				continue
			}
			i++
		}
		s.mu.Unlock()
	}
	m.entries.Add(-int64(released))
	return released
}

// close stops the memory from remembering more and releases every entry;
// it returns how many it released. Packets still holding the memory after
// it closed get flowClosed from insert.
func (m *flowMemory) close() int {
	m.closed.Store(true)
	return m.sweep(func(*flowEntry) bool { return true })
}

// each calls fn for every entry; the entry must not be kept.
func (m *flowMemory) each(fn func(e *flowEntry)) {
	for si := range m.shards {
		s := &m.shards[si]
		s.mu.Lock()
		for i := range s.slots {
			if s.slots[i].state != slotEmpty {
				fn(&s.slots[i])
			}
		}
		s.mu.Unlock()
	}
}
