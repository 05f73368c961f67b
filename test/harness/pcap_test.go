package harness

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tier 1 tests of the pcap reader: files built in memory, no root needed.

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
)

// pcapFile builds a classic pcap file: byte order, nanosecond or microsecond timestamps.
func pcapFile(bo binary.ByteOrder, nano bool, linkType uint32, frames ...[]byte) []byte {
	var b bytes.Buffer
	magic := uint32(0xa1b2c3d4)
	if nano {
		magic = 0xa1b23c4d
	}
	hdr := make([]byte, 24)
	bo.PutUint32(hdr[0:], magic)
	bo.PutUint16(hdr[4:], 2)
	bo.PutUint16(hdr[6:], 4)
	bo.PutUint32(hdr[16:], 262144)
	bo.PutUint32(hdr[20:], linkType)
	b.Write(hdr)
	for i, f := range frames {
		rec := make([]byte, 16)
		bo.PutUint32(rec[0:], 1700000000+uint32(i))
		bo.PutUint32(rec[4:], 500)
		bo.PutUint32(rec[8:], uint32(len(f)))
		bo.PutUint32(rec[12:], uint32(len(f)))
		b.Write(rec)
		b.Write(f)
	}
	return b.Bytes()
}

func ether(dst, src net.HardwareAddr, et uint16, payload []byte) []byte {
	b := append(append(append([]byte{}, dst...), src...), byte(et>>8), byte(et))
	return append(b, payload...)
}

func ipv4(src, dst string, ttl, proto uint8, id uint16, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
	b[8], b[9] = ttl, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, payload...)
}

func ipv6(src, dst string, hop, next uint8, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6], b[7] = next, hop
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

func tcp(sport, dport uint16, flags uint8, data string) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	binary.BigEndian.PutUint32(b[8:], 2000)
	b[12], b[13] = 5<<4, flags
	return append(b, data...)
}

func udp(sport, dport uint16, data string) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(data)))
	return append(b, data...)
}

func icmpEcho(typ uint8, id, seq uint16, data string) []byte {
	b := []byte{typ, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
	return append(b, data...)
}

func arpFrame(op uint16, sMAC net.HardwareAddr, sIP string, tMAC net.HardwareAddr, tIP string) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, byte(op >> 8), byte(op)}
	s, t := netip.MustParseAddr(sIP).As4(), netip.MustParseAddr(tIP).As4()
	b = append(b, sMAC...)
	b = append(b, s[:]...)
	b = append(b, tMAC...)
	return append(b, t[:]...)
}

// sampleFrames covers every layer the decoder knows; the fuzz test seeds from it too.
func sampleFrames() [][]byte {
	vlan := ether(macB, macA, 0x8100, append([]byte{0x00, 0x2a, 0x08, 0x00},
		ipv4("10.0.0.2", "10.0.0.3", 5, ProtoUDP, 9, udp(1, 2, "v"))...))
	frag := ipv6("2001:db8::1", "2001:db8::2", 64, 44,
		append([]byte{ProtoUDP, 0, 0, 0, 0, 0, 0, 1}, udp(7, 8, "f")...))
	return [][]byte{
		ether(macB, macA, EtherTypeIPv4, ipv4("198.51.100.10", "10.0.0.11", 63, ProtoTCP, 4711, tcp(40000, 8080, TCPFlagSYN, ""))),
		// Ethernet padding after a short IPv4 packet must not leak into the payload.
		ether(macA, macB, EtherTypeIPv4, append(ipv4("10.0.0.12", "198.51.100.11", 64, ProtoUDP, 1, udp(9000, 5555, "s1 198.51.100.11\n")), 0, 0, 0, 0)),
		ether(macB, macA, EtherTypeIPv4, ipv4("198.51.100.2", "10.0.0.12", 8, ProtoICMP, 77, icmpEcho(8, 0x1234, 3, "abcdefgh"))),
		ether(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macA, EtherTypeARP,
			arpFrame(ARPRequest, macA, "10.0.0.1", net.HardwareAddr{0, 0, 0, 0, 0, 0}, "10.0.0.11")),
		ether(macB, macA, EtherTypeIPv6, ipv6("2001:db8::1", "2001:db8::2", 63, ProtoTCP, tcp(1, 443, TCPFlagSYN|TCPFlagACK, "hi"))),
		ether(macB, macA, EtherTypeIPv6, frag),
		vlan,
		ether(macB, macA, 0x88cc, []byte{1, 2, 3}),
		{1, 2, 3}, // a runt frame
	}
}

