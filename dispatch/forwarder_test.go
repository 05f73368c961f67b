package dispatch

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/test/kit"
)

var (
	hookLANMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	hookInMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	hookGhost  = netip.MustParseAddr("203.0.113.10")
)

type recordedError struct {
	typ, code uint8
	rest      [4]byte
	quoted    []byte // the frame the last error was about, copied
	n, n6     int
}

func (r *recordedError) SendICMPError(_ *tap.Endpoint, frame []byte, typ, code uint8, rest [4]byte) {
	r.typ, r.code, r.rest = typ, code, rest
	r.quoted = append(r.quoted[:0], frame...)
	r.n++
}

func (r *recordedError) SendICMPv6Error(_ *tap.Endpoint, frame []byte, typ, code uint8, rest [4]byte) {
	r.typ, r.code, r.rest = typ, code, rest
	r.quoted = append(r.quoted[:0], frame...)
	r.n6++
}

// lanPair returns a LAN endpoint over a SOCK_SEQPACKET pair and the test's end.
func lanPair(t testing.TB) (*tap.Endpoint, *os.File) {
	t.Helper()
	a, b := kit.Pair(t, "lan")
	ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: "lan", Files: []*os.File{a}, MAC: hookLANMAC, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	return ep, b
}

// testForwarder builds a forwarder with one 4-server cluster whose server
// MACs are 02:00:00:00:01:0N (N = table index + 1); unresolved lists table
// indices left without a MAC.
func testForwarder(t testing.TB, lan *tap.Endpoint, errs ErrorSender, unresolved ...int) (*Forwarder, *Cluster, *View) {
	t.Helper()
	servers := []core.Server{
		{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: true},
		{ID: 1, Addr: netip.MustParseAddr("10.0.0.12"), Weight: 1, Up: true},
		{ID: 2, Addr: netip.MustParseAddr("10.0.0.13"), Weight: 1, Up: true},
		{ID: 3, Addr: netip.MustParseAddr("10.0.0.14"), Weight: 1, Up: true},
	}
	tbl, err := core.NewTable(servers, 4096)
	if err != nil {
		t.Fatal(err)
	}
	v := &View{Selector: core.NewJHashSelector(tbl, 0x5eed), Servers: tbl.Servers()}
	for i := range v.Servers {
		v.MACs = append(v.MACs, [6]byte{0x02, 0, 0, 0, 1, byte(i + 1)})
		v.Stats = append(v.Stats, &ServerStats{})
	}
	for _, i := range unresolved {
		v.MACs[i] = [6]byte{}
	}
	c := NewCluster("web", hookGhost, lan)
	c.Publish(v)
	f := NewForwarder(errs)
	f.SetClusters([]*Cluster{c})
	return f, c, v
}

// udpFrame builds an Ethernet frame with a UDP packet from src to dst, with
// two bytes of Ethernet padding after the IP packet.
func udpFrame(src, dst netip.Addr, ttl uint8) []byte {
	payload := []byte("hello ghost")
	f := make([]byte, 14+20+8+len(payload)+2)
	copy(f[0:6], hookLANMAC)
	copy(f[6:12], hookInMAC)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 0xbeef)
	ip[8], ip[9] = ttl, 17
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip[:20], 0))
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], 9000)
	binary.BigEndian.PutUint16(ip[24:], uint16(8+len(payload)))
	copy(ip[28:], payload)
	return f
}

func readFrame(t *testing.T, f *os.File) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	f.SetReadDeadline(time.Now().Add(time.Second))
	n, err := f.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestForwarderDispatchesUnchangedButTTL(t *testing.T) {
	lan, peer := lanPair(t)
	f, c, v := testForwarder(t, lan, nil)
	for i := 0; i < 32; i++ {
		client := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		in := udpFrame(client, hookGhost, 64)
		orig := append([]byte(nil), in...)
		if !f.Inbound(nil, in).Taken() {
			t.Fatalf("client %s: ghost packet not taken by the forwarder", client)
		}
		out := readFrame(t, peer)
		if out == nil {
			t.Fatalf("client %s: nothing written to the LAN", client)
		}
		idx, _, _ := v.Selector.Select(client)
		if [6]byte(out[0:6]) != v.MACs[idx] || net.HardwareAddr(out[6:12]).String() != hookLANMAC.String() {
			t.Fatalf("client %s: frame %x -> %x, want %s -> %x", client, out[6:12], out[0:6], hookLANMAC, v.MACs[idx])
		}
		if len(out) != len(orig)-2 {
			t.Fatalf("client %s: %d bytes out, want %d (padding trimmed)", client, len(out), len(orig)-2)
		}
		if out[14+8] != 63 {
			t.Fatalf("client %s: TTL %d, want 63", client, out[14+8])
		}
		if checksum.Checksum(out[14:34], 0) != 0xffff {
			t.Fatalf("client %s: header checksum wrong after the TTL change", client)
		}
		// Everything else in the IP packet is as it came.
		want := append([]byte(nil), orig[14:len(orig)-2]...)
		want[8], want[10], want[11] = out[14+8], out[14+10], out[14+11]
		if string(out[14:]) != string(want) {
			t.Fatalf("client %s: IP packet changed beyond TTL and checksum", client)
		}
		if v.Stats[idx].Packets.Load() == 0 {
			t.Fatalf("client %s: server %d's counter did not move", client, idx)
		}
	}
	if n := c.Stats().Packets.Load(); n != 32 {
		t.Fatalf("cluster packets = %d, want 32", n)
	}
}

