package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Sentinel errors of ReadPcap and ParsePcap; match them with errors.Is.
var (
	// ErrNotPcap: the file does not start with a pcap global header (bad magic or too short).
	ErrNotPcap = errors.New("harness: not a pcap file")
	// ErrLinkType: the capture's link type is not Ethernet (DLT_EN10MB). A capture on
	// "-i any" is Linux cooked (SLL) and is not supported: capture on a named interface.
	ErrLinkType = errors.New("harness: pcap link type is not Ethernet")
	// ErrTruncated: a record header or record body runs past the end of the file, or a
	// record claims an impossible length. The packets before it are still returned.
	ErrTruncated = errors.New("harness: pcap file truncated")
)

// Link and protocol numbers used in Packet fields.
const (
	LinkTypeEthernet = 1 // DLT_EN10MB

	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86dd

	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58

	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10

	ARPRequest = 1
	ARPReply   = 2
)

// maxRecordLen bounds one record's captured length. tcpdump's default snapshot length is
// 262144; anything larger is a corrupt file, not a packet.
const maxRecordLen = 1 << 20

// Packet is one decoded Ethernet frame from a capture. Fields of layers the frame does not
// carry are zero. Byte slices alias the data ReadPcap read; they are not shared between
// packets of different calls.
type Packet struct {
	Time           time.Time
	SrcMAC, DstMAC net.HardwareAddr
	EtherType      uint16 // after any 802.1Q/802.1ad tags
	VLAN           uint16 // the outermost VLAN id, 0 if untagged

	// IPv4 / IPv6. TTL is the IPv6 hop limit for IPv6. IPID is 0 for IPv6.
	Src, Dst netip.Addr
	TTL      uint8
	Proto    uint8 // IPv4 protocol / IPv6 upper-layer next header (after extension headers)
	IPID     uint16
	// Fragment is true for any IPv4 fragment (MF set or offset non-zero) or an IPv6 packet
	// with a fragment header; transport fields are decoded only for the first fragment.
	Fragment bool
	// Network is the IP packet (header and payload), cut to the IP length so Ethernet
	// padding is excluded; nil if not IP.
	Network []byte

	SrcPort, DstPort uint16
	TCPFlags         uint8
	TCPSeq, TCPAck   uint32

	// ICMP (v4 or v6). ICMPID and ICMPSeq are set for echo request/reply only.
	ICMPType, ICMPCode uint8
	ICMPID, ICMPSeq    uint16

	ARPOp                      uint16
	ARPSenderIP, ARPTargetIP   netip.Addr
	ARPSenderMAC, ARPTargetMAC net.HardwareAddr

	// Payload is the transport payload: TCP/UDP data, or for ICMP the bytes after the
	// 8-byte ICMP header (the echo data, or the quoted packet of an error message).
	Payload []byte
	// Raw is the captured frame: all of it, unless the capture's snapshot length cut it
	// (then len(Raw) < Len, and Network and Payload are cut too).
	Raw []byte
	// Len is the frame's length on the wire (the record's original length).
	Len int
}

// Truncated reports whether the capture kept less than the whole frame.
func (p Packet) Truncated() bool { return len(p.Raw) < p.Len }

// IsIP reports whether the frame carried an IPv4 or IPv6 packet.
func (p Packet) IsIP() bool { return p.Network != nil }

// IsICMPEcho reports whether p is an ICMP or ICMPv6 echo request (request=true) or reply.
func (p Packet) IsICMPEcho(request bool) bool {
	switch p.Proto {
	case ProtoICMP:
		if request {
			return p.ICMPType == 8
		}
		return p.ICMPType == 0
	case ProtoICMPv6:
		if request {
			return p.ICMPType == 128
		}
		return p.ICMPType == 129
	}
	return false
}

// ReadPcap reads and decodes a classic pcap file (microsecond or nanosecond timestamps,
// either byte order) whose link type is Ethernet. On a truncated or corrupt file it returns
// the packets decoded so far and an error wrapping ErrTruncated; it never panics.
func ReadPcap(path string) ([]Packet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("harness: read pcap: %w", err)
	}
	pkts, err := ParsePcap(data)
	if err != nil {
		return pkts, fmt.Errorf("%s: %w", path, err)
	}
	return pkts, nil
}

