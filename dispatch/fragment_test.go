package dispatch

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// readNow returns the next frame queued on the test's end of a LAN pair,
// or nil at once when there is none (the forwarder writes before Inbound
// returns, so there is nothing to wait for).
func readNow(t *testing.T, f *os.File) []byte {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n := -1
	rc.Read(func(fd uintptr) bool {
		n, _ = unix.Read(int(fd), buf)
		return true
	})
	if n <= 0 {
		return nil
	}
	return buf[:n]
}

// reassemble is a reference reassembly written from RFC 791 alone, not from
// the code under test: it places every fragment's data at its offset,
// refuses overlaps, gaps and pieces beyond the largest datagram, and
// reports the data from firstOff (bytes) on, with the MF flag of the piece
// that ends it. Every piece but the one ending the data must carry MF and a
// multiple of 8 bytes.
func reassemble(t *testing.T, frags [][]byte, firstOff int) (data []byte, lastMF bool) {
	t.Helper()
	type piece struct {
		off  int
		data []byte
		mf   bool
	}
	var ps []piece
	for i, ip := range frags {
		if len(ip) < 20 || ip[0]>>4 != 4 {
			t.Fatalf("fragment %d: not IPv4", i)
		}
		hl := int(ip[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:4]))
		if hl < 20 || tot != len(ip) || tot < hl {
			t.Fatalf("fragment %d: header length %d, total length %d, %d bytes", i, hl, tot, len(ip))
		}
		if checksum.Checksum(ip[:hl], 0) != 0xffff {
			t.Fatalf("fragment %d: bad header checksum", i)
		}
		flags := ip[6] >> 5
		off := int(binary.BigEndian.Uint16(ip[6:8])&0x1fff) * 8
		ps = append(ps, piece{off: off, data: ip[hl:], mf: flags&1 != 0})
	}
	// Order by offset (insertion sort: a handful of pieces).
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && ps[j].off < ps[j-1].off; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
	at := firstOff
	for i, p := range ps {
		if p.off != at {
			t.Fatalf("piece %d starts at byte %d, the data so far ends at %d (gap or overlap)", i, p.off, at)
		}
		if p.off+len(p.data) > 65535-20 {
			t.Fatalf("piece %d ends at byte %d: beyond the largest datagram", i, p.off+len(p.data))
		}
		if i < len(ps)-1 && (!p.mf || len(p.data)%8 != 0) {
			t.Fatalf("piece %d of %d: MF %v with %d bytes; all but the last need MF and a multiple of 8", i, len(ps), p.mf, len(p.data))
		}
		data = append(data, p.data...)
		at += len(p.data)
		lastMF = p.mf
	}
	return data, lastMF
}

// FuzzFragment cuts IPv4 packets (fragments themselves or whole, with or
// without options) for a LAN of a smaller MTU and checks the pieces against
// the reference reassembly: the same data at the same offsets, MF on every
// piece but the last, the last piece's MF that of the packet cut, every
// piece within the MTU with TTL-1 and the client's server's MAC. A packet
// whose data would end beyond the largest datagram is dropped and counted.
func FuzzFragment(f *testing.F) {
	f.Add(uint16(0), uint16(3000), uint16(576), uint8(0))
	f.Add(uint16(0x2000|100), uint16(1600), uint16(700), uint8(0))
	f.Add(uint16(0x2000|8100), uint16(2900), uint16(1500), uint8(0)) // ends past 65535: dropped
	f.Add(uint16(8100), uint16(700), uint16(300), uint8(0))          // near the top, last fragment
	f.Add(uint16(0x2000|8000), uint16(1515), uint16(1000), uint8(1)) // ends exactly at the limit
	f.Add(uint16(0), uint16(2000), uint16(600), uint8(3))            // options
	f.Add(uint16(5), uint16(100), uint16(68), uint8(2))              // smallest MTU
	f.Fuzz(func(t *testing.T, fw, n, mtu uint16, optSel uint8) {
		n %= 4000
		mtu = 68 + mtu%(1500-68+1)
		fw &^= 0x4000 // without DF: cut, not refused
		optSets := [][]byte{
			nil,
			{148, 4, 0, 0},                         // router alert: copied
			{7, 7, 4, 0, 0, 0, 0, 0},               // record route: not copied
			{148, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0}, // both
		}
		opts := optSets[int(optSel)%len(optSets)]
		hl := 20 + len(opts)
		if hl+int(n) <= int(mtu) {
			n = mtu - uint16(hl) + 1 + n%64 // always too big for the LAN
		}
		lan, peer := lanWithMTU(t, uint32(mtu))
		fwd, c, v := testForwarder(t, lan, nil)
		client := netip.AddrFrom4([4]byte{198, 51, 100, byte(fw)})
		in := ipv4Frame(client, opts, fw, int(n))
		want := append([]byte(nil), in[14+hl:]...)
		if !fwd.Inbound(nil, in).Taken() {
			t.Fatal("ghost packet not taken")
		}
		idx, _, _ := v.Selector.Select(client)
		var frags [][]byte
		for {
			out := readNow(t, peer)
			if out == nil {
				break
			}
			if [6]byte(out[0:6]) != v.MACs[idx] {
				t.Fatalf("a piece went to %x, the client's server is %x", out[0:6], v.MACs[idx])
			}
			ip := out[14:]
			if len(ip) > int(mtu) {
				t.Fatalf("a %d-byte piece on a LAN of MTU %d", len(ip), mtu)
			}
			if ip[8] != 63 || ip[9] != 17 || binary.BigEndian.Uint16(ip[4:6]) != 0x1234 || ip[6]&0x40 != 0 {
				t.Fatalf("piece TTL %d proto %d id %#x flags %#x; want 63, 17, 0x1234, no DF", ip[8], ip[9], binary.BigEndian.Uint16(ip[4:6]), ip[6]>>5)
			}
			frags = append(frags, append([]byte(nil), ip...))
		}
		first := int(fw&0x1fff) * 8
		st := c.Stats()
		if first+int(n) > 65535-20 {
			if len(frags) != 0 || st.Malformed.Load() != 1 {
				t.Fatalf("data ending at byte %d: %d pieces sent, malformed %d; want none sent, 1 counted", first+int(n), len(frags), st.Malformed.Load())
			}
			return
		}
		if int(mtu) < hl+8 {
			if len(frags) != 0 || st.Unfragmentable.Load() != 1 {
				t.Fatalf("MTU %d under header %d + 8: %d pieces, unfragmentable %d", mtu, hl, len(frags), st.Unfragmentable.Load())
			}
			return
		}
		if len(frags) < 2 {
			t.Fatalf("%d pieces for %d data bytes over MTU %d", len(frags), n, mtu)
		}
		got, lastMF := reassemble(t, frags, first)
		if !bytes.Equal(got, want) {
			t.Fatalf("reassembled %d bytes differ from the %d sent", len(got), len(want))
		}
		if lastMF != (fw&0x2000 != 0) {
			t.Fatalf("the last piece's MF is %v, the packet cut had %v", lastMF, fw&0x2000 != 0)
		}
		if st.Fragmented.Load() != 1 || st.Malformed.Load() != 0 {
			t.Fatalf("fragmented %d malformed %d, want 1 0", st.Fragmented.Load(), st.Malformed.Load())
		}
	})
}
