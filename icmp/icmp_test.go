package icmp

import (
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/test/kit"
)

func frame4(src, dst netip.Addr, ttl, proto uint8, payload []byte) []byte {
	return kit.Ethernet([]byte{2, 0, 0, 0, 0, 1}, []byte{2, 0, 0, 0, 0, 2}, kit.TypeIPv4, kit.IPv4(src, dst, ttl, proto, 0, payload))
}

func frame6(src, dst netip.Addr, hop, next uint8, payload []byte) []byte {
	return kit.Ethernet([]byte{2, 0, 0, 0, 0, 1}, []byte{2, 0, 0, 0, 0, 2}, kit.TypeIPv6, kit.IPv6(src, dst, hop, next, payload))
}

func TestAppendError4(t *testing.T) {
	src, dst := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("10.0.0.11")
	in := frame4(src, dst, 1, 17, make([]byte, 1000))
	var buf [MaxErrorFrame]byte
	out := AppendError4(buf[:0], in, [6]byte{2, 0, 0, 0, 0, 9}, [4]byte{198, 51, 100, 1}, TypeTimeExceeded, CodeTTLExceeded, [4]byte{})
	if out == nil {
		t.Fatal("no error built")
	}
	ip := header.IPv4(out[14:])
	if !ip.IsChecksumValid() || ip.Protocol() != 1 || netip.AddrFrom4(ip.DestinationAddress().As4()) != src {
		t.Fatalf("bad IPv4 header: %x", out[14:34])
	}
	if len(ip) != 576 {
		t.Fatalf("error is %d bytes, want 576 (RFC 1812 quote limit)", len(ip))
	}
	if checksum.Checksum(ip.Payload(), 0) != 0xffff || ip.Payload()[0] != 11 {
		t.Fatal("bad ICMP message")
	}
	// Never about an ICMP error, a broadcast frame, or a multicast source.
	icmpErr := frame4(src, dst, 1, 1, []byte{3, 1, 0, 0, 0, 0, 0, 0})
	if AppendError4(buf[:0], icmpErr, [6]byte{}, [4]byte{}, 11, 0, [4]byte{}) != nil {
		t.Error("an ICMP error drew an error")
	}
	bc := frame4(src, dst, 1, 17, nil)
	bc[0] = 0xff
	if AppendError4(buf[:0], bc, [6]byte{}, [4]byte{}, 11, 0, [4]byte{}) != nil {
		t.Error("a link-layer broadcast drew an error")
	}
}

func TestAppendError6(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("2001:db8:ffff::10")
	me := netip.MustParseAddr("2001:db8:1::1").As16()
	in := frame6(src, dst, 1, 6, make([]byte, 2000))
	var buf [MaxErrorFrame6]byte
	out := AppendError6(buf[:0], in, [6]byte{2, 0, 0, 0, 0, 9}, me, Type6TimeExceeded, Code6HopLimit, [4]byte{})
	if out == nil {
		t.Fatal("no error built")
	}
	ip := header.IPv6(out[14:])
	if len(ip) != 1280 || ip.NextHeader() != 58 || netip.AddrFrom16(ip.DestinationAddress().As16()) != src {
		t.Fatalf("bad IPv6 error: %d bytes, next header %d, to %s", len(ip), ip.NextHeader(), ip.DestinationAddress())
	}
	ic := header.ICMPv6(ip.Payload())
	got := ic.Checksum()
	ic.SetChecksum(0)
	want := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: ic[:header.ICMPv6MinimumSize], Src: ip.SourceAddress(), Dst: ip.DestinationAddress(),
		PayloadCsum: checksum.Checksum(ic[header.ICMPv6MinimumSize:], 0), PayloadLen: len(ic) - header.ICMPv6MinimumSize,
	})
	if got != want || ic.Type() != 3 {
		t.Fatalf("ICMPv6 type %d checksum %#x, want type 3 checksum %#x (gVisor's computation)", ic.Type(), got, want)
	}
	if AppendError6(buf[:0], frame6(src, dst, 1, 58, []byte{1, 0, 0, 0, 0, 0, 0, 0}), [6]byte{}, me, 3, 0, [4]byte{}) != nil {
		t.Error("an ICMPv6 error drew an error")
	}
	if AppendError6(buf[:0], frame6(netip.MustParseAddr("::"), dst, 1, 6, nil), [6]byte{}, me, 3, 0, [4]byte{}) != nil {
		t.Error("a packet from the unspecified address drew an error")
	}
}

func TestPacketTooBigCarriesMTU(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8:1::10"), netip.MustParseAddr("2001:db8:ffff::10")
	me := netip.MustParseAddr("2001:db8:1::1").As16()
	var buf [MaxErrorFrame6]byte
	out := AppendError6(buf[:0], frame6(src, dst, 64, 6, make([]byte, 1460)), [6]byte{}, me, Type6PacketTooBig, 0, MTUWord(1400))
	if out == nil {
		t.Fatal("no error built")
	}
	ic := header.ICMPv6(header.IPv6(out[14:]).Payload())
	if ic.Type() != header.ICMPv6PacketTooBig || ic.MTU() != 1400 {
		t.Fatalf("type %d MTU %d, want packet too big (2) with MTU 1400", ic.Type(), ic.MTU())
	}
	if w := MTUWord(70000); w != [4]byte{0, 0, 0xff, 0xff} {
		t.Errorf("MTUWord(70000) = %v, want the 16-bit field saturated", w)
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(10, 3)
	now := time.Unix(1000, 0)
	n := 0
	for i := 0; i < 10; i++ {
		if l.Allow(now) {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("burst allowed %d, want 3", n)
	}
	if !l.Allow(now.Add(150 * time.Millisecond)) {
		t.Fatal("no token after 150 ms at 10/s")
	}
	if l.Allow(now.Add(160 * time.Millisecond)) {
		t.Fatal("a second token 10 ms later at 10/s")
	}
}
