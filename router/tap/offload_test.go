package tap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/router/hdr"
)

// superFrame builds an Ethernet TCP super-frame as the kernel hands it over
// with segmentation offload: full IP header (length of the whole), TCP
// header with 12 bytes of options, the payload, and in the TCP checksum field
// the pseudo-header sum only (NEEDS_CSUM). v6 selects IPv6.
func superFrame(v6 bool, payload []byte, tcpFlags uint8) ([]byte, vnetHdr) {
	const tcpLen = 32
	ipLen := hdr.IPv4Min
	if v6 {
		ipLen = hdr.IPv6Len
	}
	f := make([]byte, hdr.EthLen+ipLen+tcpLen+len(payload))
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 2})
	ip := f[hdr.EthLen:]
	var pseudo uint16
	if v6 {
		f[12], f[13] = 0x86, 0xdd
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(tcpLen+len(payload)))
		ip[6], ip[7] = 6, 64
		ip[8], ip[23] = 0x20, 1 // 2000::1
		ip[24], ip[39] = 0x20, 2
		pseudo = checksum.Checksum(ip[8:40], 0)
	} else {
		f[12], f[13] = 0x08, 0x00
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(hdr.IPv4Min+tcpLen+len(payload)))
		binary.BigEndian.PutUint16(ip[4:], 0xfff0) // the IDs of the segments wrap
		ip[6] = 0x40                               // DF
		ip[8], ip[9] = 64, 6
		copy(ip[12:16], []byte{198, 51, 100, 10})
		copy(ip[16:20], []byte{10, 0, 0, 11})
		binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip[:hdr.IPv4Min], 0))
		pseudo = checksum.Checksum(ip[12:20], 0)
	}
	tcp := ip[ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], 0xfffff000) // sequence numbers wrap too
	binary.BigEndian.PutUint32(tcp[8:], 77)
	tcp[12] = tcpLen / 4 << 4
	tcp[13] = tcpFlags
	binary.BigEndian.PutUint16(tcp[14:], 512)
	tcp[20], tcp[21], tcp[22] = 1, 1, 8 // NOP NOP timestamps
	tcp[23] = 10
	copy(tcp[tcpLen:], payload)
	pseudo = checksum.Combine(pseudo, 6)
	pseudo = checksum.Combine(pseudo, uint16(tcpLen+len(payload)))
	binary.BigEndian.PutUint16(tcp[16:], pseudo)
	h := vnetHdr{
		flags:      vnetNeedsCsum,
		gsoType:    vnetGSOTCPv4,
		hdrLen:     uint16(hdr.EthLen + ipLen + tcpLen),
		gsoSize:    1448,
		csumStart:  uint16(hdr.EthLen + ipLen),
		csumOffset: 16,
	}
	if v6 {
		h.gsoType = vnetGSOTCPv6
	}
	return f, h
}

// checkSegment is the slow, obvious check of one plain TCP frame: the IP
// header (length, checksum) and the TCP checksum over the pseudo-header.
func checkSegment(seg []byte) error {
	ip := seg[hdr.EthLen:]
	var l4 []byte
	var pseudo uint16
	if ip[0]>>4 == 6 {
		if n := int(binary.BigEndian.Uint16(ip[4:])); n != len(ip)-hdr.IPv6Len {
			return fmt.Errorf("IPv6 payload length %d, frame carries %d", n, len(ip)-hdr.IPv6Len)
		}
		l4 = ip[hdr.IPv6Len:]
		pseudo = checksum.Checksum(ip[8:40], 0)
	} else {
		if n := int(binary.BigEndian.Uint16(ip[2:])); n != len(ip) {
			return fmt.Errorf("IPv4 total length %d, frame carries %d", n, len(ip))
		}
		if checksum.Checksum(ip[:hdr.IPv4Min], 0) != 0xffff {
			return fmt.Errorf("bad IPv4 header checksum")
		}
		l4 = ip[hdr.IPv4Min:]
		pseudo = checksum.Checksum(ip[12:20], 0)
	}
	pseudo = checksum.Combine(pseudo, 6)
	pseudo = checksum.Combine(pseudo, uint16(len(l4)))
	if checksum.Checksum(l4, pseudo) != 0xffff {
		return fmt.Errorf("bad TCP checksum")
	}
	return nil
}

func TestSegmentMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v6      bool
		size    int
		mss     uint16
		flags   uint8
		ecn     bool
		wantSeg int
	}{
		{"v4 many", false, 60000, 1448, 0x18, false, 42},
		{"v4 exact multiple", false, 1448 * 4, 1448, 0x10, false, 4},
		{"v4 short tail, FIN", false, 1448*3 + 7, 1448, 0x19, false, 4},
		{"v4 CWR first only", false, 5000, 1000, 0x98, true, 5},
		{"v4 one segment", false, 100, 1448, 0x18, false, 1},
		{"v6 many", true, 30000, 1428, 0x18, false, 22},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := make([]byte, tc.size)
			rng := rand.New(rand.NewPCG(1, uint64(tc.size)))
			for i := range payload {
				payload[i] = byte(rng.Uint32())
			}
			frame, h := superFrame(tc.v6, payload, tc.flags)
			h.gsoSize = tc.mss
			if tc.ecn {
				h.gsoType |= vnetGSOECN
			}
			var s segmenter
			if !s.reset(frame, &h) {
				t.Fatal("reset refused a good super-frame")
			}
			buf := make([]byte, MaxFrame)
			var got []byte
			n := 0
			l4 := hdr.EthLen + hdr.IPv4Min
			if tc.v6 {
				l4 = hdr.EthLen + hdr.IPv6Len
			}
			for seg := s.next(buf); seg != nil; seg = s.next(buf) {
				if err := checkSegment(seg); err != nil {
					t.Fatalf("segment %d: %v", n, err)
				}
				if len(seg)-l4-32 > int(tc.mss) {
					t.Fatalf("segment %d carries %d bytes, more than the MSS %d", n, len(seg)-l4-32, tc.mss)
				}
				if seq, want := binary.BigEndian.Uint32(seg[l4+4:]), 0xfffff000+uint32(len(got)); seq != want {
					t.Fatalf("segment %d: seq %#x, want %#x", n, seq, want)
				}
				if !tc.v6 {
					if id, want := binary.BigEndian.Uint16(seg[hdr.EthLen+4:]), uint16(0xfff0+n); id != want {
						t.Fatalf("segment %d: IP ID %#x, want %#x", n, id, want)
					}
				}
				flags := seg[l4+13]
				last := len(got)+len(seg)-l4-32 == tc.size
				wantFlags := tc.flags
				if !last {
					wantFlags &^= hdr.TCPFin | hdr.TCPPsh
				}
				if n > 0 {
					wantFlags &^= hdr.TCPCwr
				}
				if flags != wantFlags {
					t.Fatalf("segment %d (last %v): flags %#x, want %#x", n, last, flags, wantFlags)
				}
				got = append(got, seg[l4+32:]...)
				n++
			}
			if n != tc.wantSeg {
				t.Fatalf("%d segments, want %d", n, tc.wantSeg)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("the segments' payloads do not add up to the super-frame's")
			}
		})
	}
}

