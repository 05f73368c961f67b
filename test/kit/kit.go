// Package kit is the unit tests' rig for links without devices: socket
// pairs that stand in for TAP queues (SOCK_SEQPACKET keeps frame
// boundaries, as a TAP file does), and builders for the frames the tests
// write to them.
//
// The builders compute every checksum with this package's own RFC 1071
// sum, not with the code under test or netstack's, so a test that checks a
// checksum the datapath produced has an independent reference. The kit
// imports nothing of the repository: every package's tests can use it,
// router/tap's own included.
package kit

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Pair returns the two ends of a non-blocking SOCK_SEQPACKET socket pair:
// local for the endpoint under test (as its TAP queue), peer for the test
// (the wire). Both are closed when the test ends (closing one twice is
// harmless).
func Pair(tb testing.TB, name string) (local, peer *os.File) {
	tb.Helper()
	return PairBuffered(tb, name, 0)
}

// PairBuffered is Pair with both ends' send and receive buffers set to
// bytes (0: the system's default), for tests that keep many or large frames
// in flight.
func PairBuffered(tb testing.TB, name string, bytes int) (local, peer *os.File) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("kit: socketpair: %v", err)
	}
	if bytes > 0 {
		for _, fd := range fds {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, bytes)
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bytes)
		}
	}
	local, peer = os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name+"-peer")
	tb.Cleanup(func() { peer.Close(); local.Close() })
	return local, peer
}

// EtherType values the builders use.
const (
	TypeIPv4 = 0x0800
	TypeARP  = 0x0806
	TypeIPv6 = 0x86dd
)

// Broadcast is the Ethernet broadcast address.
var Broadcast = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Ethernet is a frame from src to dst (6-byte MACs: net.HardwareAddr or a
// [6]byte's slice) of type typ around payload.
func Ethernet(dst, src []byte, typ uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], typ)
	return append(f, payload...)
}

// Sum is the RFC 1071 one's-complement sum of b added to initial, folded
// to 16 bits (not inverted).
func Sum(b []byte, initial uint32) uint16 {
	s := initial
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// IPv4 is an IPv4 packet (20-byte header, identification id, no flags,
// header checksum set) around payload.
func IPv4(src, dst netip.Addr, ttl, proto uint8, id uint16, payload []byte) []byte {
	p := make([]byte, 20, 20+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(p[4:], id)
	p[8], p[9] = ttl, proto
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:], ^Sum(p, 0))
	return append(p, payload...)
}

// IPv6 is an IPv6 packet (no extension headers) around payload.
func IPv6(src, dst netip.Addr, hop, next uint8, payload []byte) []byte {
	p := make([]byte, 40, 40+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(len(payload)))
	p[6], p[7] = next, hop
	s, d := src.As16(), dst.As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	return append(p, payload...)
}

// pseudoSum is the sum of the IPv4 or IPv6 pseudo-header.
func pseudoSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	var s uint32
	for _, a := range []netip.Addr{src, dst} {
		b := a.AsSlice()
		for i := 0; i < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	return s + uint32(proto) + uint32(length)
}

// UDP is a UDP datagram from src:sport to dst:dport (IPv4 or IPv6) with
// its checksum over the pseudo-header set; wrap it with IPv4 or IPv6
// (protocol 17).
func UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	u := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	u = append(u, payload...)
	c := ^Sum(u, pseudoSum(src, dst, 17, len(u)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return u
}

// ICMPEcho is an ICMPv4 echo request (typ 8) or reply (typ 0) with its
// checksum set; wrap it with IPv4 (protocol 1).
func ICMPEcho(typ uint8, id, seq uint16, payload []byte) []byte {
	m := make([]byte, 8, 8+len(payload))
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	m = append(m, payload...)
	binary.BigEndian.PutUint16(m[2:], ^Sum(m, 0))
	return m
}

// ARP operations.
const (
	ARPRequest = 1
	ARPReply   = 2
)

// ARP is an IPv4-over-Ethernet ARP message (sender sha/spa, target
// tha/tpa; tha may be nil for zeros); wrap it with Ethernet (TypeARP).
func ARP(op uint16, sha []byte, spa netip.Addr, tha []byte, tpa netip.Addr) []byte {
	a := []byte{0, 1, 8, 0, 6, 4, 0, 0}
	binary.BigEndian.PutUint16(a[6:], op)
	a = append(a, sha[:6]...)
	a = append(a, spa.AsSlice()...)
	t := make([]byte, 6)
	copy(t, tha)
	a = append(a, t...)
	return append(a, tpa.AsSlice()...)
}
