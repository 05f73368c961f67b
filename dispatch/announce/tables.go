package announce

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// Nobody is the owner of a bucket that no server may accept new
// connections for (Grants).
const Nobody = -1

// shareFlags is a member's flags byte.
func shareFlags(up, absent bool) byte {
	var f byte
	if up {
		f |= flagUp
	}
	if absent {
		f |= flagAbsent
	}
	return f
}

// checkFlags rejects reserved bits and an absent member with a weight or
// up: the encoding stays canonical.
func checkFlags(flags byte, weight int) error {
	if flags&^flagsKnown != 0 {
		return fmt.Errorf("reserved flags %#x", flags)
	}
	if flags&flagAbsent != 0 && (flags&flagUp != 0 || weight != 0) {
		return fmt.Errorf("absent, yet weight %d flags %#x", weight, flags)
	}
	return nil
}

// appendAlso writes the further tables: their count, then per table one
// share (weight, flags) per member in the order of sorted, the members by
// ascending ID. orig is the caller's order, which the shares follow.
func appendAlso(b []byte, orig, sorted []Member, also [][]Share) []byte {
	b = append(b, byte(len(also)))
	if len(also) == 0 {
		return b
	}
	idx := make([]int, len(orig))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int { return cmp.Compare(orig[x].ID, orig[y].ID) })
	for _, t := range also {
		for _, i := range idx {
			sh := t[i]
			b = binary.BigEndian.AppendUint32(b, uint32(sh.Weight))
			b = append(b, shareFlags(sh.Up, sh.Absent))
		}
	}
	return b
}

// also reads the further tables of n members.
func (r *reader) also(n int) ([][]Share, error) {
	if r.len() < 1 {
		return nil, errors.New("truncated before the further tables")
	}
	k := int(r.byte())
	if k > MaxAlso {
		return nil, fmt.Errorf("%d further tables: at most %d", k, MaxAlso)
	}
	if k == 0 {
		return nil, nil
	}
	if r.len() < k*n*shareLen {
		return nil, fmt.Errorf("%d further tables of %d members: truncated", k, n)
	}
	out := make([][]Share, k)
	for i := range out {
		out[i] = make([]Share, n)
		for j := range out[i] {
			w := int(r.u32())
			f := r.byte()
			if err := checkFlags(f, w); err != nil {
				return nil, fmt.Errorf("further table %d, member %d: %v", i+1, j+1, err)
			}
			if w > core.MaxWeight {
				return nil, fmt.Errorf("further table %d, member %d: weight %d: at most %d", i+1, j+1, w, core.MaxWeight)
			}
			out[i][j] = Share{Weight: w, Up: f&flagUp != 0, Absent: f&flagAbsent != 0}
		}
	}
	return out, nil
}

// tableServers is table i of m as core.NewTable takes it: 0 is the
// target table (Members), 1.. the tables of Also.
func (m *Message) tableServers(i int) []core.Server {
	if i == 0 {
		return m.Servers()
	}
	out := make([]core.Server, 0, len(m.Members))
	for j, s := range m.Members {
		sh := m.Also[i-1][j]
		if !sh.Absent {
			out = append(out, core.Server{ID: s.ID, Addr: s.Addr, Weight: sh.Weight, Up: sh.Up})
		}
	}
	return out
}

// Grants is what the announcement allows: for each bucket the id of the
// one server that may accept new connections for it, or Nobody. A bucket
// is granted to a server when the target table and every table of Also
// give it that server; a bucket they disagree about, or that a table
// leaves without an owner, is Nobody's. Receivers and the appliance
// compute it with this one function.
func (m *Message) Grants() ([]int32, error) {
	out := make([]int32, m.Buckets)
	for i := 0; i <= len(m.Also); i++ {
		t, err := core.NewTable(m.tableServers(i), m.Buckets)
		if err != nil {
			return nil, fmt.Errorf("announce: table %d of cluster %s: %w", i, m.Cluster, err)
		}
		for b := range out {
			id, ok := t.OwnerID(uint32(b))
			switch {
			case !ok:
				out[b] = Nobody
			case i == 0:
				out[b] = int32(id)
			case out[b] != int32(id):
				out[b] = Nobody
			}
		}
	}
	return out, nil
}

// PinGrants is, for each of m.Pins in order, the id of the one server that
// may accept that client's new connections, or Nobody: in each table the
// client goes to its pinned server when that server is live there (a
// member, up, with a positive weight), else to its bucket's owner; the
// grant is the server every table agrees on. A client pinned in an
// announcement is judged by this alone, never by its bucket (ghostnode
// puts it ahead of the hash), so pins move under the same break before
// make as buckets.
func (m *Message) PinGrants() ([]int32, error) {
	out := make([]int32, len(m.Pins))
	if len(m.Pins) == 0 {
		return out, nil
	}
	for i := 0; i <= len(m.Also); i++ {
		servers := m.tableServers(i)
		t, err := core.NewTable(servers, m.Buckets)
		if err != nil {
			return nil, fmt.Errorf("announce: table %d of cluster %s: %w", i, m.Cluster, err)
		}
		for k, p := range m.Pins {
			owner := int32(Nobody)
			live := slices.ContainsFunc(servers, func(s core.Server) bool { return s.ID == p.ID && s.Up && s.Weight > 0 })
			switch {
			case live:
				owner = int32(p.ID)
			case m.Hash == config.HashJhash:
				if id, ok := t.OwnerID(core.Bucket(core.JHash(p.Client, m.Seed), uint32(m.Buckets))); ok {
					owner = int32(id)
				}
			}
			switch {
			case i == 0:
				out[k] = owner
			case out[k] != owner:
				out[k] = Nobody
			}
		}
	}
	return out, nil
}

// PinsFrom is a cluster's pins as an announcement carries them: by
// ascending client.
func PinsFrom(pins []config.Pin) []Pin {
	var out []Pin
	for _, p := range pins {
		out = append(out, Pin{Client: p.Client, ID: p.Server})
	}
	slices.SortFunc(out, func(a, b Pin) int { return a.Client.Compare(b.Client) })
	return out
}

// PinnedFor splits m's pins for server id: the clients it may accept
// (their grant is id) and those it must drop (granted to another server or
// to nobody), each ascending.
func (m *Message) PinnedFor(id int) (here, away []netip.Addr, err error) {
	g, err := m.PinGrants()
	if err != nil {
		return nil, nil, err
	}
	for k, p := range m.Pins {
		if int(g[k]) == id {
			here = append(here, p.Client)
		} else {
			away = append(away, p.Client)
		}
	}
	return here, away, nil
}

// OwnedBy is the buckets grants gives to server id, ascending; empty, not
// nil, when none.
func OwnedBy(grants []int32, id int) []uint32 {
	out := []uint32{}
	for b, o := range grants {
		if int(o) == id {
			out = append(out, uint32(b))
		}
	}
	return out
}

// Unowned is the buckets grants gives to nobody, ascending.
func Unowned(grants []int32) []uint32 {
	out := []uint32{}
	for b, o := range grants {
		if o == Nobody {
			out = append(out, uint32(b))
		}
	}
	return out
}

// wireSize is the length of m's datagram (Marshal's), for a message Marshal
// accepts.
func (m *Message) wireSize() int {
	n := m.pinsSize() + fixedLen + len(m.Cluster) + 1 + addrLen(m.Ghost) + 1 + len(m.Also)*len(m.Members)*shareLen + MACSize
	for _, s := range m.Members {
		n += memberLen + addrLen(s.Addr)
	}
	return n
}