// ParsePcap is ReadPcap on bytes already in memory. Packets alias data.
func ParsePcap(data []byte) ([]Packet, error) {
	if len(data) < 24 {
		return nil, fmt.Errorf("%w: %d bytes, a global header is 24", ErrNotPcap, len(data))
	}
	var bo binary.ByteOrder
	nano := false
	switch binary.LittleEndian.Uint32(data) {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nano = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("%w: magic %#08x", ErrNotPcap, binary.LittleEndian.Uint32(data))
	}
	// The link type is the low 16 bits; the upper bits may carry FCS information.
	if lt := bo.Uint32(data[20:]) & 0xffff; lt != LinkTypeEthernet {
		return nil, fmt.Errorf("%w: link type %d", ErrLinkType, lt)
	}
	var pkts []Packet
	off := 24
	for off < len(data) {
		if len(data)-off < 16 {
			return pkts, fmt.Errorf("%w: record %d: header needs 16 bytes at offset %d, have %d",
				ErrTruncated, len(pkts), off, len(data)-off)
		}
		sec := bo.Uint32(data[off:])
		frac := bo.Uint32(data[off+4:])
		incl := bo.Uint32(data[off+8:])
		orig := bo.Uint32(data[off+12:])
		if incl > maxRecordLen {
			return pkts, fmt.Errorf("%w: record %d at offset %d claims %d bytes", ErrTruncated, len(pkts), off, incl)
		}
		off += 16
		if uint32(len(data)-off) < incl {
			return pkts, fmt.Errorf("%w: record %d at offset %d needs %d bytes, have %d",
				ErrTruncated, len(pkts), off-16, incl, len(data)-off)
		}
		frame := data[off : off+int(incl) : off+int(incl)]
		off += int(incl)
		nsec := int64(frac) * 1000
		if nano {
			nsec = int64(frac)
		}
		p := DecodeEthernet(frame)
		p.Time = time.Unix(int64(sec), nsec)
		p.Len = int(max(orig, incl))
		pkts = append(pkts, p)
	}
	return pkts, nil
}

// DecodeEthernet decodes one Ethernet frame as far as it is well-formed; a short or
// malformed header leaves that layer's fields and everything above zero. Never panics.
func DecodeEthernet(frame []byte) Packet {
	p := Packet{Raw: frame, Len: len(frame)}
	if len(frame) < 14 {
		return p
	}
	p.DstMAC = net.HardwareAddr(frame[0:6])
	p.SrcMAC = net.HardwareAddr(frame[6:12])
	et := binary.BigEndian.Uint16(frame[12:])
	b := frame[14:]
	for tags := 0; (et == 0x8100 || et == 0x88a8) && tags < 2; tags++ {
		if len(b) < 4 {
			p.EtherType = et
			return p
		}
		if tags == 0 {
			p.VLAN = binary.BigEndian.Uint16(b) & 0x0fff
		}
		et = binary.BigEndian.Uint16(b[2:])
		b = b[4:]
	}
	p.EtherType = et
	switch et {
	case EtherTypeIPv4:
		p.decodeIPv4(b)
	case EtherTypeIPv6:
		p.decodeIPv6(b)
	case EtherTypeARP:
		p.decodeARP(b)
	}
	return p
}

// DecodeIP decodes a bare IPv4 or IPv6 packet (by its version nibble), such as the packet
// an ICMP error quotes in its Payload. Never panics.
func DecodeIP(b []byte) Packet {
	var p Packet
	if len(b) == 0 {
		return p
	}
	switch b[0] >> 4 {
	case 4:
		p.EtherType = EtherTypeIPv4
		p.decodeIPv4(b)
	case 6:
		p.EtherType = EtherTypeIPv6
		p.decodeIPv6(b)
	}
	return p
}

