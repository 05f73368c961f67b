// Package icmp owns the appliance's ICMP policy: which ICMP errors the
// datapath generates itself (time exceeded for IPv4 packets that arrive with
// TTL <= 1, which netstack would otherwise forward with TTL 0), how they are
// built, how fast they may be sent, and when an ICMP redirect may be sent.
//
// Cluster traffic never draws a redirect. Ordinary traffic may draw an
// RFC 1812 host redirect only when the operator turns send_redirects on.
package icmp

import (
	"encoding/binary"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Types and codes the appliance sends (RFC 792).
const (
	TypeDestUnreachable = 3
	TypeRedirect        = 5
	TypeTimeExceeded    = 11

	CodeTTLExceeded  = 0 // time exceeded: TTL exceeded in transit
	CodeRedirectHost = 1 // redirect datagrams for the host
	CodeFragNeeded   = 4 // destination unreachable: fragmentation needed and DF set (RFC 1191)
)

// MTUWord is the second word of a fragmentation needed (RFC 1191: the
// next-hop MTU in its low 16 bits) or packet too big (RFC 4443: the MTU)
// message.
func MTUWord(mtu uint32) [4]byte {
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], mtu)
	if mtu > 0xffff {
		w = [4]byte{0, 0, 0xff, 0xff}
	}
	return w
}

// maxQuote bounds the ICMP error datagram as RFC 1812 4.3.2.3 asks: the
// error "SHOULD contain as much of the original datagram as possible without
// the length of the ICMP datagram exceeding 576 bytes".
const maxQuote = 576 - header.IPv4MinimumSize - header.ICMPv4MinimumSize

// MaxErrorFrame is the largest frame AppendError4 builds.
const MaxErrorFrame = header.EthernetMinimumSize + 576

// AppendError4 builds into dst (which needs MaxErrorFrame bytes of capacity)
// an Ethernet frame carrying an ICMPv4 error about the IPv4 packet in frame
// (an Ethernet frame as received), sent back to the frame's source MAC from
// srcMAC/srcIP. rest is the ICMP header's second word (the gateway address
// for a redirect, zero otherwise). It returns the frame, or nil if frame does
// not hold an IPv4 packet that may draw an error (RFC 1812 4.3.2.7: never
// about an ICMP error, a non-initial fragment, or a packet to or from a
// broadcast or multicast address).
func AppendError4(dst, frame []byte, srcMAC [6]byte, srcIP [4]byte, typ, code uint8, rest [4]byte) []byte {
	if len(frame) < header.EthernetMinimumSize+header.IPv4MinimumSize {
		return nil
	}
	ip := header.IPv4(frame[header.EthernetMinimumSize:])
	hl := int(ip.HeaderLength())
	if hl < header.IPv4MinimumSize || hl > len(ip) {
		return nil
	}
	if ip.FragmentOffset() != 0 {
		return nil
	}
	s, d := ip.SourceAddressSlice(), ip.DestinationAddressSlice()
	if s[0] >= 224 || d[0] >= 224 || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0) {
		return nil
	}
	if frame[0]&1 != 0 { // arrived as link-layer broadcast or multicast
		return nil
	}
	if ip.Protocol() == uint8(header.ICMPv4ProtocolNumber) && len(ip) >= hl+1 {
		switch ip[hl] { // ICMP type of the offending packet
		case 0, 8, 13, 14, 15, 16, 17, 18: // queries and replies may draw errors
		default:
			return nil
		}
	}
	tot := int(ip.TotalLength())
	if tot > len(ip) || tot < hl {
		tot = len(ip)
	}
	quote := tot
	if quote > maxQuote {
		quote = maxQuote
	}
	n := header.EthernetMinimumSize + header.IPv4MinimumSize + header.ICMPv4MinimumSize + quote
	if cap(dst) < n {
		return nil
	}
	out := dst[:n]
	copy(out[0:6], frame[6:12])
	copy(out[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(out[12:14], uint16(header.IPv4ProtocolNumber))
	oip := header.IPv4(out[header.EthernetMinimumSize:])
	oip[0] = 0x45
	oip[1] = 0xc0 // precedence "internetwork control", as Linux sends ICMP errors
	binary.BigEndian.PutUint16(oip[2:], uint16(n-header.EthernetMinimumSize))
	binary.BigEndian.PutUint16(oip[4:], 0)
	binary.BigEndian.PutUint16(oip[6:], 0)
	oip[8] = 64
	oip[9] = uint8(header.ICMPv4ProtocolNumber)
	oip[10], oip[11] = 0, 0
	copy(oip[12:16], srcIP[:])
	copy(oip[16:20], s)
	oip.SetChecksum(^oip.CalculateChecksum())
	ic := out[header.EthernetMinimumSize+header.IPv4MinimumSize:]
	ic[0], ic[1], ic[2], ic[3] = typ, code, 0, 0
	copy(ic[4:8], rest[:])
	copy(ic[8:], ip[:quote])
	binary.BigEndian.PutUint16(ic[2:], ^checksum.Checksum(ic, 0))
	return out
}

// Limiter is a token bucket for ICMP errors the datapath generates: at most
// Burst at once, refilled at Rate per second. The zero value allows nothing;
// use NewLimiter. It is safe for concurrent use and does not allocate.
type Limiter struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	rate   float64
	burst  float64
}

