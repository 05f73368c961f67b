// Package stage is the datapath contract: what every inbound frame of every
// link passes through before netstack sees it, what a stage may do with a
// frame, and what it must say about it.
//
// # The interface
//
// A Stage looks at one inbound Ethernet frame and returns a Verdict:
//
//   - Pass: not this stage's business; the frame goes on to the next stage,
//     and after the last one to netstack.
//   - Consumed: the stage took the frame (forwarded it, answered it, handed
//     it to a state machine). The walk ends; netstack never sees it.
//   - Dropped with a Reason: the frame is discarded. The walk ends.
//   - Answered with a Reason: the frame is discarded and an ICMP error about
//     it was sent back to its sender (within the link's ICMP rate limit).
//     The walk ends.
//
// Every Reason is a counter: the router counts each Dropped and Answered
// verdict by stage and reason (Counters), and the appliance shows them in
// its status and metrics, so a frame never disappears without a name.
// Stages keep their own, finer counters too (per cluster, per virtual
// router); the verdict counters are the one place that covers them all.
// Consumed frames are counted by the stages themselves (a shared counter on
// the forwarding path would be written by every receive queue at once).
//
// # Frame ownership
//
// frame is the endpoint's receive buffer. It belongs to the stage only for
// the duration of Inbound: a stage must not keep it, nor any slice of it,
// after it returns. A stage may change the frame in place (the Ethernet
// header, the IPv4 TTL and header checksum, the IPv6 hop limit) when it
// takes it (any verdict but Pass); a stage that passes a frame on leaves it
// as it found it. A stage that needs the frame later copies it.
//
// The endpoint reads frames in batches (every frame its queue holds, up to a
// bound) and runs the stages over them in arrival order; a frame handed to
// tap.Endpoint.WriteFrame during Inbound is written at the end of its batch,
// with the batch's other writes, each flow's frames in order and one after
// the other (so a response and the FIN that followed it leave together;
// frames of different flows may change places). A stage must therefore not
// change a frame after passing it to WriteFrame.
//
// # The offload rule
//
// On a link with segmentation offload, a frame may be a TCP super-frame
// larger than the MTU, and its transport checksum may be partial. The
// endpoint recognises its own receive buffer by pointer identity: a frame
// whose first byte is the first byte of a receive queue's current frame
// is that frame, with that queue's virtio-net header. So a stage that
// forwards a frame whole, by handing that same slice (not a copy) to
// tap.Endpoint.WriteFrame of an endpoint in the same tap.Group during
// Inbound, keeps the super-frame whole and the checksum partial;
// tap.Endpoint.SegmentSize tells the segment size it will be cut into. The
// edits a stage may make (above) touch nothing the offload depends on. A
// copy, or a write after Inbound returned, is a plain frame (and a copy of
// a super-frame is no longer one: the endpoint cannot know its segment
// size). What goes on to netstack (Pass from every stage, or
// tap.Endpoint.DeliverToStack) is made plain first: super-frames are cut,
// partial checksums completed.
//
// # The stage order
//
// The router runs, on every link, the stages it was given at construction
// (router.Options.Stages, in the order given), then its own:
//
//	TAP ─> tap.Endpoint ─> capture tap ─> runts, foreign unicast dropped
//	  ─> VRRP ─> ARP guard ─> announce guard ─> neighbors ─> dispatch   (given, in this order by the appliance)
//	  ─> L2 policy ─> TTL guard ─> refragment ─> fast path ─> redirect  (the router's own)
//	  ─> netstack
//
// What each does:
//
//   - VRRP takes advertisements and answers ARP/ND for the virtual
//     addresses while master (drops them while backup).
//   - The ARP guard drops ARP from LAN hosts claiming a protected address.
//   - The announce guard drops outside traffic to the servers' announce
//     ports.
//   - Neighbors takes the ARP/ND answers about servers (the dispatcher's
//     source of MACs) and drops claims.
//   - Dispatch forwards packets for routing-mode ghosts to their servers.
//   - The L2 policy drops unicast IP for another host that came in a
//     link-layer broadcast or multicast frame.
//   - The TTL guard answers IPv4 in transit with TTL <= 1 (time exceeded).
//   - Refragment cuts too-big IPv4 fragments in transit keeping their
//     offset.
//   - The fast path forwards plain IPv4 transit traffic with a cached next
//     hop.
//   - Redirect sends an RFC 1812 host redirect (and passes the frame on to
//     netstack, which forwards it) when send_redirects is on.
//
// The packet capture (router/capture) is not a Stage but an endpoint tap: it
// must see every frame, in both directions, before any stage can consume
// it, and it never takes one.
//
// Stages are fixed when the router is built, before any link's receive loop
// starts, so no frame ever reaches netstack without having passed them all.
// What a stage serves may change while it runs (clusters, rules, addresses):
// each stage publishes its state as an immutable snapshot behind an atomic
// pointer.
//
// # Concurrency and the lock order
//
// Inbound is called on the endpoints' receive goroutines, one per queue and
// link, concurrently: it must be safe for concurrent use, must not block,
// must not log, and on the forwarding paths must not allocate. Stages read
// their configuration through atomic snapshots and take no lock per frame,
// with two exceptions, both leaves of the lock order: the neighbor
// resolver's table lock (only for ARP/ND about servers) and a shard lock of
// a transition window's flow memory (only while a cluster's table changes).
// Nothing is called while holding either: no other lock, no netstack call,
// no link write; the resolver wakes its goroutine with a non-blocking send.
// The control side of a stage (reloads, health changes, VRRP transitions)
// publishes a new snapshot and never holds its own locks while the datapath
// waits on it. netstack's own locks are taken only by netstack, after Pass
// from every stage, or by a stage's DeliverToStack.
package stage

