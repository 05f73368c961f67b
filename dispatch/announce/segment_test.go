package announce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// bigMessage is an announcement of n members (IPv6 addresses when v6),
// every third down, with also further tables.
func bigMessage(n int, v6 bool, also int, tx uint64) *Message {
	m := sample()
	m.Tx = tx
	m.Members = nil
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(1 + i>>16), byte(i >> 8), byte(i)})
		if v6 {
			a = netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		}
		m.Members = append(m.Members, Member{ID: i, Addr: a, Weight: 1 + i%3, Up: i%3 != 0})
	}
	for range also {
		t := make([]Share, n)
		for i := range t {
			t[i] = Share{Weight: 1, Up: i%5 != 0}
		}
		m.Also = append(m.Also, t)
	}
	if v6 {
		m.Ghost = netip.MustParseAddr("2001:db8::10")
		m.Cluster = strings.Repeat("x", MaxName)
	}
	return m
}

// reassemble feeds segs to a fresh Reassembler in order and returns the
// body it completes.
func reassemble(t *testing.T, segs [][]byte) []byte {
	t.Helper()
	r := NewReassembler(time.Second, 1)
	from := netip.MustParseAddr("10.0.0.1")
	for i, s := range segs {
		body, ok := r.Add(from, s, time.Unix(0, 0))
		if ok != (i == len(segs)-1) {
			t.Fatalf("segment %d of %d: complete %v", i+1, len(segs), ok)
		}
		if ok {
			return body
		}
	}
	return nil
}

// The table's limit, not the datagram, limits an announcement: MaxMembers
// is the table's, and an announcement of MaxMembers IPv6 members with every
// further table and the longest name (the longest there is) travels in at
// most MaxSegments datagrams, none longer than SegmentDatagram (never
// fragmented), and comes back whole, in any order, through a Receiver that
// applies it.
func TestSegmentsAtTheLimit(t *testing.T) {
	if MaxMembers != core.MaxServers {
		t.Fatalf("MaxMembers %d, the table's limit %d", MaxMembers, core.MaxServers)
	}
	for _, tc := range []struct {
		name string
		m    *Message
	}{
		{"3000 IPv4 members", bigMessage(3000, false, 0, 9)},
		{"MaxMembers IPv6 members, 3 further tables, longest name", bigMessage(MaxMembers, true, MaxAlso, 9)},
	} {
		body := mustMarshal(t, tc.m, testKey)
		segs, err := Segments(body)
		if err != nil {
			t.Fatalf("%s: Segments: %v", tc.name, err)
		}
		if want := (len(body) + SegmentPayload - 1) / SegmentPayload; len(segs) != want || len(segs) > MaxSegments {
			t.Errorf("%s (%d bytes): %d segments, want %d", tc.name, len(body), len(segs), want)
		}
		total := 0
		for k, s := range segs {
			if len(s) > SegmentDatagram || len(s) > 1280-40-8 {
				t.Errorf("%s: segment %d is %d bytes, more than an unfragmented IPv6 datagram carries", tc.name, k, len(s))
			}
			if !IsSegment(s) || binary.BigEndian.Uint64(s[20:]) != tc.m.Tx || int(binary.BigEndian.Uint16(s[6:])) != k || int(binary.BigEndian.Uint16(s[8:])) != len(segs) {
				t.Errorf("%s: segment %d header % x", tc.name, k, s[:SegmentHeaderLen])
			}
			total += len(s) - SegmentHeaderLen
		}
		if total != len(body) {
			t.Errorf("%s: segments carry %d bytes of %d", tc.name, total, len(body))
		}
		// Reversed, with a duplicate of every segment.
		var order [][]byte
		for k := len(segs) - 1; k >= 0; k-- {
			order = append(order, segs[k])
			if k > 0 {
				order = append(order, segs[k])
			}
		}
		r := NewReassembler(time.Second, 1)
		var got []byte
		for i, s := range order {
			b, ok := r.Add(netip.MustParseAddr("10.0.0.1"), s, time.Unix(0, 0))
			if ok != (i == len(order)-1) {
				t.Fatalf("%s: datagram %d of %d: complete %v", tc.name, i+1, len(order), ok)
			}
			got = b
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("%s: reassembled %d bytes differ from the %d sent", tc.name, len(got), len(body))
		}
		if st := r.Stats(); st.Duplicates != uint64(len(segs)-1) || st.Completed != 1 || r.Pending() != 0 {
			t.Errorf("%s: counters %+v, pending %d", tc.name, st, r.Pending())
		}
		rcv, err := NewReceiver(tc.m.Cluster, testPub, 1)
		if err != nil {
			t.Fatal(err)
		}
		if res := rcv.Handle(got); res.Verdict != Apply || len(res.Msg.Members) != len(tc.m.Members) {
			t.Fatalf("%s: the reassembled announcement: %v %v", tc.name, res.Verdict, res.Err)
		}
	}
	// One member more is refused, whatever the datagram.
	if _, err := bigMessage(MaxMembers+1, false, 0, 1).Marshal(testKey); !errors.Is(err, ErrInvalid) {
		t.Errorf("MaxMembers+1 members: %v, want ErrInvalid", err)
	}
}

