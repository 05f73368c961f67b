package announce

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// MaxEpochs is how many of the appliance's epochs a Receiver remembers,
// with the last datagram number heard in each: the replay state it keeps
// (and an agent saves across restarts) is at most MaxEpochs × 16 bytes.
const MaxEpochs = 32

// NewEpoch draws a random, non-zero epoch for one run of the appliance.
// It is not a time: an appliance that boots with its clock behind is not
// mistaken for an old one, and no value a key holder sends is "later" than
// every genuine one.
func NewEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails on Linux (getrandom)
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

// EpochFloor is the last datagram number (Tx) heard in one epoch: a
// datagram of that epoch is fresh only with a larger Tx.
type EpochFloor struct {
	Epoch uint64 `json:"epoch"`
	Tx    uint64 `json:"tx"`
}

// floors is a receiver's replay state: the epochs heard, most recent
// first, at most MaxEpochs of them (the least recently heard is forgotten
// first).
type floors []EpochFloor

// fresh reports whether (epoch, tx) was not heard before: an epoch not
// remembered is fresh (a restarted appliance), a remembered one only with
// a Tx after its floor. A replay of anything remembered is stale; so is a
// late datagram of the current epoch.
func (f floors) fresh(epoch, tx uint64) (ok bool, floor uint64) {
	for _, e := range f {
		if e.Epoch == epoch {
			return tx > e.Tx, e.Tx
		}
	}
	return true, 0
}

// hear records (epoch, tx) as heard: its epoch becomes the most recent.
func (f *floors) hear(epoch, tx uint64) {
	s := *f
	if i := slices.IndexFunc(s, func(e EpochFloor) bool { return e.Epoch == epoch }); i >= 0 {
		s = slices.Delete(s, i, i+1)
	}
	s = slices.Insert(s, 0, EpochFloor{epoch, tx})
	if len(s) > MaxEpochs {
		s = s[:MaxEpochs]
	}
	*f = s
}

// CheckFloors validates replay state read back from a file (it is input):
// at most MaxEpochs entries, no epoch twice.
func CheckFloors(fs []EpochFloor) error {
	if len(fs) > MaxEpochs {
		return fmt.Errorf("announce: %d epochs remembered, at most %d", len(fs), MaxEpochs)
	}
	seen := make(map[uint64]bool, len(fs))
	for _, e := range fs {
		if seen[e.Epoch] {
			return fmt.Errorf("announce: epoch %d remembered twice", e.Epoch)
		}
		seen[e.Epoch] = true
	}
	return nil
}

// sourceAllowed reports whether a datagram from a may be an announcement:
// any source when no source list is set, else one of them (an IPv4 source
// may arrive as an IPv4-mapped IPv6 address on a dual-stack socket).
func sourceAllowed(allowed []netip.Addr, a netip.Addr) bool {
	if len(allowed) == 0 {
		return true
	}
	a = a.Unmap().WithZone("")
	return slices.Contains(allowed, a)
}
