package announce

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// Verdict is what a Receiver decided about one datagram.
type Verdict uint8

// Verdicts. Apply is the only one that asks the caller to change anything.
const (
	// Apply: an authentic announcement of a newer table. Install
	// Result.Owned, then call Applied (or Failed).
	Apply Verdict = iota + 1
	// Repeat: a fresh, authentic repetition of the table last applied (the
	// appliance repeats it every interval). Nothing to do.
	Repeat
	// IgnoreStale: authentic, but not fresh: a replayed or late datagram
	// (a Tx not after the last one heard in its epoch), or an older table
	// of the current epoch than the one applied.
	IgnoreStale
	// IgnoreBadMAC: a bad signature: forged, corrupted, or signed with
	// another key.
	IgnoreBadMAC
	// IgnoreMalformed: not an announcement this agent can read (including
	// another format version).
	IgnoreMalformed
	// IgnoreOtherCluster: an announcement about another cluster.
	IgnoreOtherCluster
	// IgnoreUnsupported: authentic and fresh, but for a hash the server's
	// kernel filter cannot compute (modulo).
	IgnoreUnsupported
	// IgnoreForeign: from a source address that is not the appliance's
	// (SetSources); not even its signature is checked.
	IgnoreForeign
)

var verdictNames = [...]string{
	Apply:              "apply",
	Repeat:             "repeat",
	IgnoreStale:        "stale",
	IgnoreBadMAC:       "bad_mac",
	IgnoreMalformed:    "malformed",
	IgnoreOtherCluster: "other_cluster",
	IgnoreUnsupported:  "unsupported",
	IgnoreForeign:      "foreign",
}