func (p *Packet) decodeIPv4(b []byte) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total < ihl || len(b) < ihl {
		return
	}
	if total > len(b) { // snapped capture: keep what there is
		total = len(b)
	}
	b = b[:total:total]
	p.Network = b
	p.IPID = binary.BigEndian.Uint16(b[4:])
	flagsFrag := binary.BigEndian.Uint16(b[6:])
	p.Fragment = flagsFrag&0x3fff != 0 // MF or offset
	p.TTL = b[8]
	p.Proto = b[9]
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	if flagsFrag&0x1fff != 0 { // not the first fragment: no transport header here
		return
	}
	p.decodeTransport(b[ihl:])
}

func (p *Packet) decodeIPv6(b []byte) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	if 40+plen < len(b) {
		b = b[: 40+plen : 40+plen]
	}
	p.Network = b
	p.TTL = b[7]
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	rest := b[40:]
	// Walk a bounded number of extension headers.
	for i := 0; i < 8; i++ {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(rest) < 8 {
				p.Proto = next
				return
			}
			n := (int(rest[1]) + 1) * 8
			if len(rest) < n {
				p.Proto = next
				return
			}
			next, rest = rest[0], rest[n:]
			continue
		case 44: // fragment
			if len(rest) < 8 {
				p.Proto = next
				return
			}
			p.Fragment = true
			offset := binary.BigEndian.Uint16(rest[2:]) >> 3
			next, rest = rest[0], rest[8:]
			if offset != 0 {
				p.Proto = next
				return
			}
			continue
		}
		break
	}
	p.Proto = next
	p.decodeTransport(rest)
}

