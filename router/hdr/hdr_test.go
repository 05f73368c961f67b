package hdr

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// DecTTL against a full recomputation, over TTLs and header words that meet
// every carry case; the checksum stays valid and only TTL and checksum move.
func TestDecTTLMatchesRecompute(t *testing.T) {
	ip := []byte{0x45, 0, 0, 84, 0, 0, 0x40, 0, 64, 1, 0, 0, 198, 51, 100, 10, 203, 0, 113, 10}
	for ttl := 1; ttl < 256; ttl++ {
		for id := 0; id < 65536; id += 257 {
			ip[8] = byte(ttl)
			binary.BigEndian.PutUint16(ip[4:], uint16(id))
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip, 0))
			before := append([]byte(nil), ip...)
			DecTTL(ip)
			if checksum.Checksum(ip, 0) != 0xffff {
				t.Fatalf("ttl %d id %d: checksum invalid after DecTTL", ttl, id)
			}
			if ip[8] != byte(ttl-1) {
				t.Fatalf("ttl %d: now %d", ttl, ip[8])
			}
			for i := range ip {
				if i != 8 && i != 10 && i != 11 && ip[i] != before[i] {
					t.Fatalf("byte %d changed", i)
				}
			}
		}
	}
}

func TestDecTTLZeroAllocs(t *testing.T) {
	ip := make([]byte, 20)
	ip[8] = 255
	if a := testing.AllocsPerRun(100, func() { ip[8] = 64; DecTTL(ip) }); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}

func TestExceeds(t *testing.T) {
	// IPv4, 20-byte header, a TCP header of 32 bytes (data offset 8).
	ip := make([]byte, 20+32+100)
	ip[20+12] = 8 << 4
	for _, tc := range []struct {
		name  string
		tot   int
		proto uint8
		seg   int
		mtu   uint32
		want  bool
	}{
		{"plain, fits", 1500, 6, 0, 1500, false},
		{"plain, one byte over", 1501, 17, 0, 1500, true},
		{"super-frame, segments fit exactly", 60000, 6, 1448, 1500, false},
		{"super-frame, segments one byte over", 60000, 6, 1449, 1500, true},
		{"super-frame, segments fit a smaller link", 60000, 6, 1348, 1400, false},
		{"super-frame not TCP", 60000, 17, 1448, 1500, true},
	} {
		if got := Exceeds(ip, 20, tc.tot, tc.proto, tc.seg, tc.mtu); got != tc.want {
			t.Errorf("%s: Exceeds = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !Exceeds(ip[:30], 20, 60000, 6, 1000, 9000) {
		t.Error("a super-frame too short to hold its TCP header is not too big")
	}
}
