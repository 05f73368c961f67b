package neigh

import (
	"encoding/binary"
	"net/netip"

	"github.com/ghostrouter/ghostrouter/router/hdr"
)

// Frame layout constants.
const (
	arpLen     = hdr.ARPLen
	nsLen      = 24 + 8 // ICMPv6 neighbor solicitation with a source link-layer address option
	arpRequest = 1
	arpReply   = 2
	icmp6NS    = 135
	icmp6NA    = 136
	optSLLA    = 1 // NDP source link-layer address option
	optTLLA    = 2 // NDP target link-layer address option
	naSolicit  = 0x40
	// FrameSize is the largest frame AppendRequest builds.
	FrameSize = hdr.EthLen + hdr.IPv6Len + nsLen
)

// broadcastMAC is the Ethernet broadcast address.
var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Unicast reports whether mac can name one host: not zero, and neither
// multicast nor broadcast (the group bit of the first octet clear). A server's
// MAC must be unicast; nothing else is ever learned or pinned.
func Unicast(mac [6]byte) bool {
	return mac[0]&1 == 0 && mac != [6]byte{}
}

// AppendRequest builds into dst (FrameSize bytes of capacity) the appliance's
// request for target's MAC, from srcMAC and the appliance's address src on
// the link (of target's family): an ARP request (IPv4) or an NDP neighbor
// solicitation with the source link-layer address option (IPv6, RFC 4861
// 4.3, hop limit 255). With to the zero MAC or broadcast it is a broadcast
// (ARP) or sent to the solicited-node multicast group (NDP); otherwise it is
// a unicast probe to that MAC, which only the host holding it receives. It
// returns nil when src and target differ in family.
func AppendRequest(dst []byte, srcMAC [6]byte, src, target netip.Addr, to [6]byte) []byte {
	if src.Is4() != target.Is4() || !src.IsValid() || !target.IsValid() {
		return nil
	}
	bcast := to == [6]byte{} || to == broadcastMAC
	if target.Is4() {
		f := dst[:60] // the Ethernet minimum, padded
		clear(f)
		if bcast {
			copy(f[0:6], broadcastMAC[:])
		} else {
			copy(f[0:6], to[:])
		}
		copy(f[6:12], srcMAC[:])
		f[12], f[13] = 0x08, 0x06
		p := f[hdr.EthLen:]
		p[0], p[1], p[2], p[3], p[4], p[5] = 0, 1, 0x08, 0, 6, 4
		p[6], p[7] = 0, arpRequest
		copy(p[8:14], srcMAC[:])
		s4, t4 := src.As4(), target.As4()
		copy(p[14:18], s4[:])
		copy(p[24:28], t4[:])
		return f
	}
	t16, s16 := target.As16(), src.As16()
	f := dst[:FrameSize]
	clear(f)
	var ipDst [16]byte
	if bcast {
		// Solicited-node multicast ff02::1:ffXX:XXXX and its MAC 33:33:ff:XX:XX:XX.
		ipDst = [16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff, 13: t16[13], 14: t16[14], 15: t16[15]}
		copy(f[0:6], []byte{0x33, 0x33, 0xff, t16[13], t16[14], t16[15]})
	} else {
		ipDst = t16
		copy(f[0:6], to[:])
	}
	copy(f[6:12], srcMAC[:])
	f[12], f[13] = 0x86, 0xdd
	ip := f[hdr.EthLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], nsLen)
	ip[6], ip[7] = 58, 255
	copy(ip[8:24], s16[:])
	copy(ip[24:40], ipDst[:])
	m := ip[hdr.IPv6Len:]
	m[0] = icmp6NS
	copy(m[8:24], t16[:])
	m[24], m[25] = optSLLA, 1
	copy(m[26:32], srcMAC[:])
	binary.BigEndian.PutUint16(m[2:4], icmp6Checksum(s16, ipDst, m))
	return f
}

