package dispatch

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
)

// # Keeping connections across a planned change (routing mode)
//
// In routing mode the dispatcher is stateless: the bucket table alone names
// a client's server, and the servers accept whatever reaches them. When a
// bucket changes owner, every connection of its clients would land on a
// server that does not know it and be reset. A transition window prevents
// that for planned changes: a server added, drained (drain = true, weight
// 0), reweighted, recovered after a failure, or any reload that moves
// buckets. The steady state stays stateless; only while a window is open
// does the dispatcher remember flows, and only those of the buckets that
// move ("touched" buckets). (GLB's "second chance" would instead send a
// moved bucket's packets to the new owner with the old one named, and have
// the new owner's kernel module pass on the packets of connections it does
// not know; routing-mode servers here are plain hosts with the ghost as an
// alias, so the dispatcher keeps the state itself, bounded and short-lived.)
//
// The new table takes effect at once, for the packets that need no memory
// (those of untouched buckets, new connections, ICMP). For a packet of a
// touched bucket:
//   - a remembered flow goes to its remembered server (if that server is
//     still up and resolved; otherwise the current owner takes it);
//   - a TCP SYN without ACK opens a new connection: it goes to the current
//     owner and the flow is remembered, so that the rest of its handshake and
//     its data follow it there even when its bucket moves again;
//   - any other TCP packet of a flow not remembered belongs to a connection
//     that predates the bucket's move (every connection opened since is
//     remembered from its SYN): it goes to the bucket's origin, its owner just
//     before it first moved in the window, and is remembered. This covers a
//     handshake that straddles the change: its SYN reached the old owner, and
//     so do its final ACK and its data;
//   - a UDP datagram of a flow not remembered goes, during the learning
//     phase (learnPeriod, 500 ms, at most drain_timeout, after each change),
//     to the bucket's owner before the change, and after it to the current
//     owner; either way the flow is remembered. So a UDP flow active before
//     the change stays with its old server until it is idle, and a new one
//     stays with its first server even if its bucket moves again;
//   - ICMP (echo included: any server answers it, and no state is kept for
//     it), other protocols and non-first IPv4 fragments have no ports: they
//     go to the current owner.
//
// Entries are released when the client sends RST (at once) or FIN (after
// finLinger without further packets), when idle for flowIdle (30 s, at most
// drain_timeout), when their server fails or leaves the configuration (its
// connections are lost anyway), and all at once when the window closes. The
// window closes drain_timeout after the switch of the last change it
// absorbed, or earlier once it has been switched for flowIdle (at most
// drain_timeout) and no remembered flow is held away from its bucket's
// current owner. A change while a window is open joins it: the memory and
// the buckets' origins are kept, the touched set grows. If a bucket's origin
// fails, the owner in effect at the failure becomes its origin (the
// connections still alive are there), so a server that fails and recovers
// within one window gets back only new connections.
//
// A failed server's buckets move at once: a failure opens no window of its
// own and ends the learning phase of a change, and flows remembered for a
// failed server go to the current owner. The same holds for a server removed
// from the configuration (drain it first to keep its connections).
//
// The memory is bounded (flow_memory entries per cluster, allocated when a
// window opens, freed when it closes). What cannot be remembered is counted
// (flow_overflow). A SYN that cannot be remembered goes to the bucket's
// origin instead: with its later packets (unknown, so sent to the origin
// too) it stays consistent until the window closes. With hash = "modulo", or
// across a change of bucket count or seed, there are no stable buckets:
// touched is decided per client by comparing the owners when the window
// opened, now and (while learning) before the latest change, and the origin
// is the owner when the window opened.
//
// # Cost (BenchmarkTransition)
//
// Per packet, one run of `go test ./dispatch -run XXX -bench BenchmarkTransition
// -count 8 -benchtime 300000x` on the 2-core build machine (load average
// about 13, so the stage's absolute times are noisy; medians, with the
// fastest run in brackets). "stage" is Inbound including the write of the
// frame to /dev/null; "choice" is the server choice alone (pickFlow), which
// is all the window adds to. Allocations are 0 in every case
// (TestTransitionZeroAllocs checks it, remembering and not).
//
//	case                                   stage ns/pkt    choice ns/pkt   allocs
//	stateless (no window: the steady state)  1049 [665]       15.8 [15.0]    0
//	window open, the client's bucket kept    1062 [496]       12.5 [11.9]    0
//	window open, bucket moved, flow known    1385 [838]        123 [71]      0
//
// A packet of a moved bucket costs one memory lookup (a shard lock, a hash
// probe) on top of the stateless choice, about 60-110 ns; packets of other
// buckets cost one bounds-checked load more, nothing measurable.

