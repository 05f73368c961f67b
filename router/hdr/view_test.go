package hdr

import (
	"math/rand/v2"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestViewMatchesGVisor: the sizes, and every accessor on random headers,
// agree with gVisor's header package, written independently from the RFCs.
func TestViewMatchesGVisor(t *testing.T) {
	if EthLen != header.EthernetMinimumSize || IPv4Min != header.IPv4MinimumSize ||
		IPv6Len != header.IPv6MinimumSize || ARPLen != header.ARPSize {
		t.Fatal("a header size differs from gVisor's")
	}
	if EtherIPv4 != uint16(header.IPv4ProtocolNumber) || EtherIPv6 != uint16(header.IPv6ProtocolNumber) || EtherARP != uint16(header.ARPProtocolNumber) {
		t.Fatal("an EtherType differs from gVisor's")
	}
	if ProtoTCP != uint8(header.TCPProtocolNumber) || ProtoUDP != uint8(header.UDPProtocolNumber) ||
		ProtoICMP != uint8(header.ICMPv4ProtocolNumber) || ProtoICMPv6 != uint8(header.ICMPv6ProtocolNumber) {
		t.Fatal("a protocol number differs from gVisor's")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		f := make([]byte, EthLen+IPv6Len+8)
		for i := range f {
			f[i] = byte(rng.Uint32())
		}
		eth := header.Ethernet(f)
		if EtherType(f) != uint16(eth.Type()) {
			t.Fatalf("EtherType %#x, gVisor %#x", EtherType(f), eth.Type())
		}
		if DstMAC(f) != [6]byte([]byte(eth.DestinationAddress())) || SrcMAC(f) != [6]byte([]byte(eth.SourceAddress())) {
			t.Fatal("a MAC differs from gVisor's")
		}
		if IsGroup(f) != (header.IsMulticastEthernetAddress(eth.DestinationAddress()) || eth.DestinationAddress() == header.EthernetBroadcastAddress) {
			t.Fatalf("IsGroup %v for %v", IsGroup(f), eth.DestinationAddress())
		}
		if IsBroadcast(f) != (eth.DestinationAddress() == header.EthernetBroadcastAddress) {
			t.Fatalf("IsBroadcast %v for %v", IsBroadcast(f), eth.DestinationAddress())
		}
		if IsIPv4(f) != (eth.Type() == header.IPv4ProtocolNumber) || IsIPv6(f) != (eth.Type() == header.IPv6ProtocolNumber) {
			t.Fatal("IsIPv4/IsIPv6 disagree with the EtherType")
		}
		ip4, g4 := IP4(f[EthLen:]), header.IPv4(f[EthLen:])
		if ip4.Version() != uint8(header.IPVersion(f[EthLen:])) || ip4.HeaderLen() != int(g4.HeaderLength()) ||
			ip4.TotalLen() != int(g4.TotalLength()) || ip4.TTL() != g4.TTL() || ip4.Protocol() != g4.Protocol() ||
			ip4.FragOffset()*8 != g4.FragmentOffset() || ip4.DF() != (g4.Flags()&header.IPv4FlagDontFragment != 0) ||
			ip4.MF() != g4.More() || tcpip.AddrFrom4(ip4.Src()) != g4.SourceAddress() || tcpip.AddrFrom4(ip4.Dst()) != g4.DestinationAddress() {
			t.Fatalf("an IPv4 accessor differs from gVisor's on % x", []byte(ip4[:IPv4Min]))
		}
		ip6, g6 := IP6(f[EthLen:]), header.IPv6(f[EthLen:])
		if ip6.PayloadLen() != int(g6.PayloadLength()) || ip6.NextHeader() != g6.NextHeader() || ip6.HopLimit() != g6.HopLimit() ||
			tcpip.AddrFrom16(ip6.Src()) != g6.SourceAddress() || tcpip.AddrFrom16(ip6.Dst()) != g6.DestinationAddress() {
			t.Fatalf("an IPv6 accessor differs from gVisor's on % x", []byte(ip6[:IPv6Len]))
		}
	}
}

func TestViewAllocatesNothing(t *testing.T) {
	f := make([]byte, 80)
	f[12], f[13], f[EthLen] = 0x08, 0x00, 0x45
	var sink uint64
	n := testing.AllocsPerRun(1000, func() {
		if IsIPv4(f) && !IsGroup(f) {
			ip := IP4(f[EthLen:])
			d, s := ip.Dst(), ip.Src()
			sink += uint64(d[0]) + uint64(s[3]) + uint64(ip.TTL()) + uint64(ip.TotalLen())
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations", n)
	}
	_ = sink
}
