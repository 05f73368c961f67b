package tap

import (
	"slices"
	"time"
	"unsafe"

	"github.com/ghostrouter/ghostrouter/router/hdr"
)

// Keeping a response and its FIN together. A web server answers and closes: its host
// sends the response and, a few microseconds later, the FIN. A Linux router forwards
// each in the sender's own softirq, so the FIN reaches the client about as far behind the
// response as it left the server, and the client, woken by the response, nearly always
// finds the FIN already there when it acts: the server closed first and keeps the
// TIME_WAIT. Through a TAP the two meet three hazards, and each has its answer here:
//
//   - In one batch, other connections' frames may sit between them, each written (and
//     received by its host) before the FIN: groupPending writes each flow's frames of a
//     batch one after the other.
//   - A batch cut by a bound may end between them: carryTail hands the batch's last
//     frames that may have a continuation to the next batch, read at once.
//   - The queue may run empty between them, the FIN still on its way through the
//     server's host: hold keeps the batch open up to BatchHold for it.
//
// Holding and carrying delay a frame that has no continuation coming, a keep-alive
// response, so they are a bet, and the queue keeps score: a hold pays when a frame of the
// flow it waited behind arrives within it, and misses when it runs out. While holds pay
// (a workload of answers followed by closes) the queue holds and carries; once they miss
// (keep-alive) it stops, and tries one hold in every holdSample eligible batch ends to
// notice a change. Grouping is no bet: it reorders only frames of different flows, as a
// router spreading flows over CPUs does; a flow's frames never change order.
const (
	// BatchHold bounds how long a batch is held open for frames that have not arrived
	// (all holds of one batch together; BatchDelay bounds the batch as a whole). A
	// server's FIN follows its response into the appliance's queue by 5-8 µs (median,
	// 90th percentile; 20-30 µs at the 99th) in the benchmark's topology under load
	// (a capture on the LAN bridge).
	BatchHold = 20 * time.Microsecond

	holdInitial = 16 // a queue starts out holding, until holds have missed this many times more than paid
	holdPay     = 4  // score gained by a hold that paid
	holdMax     = 64 // score ceiling
	holdSample  = 64 // while the score is 0, one eligible batch end in this many holds

	carryWindow = 16   // carryTail looks at a cut batch's last frames only
	carryMaxLen = 2048 // frame bytes: holds and carries are for small frames, never super-frames
)

// hold is called when the queue is empty and the batch has frames: it reports whether to
// keep reading (the batch held open) rather than handle the batch now.
func (q *rxQueue) hold() bool {
	now := time.Now()
	if q.holding {
		if now.Before(q.holdEnd) {
			return true
		}
		q.missed()
		return false
	}
	if !q.holdEnd.IsZero() && !now.Before(q.holdEnd) {
		return false // this batch has had its holds
	}
	f := q.frameAt(q.spans[q.n-1])
	if len(f) > carryMaxLen || !tcpDataOnly(f) {
		return false
	}
	if q.score == 0 {
		if q.sample++; q.sample%holdSample != 0 {
			return false
		}
	}
	if q.holdEnd.IsZero() {
		q.holdEnd = now.Add(q.ep.holdTime)
	}
	q.holding, q.holdFlow = true, flowHash(f)
	q.ep.stats.Holds.Add(1)
	return true
}

// missed ends a hold that ran out.
func (q *rxQueue) missed() {
	q.holding = false
	q.score = max(q.score-1, 0)
	q.ep.stats.HoldsMissed.Add(1)
}

// arrived is called with a frame read while the batch was held open: the hold ends, and
// it paid if the frame is of the flow it waited behind.
func (q *rxQueue) arrived(f []byte) {
	q.holding = false
	if f != nil && flowHash(f) == q.holdFlow {
		q.score = min(q.score+holdPay, holdMax)
		q.ep.stats.HoldsPaid.Add(1)
	}
}

// carryTail moves the carry-over candidates of a batch cut by a bound out of it, into
// q.carry: among its last carryWindow frames (never one carried over already), each small
// TCP segment with data, without FIN or RST, that is the last frame of its flow in the
// batch. The next batch, read at once, handles them first. A later frame of the same
// flow is within the window too, so each frame of the window is hashed once.
func (q *rxQueue) carryTail() {
	from := max(q.n-carryWindow, q.ncarried)
	var flows [carryWindow]uint64
	for i := from; i < q.n; i++ {
		flows[i-from] = flowHash(q.frameAt(q.spans[i]))
	}
	kept := 0
	q.ncarry = 0
	for i := range q.n {
		s := q.spans[i]
		if i >= from && s.n-q.ep.vnet <= carryMaxLen && tcpDataOnly(q.frameAt(s)) && !slices.Contains(flows[i-from+1:q.n-from], flows[i-from]) {
			q.carry[q.ncarry] = s
			q.ncarry++
			continue
		}
		q.spans[kept] = s
		kept++
	}
	if q.ncarry > 0 {
		q.ep.stats.RxCarried.Add(uint64(q.ncarry))
	}
	q.n = kept
}

