package vrrp

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/router/hdr"
)

// Frame building and the few header checks of the datapath stage. Every
// function here appends to a caller's buffer and allocates nothing.

const (
	arpLen = header.ARPSize
	naLen  = header.ICMPv6NeighborAdvertMinimumSize + 8 // with a target link-layer address option
)

// Group4 and Group6 are the VRRP multicast groups, 224.0.0.18 and ff02::12.
func Group4() netip.Addr { return netip.AddrFrom4([4]byte{224, 0, 0, 18}) }

// Group6 is ff02::12.
func Group6() netip.Addr {
	return netip.AddrFrom16([16]byte{0xff, 0x02, 15: 0x12})
}

// allNodes is ff02::1.
func allNodes() netip.Addr { return netip.AddrFrom16([16]byte{0xff, 0x02, 15: 0x01}) }

// VirtualMAC is the virtual router MAC of vrid: 00:00:5e:00:01:VRID for
// IPv4, 00:00:5e:00:02:VRID for IPv6 (RFC 5798 section 7.3).
func VirtualMAC(vrid uint8, v6 bool) [6]byte {
	if v6 {
		return [6]byte{0, 0, 0x5e, 0, 2, vrid}
	}
	return [6]byte{0, 0, 0x5e, 0, 1, vrid}
}

// multicastMAC is the Ethernet group address of an IP multicast address.
func multicastMAC(a netip.Addr) [6]byte {
	if a.Is4() {
		b := a.As4()
		return [6]byte{0x01, 0x00, 0x5e, b[1] & 0x7f, b[2], b[3]}
	}
	b := a.As16()
	return [6]byte{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

func appendEth(b []byte, dst, src [6]byte, typ uint16) []byte {
	b = append(b, dst[:]...)
	b = append(b, src[:]...)
	return binary.BigEndian.AppendUint16(b, typ)
}

// appendIP appends an IPv4 or IPv6 header for a payload of n bytes of
// protocol proto with TTL / hop limit 255.
func appendIP(b []byte, src, dst netip.Addr, proto uint8, n int, id uint16) []byte {
	start := len(b)
	if src.Is4() {
		b = append(b, make([]byte, hdr.IPv4Min)...)[:start+hdr.IPv4Min]
		ip := header.IPv4(b[start:])
		ip.Encode(&header.IPv4Fields{
			TOS:         0xc0, // internetwork control
			TotalLength: uint16(hdr.IPv4Min + n),
			ID:          id,
			TTL:         TTL,
			Protocol:    proto,
			SrcAddr:     tcpip.AddrFrom4(src.As4()),
			DstAddr:     tcpip.AddrFrom4(dst.As4()),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		return b
	}
	b = append(b, make([]byte, hdr.IPv6Len)...)[:start+hdr.IPv6Len]
	header.IPv6(b[start:]).Encode(&header.IPv6Fields{
		TrafficClass:      0xc0,
		PayloadLength:     uint16(n),
		TransportProtocol: tcpip.TransportProtocolNumber(proto),
		HopLimit:          TTL,
		SrcAddr:           tcpip.AddrFrom16(src.As16()),
		DstAddr:           tcpip.AddrFrom16(dst.As16()),
	})
	return b
}

// appendARP appends an Ethernet ARP frame.
func appendARP(b []byte, ethDst, ethSrc [6]byte, op uint16, sha [6]byte, spa [4]byte, tha [6]byte, tpa [4]byte) []byte {
	b = appendEth(b, ethDst, ethSrc, uint16(header.ARPProtocolNumber))
	b = append(b, 0, 1, 0x08, 0x00, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha[:]...)
	b = append(b, spa[:]...)
	b = append(b, tha[:]...)
	return append(b, tpa[:]...)
}

// appendNA appends a neighbor advertisement for target with the virtual MAC
// as its target link-layer address, from src to dst (ethernet dst ethDst).
func appendNA(b []byte, ethDst, vmac [6]byte, src, dst, target netip.Addr, solicited bool) []byte {
	b = appendEth(b, ethDst, vmac, uint16(header.IPv6ProtocolNumber))
	b = appendIP(b, src, dst, uint8(header.ICMPv6ProtocolNumber), naLen, 0)
	start := len(b)
	flags := byte(0xa0) // router, override
	if solicited {
		flags |= 0x40
	}
	b = append(b, byte(header.ICMPv6NeighborAdvert), 0, 0, 0, flags, 0, 0, 0)
	t := target.As16()
	b = append(b, t[:]...)
	b = append(b, 2, 1) // target link-layer address, 8 bytes
	b = append(b, vmac[:]...)
	icmp := header.ICMPv6(b[start:])
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp,
		Src:    tcpip.AddrFrom16(src.As16()),
		Dst:    tcpip.AddrFrom16(dst.As16()),
	}))
	return b
}

// ipv4Valid checks an IPv4 header in ip: version, length, checksum, and no
// fragmentation. It returns the payload.
func ipv4Payload(ip []byte) ([]byte, bool) {
	if len(ip) < hdr.IPv4Min || ip[0]>>4 != 4 {
		return nil, false
	}
	ihl := int(ip[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ihl < hdr.IPv4Min || total < ihl || total > len(ip) {
		return nil, false
	}
	if checksum.Checksum(ip[:ihl], 0) != 0xffff {
		return nil, false
	}
	if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 { // MF or an offset
		return nil, false
	}
	return ip[ihl:total], true
}

// ipv6Payload checks an IPv6 header and returns the payload.
func ipv6Payload(ip []byte) ([]byte, bool) {
	if len(ip) < hdr.IPv6Len || ip[0]>>4 != 6 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(ip[4:6]))
	if hdr.IPv6Len+n > len(ip) {
		return nil, false
	}
	return ip[hdr.IPv6Len : hdr.IPv6Len+n], true
}
