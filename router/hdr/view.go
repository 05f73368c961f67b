package hdr

import "encoding/binary"

// The datapath's one view of the headers it reads: the sizes, and named
// accessors over the raw bytes of an Ethernet frame, an IPv4 header and an
// IPv6 header. They copy nothing but the field asked for and allocate
// nothing; each is small enough to be inlined. Lengths are the caller's to
// check: IsIPv4 and IsIPv6 check that a frame holds the Ethernet header and
// a minimal IP header of the type it says (not the version field, nor any
// length inside the header).

// Header sizes.
const (
	EthLen  = 14 // Ethernet header without a VLAN tag
	IPv4Min = 20 // IPv4 header without options
	IPv6Len = 40 // IPv6 fixed header
	ARPLen  = 28 // ARP for IPv4 over Ethernet
)

// EtherTypes.
const (
	EtherIPv4 = 0x0800
	EtherARP  = 0x0806
	EtherIPv6 = 0x86dd
)

// The flags in an IPv4 header's flags and fragment offset word (FlagsFrag).
const (
	FlagDF = 0x4000 // don't fragment
	FlagMF = 0x2000 // more fragments
)

// IP protocol numbers the datapath looks for.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP: the fixed header's size and the flags in its byte 13.
const (
	TCPMin = 20
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPCwr = 0x80
)

// EtherType is the type of the Ethernet frame f (at least EthLen bytes).
func EtherType(f []byte) uint16 { return binary.BigEndian.Uint16(f[12:14]) }

// IsGroup reports whether the frame's destination MAC is a group address
// (multicast or broadcast).
func IsGroup(f []byte) bool { return f[0]&1 != 0 }

// IsBroadcast reports whether the frame's destination MAC is
// ff:ff:ff:ff:ff:ff.
func IsBroadcast(f []byte) bool { return f[0]&f[1]&f[2]&f[3]&f[4]&f[5] == 0xff }

// DstMAC and SrcMAC are the frame's MAC addresses.
func DstMAC(f []byte) [6]byte { return [6]byte(f[0:6]) }

// SrcMAC is the frame's source MAC.
func SrcMAC(f []byte) [6]byte { return [6]byte(f[6:12]) }

// IsIPv4 reports whether f is an Ethernet frame of type IPv4 long enough
// for a minimal IPv4 header.
func IsIPv4(f []byte) bool {
	return len(f) >= EthLen+IPv4Min && f[12] == 0x08 && f[13] == 0x00
}

// IsIPv6 reports whether f is an Ethernet frame of type IPv6 long enough
// for the IPv6 fixed header.
func IsIPv6(f []byte) bool {
	return len(f) >= EthLen+IPv6Len && f[12] == 0x86 && f[13] == 0xdd
}

// IP4 is an IPv4 header and what follows it (at least IPv4Min bytes).
type IP4 []byte

// Version is the IP version field.
func (ip IP4) Version() uint8 { return ip[0] >> 4 }

// HeaderLen is the header length in bytes (IHL*4), unchecked.
func (ip IP4) HeaderLen() int { return int(ip[0]&0x0f) * 4 }

// TotalLen is the total length field.
func (ip IP4) TotalLen() int { return int(binary.BigEndian.Uint16(ip[2:4])) }

// FlagsFrag is the 16-bit word of the flags and the fragment offset.
func (ip IP4) FlagsFrag() uint16 { return binary.BigEndian.Uint16(ip[6:8]) }

// FragOffset is the fragment offset, in 8-byte units.
func (ip IP4) FragOffset() uint16 { return ip.FlagsFrag() & 0x1fff }

// DF reports the don't-fragment flag.
func (ip IP4) DF() bool { return ip.FlagsFrag()&FlagDF != 0 }

// MF reports the more-fragments flag.
func (ip IP4) MF() bool { return ip.FlagsFrag()&FlagMF != 0 }

// TTL is the time to live.
func (ip IP4) TTL() uint8 { return ip[8] }

// Protocol is the next protocol.
func (ip IP4) Protocol() uint8 { return ip[9] }

// Src is the source address.
func (ip IP4) Src() [4]byte { return [4]byte(ip[12:16]) }

// Dst is the destination address.
func (ip IP4) Dst() [4]byte { return [4]byte(ip[16:20]) }

// IP6 is an IPv6 fixed header and what follows it (at least IPv6Len bytes).
type IP6 []byte

// Version is the IP version field.
func (ip IP6) Version() uint8 { return ip[0] >> 4 }

// PayloadLen is the payload length field.
func (ip IP6) PayloadLen() int { return int(binary.BigEndian.Uint16(ip[4:6])) }

// NextHeader is the next header field.
func (ip IP6) NextHeader() uint8 { return ip[6] }

// HopLimit is the hop limit.
func (ip IP6) HopLimit() uint8 { return ip[7] }

// Src is the source address.
func (ip IP6) Src() [16]byte { return [16]byte(ip[8:24]) }

// Dst is the destination address.
func (ip IP6) Dst() [16]byte { return [16]byte(ip[24:40]) }