// icmp6Checksum is the ICMPv6 checksum of msg (its checksum field zero or
// not: the field is skipped) with the IPv6 pseudo-header (RFC 8200 8.1).
func icmp6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint64
	for i := 0; i < 16; i += 2 {
		sum += uint64(binary.BigEndian.Uint16(src[i:])) + uint64(binary.BigEndian.Uint16(dst[i:]))
	}
	sum += uint64(len(msg)) + 58
	for i := 0; i+1 < len(msg); i += 2 {
		if i == 2 {
			continue
		}
		sum += uint64(binary.BigEndian.Uint16(msg[i:]))
	}
	if len(msg)%2 == 1 {
		sum += uint64(msg[len(msg)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Kinds of neighbor message a frame can be.
const (
	KindARPRequest    = "arp request"
	KindARPReply      = "arp reply"
	KindARPGratuitous = "gratuitous arp"
	KindNS            = "neighbor solicitation"
	KindNA            = "neighbor advertisement"
)

// Message is what one received ARP or NDP frame says about a neighbor: that
// Addr is at MAC. Reply is set for an answer addressed to the receiver (an
// ARP reply or a solicited neighbor advertisement, unicast to its MAC): only
// such an answer, to an outstanding request, can teach the resolver a MAC.
type Message struct {
	Kind  string
	Addr  netip.Addr // the address whose MAC the frame states
	MAC   [6]byte    // the MAC it states for Addr
	Reply bool       // an answer unicast to the receiver
	// To is the receiver address the frame is for: an ARP's target
	// protocol address, an IPv6 destination. Invalid when not applicable.
	To netip.Addr
}

// Parse reads an ARP or NDP frame (Ethernet header included) received by the
// host whose MAC is self. ok is false for anything else, a malformed frame,
// or one that states no MAC: an NDP frame needs hop limit 255, code 0, a
// valid checksum and well-formed options (RFC 4861 7.1.1, 7.1.2); an NS with
// no source link-layer option, or from the unspecified address (duplicate
// address detection), states nothing. A solicited advertisement without a
// target link-layer option (the answer to a unicast solicitation) states the
// Ethernet source. It does not allocate.
func Parse(frame []byte, self [6]byte) (m Message, ok bool) {
	if len(frame) < hdr.EthLen {
		return m, false
	}
	toSelf := [6]byte(frame[0:6]) == self
	switch {
	case hdr.EtherType(frame) == hdr.EtherARP:
		if len(frame) < hdr.EthLen+arpLen {
			return m, false
		}
		p := frame[hdr.EthLen:]
		if p[0] != 0 || p[1] != 1 || p[2] != 0x08 || p[3] != 0 || p[4] != 6 || p[5] != 4 {
			return m, false
		}
		op := binary.BigEndian.Uint16(p[6:8])
		m.Addr = netip.AddrFrom4([4]byte(p[14:18]))
		m.To = netip.AddrFrom4([4]byte(p[24:28]))
		m.MAC = [6]byte(p[8:14])
		switch {
		case m.Addr == m.To:
			m.Kind = KindARPGratuitous
		case op == arpReply:
			m.Kind = KindARPReply
			m.Reply = toSelf && [6]byte(p[18:24]) == self
		case op == arpRequest:
			m.Kind = KindARPRequest
		default:
			return m, false
		}
		return m, true
	case hdr.EtherType(frame) == hdr.EtherIPv6:
		return parseNDP(frame, toSelf)
	}
	return m, false
}

func parseNDP(frame []byte, toSelf bool) (m Message, ok bool) {
	if len(frame) < hdr.EthLen+hdr.IPv6Len+24 {
		return m, false
	}
	ip := frame[hdr.EthLen:]
	if ip[0]>>4 != 6 || ip[6] != 58 || ip[7] != 255 {
		return m, false
	}
	pl := int(binary.BigEndian.Uint16(ip[4:6]))
	if pl < 24 || hdr.IPv6Len+pl > len(ip) {
		return m, false
	}
	msg := ip[hdr.IPv6Len : hdr.IPv6Len+pl]
	if msg[0] != icmp6NS && msg[0] != icmp6NA || msg[1] != 0 {
		return m, false
	}
	src, dst := [16]byte(ip[8:24]), [16]byte(ip[24:40])
	if binary.BigEndian.Uint16(msg[2:4]) != icmp6Checksum(src, dst, msg) {
		return m, false
	}
	target := netip.AddrFrom16([16]byte(msg[8:24]))
	if target.IsMulticast() {
		return m, false
	}
	var lla [6]byte
	want := byte(optSLLA)
	if msg[0] == icmp6NA {
		want = optTLLA
	}
	found := false
	for o := msg[24:]; len(o) > 0; {
		if len(o) < 8 || o[1] == 0 || int(o[1])*8 > len(o) {
			return m, false
		}
		if o[0] == want && o[1] == 1 {
			lla, found = [6]byte(o[2:8]), true
		}
		o = o[int(o[1])*8:]
	}
	m.To = netip.AddrFrom16(dst)
	if msg[0] == icmp6NS {
		s := netip.AddrFrom16(src)
		if !found || s.IsUnspecified() {
			return m, false
		}
		m.Kind, m.Addr, m.MAC = KindNS, s, lla
		return m, true
	}
	m.Kind, m.Addr = KindNA, target
	m.Reply = toSelf && msg[4]&naSolicit != 0
	switch {
	case found:
		m.MAC = lla
	case m.Reply:
		m.MAC = [6]byte(frame[6:12])
	default:
		return m, false
	}
	return m, true
}