// NewLimiter returns a limiter allowing rate errors per second with bursts
// of burst.
func NewLimiter(rate float64, burst int) *Limiter {
	return &Limiter{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// Allow reports whether one more error may be sent now.
func (l *Limiter) Allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens += now.Sub(l.last).Seconds() * l.rate
		if l.tokens > l.burst {
			l.tokens = l.burst
		}
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// ICMPv6 types the appliance sends (RFC 4443).
const (
	Type6PacketTooBig = 2 // RFC 4443 3.2; the MTU goes in the second word
	Type6TimeExceeded = 3
	Code6HopLimit     = 0 // hop limit exceeded in transit
)

// maxQuote6 keeps an ICMPv6 error within the IPv6 minimum MTU, as RFC 4443
// 2.4 (c) asks: "as much of invoking packet as possible without the ICMPv6
// packet exceeding the minimum IPv6 MTU".
const maxQuote6 = 1280 - header.IPv6MinimumSize - header.ICMPv6MinimumSize

// MaxErrorFrame6 is the largest frame AppendError6 builds.
const MaxErrorFrame6 = header.EthernetMinimumSize + 1280

// AppendError6 builds into dst (which needs MaxErrorFrame6 bytes of
// capacity) an Ethernet frame carrying an ICMPv6 error about the IPv6 packet
// in frame, sent back to the frame's source MAC from srcMAC/srcIP. It returns
// nil if the packet may not draw an error (RFC 4443 2.4 (e): not about an
// ICMPv6 error, nor about a packet from an unspecified or multicast source).
// rest is the ICMPv6 header's second word (the MTU of a packet too big
// message, RFC 4443 3.2; zero otherwise).
func AppendError6(dst, frame []byte, srcMAC [6]byte, srcIP [16]byte, typ, code uint8, rest [4]byte) []byte {
	if len(frame) < header.EthernetMinimumSize+header.IPv6MinimumSize || frame[0]&1 != 0 {
		return nil
	}
	ip := frame[header.EthernetMinimumSize:]
	if ip[0]>>4 != 6 {
		return nil
	}
	src := [16]byte(ip[8:24])
	if src[0] == 0xff || src == ([16]byte{}) {
		return nil
	}
	if ip[6] == uint8(header.ICMPv6ProtocolNumber) && len(ip) > header.IPv6MinimumSize && ip[header.IPv6MinimumSize] < 128 {
		return nil // an ICMPv6 error (types below 128) never draws another
	}
	tot := header.IPv6MinimumSize + int(binary.BigEndian.Uint16(ip[4:6]))
	if tot > len(ip) {
		tot = len(ip)
	}
	quote := min(tot, maxQuote6)
	mlen := header.ICMPv6MinimumSize + quote
	n := header.EthernetMinimumSize + header.IPv6MinimumSize + mlen
	if cap(dst) < n {
		return nil
	}
	out := dst[:n]
	copy(out[0:6], frame[6:12])
	copy(out[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(out[12:14], uint16(header.IPv6ProtocolNumber))
	oip := out[header.EthernetMinimumSize:]
	oip[0], oip[1], oip[2], oip[3] = 0x60, 0, 0, 0
	binary.BigEndian.PutUint16(oip[4:6], uint16(mlen))
	oip[6] = uint8(header.ICMPv6ProtocolNumber)
	oip[7] = 64
	copy(oip[8:24], srcIP[:])
	copy(oip[24:40], src[:])
	ic := oip[header.IPv6MinimumSize:]
	ic[0], ic[1], ic[2], ic[3] = typ, code, 0, 0
	copy(ic[4:8], rest[:])
	copy(ic[8:], ip[:quote])
	// The checksum covers a pseudo-header: source, destination, upper-layer
	// length and next header (RFC 8200 8.1).
	sum := checksum.Checksum(oip[8:40], 0)
	sum = checksum.Combine(sum, uint16(mlen>>16))
	sum = checksum.Combine(sum, uint16(mlen))
	sum = checksum.Combine(sum, uint16(header.ICMPv6ProtocolNumber))
	sum = checksum.Checksum(ic, sum)
	binary.BigEndian.PutUint16(ic[2:4], ^sum)
	return out
}
