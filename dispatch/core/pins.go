package core

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// Pins ([[cluster.pin]]) send a few named clients to a chosen server
// instead of by the hash: heavy clients a per-client hash cannot spread.
// They are part of the table's definition:
//
//   - a pinned client goes to its server while that server is live (up,
//     with a positive weight); otherwise the hash decides, as for any
//     client, until the server is live again;
//   - the dispatcher looks the client up among the pins before the hash
//     and before a transition window's rules (a pinned client's
//     connections are on its pinned server, not on its bucket's owner);
//     ICMP errors about a pinned client's flows follow it, since the
//     client they quote is looked up the same way;
//   - the table fingerprint covers the pins (and whether each is in
//     effect); a cluster without pins keeps the fingerprint of its table
//     alone.
//
// The lookup is a map read per packet, without allocation; a cluster
// without pins skips it.

// PinMap maps each pinned client whose server is live to that server's
// index in a selector's server list.
type PinMap map[netip.Addr]int32

// LivePins returns the pins whose server is live in servers (a
// selector's list, sorted by ID), or nil when there are none.
func LivePins(pins []config.Pin, servers []Server) PinMap {
	var m PinMap
	for _, p := range pins {
		if i, ok := liveServer(servers, p.Server); ok {
			if m == nil {
				m = make(PinMap, len(pins))
			}
			m[p.Client] = int32(i)
		}
	}
	return m
}

// liveServer returns the index of server id in servers (sorted by ID) when
// it is up with a positive weight.
func liveServer(servers []Server, id int) (int, bool) {
	i, found := slices.BinarySearchFunc(servers, id, func(s Server, id int) int { return s.ID - id })
	if !found || !servers[i].Up || servers[i].Weight <= 0 {
		return 0, false
	}
	return i, true
}

// PinnedSelector is a Selector that honours pins before its inner
// selector. The bucket it returns is always the hashed one.
type PinnedSelector struct {
	inner Selector
	pins  PinMap
}

// NewPinnedSelector returns inner with pins; servers is inner's server list
// (the one its indices refer to). Without pins in effect it returns inner.
func NewPinnedSelector(inner Selector, servers []Server, pins []config.Pin) Selector {
	m := LivePins(pins, servers)
	if m == nil {
		return inner
	}
	return &PinnedSelector{inner: inner, pins: m}
}

// Select implements Selector.
func (s *PinnedSelector) Select(client netip.Addr) (idx int, bucket uint32, ok bool) {
	idx, bucket, ok = s.inner.Select(client)
	if i, pinned := s.pins[client]; pinned {
		return int(i), bucket, true
	}
	return idx, bucket, ok
}

// Pinned reports whether client is pinned to a live server.
func (s *PinnedSelector) Pinned(client netip.Addr) bool {
	_, ok := s.pins[client]
	return ok
}

// pinsFingerprint extends a table's fingerprint f with the pins: FNV-64a
// over f (little-endian), then for each pin in client order the client's 16
// bytes (IPv4 mapped), its server's ID as a little-endian int64, and 1 if
// the pin is in effect (the server is live in servers) or 0. Without pins it
// is f itself, so a cluster without pins keeps its table's fingerprint.
func pinsFingerprint(f uint64, pins []config.Pin, servers []Server) uint64 {
	if len(pins) == 0 {
		return f
	}
	ps := slices.Clone(pins)
	slices.SortFunc(ps, func(a, b config.Pin) int { return a.Client.Compare(b.Client) })
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], f)
	h.Write(b[:])
	for _, p := range ps {
		a := p.Client.As16()
		h.Write(a[:])
		binary.LittleEndian.PutUint64(b[:], uint64(int64(p.Server)))
		h.Write(b[:])
		_, live := liveServer(servers, p.Server)
		if live {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	}
	return h.Sum64()
}

// ClusterFingerprint is the fingerprint status shows for a cluster: its
// selector's (FingerprintOf), extended with its pins.
func ClusterFingerprint(table *Table, servers []Server, pins []config.Pin) string {
	if len(pins) == 0 {
		return FingerprintOf(table, servers)
	}
	var f uint64
	if table != nil {
		f = table.Fingerprint()
	} else {
		f = moduloFingerprint(servers)
	}
	return fmt.Sprintf("%#016x", pinsFingerprint(f, pins, servers))
}