func (p *Packet) decodeTransport(b []byte) {
	switch p.Proto {
	case ProtoTCP:
		if len(b) < 20 {
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(b)
		p.DstPort = binary.BigEndian.Uint16(b[2:])
		p.TCPSeq = binary.BigEndian.Uint32(b[4:])
		p.TCPAck = binary.BigEndian.Uint32(b[8:])
		p.TCPFlags = b[13]
		if doff := int(b[12]>>4) * 4; doff >= 20 && doff <= len(b) {
			p.Payload = b[doff:]
		}
	case ProtoUDP:
		if len(b) < 8 {
			return
		}
		p.SrcPort = binary.BigEndian.Uint16(b)
		p.DstPort = binary.BigEndian.Uint16(b[2:])
		end := int(binary.BigEndian.Uint16(b[4:]))
		if end < 8 || end > len(b) {
			end = len(b)
		}
		p.Payload = b[8:end]
	case ProtoICMP, ProtoICMPv6:
		if len(b) < 4 {
			return
		}
		p.ICMPType, p.ICMPCode = b[0], b[1]
		if len(b) < 8 {
			return
		}
		if p.IsICMPEcho(true) || p.IsICMPEcho(false) {
			p.ICMPID = binary.BigEndian.Uint16(b[4:])
			p.ICMPSeq = binary.BigEndian.Uint16(b[6:])
		}
		p.Payload = b[8:]
	}
}

func (p *Packet) decodeARP(b []byte) {
	// Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
	if len(b) < 28 || binary.BigEndian.Uint16(b) != 1 || binary.BigEndian.Uint16(b[2:]) != EtherTypeIPv4 ||
		b[4] != 6 || b[5] != 4 {
		return
	}
	p.ARPOp = binary.BigEndian.Uint16(b[6:])
	p.ARPSenderMAC = net.HardwareAddr(b[8:14])
	p.ARPSenderIP = netip.AddrFrom4([4]byte(b[14:18]))
	p.ARPTargetMAC = net.HardwareAddr(b[18:24])
	p.ARPTargetIP = netip.AddrFrom4([4]byte(b[24:28]))
}

// String renders p on one line, close to `tcpdump -n -e`, for failure messages:
//
//	08:01:02.123456 02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 198.51.100.10.40000 > 10.0.0.11.8080 TCP [S] ttl 63 id 4711 len 0
func (p Packet) String() string {
	var s strings.Builder
	if !p.Time.IsZero() {
		s.WriteString(p.Time.Format("15:04:05.000000 "))
	}
	if len(p.Raw) < 14 {
		fmt.Fprintf(&s, "short frame (%d bytes)", len(p.Raw))
		return s.String()
	}
	fmt.Fprintf(&s, "%s > %s ", p.SrcMAC, p.DstMAC)
	if p.VLAN != 0 {
		fmt.Fprintf(&s, "vlan %d ", p.VLAN)
	}
	switch {
	case p.EtherType == EtherTypeARP && p.ARPOp != 0:
		switch p.ARPOp {
		case ARPRequest:
			fmt.Fprintf(&s, "ARP who-has %s tell %s (%s)", p.ARPTargetIP, p.ARPSenderIP, p.ARPSenderMAC)
		case ARPReply:
			fmt.Fprintf(&s, "ARP reply %s is-at %s", p.ARPSenderIP, p.ARPSenderMAC)
		default:
			fmt.Fprintf(&s, "ARP op %d sender %s (%s) target %s", p.ARPOp, p.ARPSenderIP, p.ARPSenderMAC, p.ARPTargetIP)
		}
	case p.IsIP():
		v := "IPv4"
		if p.EtherType == EtherTypeIPv6 {
			v = "IPv6"
		}
		s.WriteString(v + " ")
		switch p.Proto {
		case ProtoTCP, ProtoUDP:
			fmt.Fprintf(&s, "%s > %s", netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
			if p.Proto == ProtoTCP {
				fmt.Fprintf(&s, " TCP [%s]", tcpFlags(p.TCPFlags))
			} else {
				s.WriteString(" UDP")
			}
		case ProtoICMP, ProtoICMPv6:
			fmt.Fprintf(&s, "%s > %s %s", p.Src, p.Dst, icmpName(p))
		default:
			fmt.Fprintf(&s, "%s > %s proto %d", p.Src, p.Dst, p.Proto)
		}
		fmt.Fprintf(&s, " ttl %d", p.TTL)
		if p.EtherType == EtherTypeIPv4 {
			fmt.Fprintf(&s, " id %d", p.IPID)
		}
		if p.Fragment {
			s.WriteString(" frag")
		}
		fmt.Fprintf(&s, " len %d", len(p.Payload))
	default:
		fmt.Fprintf(&s, "ethertype %#04x length %d", p.EtherType, len(p.Raw))
	}
	if p.Truncated() {
		fmt.Fprintf(&s, " [captured %d of %d bytes]", len(p.Raw), p.Len)
	}
	return s.String()
}

func tcpFlags(f uint8) string {
	var b []byte
	for _, x := range []struct {
		bit uint8
		c   byte
	}{{TCPFlagSYN, 'S'}, {TCPFlagFIN, 'F'}, {TCPFlagRST, 'R'}, {TCPFlagPSH, 'P'}} {
		if f&x.bit != 0 {
			b = append(b, x.c)
		}
	}
	if f&TCPFlagACK != 0 {
		b = append(b, '.')
	}
	return string(b)
}

func icmpName(p Packet) string {
	if p.Proto == ProtoICMP {
		switch p.ICMPType {
		case 0:
			return fmt.Sprintf("ICMP echo reply id %d seq %d", p.ICMPID, p.ICMPSeq)
		case 8:
			return fmt.Sprintf("ICMP echo request id %d seq %d", p.ICMPID, p.ICMPSeq)
		case 3:
			return fmt.Sprintf("ICMP unreachable code %d", p.ICMPCode)
		case 5:
			return fmt.Sprintf("ICMP redirect code %d", p.ICMPCode)
		case 11:
			return fmt.Sprintf("ICMP time exceeded code %d", p.ICMPCode)
		}
		return fmt.Sprintf("ICMP type %d code %d", p.ICMPType, p.ICMPCode)
	}
	switch p.ICMPType {
	case 128:
		return fmt.Sprintf("ICMP6 echo request id %d seq %d", p.ICMPID, p.ICMPSeq)
	case 129:
		return fmt.Sprintf("ICMP6 echo reply id %d seq %d", p.ICMPID, p.ICMPSeq)
	case 135:
		return "ICMP6 neighbor solicitation"
	case 136:
		return "ICMP6 neighbor advertisement"
	case 137:
		return "ICMP6 redirect"
	case 3:
		return fmt.Sprintf("ICMP6 time exceeded code %d", p.ICMPCode)
	}
	return fmt.Sprintf("ICMP6 type %d code %d", p.ICMPType, p.ICMPCode)
}