// Timing of a transition window.
const (
	learnPeriod = 500 * time.Millisecond
	finLinger   = 2 * time.Second
	flowIdle    = 30 * time.Second
)

// FlowStats are a routing cluster's transition-memory counters.
type FlowStats struct {
	Remembered atomic.Uint64 // flows entered into the memory
	Overflow   atomic.Uint64 // flows that could not be remembered: the memory was full
	Released   atomic.Uint64 // entries released: RST, FIN, idle, server gone, window closed
	Held       atomic.Uint64 // packets sent to a server other than the current owner to keep their connection
	Windows    atomic.Uint64 // transition windows opened
}

// transition is what the packet path reads of an open window. It is
// immutable but for the memory; a new one is published at each change.
type transition struct {
	mem   *flowMemory
	epoch time.Time // the memory's clock starts here

	// origin is the selector that was in effect when the window opened;
	// originServers are the servers its indices refer to.
	origin        core.Selector
	originServers []core.Server
	// prev, while learning, is the selector in effect before the latest
	// change: UDP flows not yet seen go to its owner. nil after the switch.
	prev        core.Selector
	prevServers []core.Server
	// origins, by bucket, is the ID of the server that owned the bucket just
	// before it first moved during the window (-1: not moved, "untouched").
	// A bucket's origin that fails is replaced by the owner in effect then.
	// nil means "compare owners per client" through origin (modulo, or a
	// change of bucket count or seed).
	origins []int32
}

// now is the memory's clock: nanoseconds since the window opened, as of the
// manager's last sweep (a coarse clock, read without a system call).
func (tr *transition) now() int64 { return tr.mem.clock.Load() }

// ownerID is the ID of the server sel's servers list names for client, or -1.
func ownerID(sel core.Selector, servers []core.Server, client netip.Addr) int {
	i, _, ok := sel.Select(client)
	if !ok || i < 0 || i >= len(servers) {
		return -1
	}
	return servers[i].ID
}

// originOf is the ID of the server that held client's connections before
// its bucket moved.
func (tr *transition) originOf(client netip.Addr, bucket uint32) int {
	if tr.origins != nil {
		return int(tr.origins[bucket]) // touched: in range
	}
	return ownerID(tr.origin, tr.originServers, client)
}

// touches reports whether client's packets need the memory.
func (tr *transition) touches(v *View, client netip.Addr, bucket uint32) bool {
	if tr.origins != nil {
		return int(bucket) < len(tr.origins) && tr.origins[bucket] >= 0
	}
	cur := ownerID(v.Selector, v.Servers, client)
	if ownerID(tr.origin, tr.originServers, client) != cur {
		return true
	}
	return tr.prev != nil && ownerID(tr.prev, tr.prevServers, client) != cur
}

// liveIndex is the index in v.Servers of server id if it is up and its MAC
// is resolved.
func (v *View) liveIndex(id int) (int, bool) {
	i, found := slices.BinarySearchFunc(v.Servers, id, func(s core.Server, id int) int { return cmp.Compare(s.ID, id) })
	if !found || !v.Servers[i].Up || i >= len(v.MACs) || v.MACs[i] == ([6]byte{}) {
		return 0, false
	}
	return i, true
}

const noL4 = -1 // pickFlow: the packet has no transport header to read

// pickFlow chooses the server for a packet from client: ip is its IP packet,
// l4 the offset of its transport header (or noL4) and proto the protocol
// there. In the steady state it is pick; while a transition window is open it
// consults the window's memory (see the comment at the top of this file).
func (c *Cluster) pickFlow(client netip.Addr, ip []byte, l4 int, proto uint8) (v *View, idx int, mac [6]byte, why stage.Reason) {
	v = c.view.Load()
	if v == nil {
		c.stats.NoServer.Add(1)
		return nil, 0, mac, stage.NoServer
	}
	idx, bucket, ok := v.Selector.Select(client)
	if j, pinned := v.pinned(client); pinned {
		idx, ok = j, true
	} else if tr := v.Trans; tr != nil && l4 >= 0 && tr.touches(v, client, bucket) {
		idx, ok = c.steer(v, tr, client, bucket, idx, ok, ip, l4, proto)
	}
	if !ok {
		c.stats.NoServer.Add(1)
		return nil, 0, mac, stage.NoServer
	}
	if mac = v.MACs[idx]; mac == ([6]byte{}) {
		c.stats.NoMAC.Add(1)
		return nil, 0, mac, stage.NoMAC
	}
	return v, idx, mac, stage.None
}

