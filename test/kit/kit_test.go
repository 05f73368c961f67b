package kit

import (
	"bytes"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestBuildersAgreeWithNetstack: netstack's own parsers (an implementation
// independent of the kit) read the kit's frames as built, checksums valid.
func TestBuildersAgreeWithNetstack(t *testing.T) {
	src, dst := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("203.0.113.10")
	macA, macB := []byte{2, 0, 0, 0, 0, 0xa}, []byte{2, 0, 0, 0, 0, 0xb}
	f := Ethernet(macB, macA, TypeIPv4, IPv4(src, dst, 64, 17, 0x1234, UDP(src, dst, 4000, 53, []byte("hello"))))
	eth := header.Ethernet(f)
	if eth.Type() != header.IPv4ProtocolNumber || eth.SourceAddress() != tcpip.LinkAddress(macA) || eth.DestinationAddress() != tcpip.LinkAddress(macB) {
		t.Fatalf("ethernet header %x", f[:14])
	}
	ip := header.IPv4(f[14:])
	if !ip.IsValid(len(ip)) || !ip.IsChecksumValid() || ip.TTL() != 64 || ip.ID() != 0x1234 || ip.SourceAddress() != tcpip.AddrFrom4(src.As4()) {
		t.Fatalf("IPv4 header %x", ip[:20])
	}
	u := header.UDP(ip.Payload())
	if !u.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(u.Payload(), 0)) || u.DestinationPort() != 53 || string(u.Payload()) != "hello" {
		t.Fatalf("UDP %x", u)
	}

	s6, d6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	p6 := header.IPv6(IPv6(s6, d6, 64, 17, UDP(s6, d6, 1, 2, []byte("x"))))
	if !p6.IsValid(len(p6)) || p6.HopLimit() != 64 || p6.TransportProtocol() != header.UDPProtocolNumber {
		t.Fatalf("IPv6 %x", p6)
	}
	u6 := header.UDP(p6.Payload())
	if !u6.IsChecksumValid(p6.SourceAddress(), p6.DestinationAddress(), checksum.Checksum(u6.Payload(), 0)) {
		t.Fatal("UDP over IPv6: bad checksum")
	}

	e := header.ICMPv4(ICMPEcho(8, 7, 9, []byte("ping")))
	if e.Type() != header.ICMPv4Echo || e.Ident() != 7 || e.Sequence() != 9 || checksum.Checksum(e, 0) != 0xffff {
		t.Fatalf("echo %x", e)
	}

	a := header.ARP(ARP(ARPReply, macA, src, macB, dst))
	if !a.IsValid() || a.Op() != header.ARPReply || !bytes.Equal(a.HardwareAddressSender(), macA) || !bytes.Equal(a.ProtocolAddressTarget(), dst.AsSlice()) {
		t.Fatalf("ARP %x", a)
	}
}

// TestPairKeepsFrames: what one end writes the other reads as one frame.
func TestPairKeepsFrames(t *testing.T) {
	local, peer := PairBuffered(t, "x", 1<<20)
	for _, n := range []int{60, 1514, 9000} {
		if _, err := peer.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		got, err := local.Read(buf)
		if err != nil || got != n {
			t.Fatalf("wrote %d, read %d (%v)", n, got, err)
		}
	}
}