func TestParsePcapLayers(t *testing.T) {
	for _, tc := range []struct {
		name string
		bo   binary.ByteOrder
		nano bool
	}{{"le-usec", binary.LittleEndian, false}, {"be-usec", binary.BigEndian, false}, {"le-nsec", binary.LittleEndian, true}} {
		t.Run(tc.name, func(t *testing.T) {
			frames := sampleFrames()
			pkts, err := ParsePcap(pcapFile(tc.bo, tc.nano, LinkTypeEthernet, frames...))
			if err != nil {
				t.Fatalf("ParsePcap: %v", err)
			}
			if len(pkts) != len(frames) {
				t.Fatalf("ParsePcap: %d packets, want %d", len(pkts), len(frames))
			}
			wantNsec := 500000
			if tc.nano {
				wantNsec = 500
			}
			if got := pkts[0].Time; !got.Equal(time.Unix(1700000000, int64(wantNsec))) {
				t.Errorf("packet 0 time %v, want 1700000000 s + %d ns", got, wantNsec)
			}

			p := pkts[0]
			if p.Src != netip.MustParseAddr("198.51.100.10") || p.Dst != netip.MustParseAddr("10.0.0.11") ||
				p.TTL != 63 || p.Proto != ProtoTCP || p.IPID != 4711 || p.SrcPort != 40000 || p.DstPort != 8080 ||
				p.TCPFlags != TCPFlagSYN || p.TCPSeq != 1000 || !bytes.Equal(p.SrcMAC, macA) || !bytes.Equal(p.DstMAC, macB) {
				t.Errorf("TCP SYN decoded as %+v", p)
			}
			if want := "02:00:00:00:00:0a > 02:00:00:00:00:0b IPv4 198.51.100.10:40000 > 10.0.0.11:8080 TCP [S] ttl 63 id 4711 len 0"; !strings.HasSuffix(p.String(), want) {
				t.Errorf("String() = %q, want suffix %q", p.String(), want)
			}
			if p := pkts[1]; string(p.Payload) != "s1 198.51.100.11\n" || len(p.Network) != 20+8+17 {
				t.Errorf("padded UDP: payload %q, network %d bytes; want %q, 45", p.Payload, len(p.Network), "s1 198.51.100.11\n")
			}
			if p := pkts[2]; !p.IsICMPEcho(true) || p.ICMPID != 0x1234 || p.ICMPSeq != 3 || string(p.Payload) != "abcdefgh" || p.TTL != 8 {
				t.Errorf("echo request decoded as %v (payload %q)", p, p.Payload)
			}
			if p := pkts[3]; p.ARPOp != ARPRequest || p.ARPSenderIP != netip.MustParseAddr("10.0.0.1") ||
				p.ARPTargetIP != netip.MustParseAddr("10.0.0.11") || !bytes.Equal(p.ARPSenderMAC, macA) || p.IsIP() {
				t.Errorf("ARP decoded as %v", p)
			}
			if p := pkts[4]; p.Src != netip.MustParseAddr("2001:db8::1") || p.TTL != 63 || p.DstPort != 443 ||
				p.TCPFlags != TCPFlagSYN|TCPFlagACK || string(p.Payload) != "hi" {
				t.Errorf("IPv6 TCP decoded as %v", p)
			}
			if p := pkts[5]; !p.Fragment || p.Proto != ProtoUDP || p.DstPort != 8 {
				t.Errorf("IPv6 first fragment decoded as %v", p)
			}
			if p := pkts[6]; p.VLAN != 42 || p.EtherType != EtherTypeIPv4 || p.DstPort != 2 || p.TTL != 5 {
				t.Errorf("VLAN frame decoded as %v", p)
			}
			if p := pkts[7]; p.EtherType != 0x88cc || p.IsIP() {
				t.Errorf("LLDP frame decoded as %v", p)
			}
			if p := pkts[8]; p.EtherType != 0 || p.String() == "" {
				t.Errorf("runt frame decoded as %v", p)
			}
		})
	}
}