// steer applies the window's rules to a packet of a touched client whose
// current owner is (idx, ok).
func (c *Cluster) steer(v *View, tr *transition, client netip.Addr, bucket uint32, idx int, ok bool, ip []byte, l4 int, proto uint8) (int, bool) {
	var k flowKey
	var flags uint8
	switch proto {
	case hdr.ProtoTCP:
		if len(ip) < l4+hdr.TCPMin {
			return idx, ok
		}
		flags = ip[l4+13]
	case hdr.ProtoUDP:
		if len(ip) < l4+8 {
			return idx, ok
		}
	default:
		return idx, ok
	}
	k.addr = client.As16()
	k.sport = binary.BigEndian.Uint16(ip[l4 : l4+2])
	k.dport = binary.BigEndian.Uint16(ip[l4+2 : l4+4])
	k.proto = proto
	fin, rst := flags&hdr.TCPFin != 0, flags&hdr.TCPRst != 0
	syn := proto == hdr.ProtoTCP && flags&(hdr.TCPSyn|hdr.TCPAck) == hdr.TCPSyn
	now := tr.now()

	switch id, res := tr.mem.lookup(&k, now, fin, rst, syn); res {
	case flowHit:
		return c.held(v, int(id), idx, ok)
	case flowReleasedR:
		c.flows.Released.Add(1)
		return c.held(v, int(id), idx, ok)
	case flowReleasedSYN:
		c.flows.Released.Add(1) // and remembered anew below
	}
	choice, chOK := idx, ok
	switch {
	case proto == hdr.ProtoTCP && !syn:
		// A connection that predates the bucket's move: its origin.
		if j, live := v.liveIndex(tr.originOf(client, bucket)); live {
			choice, chOK = j, true
		}
	case proto == hdr.ProtoUDP && tr.prev != nil:
		// Learning: a UDP flow not seen yet may predate the change.
		if j, live := v.liveIndex(ownerID(tr.prev, tr.prevServers, client)); live {
			choice, chOK = j, true
		}
	}
	if !chOK {
		return idx, ok
	}
	if rst { // the connection ends: nothing to remember
		return c.held(v, v.Servers[choice].ID, idx, ok)
	}
	id, res := tr.mem.insert(&k, int32(v.Servers[choice].ID), now, fin)
	switch res {
	case flowInserted:
		c.flows.Remembered.Add(1)
	case flowOverflow:
		c.flows.Overflow.Add(1)
		if syn { // keep it consistent with its later packets: see above
			if j, live := v.liveIndex(tr.originOf(client, bucket)); live {
				choice = j
			}
		}
		return c.held(v, v.Servers[choice].ID, idx, ok)
	}
	return c.held(v, int(id), idx, ok)
}

// pickQuoted chooses the server for an ICMP error about a packet the ghost
// sent to client (the quoted packet: ghost:ghostPort -> client:clientPort,
// protocol proto): the server that the client's own packets of that flow
// reach. In the steady state that is pick(client); while a window is open
// the memory is consulted as for the flow's packets, but never changed.
func (c *Cluster) pickQuoted(client netip.Addr, proto uint8, clientPort, ghostPort uint16) (v *View, idx int, mac [6]byte, why stage.Reason) {
	v = c.view.Load()
	if v == nil {
		c.stats.NoServer.Add(1)
		return nil, 0, mac, stage.NoServer
	}
	idx, bucket, ok := v.Selector.Select(client)
	if j, pinned := v.pinned(client); pinned {
		idx, ok = j, true
	} else if tr := v.Trans; tr != nil && (proto == hdr.ProtoTCP || proto == hdr.ProtoUDP) && tr.touches(v, client, bucket) {
		k := flowKey{addr: client.As16(), sport: clientPort, dport: ghostPort, proto: proto}
		var other int
		switch id, hit := tr.mem.peek(&k); {
		case hit:
			other = int(id)
		case proto == hdr.ProtoTCP:
			other = tr.originOf(client, bucket)
		case tr.prev != nil:
			other = ownerID(tr.prev, tr.prevServers, client)
		default:
			other = -1
		}
		if j, live := v.liveIndex(other); live {
			idx, ok = j, true
		}
	}
	if !ok {
		c.stats.NoServer.Add(1)
		return nil, 0, mac, stage.NoServer
	}
	if mac = v.MACs[idx]; mac == ([6]byte{}) {
		c.stats.NoMAC.Add(1)
		return nil, 0, mac, stage.NoMAC
	}
	return v, idx, mac, stage.None
}

// held returns the index of server id if it can take the packet, counting
// it when that is not the current owner; otherwise the current owner.
func (c *Cluster) held(v *View, id int, idx int, ok bool) (int, bool) {
	j, live := v.liveIndex(id)
	if !live {
		return idx, ok
	}
	if !ok || j != idx {
		c.flows.Held.Add(1)
	}
	return j, true
}

// FlowStats returns the cluster's transition-memory counters.
func (c *Cluster) FlowStats() *FlowStats { return &c.flows }
