package dispatch

import (
	"encoding/binary"
	"net/netip"

	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
)

// ICMP errors follow their flow. An ICMP error addressed to the ghost is
// about a packet a server sent from the ghost to a client: a router on the
// way could not deliver it (destination unreachable, fragmentation needed,
// time exceeded, parameter problem; ICMPv6 destination unreachable, packet
// too big, time exceeded, parameter problem). Its outer source is that
// router, which hashes to any server; the server that holds the connection
// is the one the client hashes to, and the client is the quoted packet's
// destination. So such an error is dispatched by the quoted destination.
// The quoted header is checked first: it must be a whole IP header of the
// outer packet's family whose source is the ghost itself (an error about a
// packet the cluster never sent is forged or misdelivered). An error that
// fails the check is dropped and counted (ICMPMalformed); anything else
// ICMP (echo requests, ...) is dispatched by its source, like all traffic.
//
// In broadcast mode the appliance does not choose: every server sees the
// error, and the servers' filters agree through conntrack. The filter
// accepts `ct state established,related` for the ghost before anything
// else, and the kernel classifies an ICMP error as related exactly when its
// quoted packet belongs to a connection in that kernel's conntrack table:
// on the server that holds the connection. On every other server the error
// matches no entry, is invalid, not new, and falls to the filter's final
// drop. So the error is accepted by the one server that needs it (which is
// the owner of the client's bucket once a change has settled, and the old
// owner for a connection that survived a change), and nowhere else; the
// end-to-end test shows it with a counting chain behind the filter and
// with the servers' route caches (only the connection's server learns the
// path MTU).

const icmpHdr = 8 // type, code, checksum, 4 bytes of the type's own

// isError4 reports whether ICMPv4 type typ is an error that quotes the
// packet it is about (RFC 792, RFC 1191).
func isError4(typ byte) bool {
	switch typ {
	case 3, 11, 12: // destination unreachable (incl. fragmentation needed), time exceeded, parameter problem
		return true
	}
	return false
}

// isError6 is isError4 for ICMPv6 (RFC 4443): types below 128 are errors;
// 1-4 are the ones defined.
func isError6(typ byte) bool {
	return typ >= 1 && typ <= 4
}

// errorClient4 returns the address to dispatch the IPv4 packet ip (header
// length hl, already validated, exactly its total length) by: the quoted
// destination of an ICMP error, otherwise src. ok is false when ip is an
// ICMP error whose quoted header is malformed (counted, to be dropped).
func (c *Cluster) errorClient4(ip []byte, hl int, src netip.Addr) (client netip.Addr, ok bool) {
	if ip[6]&0x1f != 0 || ip[7] != 0 { // a later fragment: no ICMP header in it
		return src, true
	}
	icmp := ip[hl:]
	if len(icmp) < icmpHdr || !isError4(icmp[0]) {
		return src, true
	}
	q := icmp[icmpHdr:]
	if len(q) < hdr.IPv4Min || q[0]>>4 != 4 {
		c.stats.ICMPMalformed.Add(1)
		return src, false
	}
	qhl := int(q[0]&0x0f) * 4
	if qhl < hdr.IPv4Min || qhl > len(q) || netip.AddrFrom4([4]byte(q[12:16])) != c.Ghost {
		c.stats.ICMPMalformed.Add(1)
		return src, false
	}
	c.stats.ICMPErrors.Add(1)
	return netip.AddrFrom4([4]byte(q[16:20])), true
}

// errorClient6 is errorClient4 for the IPv6 packet ip (exactly its length).
// Only an ICMPv6 header right after the fixed header is looked at: an error
// behind extension headers goes by its source.
func (c *Cluster) errorClient6(ip []byte, src netip.Addr) (client netip.Addr, ok bool) {
	icmp := ip[hdr.IPv6Len:]
	if len(icmp) < icmpHdr || !isError6(icmp[0]) {
		return src, true
	}
	q := icmp[icmpHdr:]
	if len(q) < hdr.IPv6Len || q[0]>>4 != 6 || netip.AddrFrom16([16]byte(q[8:24])) != c.Ghost {
		c.stats.ICMPMalformed.Add(1)
		return src, false
	}
	c.stats.ICMPErrors.Add(1)
	return netip.AddrFrom16([16]byte(q[24:40])), true
}

// pickICMP4 chooses the server for an ICMP packet ip (header length hl,
// exactly its total length) sent to the ghost. An error goes to the server
// that the flow it quotes reaches (transition memory included, see
// pickQuoted); a malformed error is dropped (why BadICMPQuote, counted); anything
// else (echo) goes by its source like any packet without ports.
func (c *Cluster) pickICMP4(ip []byte, hl int) (v *View, idx int, mac [6]byte, why stage.Reason) {
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	client, ok := c.errorClient4(ip, hl, src)
	if !ok {
		return nil, 0, mac, stage.BadICMPQuote
	}
	if ip[6]&0x1f == 0 && ip[7] == 0 && len(ip) >= hl+icmpHdr && isError4(ip[hl]) {
		q := ip[hl+icmpHdr:]
		qhl := int(q[0]&0x0f) * 4 // validated by errorClient4
		if p := q[9]; (p == hdr.ProtoTCP || p == hdr.ProtoUDP) && q[6]&0x1f == 0 && q[7] == 0 && len(q) >= qhl+4 {
			// The quoted packet is ghost:gport -> client:cport.
			return c.pickQuoted(client, p, binary.BigEndian.Uint16(q[qhl+2:]), binary.BigEndian.Uint16(q[qhl:]))
		}
	}
	return c.pickFlow(client, ip, noL4, hdr.ProtoICMP)
}

// pickICMP6 is pickICMP4 for IPv6 (ip exactly its length). Only a quoted
// packet whose transport header follows its fixed header gives ports.
func (c *Cluster) pickICMP6(ip []byte) (v *View, idx int, mac [6]byte, why stage.Reason) {
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	client, ok := c.errorClient6(ip, src)
	if !ok {
		return nil, 0, mac, stage.BadICMPQuote
	}
	if len(ip) >= hdr.IPv6Len+icmpHdr && isError6(ip[hdr.IPv6Len]) {
		q := ip[hdr.IPv6Len+icmpHdr:]
		if p := q[6]; (p == hdr.ProtoTCP || p == hdr.ProtoUDP) && len(q) >= hdr.IPv6Len+4 {
			return c.pickQuoted(client, p, binary.BigEndian.Uint16(q[hdr.IPv6Len+2:]), binary.BigEndian.Uint16(q[hdr.IPv6Len:]))
		}
	}
	return c.pickFlow(client, ip, noL4, hdr.ProtoICMPv6)
}