// String is the verdict's name as counters and logs spell it.
func (v Verdict) String() string {
	if int(v) < len(verdictNames) && verdictNames[v] != "" {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Counters count a Receiver's datagrams by outcome. Received is the sum of
// the verdicts; Applied and ApplyErrors split the Apply verdicts (Newer)
// that the caller reported back.
type Counters struct {
	Received     uint64 `json:"received"`
	Newer        uint64 `json:"newer"`
	Applied      uint64 `json:"applied"`
	ApplyErrors  uint64 `json:"apply_errors"`
	Repeats      uint64 `json:"repeats"`
	Stale        uint64 `json:"stale"`
	BadMAC       uint64 `json:"bad_mac"`
	Malformed    uint64 `json:"malformed"`
	OtherCluster uint64 `json:"other_cluster"`
	Unsupported  uint64 `json:"unsupported"`
	Acks         uint64 `json:"acks"` // acknowledgements made (Ack)
	// Foreign counts datagrams from a source other than the appliance's.
	Foreign uint64 `json:"foreign"`
}

// Result is the outcome of Receiver.Handle.
type Result struct {
	Verdict Verdict
	// Msg is the decoded announcement for the authentic verdicts (Apply,
	// Repeat, IgnoreStale, IgnoreUnsupported); nil otherwise.
	Msg *Message
	// Owned (Apply only) is the buckets Msg grants this server
	// (Message.Grants), ascending; empty, not nil, when it owns none.
	Owned []uint32
	// Unowned (Apply only) is the buckets Msg grants nobody: new
	// connections to them wait (their SYNs are dropped and counted) until
	// the bucket's new owner has it.
	Unowned []uint32
	// Err says why a datagram was ignored.
	Err error
}

// Receiver is a server agent's side of one cluster's announcements: it
// authenticates each datagram, decides whether it carries a newer table,
// computes this server's buckets in it with core.NewTable (the
// appliance's own code), and remembers the last table applied, which stays
// in force however long the appliance is quiet. It does no I/O. A Receiver
// is not safe for concurrent use.
//
// Freshness and order: a datagram is fresh when its Tx is after the last
// one heard in its epoch, or its epoch is not one of the MaxEpochs heard
// last (a restarted appliance draws a new random epoch); an exact replay,
// or a late copy, is IgnoreStale even when it carries the current table.
// A fresh datagram of another epoch than the applied table's is Apply
// (the appliance speaking now is in charge); within one epoch, a larger
// Seq is Apply and the same Seq a Repeat. No datagram, even one signed
// with the appliance's key, can make the genuine appliance's next run
// stale: its epoch is new.
type Receiver struct {
	cluster string
	key     ed25519.PublicKey
	id      int
	sources []netip.Addr // the appliance's addresses; nil: any

	heard   floors // the epochs heard, most recent first (or SetFloors)
	applied *Message
	owned   []uint32
	stats   Counters
}

// NewReceiver returns the receiver of server id for cluster, whose
// announcements are signed by the private half of key.
func NewReceiver(cluster string, key ed25519.PublicKey, id int) (*Receiver, error) {
	if !config.ValidClusterName(cluster) {
		return nil, fmt.Errorf("announce: receiver: cluster name %q", cluster)
	}
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key of %d bytes, want %d", ErrKey, len(key), ed25519.PublicKeySize)
	}
	if id < 0 {
		return nil, fmt.Errorf("announce: receiver: server id %d", id)
	}
	return &Receiver{cluster: cluster, key: slices.Clone(key), id: id}, nil
}

// SetSources restricts HandleFrom to datagrams from these addresses (the
// appliance's on the LAN); with none, any source is accepted.
func (r *Receiver) SetSources(addrs []netip.Addr) {
	r.sources = r.sources[:0]
	for _, a := range addrs {
		r.sources = append(r.sources, a.Unmap().WithZone(""))
	}
}

// Allowed reports whether from is one of the sources SetSources gave (any
// address when none were given): a receiver reassembles segments only from
// these.
func (r *Receiver) Allowed(from netip.Addr) bool { return sourceAllowed(r.sources, from) }

// HandleFrom is Handle for a datagram from the source address from: one
// from a source SetSources does not list is IgnoreForeign, before any
// other check.
func (r *Receiver) HandleFrom(from netip.Addr, b []byte) Result {
	if !sourceAllowed(r.sources, from) {
		r.stats.Received++
		r.stats.Foreign++
		return Result{Verdict: IgnoreForeign, Err: fmt.Errorf("announce: from %v, not from the appliance", from)}
	}
	return r.Handle(b)
}

// Handle decides about one datagram and counts it. b is not retained.
func (r *Receiver) Handle(b []byte) Result {
	r.stats.Received++
	m, err := Open(b, r.cluster, r.key)
	switch {
	case errors.Is(err, ErrCluster):
		r.stats.OtherCluster++
		return Result{Verdict: IgnoreOtherCluster, Err: err}
	case errors.Is(err, ErrBadMAC):
		r.stats.BadMAC++
		return Result{Verdict: IgnoreBadMAC, Err: err}
	case err != nil:
		r.stats.Malformed++
		return Result{Verdict: IgnoreMalformed, Err: err}
	}
	if ok, floor := r.heard.fresh(m.Epoch, m.Tx); !ok {
		r.stats.Stale++
		return Result{Verdict: IgnoreStale, Msg: m, Err: fmt.Errorf(
			"announce: replayed or late: epoch %d tx %d, already heard tx %d of that epoch", m.Epoch, m.Tx, floor)}
	}
	r.heard.hear(m.Epoch, m.Tx)
	if m.Hash != config.HashJhash {
		r.stats.Unsupported++
		return Result{Verdict: IgnoreUnsupported, Msg: m, Err: fmt.Errorf(
			"announce: hash %q: a server's filter computes only %q", m.Hash, config.HashJhash)}
	}
	if a := r.applied; a != nil && !m.Newer(a) {
		if m.Epoch == a.Epoch && m.Seq == a.Seq {
			r.stats.Repeats++
			return Result{Verdict: Repeat, Msg: m}
		}
		r.stats.Stale++
		return Result{Verdict: IgnoreStale, Msg: m, Err: fmt.Errorf(
			"announce: table epoch %d seq %d is older than the applied epoch %d seq %d", m.Epoch, m.Seq, a.Epoch, a.Seq)}
	}
	grants, err := m.Grants()
	if err != nil { // Unmarshal's checks make this unreachable
		r.stats.Malformed++
		return Result{Verdict: IgnoreMalformed, Msg: m, Err: fmt.Errorf("%w: %v", ErrMalformed, err)}
	}
	r.stats.Newer++
	return Result{Verdict: Apply, Msg: m, Owned: OwnedBy(grants, r.id), Unowned: Unowned(grants)}
}

// Applied records that res (an Apply) is installed: its table is the one
// in force from now on.
func (r *Receiver) Applied(res Result) {
	if res.Verdict != Apply {
		return
	}
	r.applied, r.owned = res.Msg, res.Owned
	r.stats.Applied++
}

// Failed records that installing res (an Apply) failed. The applied table
// stays as it was, so the next repetition of res's table is Apply again.
func (r *Receiver) Failed(res Result) {
	if res.Verdict == Apply {
		r.stats.ApplyErrors++
	}
}

// Current is the table applied last and this server's buckets in it; nil
// before the first.
func (r *Receiver) Current() (*Message, []uint32) { return r.applied, r.owned }

// Floor is the (Epoch, Tx) of the last authentic, fresh datagram; ok is
// false before the first.
func (r *Receiver) Floor() (epoch, tx uint64, ok bool) {
	if len(r.heard) == 0 {
		return 0, 0, false
	}
	return r.heard[0].Epoch, r.heard[0].Tx, true
}

// Floors is the replay state: the last Tx heard in each of the epochs
// heard last, most recent first (at most MaxEpochs).
func (r *Receiver) Floors() []EpochFloor { return slices.Clone(r.heard) }

// SetFloors restores replay state saved from Floors (an agent that
// restarts), so that replaying an announcement it had heard gains
// nothing. It is checked with CheckFloors first.
func (r *Receiver) SetFloors(fs []EpochFloor) error {
	if err := CheckFloors(fs); err != nil {
		return err
	}
	r.heard = slices.Clone(fs)
	return nil
}

// SetFloor makes every datagram of epoch up to tx stale, as if it had been
// heard last.
func (r *Receiver) SetFloor(epoch, tx uint64) { r.heard.hear(epoch, tx) }

// Stats returns the counters.
func (r *Receiver) Stats() Counters { return r.stats }

// Ack is the acknowledgement of the table applied last, to be sent back
// to the appliance (unicast, to the source of the announcement): the
// appliance gives a released bucket to its next owner only once the old
// owner has acknowledged the release. ok is false before the first table
// is applied. The caller sends it after Applied, and again for every
// Repeat, so that a lost acknowledgement heals with the next repetition.
func (r *Receiver) Ack() (b []byte, ok bool) {
	if r.applied == nil {
		return nil, false
	}
	a := &Ack{Cluster: r.cluster, Server: r.id, Epoch: r.applied.Epoch, Seq: r.applied.Seq}
	b, err := a.Marshal()
	if err != nil { // the receiver's own fields: cannot fail
		return nil, false
	}
	r.stats.Acks++
	return b, true
}