func TestParsePcapErrors(t *testing.T) {
	good := pcapFile(binary.LittleEndian, false, LinkTypeEthernet, sampleFrames()...)
	for _, tc := range []struct {
		name string
		data []byte
		want error
		pkts int
	}{
		{"empty", nil, ErrNotPcap, 0},
		{"short header", good[:23], ErrNotPcap, 0},
		{"bad magic", append([]byte{1, 2, 3, 4}, good[4:]...), ErrNotPcap, 0},
		{"linux cooked", pcapFile(binary.LittleEndian, false, 113), ErrLinkType, 0},
		{"cut in record header", good[:24+16+14+20+20+5], ErrTruncated, 1},
		{"cut in record body", good[:24+16+10], ErrTruncated, 0},
		{"absurd length", func() []byte {
			b := bytes.Clone(good[:24+16])
			binary.LittleEndian.PutUint32(b[24+8:], 1<<31)
			return b
		}(), ErrTruncated, 0},
	} {
		pkts, err := ParsePcap(tc.data)
		if !errors.Is(err, tc.want) || len(pkts) != tc.pkts {
			t.Errorf("%s: ParsePcap = %d packets, %v; want %d packets, %v", tc.name, len(pkts), err, tc.pkts, tc.want)
		}
	}
	if pkts, err := ParsePcap(good[:24]); err != nil || len(pkts) != 0 {
		t.Errorf("header only: ParsePcap = %d packets, %v; want 0, nil", len(pkts), err)
	}
	path := filepath.Join(t.TempDir(), "cut.pcap")
	if err := os.WriteFile(path, good[:len(good)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPcap(path); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), path) {
		t.Errorf("ReadPcap(truncated file) = %v, want ErrTruncated naming %s", err, path)
	}
}

// FuzzReadPcap: whatever the bytes, the parser returns (never panics), String works on
// every packet, and every decoded slice lies inside the record.
func FuzzReadPcap(f *testing.F) {
	frames := sampleFrames()
	f.Add(pcapFile(binary.LittleEndian, false, LinkTypeEthernet, frames...))      // every layer
	f.Add(pcapFile(binary.BigEndian, true, LinkTypeEthernet, frames...))          // other order, ns
	f.Add(pcapFile(binary.LittleEndian, false, LinkTypeEthernet, frames[0])[:50]) // truncated
	f.Add(pcapFile(binary.LittleEndian, false, 113, frames[0]))                   // not Ethernet
	f.Add([]byte("not a pcap file at all, just text that is long enough"))        // bad magic
	// An IPv4 header with IHL 15 and a total length shorter than the header.
	f.Add(pcapFile(binary.LittleEndian, false, LinkTypeEthernet,
		ether(macA, macB, EtherTypeIPv4, append([]byte{0x4f, 0, 0, 10}, make([]byte, 60)...))))
	// IPv6 with a hop-by-hop header claiming more length than there is.
	f.Add(pcapFile(binary.LittleEndian, false, LinkTypeEthernet,
		ether(macA, macB, EtherTypeIPv6, ipv6("2001:db8::1", "2001:db8::2", 1, 0, []byte{ProtoTCP, 200, 0, 0, 0, 0, 0, 0}))))
	f.Fuzz(func(t *testing.T, data []byte) {
		pkts, _ := ParsePcap(data)
		for _, p := range pkts {
			_ = p.String()
			for _, s := range [][]byte{p.Network, p.Payload} {
				if len(s) > len(p.Raw) {
					t.Fatalf("decoded slice of %d bytes from a %d-byte frame", len(s), len(p.Raw))
				}
			}
		}
	})
}
