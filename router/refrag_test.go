package router

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// fragmentFrame is an IPv4 UDP fragment from A to B: offset off (8-byte
// units), MF, n data bytes numbered from the offset on.
func fragmentFrame(off uint16, n int) []byte {
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(int(off)*8 + i)
	}
	f := ipFrame(macA, macRA, ipA, ipB, 64, 17, payload)
	ip := header.IPv4(f[14:])
	binary.BigEndian.PutUint16(ip[6:], 0x2000|off)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return f
}

// pieces reads the pieces of one cut fragment from f until its n data
// bytes (from byte off*8 on) have arrived, in any order, checking each:
// within the MTU, TTL 63, a valid header checksum, MF (the packet cut had
// MF), and together covering the data without gap or overlap. It returns
// the data.
func pieces(t *testing.T, f *os.File, off, n, mtu int) []byte {
	t.Helper()
	udp := isIPv4(func(ip header.IPv4) bool { return ip.Protocol() == 17 })
	at := map[int][]byte{}
	total := 0
	for total < n {
		fr := next(f, 3*time.Second, udp)
		if fr == nil {
			t.Fatalf("%d of %d bytes arrived", total, n)
		}
		ip := header.IPv4(fr[14:])
		if !ip.IsChecksumValid() || ip.TTL() != 63 || int(ip.TotalLength()) > mtu || !ip.More() {
			t.Fatalf("piece: checksum ok %v, TTL %d, length %d (MTU %d), MF %v", ip.IsChecksumValid(), ip.TTL(), ip.TotalLength(), mtu, ip.More())
		}
		at[int(ip.FragmentOffset())] = append([]byte(nil), ip.Payload()...)
		total += len(ip.Payload())
	}
	got := make([]byte, 0, n)
	for len(got) < n {
		p, ok := at[off*8+len(got)]
		if !ok {
			t.Fatalf("no piece at byte %d (pieces at %v)", off*8+len(got), keys(at))
		}
		if len(got)+len(p) < n && len(p)%8 != 0 {
			t.Fatalf("a piece of %d bytes that is not the last", len(p))
		}
		got = append(got, p...)
	}
	if len(got) != n {
		t.Fatalf("the pieces carry %d bytes, want %d", len(got), n)
	}
	return got
}

func keys(m map[int][]byte) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestRefragmentKeepsOffsets: an incoming fragment (offset 100 units, MF)
// too big for the egress link leaves as pieces at offsets counted from its
// own, every one with MF, together carrying its data; netstack alone would
// number them from 0. Before the fast path knows the next hop the pieces
// go through netstack, after it they leave from the stage itself. A
// fragment whose data would end past the largest datagram is dropped and
// counted.
func TestRefragmentKeepsOffsets(t *testing.T) {
	rig := newFastRig(t)
	l, _ := rig.r.Link("b")
	l.EP.SetMTU(576)
	const off, n = 100, 1000
	want := fragmentFrame(off, n)[14+20:]

	// Next hop unknown: through netstack. netstack rewrites bytes 6-7 of
	// every fragment it forwards (it recomputes a transport checksum over a
	// piece of a datagram), so only offsets, flags and lengths are checked.
	rig.send(t, rig.a, fragmentFrame(off, n))
	answerARP(t, rig.b, ipB, macB, macRB, netip.MustParseAddr("198.51.100.1"))
	pieces(t, rig.b, off, n, 576)

	// Next hop cached: the pieces leave from the stage, byte for byte.
	rig.warm(t)
	rig.send(t, rig.a, fragmentFrame(off, n))
	if got := pieces(t, rig.b, off, n, 576); !bytes.Equal(got, want) {
		t.Fatal("the pieces' data differ from the fragment's (fast path)")
	}
	// Counted once the last piece is out: it may lag the pieces' arrival.
	deadline := time.Now().Add(3 * time.Second)
	for rig.r.Stats().Refragmented.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c := rig.r.Stats().Refragmented.Load(); c != 2 {
		t.Fatalf("Refragmented = %d, want 2", c)
	}

	// Data ending past byte 65515: no piece, counted.
	before := rig.r.Stats().MalformedDropped.Load()
	rig.send(t, rig.a, fragmentFrame(8100, 1400))
	if f := next(rig.b, 300*time.Millisecond, isIPv4(func(ip header.IPv4) bool { return ip.Protocol() == 17 })); f != nil {
		h := header.IPv4(f[14:])
		t.Fatalf("a piece of an impossible fragment was forwarded (offset %d, MF %v)", h.FragmentOffset(), h.More())
	}
	for rig.r.Stats().MalformedDropped.Load() == before && time.Now().Before(deadline.Add(3*time.Second)) {
		time.Sleep(5 * time.Millisecond)
	}
	if rig.r.Stats().MalformedDropped.Load() != before+1 {
		t.Fatal("the impossible fragment was not counted")
	}
}