// takeCarried starts a batch with the frames the last one carried over, moved to the
// front of the buffer in their order (each moves towards the front, never over one not
// yet moved).
func (q *rxQueue) takeCarried() {
	q.ncarried = q.ncarry
	if q.ncarry == 0 {
		return
	}
	for i := range q.ncarry {
		s := q.carry[i]
		copy(q.buf[q.fill:], q.buf[s.off:s.off+s.n])
		q.spans[i] = span{off: q.fill, n: s.n}
		q.fill += (s.n + batchAlign - 1) &^ (batchAlign - 1)
	}
	q.n = q.ncarry
	q.ncarry = 0
	q.start = time.Now()
}

// tcpDataOnly reports whether f is an IPv4 or IPv6 TCP segment (not a fragment, no IPv6
// extension header) that carries data, without FIN or RST.
func tcpDataOnly(f []byte) bool {
	var l4 []byte
	switch {
	case hdr.IsIPv4(f):
		ip := hdr.IP4(f[hdr.EthLen:])
		hl, tot := ip.HeaderLen(), ip.TotalLen()
		if ip.Protocol() != hdr.ProtoTCP || ip.FragOffset() != 0 || ip.MF() || hl < hdr.IPv4Min ||
			tot > len(f)-hdr.EthLen || tot < hl {
			return false
		}
		l4 = f[hdr.EthLen+hl : hdr.EthLen+tot]
	case hdr.IsIPv6(f):
		ip := hdr.IP6(f[hdr.EthLen:])
		pl := ip.PayloadLen()
		if ip.NextHeader() != hdr.ProtoTCP || pl > len(f)-hdr.EthLen-hdr.IPv6Len {
			return false
		}
		l4 = f[hdr.EthLen+hdr.IPv6Len : hdr.EthLen+hdr.IPv6Len+pl]
	default:
		return false
	}
	if len(l4) < hdr.TCPMin {
		return false
	}
	off := int(l4[12]>>4) * 4
	return off >= hdr.TCPMin && len(l4) > off && l4[13]&(hdr.TCPFin|hdr.TCPRst) == 0
}

// groupPending reorders the held writes, stably, so that the writes to one egress queue
// are consecutive and, within them, the frames of one flow are: each group keeps the
// place of its first frame, and frames keep their order within their flow. So a response
// and the FIN behind it, read in one batch with other connections' frames between them,
// are written one right after the other: the client the response wakes finds the FIN
// already delivered, as when a Linux router forwards each in its sender's softirq.
// Frames of different flows may leave in another order than they came, as through a
// router that spreads flows over CPUs; a flow's own frames never do.
func (q *rxQueue) groupPending() {
	n := q.npend
	for i := range n {
		p := &q.pending[i]
		q.keys[i] = flowKey{egress: uintptr(unsafe.Pointer(p.ep)) + uintptr(p.qi%len(p.ep.files)), flow: flowHash(p.b[len(p.b)-p.frameLen:])}
		q.placed[i] = false
	}
	out := 0
	for i := range n {
		if q.placed[i] {
			continue
		}
		// Every write to this egress, flow by flow, in order of first appearance.
		eg := q.keys[i].egress
		for j := i; j < n; j++ {
			if q.placed[j] || q.keys[j].egress != eg {
				continue
			}
			fl := q.keys[j].flow
			for k := j; k < n; k++ {
				if !q.placed[k] && q.keys[k].egress == eg && q.keys[k].flow == fl {
					q.placed[k] = true
					q.order[out] = uint8(k)
					out++
				}
			}
		}
	}
	for i := range n {
		q.sorted[i] = q.pending[q.order[i]]
	}
	copy(q.pending[:n], q.sorted[:n])
	clear(q.sorted[:n])
}

// flowKey is what groupPending groups a held write by.
type flowKey struct {
	egress uintptr // the endpoint and its queue
	flow   uint64  // flowHash of the frame
}

// flowHash hashes what names an IP frame's flow: the addresses, the protocol and, for TCP
// and UDP (not a fragment), the ports. Every other frame hashes to 0: one flow. Two flows
// with one hash are grouped as one, which only keeps them in their arrival order.
func flowHash(f []byte) uint64 {
	if len(f) < hdr.EthLen {
		return 0
	}
	const prime = 0x100000001b3
	h := uint64(0xcbf29ce484222325)
	mix := func(b []byte) {
		for _, c := range b {
			h = (h ^ uint64(c)) * prime
		}
	}
	var l4 []byte
	var proto uint8
	switch {
	case hdr.IsIPv4(f):
		ip := hdr.IP4(f[hdr.EthLen:])
		hl := ip.HeaderLen()
		proto = ip.Protocol()
		mix(f[hdr.EthLen+12 : hdr.EthLen+20])
		if ip.FragOffset() == 0 && !ip.MF() && hl >= hdr.IPv4Min && len(f) >= hdr.EthLen+hl+4 {
			l4 = f[hdr.EthLen+hl:]
		}
	case hdr.IsIPv6(f):
		ip := hdr.IP6(f[hdr.EthLen:])
		proto = ip.NextHeader()
		mix(f[hdr.EthLen+8 : hdr.EthLen+40])
		if len(f) >= hdr.EthLen+hdr.IPv6Len+4 {
			l4 = f[hdr.EthLen+hdr.IPv6Len:]
		}
	default:
		return 0
	}
	h = (h ^ uint64(proto)) * prime
	if l4 != nil && (proto == hdr.ProtoTCP || proto == hdr.ProtoUDP) {
		mix(l4[:4])
	}
	return h | 1
}
