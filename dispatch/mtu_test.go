package dispatch

import (
	"bytes"
	"encoding/binary"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"net/netip"
	"os"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/router/tap"
)

// ipv4Frame builds an Ethernet frame with an IPv4 packet from src to the
// ghost: options opts (a multiple of 4 bytes), flags and fragment offset
// fw, TTL 64, protocol 17, and n payload bytes numbered 0, 1, 2, ...
func ipv4Frame(src netip.Addr, opts []byte, fw uint16, n int) []byte {
	hl := 20 + len(opts)
	f := make([]byte, 14+hl+n)
	copy(f[0:6], hookLANMAC)
	copy(f[6:12], hookInMAC)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(hl+n))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], fw)
	ip[8], ip[9] = 64, 17
	s, d := src.As4(), hookGhost.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	copy(ip[20:], opts)
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip[:hl], 0))
	for i := range n {
		ip[hl+i] = byte(i * 7)
	}
	return f
}

// lanWithMTU is lanPair with the LAN link's MTU set.
func lanWithMTU(t *testing.T, mtu uint32) (*tap.Endpoint, *os.File) {
	lan, peer := lanPair(t)
	lan.SetMTU(mtu)
	return lan, peer
}

func TestTooBigWithDFDrawsFragmentationNeeded(t *testing.T) {
	lan, peer := lanWithMTU(t, 1400)
	errs := &recordedError{}
	f, c, _ := testForwarder(t, lan, errs)
	client := netip.MustParseAddr("198.51.100.10")
	in := ipv4Frame(client, nil, 0x4000, 1401-20) // 1401 bytes, DF
	orig := append([]byte(nil), in...)
	if !f.Inbound(nil, in).Taken() {
		t.Fatal("ghost packet not taken")
	}
	if errs.n != 1 || errs.typ != 3 || errs.code != 4 {
		t.Fatalf("ICMP sent %d times, type %d code %d; want one destination unreachable / fragmentation needed (3/4)", errs.n, errs.typ, errs.code)
	}
	if mtu := binary.BigEndian.Uint16(errs.rest[2:4]); mtu != 1400 || errs.rest[0] != 0 || errs.rest[1] != 0 {
		t.Fatalf("next-hop MTU field %v, want 1400 (RFC 1191)", errs.rest)
	}
	if !bytes.Equal(errs.quoted, orig) {
		t.Fatal("the error is not about the packet as it arrived (TTL untouched)")
	}
	if got := c.Stats().TooBig.Load(); got != 1 {
		t.Fatalf("TooBig = %d, want 1", got)
	}
	if out := readFrame(t, peer); out != nil {
		t.Fatalf("a %d-byte frame reached the LAN", len(out))
	}
	// Exactly the MTU passes whole.
	if !f.Inbound(nil, ipv4Frame(client, nil, 0x4000, 1400-20)).Taken() {
		t.Fatal("ghost packet not taken")
	}
	if out := readFrame(t, peer); len(out) != 14+1400 {
		t.Fatalf("a packet of exactly the MTU: got %d bytes on the LAN, want %d", len(out), 14+1400)
	}
	if errs.n != 1 {
		t.Fatal("a packet of exactly the MTU drew an error")
	}
}