import (
	"sync/atomic"

	"github.com/ghostrouter/ghostrouter/router/tap"
)

// Stage is one step of the inbound datapath (see the package doc).
type Stage interface {
	// Name is the stage's name in status and metrics.
	Name() string
	// Inbound judges one frame received on in.
	Inbound(in *tap.Endpoint, frame []byte) Verdict
}

// Kind is what a verdict says happened to a frame.
type Kind uint8

// The kinds of verdict.
const (
	KindPass     Kind = iota // on to the next stage (netstack after the last)
	KindConsumed             // taken by the stage
	KindDropped              // discarded, for a Reason
	KindAnswered             // discarded and answered with an ICMP error, for a Reason
)

// Reason names why a frame was dropped or answered. Each is a counter.
type Reason uint8

// The reasons. Their names (String) are the label values in metrics.
const (
	None                Reason = iota
	Malformed                  // a bad IP header (version, lengths, checksum) or a packet that cannot be cut
	TTLExceeded                // TTL or hop limit <= 1 in transit
	TooBig                     // larger than the egress MTU and not to be fragmented
	Unfragmentable             // larger than the egress MTU, no DF, but cannot be fragmented
	NoServer                   // a ghost's packet with no live server
	NoMAC                      // a ghost's packet for a server whose MAC is not resolved yet
	BadICMPQuote               // an ICMP error to a ghost whose quoted header is not the ghost's
	WriteError                 // the egress link refused the frame
	UnicastInGroupFrame        // unicast IP for another host in a link-layer broadcast/multicast frame
	AnnouncePort               // outside traffic to a servers' announce port
	AddressClaim               // ARP from a LAN host claiming a protected address
	MACClaim                   // ARP/ND stating another MAC for a server
	Unsolicited                // ARP/ND about a server nobody asked for
	VirtualAddress             // IP to a VRRP virtual address this router does not own
	Backup                     // ARP/ND for a virtual address while this router is VRRP backup
	NumReasons                 // the number of reasons
)

var reasonNames = [NumReasons]string{
	None:                "none",
	Malformed:           "malformed",
	TTLExceeded:         "ttl_exceeded",
	TooBig:              "too_big",
	Unfragmentable:      "unfragmentable",
	NoServer:            "no_server",
	NoMAC:               "no_mac",
	BadICMPQuote:        "bad_icmp_quote",
	WriteError:          "write_error",
	UnicastInGroupFrame: "unicast_in_group_frame",
	AnnouncePort:        "announce_port",
	AddressClaim:        "address_claim",
	MACClaim:            "mac_claim",
	Unsolicited:         "unsolicited",
	VirtualAddress:      "virtual_address",
	Backup:              "backup",
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

func (k Kind) String() string {
	switch k {
	case KindPass:
		return "pass"
	case KindConsumed:
		return "consumed"
	case KindDropped:
		return "dropped"
	case KindAnswered:
		return "answered"
	}
	return "unknown"
}

// Verdict is a stage's judgement of one frame. The zero value is Pass.
type Verdict struct {
	kind   Kind
	reason Reason
}

// Pass and Consumed are the verdicts without a reason.
var (
	Pass     = Verdict{}
	Consumed = Verdict{kind: KindConsumed}
)

// Drop is the verdict for a frame discarded for r.
func Drop(r Reason) Verdict { return Verdict{kind: KindDropped, reason: r} }

// Answer is the verdict for a frame discarded for r after an ICMP error
// about it was sent to its sender.
func Answer(r Reason) Verdict { return Verdict{kind: KindAnswered, reason: r} }

// Kind is what happened to the frame.
func (v Verdict) Kind() Kind { return v.kind }

// Reason is why it was dropped or answered (None otherwise).
func (v Verdict) Reason() Reason { return v.reason }

// Taken reports whether the walk ends here (anything but Pass).
func (v Verdict) Taken() bool { return v.kind != KindPass }

func (v Verdict) String() string {
	if v.reason == None {
		return v.kind.String()
	}
	return v.kind.String() + "(" + v.reason.String() + ")"
}

// Counters counts one stage's Dropped and Answered verdicts by reason. All
// fields are updated atomically; it is safe for concurrent use.
type Counters struct {
	Dropped  [NumReasons]atomic.Uint64
	Answered [NumReasons]atomic.Uint64
}

// Count records v (Pass and Consumed are not counted here).
func (c *Counters) Count(v Verdict) {
	switch v.kind {
	case KindDropped:
		c.Dropped[v.reason%NumReasons].Add(1)
	case KindAnswered:
		c.Answered[v.reason%NumReasons].Add(1)
	}
}

// Count is one non-zero counter: how many frames a stage dropped or
// answered for a reason.
type Count struct {
	Stage  string `json:"stage"`
	Kind   string `json:"verdict"`
	Reason string `json:"reason"`
	N      uint64 `json:"frames"`
}

// Append appends c's non-zero counters, as the stage named, to out.
func (c *Counters) Append(out []Count, name string) []Count {
	for r := Reason(0); r < NumReasons; r++ {
		if n := c.Dropped[r].Load(); n > 0 {
			out = append(out, Count{Stage: name, Kind: KindDropped.String(), Reason: r.String(), N: n})
		}
		if n := c.Answered[r].Load(); n > 0 {
			out = append(out, Count{Stage: name, Kind: KindAnswered.String(), Reason: r.String(), N: n})
		}
	}
	return out
}
