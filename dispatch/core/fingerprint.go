package core

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
)

// Fingerprint is a digest of what a table sends where: FNV-64a over the ID
// of each bucket's live owner (-1 for none), as little-endian int64s, in
// bucket order. Two appliances with the same membership and health compute
// the same fingerprint, so `status` lets an operator compare appliances
// (an active/backup pair, or several behind ECMP) at a glance.
func (t *Table) Fingerprint() uint64 {
	h := fnv.New64a()
	var b [8]byte
	for bucket := range t.Buckets() {
		id, ok := t.OwnerID(uint32(bucket))
		if !ok {
			id = -1
		}
		binary.LittleEndian.PutUint64(b[:], uint64(int64(id)))
		h.Write(b[:])
	}
	return h.Sum64()
}

// moduloFingerprint is the same digest for the modulo function, whose
// choices depend only on which configured servers are live: FNV-64a over
// each server's ID and liveness, in ID order.
func moduloFingerprint(servers []Server) uint64 {
	ss := slices.Clone(servers)
	slices.SortFunc(ss, func(a, b Server) int { return a.ID - b.ID })
	h := fnv.New64a()
	var b [9]byte
	for _, s := range ss {
		binary.LittleEndian.PutUint64(b[:8], uint64(int64(s.ID)))
		b[8] = 0
		if s.Up && s.Weight > 0 {
			b[8] = 1
		}
		h.Write(b[:])
	}
	return h.Sum64()
}

// FingerprintOf is the fingerprint of a cluster's selector as status shows
// it: "0x" and 16 hex digits.
func FingerprintOf(table *Table, servers []Server) string {
	var f uint64
	if table != nil {
		f = table.Fingerprint()
	} else {
		f = moduloFingerprint(servers)
	}
	return fmt.Sprintf("%#016x", f)
}
