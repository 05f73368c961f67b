package core

import "net/netip"

// Selector picks the server for a client. Select returns the index of the
// server in the selector's server list (Table.Servers() or
// ModuloSelector.Servers(), sorted by ID) and the bucket the client fell into;
// ok is false when no live server can take the client or the address is
// invalid, and the caller then drops the packet. Implementations are immutable
// and safe for concurrent use, and do not allocate for IPv4 clients.
type Selector interface {
	Select(client netip.Addr) (idx int, bucket uint32, ok bool)
}

var (
	_ Selector = (*JHashSelector)(nil)
	_ Selector = (*ModuloSelector)(nil)
)

// JHashSelector selects through a bucket table: bucket =
// Bucket(JHash(client, seed), buckets), server = the bucket's owner
// (the hash contract in this package's documentation), the same bucket nftables' `jhash ip saddr mod
// BUCKETS seed SEED` yields on a server.
type JHashSelector struct {
	t    *Table
	seed uint32
	n    uint32
}

// NewJHashSelector returns a selector over t with the given seed. A nil t
// selects nothing (fails closed).
func NewJHashSelector(t *Table, seed uint32) *JHashSelector {
	s := &JHashSelector{t: t, seed: seed}
	if t != nil {
		s.n = uint32(t.Buckets())
	}
	return s
}

// Table is the table the selector reads.
func (s *JHashSelector) Table() *Table { return s.t }

// Seed is the jhash seed.
func (s *JHashSelector) Seed() uint32 { return s.seed }

// Select implements Selector.
func (s *JHashSelector) Select(client netip.Addr) (idx int, bucket uint32, ok bool) {
	if s.t == nil {
		return -1, 0, false
	}
	var h uint32
	switch {
	case client.Is4():
		h = JHash4(client.As4(), s.seed)
	case client.Is6():
		h = JHash16(client.As16(), s.seed)
	default:
		return -1, 0, false
	}
	bucket = Bucket(h, s.n)
	idx = int(s.t.owner[bucket])
	return idx, bucket, idx >= 0
}
