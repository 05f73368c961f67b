package router

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// refragmenter is the stage that cuts too-big IPv4 fragments in transit
// (refragment).
type refragmenter struct {
	r *Router
	l *Link
}

// Name implements stage.Stage.
func (refragmenter) Name() string { return "refragment" }

// Inbound implements stage.Stage.
func (s refragmenter) Inbound(_ *tap.Endpoint, frame []byte) stage.Verdict {
	return s.r.refragment(s.l, frame)
}

// refragment cuts an IPv4 fragment in transit that is too big for its
// egress link: Consumed when it cut it, Dropped (malformed) when it cannot
// be cut, Pass otherwise. netstack cuts such a
// packet as if it were whole: its pieces' offsets start from 0 and the
// packet's own offset is lost, so the receiver reassembles garbage. Here
// the pieces keep the offset (hdr.Fragment). When the fast path knows the
// next hop, the pieces leave from here with TTL-1, like any fast-path
// packet; otherwise each is handed to netstack, which forwards it as it
// would any packet that fits (and the fast path is asked to learn the next
// hop). A fragment whose data would end past the largest datagram is
// dropped and counted as malformed. Whole packets, packets with DF
// (netstack answers fragmentation needed), packets that fit, and anything
// not plainly in transit pass on untouched. The rare packet cut here costs
// one buffer allocation.
func (r *Router) refragment(l *Link, frame []byte) stage.Verdict {
	if !hdr.IsIPv4(frame) || hdr.IsGroup(frame) {
		return stage.Pass
	}
	ip := hdr.IP4(frame[hdr.EthLen:])
	fw := ip.FlagsFrag()
	if ip.Version() != 4 || fw&0x3fff == 0 || ip.DF() || ip.TTL() <= 1 {
		return stage.Pass // not a fragment, DF set, or the TTL guard's
	}
	hl := ip.HeaderLen()
	tot := ip.TotalLen()
	if hl < hdr.IPv4Min || tot < hl || tot > len(ip) || checksum.Checksum(ip[:hl], 0) != 0xffff {
		return stage.Pass // netstack drops it
	}
	dst, src := ip.Dst(), ip.Src()
	if _, ok := r.local[dst]; ok || !ordinaryDestination(dst) || !ordinarySource(src) {
		return stage.Pass
	}
	out := r.egress(dst)
	if out == nil {
		return stage.Pass // no route: netstack answers
	}
	mtu := int(out.EP.MTU())
	if tot <= mtu {
		return stage.Pass
	}
	buf := make([]byte, hdr.EthLen+mtu)
	emit := func(p []byte) { l.EP.DeliverToStack(buf[:hdr.EthLen+len(p)]) }
	copy(buf[:hdr.EthLen], frame[:hdr.EthLen])
	if h := r.fast.cachedHop(dst); h != nil && h.out == out && !(out == l && r.sendRedirects.Load()) {
		copy(buf[:12], h.eth[:])
		h.used.Store(true)
		hdr.DecTTL(ip)
		emit = func(p []byte) {
			if err := out.EP.WriteFrame(buf[:hdr.EthLen+len(p)]); err != nil {
				r.fast.stats.WriteErrors.Add(1)
			}
		}
	} else if r.fast != nil {
		r.fast.noteMiss(r.fast.table.Load(), dst, src)
	}
	if !hdr.Fragment(ip[:tot], hl, mtu, buf[hdr.EthLen:], emit) {
		r.stats.MalformedDropped.Add(1)
		return stage.Drop(stage.Malformed)
	}
	r.stats.Refragmented.Add(1)
	return stage.Consumed
}

// egress is the link of the longest-prefix IPv4 route to dst, or nil.
func (r *Router) egress(dst [4]byte) *Link {
	fib := *r.fib.Load()
	for i := range fib {
		if fib[i].prefix.Contains(netip.AddrFrom4(dst)) {
			return fib[i].link
		}
	}
	return nil
}

// cachedHop is the fast path's next hop for dst when its snapshot is
// current, or nil.
func (f *fastPath) cachedHop(dst [4]byte) *fastHop {
	if f == nil {
		return nil
	}
	t := f.table.Load()
	if t.fib != f.r.fib.Load() {
		return nil
	}
	return t.hops[dst]
}