func TestSegmentRefusesWhatItCannotCut(t *testing.T) {
	good, h := superFrame(false, make([]byte, 3000), 0x10)
	for _, tc := range []struct {
		name  string
		edit  func(f []byte, h *vnetHdr) []byte
		valid bool
	}{
		{"good", func(f []byte, h *vnetHdr) []byte { return f }, true},
		{"no segment size", func(f []byte, h *vnetHdr) []byte { h.gsoSize = 0; return f }, false},
		{"UDP GSO", func(f []byte, h *vnetHdr) []byte { h.gsoType = vnetGSOUDPL4; return f }, false},
		{"not TCP", func(f []byte, h *vnetHdr) []byte { f[hdr.EthLen+9] = 17; return f }, false},
		{"v6 type on v4", func(f []byte, h *vnetHdr) []byte { h.gsoType = vnetGSOTCPv6; return f }, false},
		{"headers cut", func(f []byte, h *vnetHdr) []byte { return f[:hdr.EthLen+hdr.IPv4Min+10] }, false},
		{"TCP offset short", func(f []byte, h *vnetHdr) []byte { f[hdr.EthLen+hdr.IPv4Min+12] = 0x20; return f }, false},
	} {
		f := append([]byte(nil), good...)
		hh := h
		f = tc.edit(f, &hh)
		var s segmenter
		if ok := s.reset(f, &hh); ok != tc.valid {
			t.Errorf("%s: reset = %v, want %v", tc.name, ok, tc.valid)
		}
	}
}

func TestCompleteChecksum(t *testing.T) {
	frame, h := superFrame(false, []byte("a partial checksum completed in software"), 0x18)
	h.gsoType, h.gsoSize = vnetGSONone, 0
	if !completeChecksum(frame, &h) {
		t.Fatal("completeChecksum refused a good frame")
	}
	if err := checkSegment(frame); err != nil {
		t.Fatal(err)
	}
	if h.flags&vnetNeedsCsum != 0 {
		t.Fatal("NEEDS_CSUM still set after completion")
	}
	bad := vnetHdr{flags: vnetNeedsCsum, csumStart: uint16(len(frame) - 1), csumOffset: 16}
	if completeChecksum(frame, &bad) {
		t.Fatal("completeChecksum accepted an offset past the frame")
	}
}

// FuzzSegment: whatever the frame and header (small segment sizes
// included), cutting never panics; a segment size below MinGSOSize is
// refused; every segment is no larger than MaxFrame and carries at most
// gso_size payload bytes; the segments carry exactly the payload; and
// their number is bounded by the payload over MinGSOSize.
func FuzzSegment(f *testing.F) {
	frame, h := superFrame(false, make([]byte, 400), 0x18) // a good IPv4 super-frame
	f.Add(frame, h.gsoType, h.gsoSize, h.csumStart)
	frame6, h6 := superFrame(true, make([]byte, 400), 0x18) // a good IPv6 one
	f.Add(frame6, h6.gsoType, h6.gsoSize, h6.csumStart)
	f.Add(frame[:60], h.gsoType, uint16(100), uint16(200))   // cut short, csum_start past the end
	f.Add(frame, h.gsoType, uint16(1), h.csumStart)          // gso_size 1
	f.Add(frame, h.gsoType, uint16(MinGSOSize), h.csumStart) // the floor
	buf := make([]byte, MaxFrame)
	f.Fuzz(func(t *testing.T, frame []byte, typ uint8, mss, start uint16) {
		if len(frame) > MaxFrame {
			return
		}
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: typ, gsoSize: mss, csumStart: start, csumOffset: 16}
		var s segmenter
		if !s.reset(frame, &h) {
			return
		}
		if mss < MinGSOSize {
			t.Fatalf("gso_size %d below the floor %d accepted", mss, MinGSOSize)
		}
		payload, carried := len(frame)-s.hdr, 0
		for i := 0; ; i++ {
			seg := s.next(buf)
			if seg == nil {
				break
			}
			if len(seg) > MaxFrame || i > payload/MinGSOSize+1 {
				t.Fatalf("segment %d of %d bytes (payload %d, gso_size %d)", i, len(seg), payload, mss)
			}
			n := len(seg) - s.hdr
			if n > int(mss) {
				t.Fatalf("segment %d carries %d bytes, gso_size %d", i, n, mss)
			}
			carried += n
		}
		if carried != payload {
			t.Fatalf("segments carried %d of %d payload bytes", carried, payload)
		}
		completeChecksum(append(buf[:0], frame...), &h) // on a copy: the input is the fuzzer's
	})
}
