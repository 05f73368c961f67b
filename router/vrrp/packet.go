package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Protocol constants of VRRP version 3 (RFC 5798 section 5).
const (
	Protocol   = 112 // IP protocol number
	Version    = 3
	TypeAdvert = 1
	HeaderLen  = 8   // version/type, VRID, priority, count, rsvd/max adver int, checksum
	TTL        = 255 // every advertisement is sent, and must arrive, with TTL / hop limit 255
	// MaxInterval is the largest Max Adver Int: 12 bits of centiseconds.
	MaxInterval = 4095
)

// Checksum is the way a VRRPv3 checksum is computed.
type Checksum uint8

const (
	// PseudoHeader covers an IP pseudo-header and the message (RFC 5798
	// read literally; keepalived's default; what tcpdump verifies).
	PseudoHeader Checksum = iota + 1
	// MessageOnly covers the message alone, for IPv4 (the variant RFC 9568
	// records; as VRRPv2 computed it).
	MessageOnly
)

func (c Checksum) String() string {
	switch c {
	case PseudoHeader:
		return "rfc5798"
	case MessageOnly:
		return "rfc9568"
	}
	return "none"
}

// Errors of Parse, each a reason to drop an advertisement.
var (
	ErrShort    = errors.New("vrrp: shorter than its header and addresses")
	ErrVersion  = errors.New("vrrp: not version 3")
	ErrType     = errors.New("vrrp: not an advertisement")
	ErrVRID     = errors.New("vrrp: VRID 0")
	ErrCount    = errors.New("vrrp: no addresses")
	ErrInterval = errors.New("vrrp: max advertisement interval 0")
	ErrChecksum = errors.New("vrrp: bad checksum")
)

// Advert is one parsed advertisement. Addrs aliases the message it was
// parsed from: Count addresses of AddrLen bytes each.
type Advert struct {
	VRID     uint8
	Priority uint8
	Count    uint8
	Interval uint16 // Max Adver Int, centiseconds
	Checksum Checksum
	AddrLen  int // 4 or 16
	Addrs    []byte
}

// IntervalDuration is the advertisement interval as a duration.
func (a *Advert) IntervalDuration() time.Duration {
	return time.Duration(a.Interval) * 10 * time.Millisecond
}

// Addr returns the i-th address.
func (a *Advert) Addr(i int) netip.Addr {
	b := a.Addrs[i*a.AddrLen : (i+1)*a.AddrLen]
	if a.AddrLen == 4 {
		return netip.AddrFrom4([4]byte(b))
	}
	return netip.AddrFrom16([16]byte(b))
}

// Parse checks and decodes msg, a VRRP message as carried by an IP packet
// from src to dst (their family gives the addresses' size and the
// pseudo-header). It accepts both checksum styles for IPv4 and reports which
// one matched; IPv6 has only the pseudo-header form. Bytes after the
// addresses (there should be none) are covered by the checksum and
// otherwise ignored. It does not allocate.
func Parse(msg []byte, src, dst netip.Addr) (Advert, error) {
	var a Advert
	if len(msg) < HeaderLen {
		return a, ErrShort
	}
	if msg[0]>>4 != Version {
		return a, ErrVersion
	}
	if msg[0]&0xf != TypeAdvert {
		return a, ErrType
	}
	a.VRID, a.Priority, a.Count = msg[1], msg[2], msg[3]
	a.Interval = binary.BigEndian.Uint16(msg[4:6]) & 0x0fff
	a.AddrLen = 4
	if src.Is6() {
		a.AddrLen = 16
	}
	switch {
	case a.VRID == 0:
		return a, ErrVRID
	case a.Count == 0:
		return a, ErrCount
	case a.Interval == 0:
		return a, ErrInterval
	case len(msg) < HeaderLen+int(a.Count)*a.AddrLen:
		return a, ErrShort
	}
	a.Addrs = msg[HeaderLen : HeaderLen+int(a.Count)*a.AddrLen]
	switch {
	case checksum.Checksum(msg, pseudo(src, dst, len(msg))) == 0xffff:
		a.Checksum = PseudoHeader
	case src.Is4() && checksum.Checksum(msg, 0) == 0xffff:
		a.Checksum = MessageOnly
	default:
		return a, ErrChecksum
	}
	return a, nil
}

// pseudo is the sum of the pseudo-header of a VRRP message of n bytes.
func pseudo(src, dst netip.Addr, n int) uint16 {
	return header.PseudoHeaderChecksum(Protocol, addr(src), addr(dst), uint16(n))
}

func addr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// Message describes an advertisement to build.
type Message struct {
	VRID     uint8
	Priority uint8
	Interval uint16 // centiseconds, 1..4095
	Addrs    []netip.Addr
	Checksum Checksum // MessageOnly applies to IPv4 only
}

// Append appends the VRRP message m, sent from src to dst, to b. Addresses
// of the other family than src are an error, as are more than 255 of them.
func Append(b []byte, m *Message, src, dst netip.Addr) ([]byte, error) {
	if len(m.Addrs) == 0 || len(m.Addrs) > 255 {
		return b, fmt.Errorf("vrrp: %d addresses", len(m.Addrs))
	}
	if m.Interval == 0 || m.Interval > MaxInterval {
		return b, fmt.Errorf("vrrp: interval %d centiseconds", m.Interval)
	}
	start := len(b)
	b = append(b, Version<<4|TypeAdvert, m.VRID, m.Priority, uint8(len(m.Addrs)))
	b = binary.BigEndian.AppendUint16(b, m.Interval)
	b = append(b, 0, 0)
	for _, a := range m.Addrs {
		if a.Is4() != src.Is4() {
			return b[:start], fmt.Errorf("vrrp: address %s is not of the family of %s", a, src)
		}
		b = append(b, a.AsSlice()...)
	}
	msg := b[start:]
	var init uint16
	if m.Checksum != MessageOnly || src.Is6() {
		init = pseudo(src, dst, len(msg))
	}
	binary.BigEndian.PutUint16(msg[6:8], ^checksum.Checksum(msg, init))
	return b, nil
}
