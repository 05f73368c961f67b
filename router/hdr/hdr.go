// Package hdr is the datapath's one view of packet headers: the header
// sizes and named, allocation-free accessors for the Ethernet, IPv4 and IPv6
// fields every stage reads (view.go; checked against gVisor's header
// package), so no stage spells a header offset itself. It also owns the
// in-place IPv4 header edits and the header checks that the fast stages
// share (the dispatcher and the forwarding fast path), so that both change a
// header bit for bit alike, and alike with the Linux kernel, and judge a
// packet's size alike, and IPv4 fragmentation (frag.go).
package hdr

import "encoding/binary"

// DecTTL decrements the TTL of the IPv4 header ip (TTL > 0) and updates its
// checksum incrementally (RFC 1141), bit for bit as Linux's ip_decrease_ttl:
// the TTL is the high byte of the 16-bit word at offset 8, so the checksum
// grows by 0x0100 with an end-around carry.
func DecTTL(ip []byte) {
	ip[8]--
	sum := uint32(binary.BigEndian.Uint16(ip[10:12])) + 0x0100
	if sum >= 0xffff {
		sum++
	}
	binary.BigEndian.PutUint16(ip[10:12], uint16(sum))
}

// Exceeds reports whether the IP packet ip (header length hl, total length
// tot, next protocol proto) is too big for a link of this MTU: a plain packet
// (seg 0) by its length; a TCP super-frame by the segments of seg bytes it is
// to be cut into, each of which must fit (a super-frame whose TCP header does
// not follow the IP header counts as too big). A packet no longer than the
// MTU never exceeds it, so a caller may skip the segment size lookup then.
func Exceeds(ip []byte, hl, tot int, proto uint8, seg int, mtu uint32) bool {
	if seg == 0 {
		return tot > int(mtu)
	}
	const tcpMin = 20
	if proto != 6 || len(ip) < hl+tcpMin {
		return true
	}
	return hl+int(ip[hl+12]>>4)*4+seg > int(mtu)
}