func TestTooBigWithoutDFIsFragmented(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mtu     uint32
		opts    []byte
		fw      uint16 // flags and offset of the packet as it arrives
		payload int
		later   []byte // options expected in fragments after the first
	}{
		{name: "plain", mtu: 576, payload: 3000},
		{name: "just over", mtu: 1280, payload: 1261},
		{name: "odd MTU", mtu: 1001, payload: 2500},
		// Router alert (148: copied) and record route (7: not copied), padded.
		{name: "options", mtu: 600, opts: []byte{148, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0}, payload: 2000, later: []byte{148, 4, 0, 0}},
		// A fragment (offset 100 units, MF) cut further: MF stays on the last piece.
		{name: "a fragment", mtu: 700, fw: 0x2000 | 100, payload: 1600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lan, peer := lanWithMTU(t, tc.mtu)
			errs := &recordedError{}
			f, c, v := testForwarder(t, lan, errs)
			client := netip.MustParseAddr("198.51.100.77")
			in := ipv4Frame(client, tc.opts, tc.fw, tc.payload)
			hl := 20 + len(tc.opts)
			want := append([]byte(nil), in[14+hl:]...)
			if !f.Inbound(nil, in).Taken() {
				t.Fatal("ghost packet not taken")
			}
			idx, _, _ := v.Selector.Select(client)
			got := make([]byte, tc.payload)
			covered := 0
			var lastMF bool
			for i := 0; covered < tc.payload; i++ {
				out := readFrame(t, peer)
				if out == nil {
					t.Fatalf("fragment %d missing: %d of %d bytes arrived", i, covered, tc.payload)
				}
				if [6]byte(out[0:6]) != v.MACs[idx] {
					t.Fatalf("fragment %d to %x, want the client's server %x", i, out[0:6], v.MACs[idx])
				}
				ip := out[14:]
				fhl := int(ip[0]&0x0f) * 4
				tot := int(binary.BigEndian.Uint16(ip[2:4]))
				if tot != len(ip) || tot > int(tc.mtu) {
					t.Fatalf("fragment %d: total length %d (frame holds %d), MTU %d", i, tot, len(ip), tc.mtu)
				}
				if checksum.Checksum(ip[:fhl], 0) != 0xffff {
					t.Fatalf("fragment %d: bad header checksum", i)
				}
				if ip[8] != 63 || binary.BigEndian.Uint16(ip[4:6]) != 0x1234 || ip[9] != 17 {
					t.Fatalf("fragment %d: TTL %d id %#x proto %d, want 63, 0x1234, 17", i, ip[8], binary.BigEndian.Uint16(ip[4:6]), ip[9])
				}
				fw := binary.BigEndian.Uint16(ip[6:8])
				if fw&0x4000 != 0 {
					t.Fatalf("fragment %d has DF", i)
				}
				off := int(fw&0x1fff)*8 - int(tc.fw&0x1fff)*8
				if off != covered {
					t.Fatalf("fragment %d at offset %d, want %d", i, off, covered)
				}
				opts := ip[20:fhl]
				wantOpts := tc.opts
				if i > 0 {
					wantOpts = tc.later
				}
				if !bytes.Equal(opts, wantOpts) {
					t.Fatalf("fragment %d options %v, want %v", i, opts, wantOpts)
				}
				data := ip[fhl:]
				lastMF = fw&0x2000 != 0
				if covered+len(data) < tc.payload && (len(data)%8 != 0 || !lastMF) {
					t.Fatalf("fragment %d: %d data bytes, MF %v: a non-last fragment needs MF and a multiple of 8", i, len(data), lastMF)
				}
				copy(got[covered:], data)
				covered += len(data)
			}
			if lastMF != (tc.fw&0x2000 != 0) {
				t.Fatalf("last fragment MF %v, want the original's %v", lastMF, tc.fw&0x2000 != 0)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("reassembled payload differs from the original")
			}
			if out := readFrame(t, peer); out != nil {
				t.Fatalf("an extra %d-byte frame after the fragments", len(out))
			}
			st := c.Stats()
			if st.Fragmented.Load() != 1 || st.Packets.Load() != 1 || errs.n != 0 {
				t.Fatalf("fragmented %d packets %d errors %d, want 1 1 0", st.Fragmented.Load(), st.Packets.Load(), errs.n)
			}
		})
	}
}

func TestIPv6TooBigDrawsPacketTooBig(t *testing.T) {
	lan, peer := lanWithMTU(t, 1280)
	errs := &recordedError{}
	ghost6 := netip.MustParseAddr("2001:db8:ffff::10")
	_, _, v := testForwarder(t, lan, errs)
	c6 := NewCluster("web6", ghost6, lan)
	c6.Publish(v)
	f := NewForwarder(errs)
	f.SetClusters([]*Cluster{c6})
	in := make([]byte, 14+40+1300)
	copy(in[0:6], hookLANMAC)
	in[12], in[13] = 0x86, 0xdd
	ip := in[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], 1300)
	ip[6], ip[7] = 17, 64
	s := netip.MustParseAddr("2001:db8:1::10").As16()
	d := ghost6.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	if !f.Inbound(nil, in).Taken() {
		t.Fatal("ghost packet not taken")
	}
	if errs.n6 != 1 || errs.typ != 2 || errs.code != 0 || binary.BigEndian.Uint32(errs.rest[:]) != 1280 {
		t.Fatalf("ICMPv6 sent %d times, type %d code %d MTU %d; want one packet too big with MTU 1280", errs.n6, errs.typ, errs.code, binary.BigEndian.Uint32(errs.rest[:]))
	}
	if c6.Stats().TooBig.Load() != 1 {
		t.Fatal("TooBig not counted")
	}
	if out := readFrame(t, peer); out != nil {
		t.Fatal("an IPv6 packet over the MTU reached the LAN (routers never fragment IPv6)")
	}
}

func TestCopiedOptionsStopsAtMalformed(t *testing.T) {
	var dst [40]byte
	// Copied option, then a length running past the end.
	if n := hdr.CopiedOptions(dst[:], []byte{0x94, 4, 0, 0, 0x83, 9, 1, 2}); n != 4 || !bytes.Equal(dst[:4], []byte{0x94, 4, 0, 0}) {
		t.Fatalf("got %d bytes %v", n, dst[:n])
	}
	if n := hdr.CopiedOptions(dst[:], []byte{1, 1, 0x83, 3, 1, 0, 0, 0}); n != 4 || !bytes.Equal(dst[:4], []byte{0x83, 3, 1, 0}) {
		t.Fatalf("NOPs skipped, loose source route copied and padded: got %v", dst[:n])
	}
}

func TestFragmentingAllocatesNothing(t *testing.T) {
	lan, peer := lanWithMTU(t, 576)
	f, _, _ := testForwarder(t, lan, nil)
	client := netip.MustParseAddr("198.51.100.10")
	in := ipv4Frame(client, nil, 0, 1400)
	frame := make([]byte, len(in))
	drain := make([]byte, 2048)
	allocs := testing.AllocsPerRun(200, func() {
		copy(frame, in)
		f.Inbound(nil, frame)
		for range 3 { // 552 + 552 + 296 data bytes
			peer.Read(drain)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per fragmented packet, want 0", allocs)
	}
}