// An announcement up to SegmentPayload bytes is its own datagram, as
// before segments existed.
func TestSegmentsSmallIsWhole(t *testing.T) {
	body := mustMarshal(t, sample(), testKey)
	segs, err := Segments(body)
	if err != nil || len(segs) != 1 || !bytes.Equal(segs[0], body) || IsSegment(segs[0]) {
		t.Fatalf("Segments of %d bytes: %d datagrams, %v", len(body), len(segs), err)
	}
	if _, err := Segments(make([]byte, MaxBody+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Segments of MaxBody+1 bytes: %v", err)
	}
}

// Every way a segment or a sequence of them can be wrong is counted and
// bounded.
func TestReassemblerDrops(t *testing.T) {
	a := mustMarshal(t, bigMessage(3000, false, 1, 10), testKey)
	segA, _ := Segments(a)
	b := mustMarshal(t, bigMessage(3000, false, 1, 11), testKey)
	segB, _ := Segments(b)
	if len(segA) < 2 || len(segB) < 2 {
		t.Fatal("want segmented announcements")
	}
	from := netip.MustParseAddr("10.0.0.1")
	t0 := time.Unix(100, 0)

	t.Run("malformed", func(t *testing.T) {
		r := NewReassembler(time.Second, 2)
		bad := func(edit func(s []byte) []byte) []byte { return edit(bytes.Clone(segA[0])) }
		for name, s := range map[string][]byte{
			"short":       segA[0][:SegmentHeaderLen-1],
			"magic":       bad(func(s []byte) []byte { s[0] = 'X'; return s }),
			"version":     bad(func(s []byte) []byte { s[4] = 2; return s }),
			"reserved":    bad(func(s []byte) []byte { s[11] = 1; return s }),
			"k >= n":      bad(func(s []byte) []byte { copy(s[6:8], s[8:10]); return s }),
			"n = 1":       bad(func(s []byte) []byte { binary.BigEndian.PutUint16(s[8:], 1); return s }),
			"n too big":   bad(func(s []byte) []byte { binary.BigEndian.PutUint16(s[8:], MaxSegments+1); return s }),
			"total big":   bad(func(s []byte) []byte { binary.BigEndian.PutUint32(s[28:], MaxBody+1); return s }),
			"total small": bad(func(s []byte) []byte { binary.BigEndian.PutUint32(s[28:], SegmentPayload); return s }),
			"truncated":   segA[0][:len(segA[0])-1],
			"trailing":    append(bytes.Clone(segA[0]), 0),
		} {
			if _, ok := r.Add(from, s, t0); ok || r.Pending() != 0 {
				t.Errorf("%s: taken", name)
			}
		}
		if st := r.Stats(); st.Malformed != 11 || st.Segments != 11 {
			t.Errorf("counters %+v", st)
		}
	})
	t.Run("missing segment expires", func(t *testing.T) {
		r := NewReassembler(time.Second, 2)
		r.Add(from, segA[0], t0)
		if r.Pending() != 1 || r.Held() != len(a) {
			t.Fatalf("pending %d holding %d", r.Pending(), r.Held())
		}
		r.Expire(t0.Add(time.Second))
		if r.Pending() != 1 {
			t.Fatal("expired at the timeout, not after")
		}
		r.Expire(t0.Add(time.Second + 1))
		// The rest alone does not complete it.
		for _, s := range segA[1:] {
			if _, ok := r.Add(from, s, t0.Add(2*time.Second)); ok {
				t.Fatal("completed without its first segment")
			}
		}
		if st := r.Stats(); st.Expired != 1 || st.Completed != 0 {
			t.Errorf("counters %+v", st)
		}
	})
	t.Run("newer supersedes, older is late", func(t *testing.T) {
		r := NewReassembler(time.Second, 2)
		r.Add(from, segA[0], t0)
		r.Add(from, segB[0], t0) // tx 11 after 10: A is dropped
		if _, ok := r.Add(from, segA[1], t0); ok {
			t.Fatal("A completed after B began")
		}
		var got []byte
		for _, s := range segB[1:] {
			got, _ = r.Add(from, s, t0)
		}
		if !bytes.Equal(got, b) {
			t.Fatal("B did not complete")
		}
		if st := r.Stats(); st.Superseded != 1 || st.Late != 1 || st.Completed != 1 {
			t.Errorf("counters %+v", st)
		}
	})
	t.Run("conflicting copy drops it", func(t *testing.T) {
		r := NewReassembler(time.Second, 2)
		r.Add(from, segA[0], t0)
		forged := bytes.Clone(segA[0])
		forged[len(forged)-1] ^= 1
		r.Add(from, forged, t0)
		if r.Pending() != 0 || r.Stats().Conflicts != 1 {
			t.Errorf("pending %d, counters %+v", r.Pending(), r.Stats())
		}
	})
	t.Run("senders bounded", func(t *testing.T) {
		r := NewReassembler(time.Second, 2)
		for i := range 5 {
			r.Add(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), segA[0], t0.Add(time.Duration(i)))
			if r.Pending() > 2 || r.Held() > 2*MaxBody {
				t.Fatalf("%d pending, %d bytes", r.Pending(), r.Held())
			}
		}
		if st := r.Stats(); st.Evicted != 3 {
			t.Errorf("counters %+v", st)
		}
		// The two latest senders are kept and complete.
		for i := 3; i < 5; i++ {
			var got []byte
			for _, s := range segA[1:] {
				got, _ = r.Add(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), s, t0)
			}
			if !bytes.Equal(got, a) {
				t.Errorf("sender %d did not complete", i)
			}
		}
	})
}

