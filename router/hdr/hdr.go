// Package hdr owns the in-place IPv4 header edits that the datapath's fast
// stages share (the dispatcher and the forwarding fast path), so that both
// change a header bit for bit alike, and alike with the Linux kernel.
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
