package router

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/router/hdr"
)

// refragment cuts an IPv4 fragment in transit that is too big for its
// egress link, and reports whether it took the frame. netstack cuts such a
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
func (r *Router) refragment(l *Link, frame []byte) bool {
	if len(frame) < ethLen+ipv4Min || frame[12] != 0x08 || frame[13] != 0x00 || frame[0]&1 != 0 {
		return false
	}
	ip := frame[ethLen:]
	fw := binary.BigEndian.Uint16(ip[6:8])
	if ip[0]>>4 != 4 || fw&0x3fff == 0 || fw&0x4000 != 0 || ip[8] <= 1 {
		return false // not a fragment, DF set, or the TTL guard's
	}
	hl := int(ip[0]&0x0f) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:4]))
	if hl < ipv4Min || tot < hl || tot > len(ip) || checksum.Checksum(ip[:hl], 0) != 0xffff {
		return false // netstack drops it
	}
	dst := [4]byte(ip[16:20])
	src := [4]byte(ip[12:16])
	if _, ok := r.local[dst]; ok || !ordinaryDestination(dst) || !ordinarySource(src) {
		return false
	}
	out := r.egress(dst)
	if out == nil {
		return false // no route: netstack answers
	}
	mtu := int(out.EP.MTU())
	if tot <= mtu {
		return false
	}
	buf := make([]byte, ethLen+mtu)
	emit := func(p []byte) { l.EP.DeliverToStack(buf[:ethLen+len(p)]) }
	copy(buf[:ethLen], frame[:ethLen])
	if h := r.fast.cachedHop(dst); h != nil && h.out == out && !(out == l && r.sendRedirects.Load()) {
		copy(buf[:12], h.eth[:])
		h.used.Store(true)
		hdr.DecTTL(ip)
		emit = func(p []byte) {
			if err := out.EP.WriteFrame(buf[:ethLen+len(p)]); err != nil {
				r.fast.stats.WriteErrors.Add(1)
			}
		}
	} else if r.fast != nil {
		r.fast.noteMiss(r.fast.table.Load(), dst, [4]byte(ip[12:16]))
	}
	if !hdr.Fragment(ip[:tot], hl, mtu, buf[ethLen:], emit) {
		r.stats.MalformedDropped.Add(1)
		return true
	}
	r.stats.Refragmented.Add(1)
	return true
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
