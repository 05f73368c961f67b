package arp

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func arpFrame(op uint16, sender, target netip.Addr) []byte {
	f := make([]byte, ethHeader+arpSize)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 7})
	f[12], f[13] = 0x08, 0x06
	p := f[ethHeader:]
	binary.BigEndian.PutUint16(p[0:], 1)
	binary.BigEndian.PutUint16(p[2:], 0x0800)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], op)
	copy(p[8:14], []byte{2, 0, 0, 0, 0, 7})
	s, t := sender.As4(), target.As4()
	copy(p[14:18], s[:])
	copy(p[24:28], t[:])
	return f
}

func TestGuard(t *testing.T) {
	ghost, second := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("10.0.0.250")
	me, server := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.11")
	g := NewGuard([]netip.Addr{ghost, second, netip.MustParseAddr("2001:db8::1")})
	for _, tc := range []struct {
		name  string
		frame []byte
		drop  bool
	}{
		{"gratuitous for the ghost", arpFrame(opRequest, ghost, ghost), true},
		{"reply from the ghost", arpFrame(opReply, ghost, me), true},
		{"request from the ghost", arpFrame(opRequest, ghost, me), true},
		{"reply claiming the second ghost", arpFrame(opReply, second, me), true},
		{"a server's own request", arpFrame(opRequest, server, me), false},
		{"a request for the ghost", arpFrame(opRequest, server, ghost), false},
		{"truncated", arpFrame(opReply, ghost, me)[:30], false},
	} {
		if got := g.Inbound(nil, tc.frame); got != tc.drop {
			t.Errorf("%s: dropped = %v, want %v", tc.name, got, tc.drop)
		}
	}
	s := g.Stats()
	if s.Gratuitous.Load() != 1 || s.Replies.Load() != 2 || s.Requests.Load() != 1 || s.Total() != 4 {
		t.Fatalf("counters: gratuitous %d replies %d requests %d", s.Gratuitous.Load(), s.Replies.Load(), s.Requests.Load())
	}
	g.Protect(nil)
	if g.Inbound(nil, arpFrame(opReply, ghost, me)) {
		t.Fatal("a claim dropped after the protected set was emptied")
	}
}

func FuzzGuard(f *testing.F) {
	f.Add(arpFrame(opReply, netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("10.0.0.1")))
	g := NewGuard([]netip.Addr{netip.MustParseAddr("203.0.113.10")})
	f.Fuzz(func(t *testing.T, b []byte) { g.Inbound(nil, b) })
}
