package hdr

import (
	"bytes"
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// FuzzFragment cuts IPv4 packets (fragments themselves or whole, with or
// without options) and reassembles the pieces by a reference written from
// RFC 791 alone: each piece within the MTU with a valid header, the same
// identification, TTL, protocol and addresses, pieces in order covering the
// data exactly from the packet's own offset, MF and a multiple of 8 bytes on
// all but the last, the last with the packet's MF, the first with all its
// options and the rest with only the copied ones. A packet whose data ends
// past the largest datagram, or an MTU that cannot carry the header and 8
// bytes, yields nothing.
func FuzzFragment(f *testing.F) {
	f.Add(uint16(0), uint16(3000), uint16(576), uint8(0))
	f.Add(uint16(0x2000|100), uint16(1600), uint16(700), uint8(0))
	f.Add(uint16(0x2000|8100), uint16(2900), uint16(1500), uint8(0))
	f.Add(uint16(0x2000|8000), uint16(1515), uint16(1000), uint8(1))
	f.Add(uint16(0), uint16(2000), uint16(600), uint8(3))
	f.Add(uint16(5), uint16(100), uint16(30), uint8(2))
	optSets := [][]byte{nil, {148, 4, 0, 0}, {7, 7, 4, 0, 0, 0, 0, 0}, {148, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0}}
	laterSets := [][]byte{nil, {148, 4, 0, 0}, nil, {148, 4, 0, 0}}
	f.Fuzz(func(t *testing.T, fw, n, mtu uint16, optSel uint8) {
		n %= 9000
		mtu = 20 + mtu%1600
		fw &^= 0x4000
		opts, later := optSets[int(optSel)%4], laterSets[int(optSel)%4]
		hl := 20 + len(opts)
		ip := make([]byte, hl+int(n))
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		binary.BigEndian.PutUint16(ip[4:], 0xbeef)
		binary.BigEndian.PutUint16(ip[6:], fw)
		ip[8], ip[9] = 63, 17
		copy(ip[12:], []byte{198, 51, 100, 7, 203, 0, 113, 10})
		copy(ip[20:], opts)
		binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip[:hl], 0))
		for i := hl; i < len(ip); i++ {
			ip[i] = byte(i * 13)
		}
		orig := append([]byte(nil), ip...)
		buf := make([]byte, mtu)
		var got []byte
		var ps int
		var lastMF bool
		first := int(fw&0x1fff) * 8
		ok := Fragment(ip, hl, int(mtu), buf, func(p []byte) {
			if len(p) > int(mtu) {
				t.Fatalf("a %d-byte piece for MTU %d", len(p), mtu)
			}
			phl := int(p[0]&0xf) * 4
			if p[0]>>4 != 4 || int(binary.BigEndian.Uint16(p[2:4])) != len(p) || checksum.Checksum(p[:phl], 0) != 0xffff {
				t.Fatalf("piece %d: bad header %x", ps, p[:phl])
			}
			if !bytes.Equal(p[4:6], orig[4:6]) || !bytes.Equal(p[8:10], orig[8:10]) || !bytes.Equal(p[12:20], orig[12:20]) {
				t.Fatalf("piece %d: identification, TTL, protocol or addresses changed", ps)
			}
			wantOpts := opts
			if ps > 0 {
				wantOpts = later
			}
			if !bytes.Equal(p[20:phl], wantOpts) {
				t.Fatalf("piece %d: options %v, want %v", ps, p[20:phl], wantOpts)
			}
			pw := binary.BigEndian.Uint16(p[6:8])
			if pw&0x4000 != 0 || int(pw&0x1fff)*8 != first+len(got) {
				t.Fatalf("piece %d at byte %d (flags %#x), the data so far ends at %d", ps, int(pw&0x1fff)*8, pw>>13, first+len(got))
			}
			if ps > 0 && (!lastMF || (len(got))%8 != 0) {
				t.Fatalf("piece %d follows one without MF or of %d bytes", ps, len(got))
			}
			lastMF = pw&0x2000 != 0
			got = append(got, p[phl:]...)
			ps++
		})
		if !bytes.Equal(ip, orig) {
			t.Fatal("the packet cut was changed")
		}
		if first+int(n) > MaxFragEnd || int(mtu) < hl+8 {
			if ok || ps != 0 {
				t.Fatalf("an impossible cut (end %d, MTU %d, header %d) gave %v with %d pieces", first+int(n), mtu, hl, ok, ps)
			}
			return
		}
		if !ok || !bytes.Equal(got, orig[hl:]) {
			t.Fatalf("ok %v; reassembled %d bytes, want the %d sent", ok, len(got), len(orig)-hl)
		}
		if n > 0 && lastMF != (fw&0x2000 != 0) {
			t.Fatalf("the last piece's MF is %v, the packet's %v", lastMF, fw&0x2000 != 0)
		}
	})
}

func TestFragmentAllocatesNothing(t *testing.T) {
	ip := make([]byte, 20+3000)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	buf := make([]byte, 576)
	n := 0
	emit := func([]byte) { n++ }
	if a := testing.AllocsPerRun(100, func() { Fragment(ip, 20, 576, buf, emit) }); a != 0 {
		t.Fatalf("%v allocations", a)
	}
	if n == 0 {
		t.Fatal("nothing emitted")
	}
}