// FuzzReassembler: whatever sequence of genuine, duplicated, reordered,
// missing, altered and arbitrary segments from a few senders arrives, over
// whatever time, the Reassembler stays within its bounds, counts every
// segment exactly once, and a body it completes is byte for byte the one
// sent, unless an altered segment of it was given (the signature check
// after it refuses those); a genuine sequence given afterwards completes.
func FuzzReassembler(f *testing.F) {
	bodies := [][]byte{
		mustMarshal(f, bigMessage(3000, false, 0, 20), testKey),
		mustMarshal(f, bigMessage(MaxMembers, true, MaxAlso, 21), testKey),
		mustMarshal(f, bigMessage(2500, false, 2, 22), testKey),
	}
	var segs [][][]byte
	for _, b := range bodies {
		s, err := Segments(b)
		if err != nil || len(s) < 2 {
			f.Fatalf("Segments: %d, %v", len(s), err)
		}
		segs = append(segs, s)
	}
	f.Add([]byte{0, 0, 0, 0, 0, 1})
	f.Add([]byte{1, 5, 4, 3, 2, 1, 0, 0x40, 1, 2, 0x80, 0, 0xc0, 1, 0})
	f.Add([]byte("GHRS\x01\x00\x00\x00\x00\x02\x00\x00................\x00\x00\x05\x00abc"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		const senders, maxSenders = 3, 2
		r := NewReassembler(time.Second, maxSenders)
		now := time.Unix(1000, 0)
		addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + i)}) }
		tainted := map[[2]int]bool{} // (sender, body) given an altered or arbitrary segment
		adds := uint64(0)
		check := func(s int, got []byte, ok bool) {
			if !ok {
				return
			}
			if len(got) > MaxBody {
				t.Fatalf("completed %d bytes", len(got))
			}
			for bi, b := range bodies {
				if binary.BigEndian.Uint64(got[24:]) == binary.BigEndian.Uint64(b[24:]) && !tainted[[2]int{s, bi}] && !bytes.Equal(got, b) {
					t.Fatalf("sender %d: body %d reassembled wrong", s, bi)
				}
			}
		}
		for i := 0; i < len(ops); i++ {
			op := ops[i]
			s := int(op>>2) % senders
			switch op & 3 {
			case 0, 1: // a genuine segment
				bi := int(op>>4) % len(bodies)
				k := 0
				if i+1 < len(ops) {
					i++
					k = int(ops[i]) % len(segs[bi])
				}
				got, ok := r.Add(addr(s), segs[bi][k], now)
				adds++
				check(s, got, ok)
			case 2: // an altered genuine segment, or arbitrary bytes
				bi := int(op>>4) % len(bodies)
				var seg []byte
				if i+2 < len(ops) {
					seg = bytes.Clone(segs[bi][int(ops[i+1])%len(segs[bi])])
					seg[int(ops[i+2])*131%len(seg)] ^= 1 + ops[i+2]>>4
					i += 2
				} else {
					seg = bytes.Clone(ops[i:])
					i = len(ops)
				}
				for b := range bodies {
					tainted[[2]int{s, b}] = true
				}
				got, ok := r.Add(addr(s), seg, now)
				adds++
				if ok && len(got) > MaxBody {
					t.Fatalf("completed %d bytes", len(got))
				}
			case 3: // time passes
				now = now.Add(time.Duration(op>>2) * 50 * time.Millisecond)
				if op&0x80 != 0 {
					r.Expire(now)
				}
			}
			if r.Pending() > maxSenders || r.Held() > maxSenders*MaxBody {
				t.Fatalf("%d pending holding %d bytes", r.Pending(), r.Held())
			}
			st := r.Stats()
			if st.Segments != adds || st.Held+st.Completed+st.Duplicates+st.Malformed+st.Conflicts+st.Late != adds {
				t.Fatalf("%d segments given, counters %+v", adds, st)
			}
		}
		// A genuine announcement from a new sender, in reverse, completes.
		fresh := netip.MustParseAddr("10.0.1.1")
		bi := len(ops) % len(bodies)
		for k := len(segs[bi]) - 1; k >= 0; k-- {
			got, ok := r.Add(fresh, segs[bi][k], now)
			if ok != (k == 0) || ok && !bytes.Equal(got, bodies[bi]) {
				t.Fatalf("a genuine sequence after the fuzz: segment %d complete %v", k, ok)
			}
		}
	})
}