func TestForwarderTTLChecksumMatchesFullRecompute(t *testing.T) {
	lan, peer := lanPair(t)
	f, _, _ := testForwarder(t, lan, nil)
	// Walk TTLs and IDs so the incremental update meets every carry case.
	for ttl := 2; ttl < 256; ttl += 7 {
		for id := 0; id < 65536; id += 4099 {
			in := udpFrame(netip.MustParseAddr("198.51.100.77"), hookGhost, uint8(ttl))
			binary.BigEndian.PutUint16(in[14+4:], uint16(id))
			in[14+10], in[14+11] = 0, 0
			binary.BigEndian.PutUint16(in[14+10:], ^checksum.Checksum(in[14:34], 0))
			f.Inbound(nil, in)
			out := readFrame(t, peer)
			if out == nil || checksum.Checksum(out[14:34], 0) != 0xffff {
				t.Fatalf("ttl %d id %d: bad checksum after dispatch", ttl, id)
			}
		}
	}
}

func TestForwarderDropsAndCounts(t *testing.T) {
	lan, peer := lanPair(t)
	errs := &recordedError{}
	f, c, v := testForwarder(t, lan, errs)
	client := netip.MustParseAddr("198.51.100.10")

	// TTL 1: time exceeded from the appliance, nothing on the LAN.
	f.Inbound(nil, udpFrame(client, hookGhost, 1))
	if errs.n != 1 || errs.typ != 11 || c.Stats().TTLExceeded.Load() != 1 {
		t.Fatalf("TTL 1: %d errors (type %d), counter %d; want one time exceeded", errs.n, errs.typ, c.Stats().TTLExceeded.Load())
	}
	// Bad header checksum.
	bad := udpFrame(client, hookGhost, 64)
	bad[14+10] ^= 0xff
	f.Inbound(nil, bad)
	// Total length beyond the frame.
	short := udpFrame(client, hookGhost, 64)
	binary.BigEndian.PutUint16(short[14+2:], 1400)
	f.Inbound(nil, short)
	if n := c.Stats().Malformed.Load(); n != 2 {
		t.Fatalf("Malformed = %d, want 2", n)
	}
	if out := readFrame(t, peer); out != nil {
		t.Fatalf("a dropped packet reached the LAN: %x", out)
	}
	// Not for a ghost: handed on.
	if f.Inbound(nil, udpFrame(client, netip.MustParseAddr("10.0.0.11"), 64)).Taken() {
		t.Fatal("a packet for a non-ghost address was taken")
	}

	// A server without a MAC: counted and dropped, never sent elsewhere.
	idx, _, _ := v.Selector.Select(client)
	lan2, peer2 := lanPair(t)
	f2, c2, _ := testForwarder(t, lan2, nil, idx)
	f2.Inbound(nil, udpFrame(client, hookGhost, 64))
	if c2.Stats().NoMAC.Load() != 1 {
		t.Fatalf("NoMAC = %d, want 1", c2.Stats().NoMAC.Load())
	}
	if out := readFrame(t, peer2); out != nil {
		t.Fatal("a packet for an unresolved server was sent")
	}
}

func TestForwarderNoLiveServer(t *testing.T) {
	lan, peer := lanPair(t)
	f, c, _ := testForwarder(t, lan, nil)
	tbl, _ := core.NewTable([]core.Server{{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: false}}, 64)
	c.Publish(&View{Selector: core.NewJHashSelector(tbl, 1), Servers: tbl.Servers(), MACs: [][6]byte{{2, 0, 0, 0, 1, 1}}, Stats: []*ServerStats{{}}})
	f.Inbound(nil, udpFrame(netip.MustParseAddr("198.51.100.10"), hookGhost, 64))
	if c.Stats().NoServer.Load() != 1 {
		t.Fatalf("NoServer = %d, want 1", c.Stats().NoServer.Load())
	}
	if readFrame(t, peer) != nil {
		t.Fatal("a packet was sent to a dead server")
	}
}

func TestForwarderZeroAllocs(t *testing.T) {
	lan := nullLAN(t, "null")
	f, c, _ := testForwarder(t, lan, nil)
	frame := udpFrame(netip.MustParseAddr("198.51.100.10"), hookGhost, 64)
	work := make([]byte, len(frame))
	allocs := testing.AllocsPerRun(1000, func() {
		copy(work, frame)
		f.Inbound(nil, work)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per dispatched packet, want 0", allocs)
	}
	if c.Stats().Packets.Load() == 0 {
		t.Fatal("nothing was dispatched")
	}
}

func BenchmarkForwarderInbound(b *testing.B) {
	lan := nullLAN(b, "null")
	f, _, _ := testForwarder(b, lan, nil)
	frames := make([][]byte, 256)
	for i := range frames {
		frames[i] = udpFrame(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), hookGhost, 64)
	}
	work := make([]byte, len(frames[0]))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(work, frames[i&255])
		f.Inbound(nil, work)
	}
}
