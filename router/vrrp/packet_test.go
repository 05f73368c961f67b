package vrrp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

// refSum is RFC 1071's one's complement sum, written here from the RFC as
// the oracle (the code under test uses gVisor's).
func refSum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		s += uint32(all[i])<<8 | uint32(all[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// refPseudo is the IPv4 (RFC 768) or IPv6 (RFC 8200 8.1) pseudo-header of
// a VRRP message of n bytes.
func refPseudo(src, dst netip.Addr, n int) []byte {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	if src.Is4() {
		b = append(b, 0, Protocol)
		return binary.BigEndian.AppendUint16(b, uint16(n))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return append(b, 0, 0, 0, Protocol)
}

// Advertisements keepalived 2.2.7 (Debian 12) sent in the interop test,
// from 198.51.100.3 to 224.0.0.18: VRID 51, 10 cs, address 198.51.100.1.
var keepalivedAdverts = map[uint8]string{
	100: "31336401000a35c6c6336401",
	200: "3133c801000ad1c5c6336401",
	0:   "31330001000a99c6c6336401",
}

func TestParseKeepalived(t *testing.T) {
	src, dst := netip.MustParseAddr("198.51.100.3"), Group4()
	for prio, h := range keepalivedAdverts {
		msg, _ := hex.DecodeString(h)
		a, err := Parse(msg, src, dst)
		if err != nil {
			t.Fatalf("keepalived's priority %d advertisement: %v", prio, err)
		}
		if a.VRID != 51 || a.Priority != prio || a.Interval != 10 || a.Count != 1 || a.Addr(0) != netip.MustParseAddr("198.51.100.1") || a.Checksum != PseudoHeader {
			t.Errorf("keepalived's priority %d advertisement parsed as %+v", prio, a)
		}
		// Our encoder produces the same bytes.
		out, err := Append(nil, &Message{VRID: 51, Priority: prio, Interval: 10, Addrs: []netip.Addr{a.Addr(0)}, Checksum: PseudoHeader}, src, dst)
		if err != nil || !bytes.Equal(out, msg) {
			t.Errorf("Append for priority %d = %x, %v; keepalived sent %x", prio, out, err, msg)
		}
		// The same message with the checksum over the message alone (RFC
		// 9568's IPv4 variant) is accepted too, and reported as such.
		alt := append([]byte(nil), msg...)
		alt[6], alt[7] = 0, 0
		binary.BigEndian.PutUint16(alt[6:], ^refSum(alt))
		if a, err := Parse(alt, src, dst); err != nil || a.Checksum != MessageOnly {
			t.Errorf("message-only checksum: %+v, %v", a, err)
		}
		// Any other checksum is not.
		alt[7] ^= 1
		if _, err := Parse(alt, src, dst); !errors.Is(err, ErrChecksum) {
			t.Errorf("corrupted checksum: %v, want ErrChecksum", err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	src, dst := netip.MustParseAddr("198.51.100.3"), Group4()
	good, _ := hex.DecodeString(keepalivedAdverts[100])
	mut := func(f func(b []byte) []byte) []byte {
		b := f(append([]byte(nil), good...))
		if len(b) >= HeaderLen {
			b[6], b[7] = 0, 0
			binary.BigEndian.PutUint16(b[6:], ^refSum(refPseudo(src, dst, len(b)), b))
		}
		return b
	}
	for name, c := range map[string]struct {
		msg  []byte
		want error
	}{
		"short":        {good[:7], ErrShort},
		"v2":           {mut(func(b []byte) []byte { b[0] = 0x21; return b }), ErrVersion},
		"type 2":       {mut(func(b []byte) []byte { b[0] = 0x32; return b }), ErrType},
		"vrid 0":       {mut(func(b []byte) []byte { b[1] = 0; return b }), ErrVRID},
		"no addresses": {mut(func(b []byte) []byte { b[3] = 0; return b }), ErrCount},
		"interval 0":   {mut(func(b []byte) []byte { b[4], b[5] = 0xf0, 0; return b }), ErrInterval},
		"count 2":      {mut(func(b []byte) []byte { b[3] = 2; return b }), ErrShort},
	} {
		if _, err := Parse(c.msg, src, dst); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// IPv6 has no message-only checksum.
	s6, d6 := netip.MustParseAddr("fe80::1"), Group6()
	m := &Message{VRID: 1, Priority: 100, Interval: 100, Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, Checksum: MessageOnly}
	b, err := Append(nil, m, s6, d6)
	if err != nil {
		t.Fatal(err)
	}
	if refSum(refPseudo(s6, d6, len(b)), b) != 0xffff {
		t.Errorf("IPv6 advertisement %x: checksum without the pseudo-header", b)
	}
	b[6], b[7] = 0, 0
	binary.BigEndian.PutUint16(b[6:], ^refSum(b))
	if _, err := Parse(b, s6, d6); !errors.Is(err, ErrChecksum) {
		t.Errorf("IPv6 with a message-only checksum: %v, want ErrChecksum", err)
	}
}

func TestParseAllocs(t *testing.T) {
	msg, _ := hex.DecodeString(keepalivedAdverts[100])
	src, dst := netip.MustParseAddr("198.51.100.3"), Group4()
	if n := testing.AllocsPerRun(100, func() { Parse(msg, src, dst) }); n != 0 {
		t.Errorf("Parse allocates %v times", n)
	}
}

// FuzzParse: whatever the bytes, Parse does not panic, and what it accepts
// is a well-formed advertisement whose checksum the reference sum confirms
// in the style it reports; re-encoding it gives the same bytes; changing
// any one byte of it is detected (rejected, or accepted only as the other
// checksum style).
func FuzzParse(f *testing.F) {
	for _, h := range keepalivedAdverts {
		msg, _ := hex.DecodeString(h)
		f.Add(msg, []byte{198, 51, 100, 3}, []byte{224, 0, 0, 18}, uint16(0))
	}
	v6, _ := Append(nil, &Message{VRID: 52, Priority: 150, Interval: 4095,
		Addrs: []netip.Addr{netip.MustParseAddr("fe80::1"), netip.MustParseAddr("2001:db8::1")}}, netip.MustParseAddr("fe80::2"), Group6())
	f.Add(v6, netip.MustParseAddr("fe80::2").AsSlice(), Group6().AsSlice(), uint16(3))
	f.Fuzz(func(t *testing.T, msg, srcB, dstB []byte, flip uint16) {
		src, ok1 := netip.AddrFromSlice(srcB)
		dst, ok2 := netip.AddrFromSlice(dstB)
		if !ok1 || !ok2 || src.Is4() != dst.Is4() {
			return
		}
		if flip&0x8000 != 0 && len(msg) >= HeaderLen {
			// Reach past the checksum: give the input a valid one.
			msg = append([]byte(nil), msg...)
			msg[6], msg[7] = 0, 0
			binary.BigEndian.PutUint16(msg[6:], ^refSum(refPseudo(src, dst, len(msg)), msg))
		}
		a, err := Parse(msg, src, dst)
		if err != nil {
			return
		}
		alen := 4
		if src.Is6() {
			alen = 16
		}
		n := HeaderLen + int(a.Count)*alen
		switch {
		case a.VRID == 0 || a.Count == 0 || a.Interval == 0 || a.Interval > MaxInterval:
			t.Fatalf("accepted %+v", a)
		case msg[0] != 0x31 || a.VRID != msg[1] || a.Priority != msg[2] || a.Count != msg[3]:
			t.Fatalf("fields %+v from %x", a, msg)
		case a.AddrLen != alen || len(a.Addrs) != int(a.Count)*alen || len(msg) < n:
			t.Fatalf("addresses %+v from %d bytes", a, len(msg))
		case a.Checksum == PseudoHeader && refSum(refPseudo(src, dst, len(msg)), msg) != 0xffff:
			t.Fatalf("pseudo-header checksum accepted but the reference sum disagrees: %x", msg)
		case a.Checksum == MessageOnly && (src.Is6() || refSum(msg) != 0xffff):
			t.Fatalf("message-only checksum accepted but the reference sum disagrees: %x", msg)
		case a.Checksum != PseudoHeader && a.Checksum != MessageOnly:
			t.Fatalf("checksum style %v", a.Checksum)
		}
		if len(msg) == n && msg[4]>>4 == 0 {
			addrs := make([]netip.Addr, a.Count)
			for i := range addrs {
				addrs[i] = a.Addr(i)
			}
			out, err := Append(nil, &Message{VRID: a.VRID, Priority: a.Priority, Interval: a.Interval, Addrs: addrs, Checksum: a.Checksum}, src, dst)
			if err != nil || !bytes.Equal(out, msg) {
				t.Fatalf("re-encoded %x, %v; parsed from %x", out, err, msg)
			}
		}
		bad := append([]byte(nil), msg...)
		i := int(flip) % len(bad)
		bad[i] ^= byte(flip>>8) | 1
		if b, err := Parse(bad, src, dst); err == nil && b.Checksum == a.Checksum {
			t.Fatalf("byte %d changed (%x -> %x) and still accepted with the same checksum style", i, msg, bad)
		}
	})
}
