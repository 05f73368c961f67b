package announce

import (
	"bytes"
	"encoding/binary"
	"math"
	"net/netip"
	"testing"
)

// signed is sample() at (epoch, seq, tx), signed with key.
func signed(t testing.TB, epoch, seq, tx uint64, key []byte) []byte {
	t.Helper()
	m := sample()
	m.Epoch, m.Seq, m.Tx = epoch, seq, tx
	return mustMarshal(t, m, key)
}

// TestPoisonedFloorRecovers: nothing a sender can put in a datagram blocks
// the genuine appliance past its next start. A forger's maximal numbers
// change nothing; even the key holder's (the appliance itself, or a thief
// of its private key) block at most its own current run: a restarted
// appliance draws a new epoch, which is taken at once.
func TestPoisonedFloorRecovers(t *testing.T) {
	r := mustReceiver(t, 0)
	genuine := NewEpoch()
	if res := r.Handle(signed(t, genuine, 1, 1, testKey)); res.Verdict != Apply {
		t.Fatalf("first genuine announcement: %v", res.Verdict)
	}
	before := r.Floors()
	forged := signed(t, genuine, math.MaxUint64, math.MaxUint64, otherKey)
	if res := r.Handle(forged); res.Verdict != IgnoreBadMAC {
		t.Fatalf("forged maximal epoch/tx: %v, want bad signature", res.Verdict)
	}
	if got := r.Floors(); len(got) != len(before) || got[0] != before[0] {
		t.Fatalf("a forged datagram moved the replay state: %v, was %v", got, before)
	}
	// A key holder's maximal tx in the genuine epoch and in its own.
	for _, e := range []uint64{genuine, math.MaxUint64} {
		if res := r.Handle(signed(t, e, math.MaxUint64, math.MaxUint64, testKey)); res.Verdict != Apply && res.Verdict != Repeat {
			t.Fatalf("key holder's epoch %d tx max: %v", e, res.Verdict)
		}
	}
	if res := r.Handle(signed(t, genuine, 2, 2, testKey)); res.Verdict != IgnoreStale {
		t.Fatalf("genuine run after its tx was poisoned: %v, want stale until it restarts", res.Verdict)
	}
	restarted := NewEpoch()
	for restarted == genuine {
		restarted = NewEpoch()
	}
	res := r.Handle(signed(t, restarted, 1, 1, testKey))
	if res.Verdict != Apply {
		t.Fatalf("the restarted appliance: %v, want apply", res.Verdict)
	}
	if cur, _ := r.Current(); cur != nil {
		t.Fatalf("Current before Applied: %+v", cur)
	}
	r.Applied(res)
	if cur, _ := r.Current(); cur.Epoch != restarted || cur.Seq != 1 {
		t.Fatalf("Current = epoch %d seq %d, want %d 1", cur.Epoch, cur.Seq, restarted)
	}
}

// TestRestartWhateverTheNumbers: an appliance's next run is taken at once
// whether its epoch is numerically below or above the last (a clock set
// back cannot matter: epochs are not times), and with a lower seq.
func TestRestartWhateverTheNumbers(t *testing.T) {
	for _, tc := range []struct{ first, next uint64 }{{1 << 62, 5}, {5, 1 << 62}, {math.MaxUint64, 1}} {
		r := mustReceiver(t, 0)
		res := r.Handle(signed(t, tc.first, 900, 900, testKey))
		r.Applied(res)
		res = r.Handle(signed(t, tc.next, 1, 1, testKey))
		if res.Verdict != Apply {
			t.Errorf("epoch %d after %d: %v, want apply", tc.next, tc.first, res.Verdict)
		}
	}
}

// TestReplayStateBounded: the receiver remembers at most MaxEpochs
// epochs; a replay of any remembered one is stale, and a saved state
// restored by a restarted agent keeps them stale.
func TestReplayStateBounded(t *testing.T) {
	r := mustReceiver(t, 0)
	var sent [][]byte
	for e := uint64(1); e <= 3*MaxEpochs; e++ {
		b := signed(t, e, 1, 7, testKey)
		sent = append(sent, b)
		if res := r.Handle(b); res.Verdict != Apply && res.Verdict != Repeat {
			t.Fatalf("epoch %d: %v", e, res.Verdict)
		}
		r.Applied(Result{Verdict: Apply, Msg: &Message{Epoch: e, Seq: 1}})
	}
	fs := r.Floors()
	if len(fs) != MaxEpochs {
		t.Fatalf("%d epochs remembered, want %d", len(fs), MaxEpochs)
	}
	if fs[0].Epoch != 3*MaxEpochs || fs[0].Tx != 7 {
		t.Fatalf("most recent = %+v", fs[0])
	}
	restarted := mustReceiver(t, 0)
	if err := restarted.SetFloors(fs); err != nil {
		t.Fatal(err)
	}
	for _, b := range sent[len(sent)-MaxEpochs:] {
		for _, rr := range []*Receiver{r, restarted} {
			if res := rr.Handle(b); res.Verdict != IgnoreStale {
				t.Fatalf("replay of a remembered epoch: %v, want stale", res.Verdict)
			}
		}
	}
	if err := CheckFloors(append(fs, EpochFloor{Epoch: 1})); err == nil {
		t.Error("CheckFloors accepted more than MaxEpochs")
	}
	if err := CheckFloors([]EpochFloor{{5, 1}, {5, 2}}); err == nil {
		t.Error("CheckFloors accepted an epoch twice")
	}
	if err := restarted.SetFloors([]EpochFloor{{5, 1}, {5, 2}}); err == nil {
		t.Error("SetFloors accepted an epoch twice")
	}
}

// TestSources: with the appliance's addresses set, a datagram from any
// other source is foreign before its signature is even checked, however
// authentic; IPv4-mapped sources are the IPv4 address.
func TestSources(t *testing.T) {
	r := mustReceiver(t, 0)
	r.SetSources([]netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")})
	good := signed(t, 9, 1, 1, testKey)
	for _, from := range []string{"10.0.0.99", "192.0.2.7", "2001:db8::2"} {
		if res := r.HandleFrom(netip.MustParseAddr(from), good); res.Verdict != IgnoreForeign {
			t.Errorf("from %s: %v, want foreign", from, res.Verdict)
		}
	}
	if st := r.Stats(); st.Foreign != 3 || st.Received != 3 || st.Newer != 0 {
		t.Errorf("stats %+v", st)
	}
	if _, _, ok := r.Floor(); ok {
		t.Error("a foreign datagram moved the replay state")
	}
	if res := r.HandleFrom(netip.MustParseAddr("::ffff:10.0.0.1"), good); res.Verdict != Apply {
		t.Errorf("from the appliance (mapped): %v, want apply", res.Verdict)
	}
	if res := r.HandleFrom(netip.MustParseAddr("2001:db8::1"), signed(t, 9, 2, 2, testKey)); res.Verdict != Apply {
		t.Errorf("from the appliance's IPv6 address: %v, want apply", res.Verdict)
	}
}

// FuzzReceiver feeds a receiver a sequence of datagrams cut from the fuzz
// input, each either as is, signed with the appliance's key, or signed
// with another key. Invariants: only a datagram signed by the appliance's
// key is ever Apply or Repeat; the replay state never holds more than
// MaxEpochs epochs nor one twice; handling the same datagram again at once
// is never Apply or Repeat; and what Apply hands out is the table's owned
// buckets, in range.
func FuzzReceiver(f *testing.F) {
	f.Add(signed(f, 1, 1, 1, testKey)[:60], uint8(1))
	f.Add(append(signed(f, 7, 3, 9, testKey), signed(f, 7, 4, 10, testKey)...), uint8(0x11))
	f.Add([]byte("GHRT\x02\x01\x00\x00"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, modes uint8) {
		r := mustReceiver(t, 1)
		for i := 0; len(data) > 0 && i < 16; i++ {
			n := len(data)
			if n > 2 {
				n = 2 + int(binary.BigEndian.Uint16(data[:2]))%(len(data)-1)
			}
			chunk := data[:min(n, len(data))]
			data = data[len(chunk):]
			var b []byte
			mode := (modes >> (i % 4 * 2)) & 3
			switch mode {
			case 1:
				b = appendMAC(bytes.Clone(chunk), testKey)
			case 2:
				b = appendMAC(bytes.Clone(chunk), otherKey)
			default:
				b = chunk
			}
			res := r.Handle(b)
			authentic := len(b) >= MACSize && mode == 1 || bytesSignedBy(b)
			if (res.Verdict == Apply || res.Verdict == Repeat) && !authentic {
				t.Fatalf("datagram %d (mode %d) not signed by the appliance: %v", i, mode, res.Verdict)
			}
			if res.Verdict == Apply {
				for _, o := range res.Owned {
					if int(o) >= res.Msg.Buckets {
						t.Fatalf("owned bucket %d of %d", o, res.Msg.Buckets)
					}
				}
				r.Applied(res)
			}
			if again := r.Handle(b); again.Verdict == Apply || again.Verdict == Repeat {
				t.Fatalf("the same datagram twice: %v, then %v", res.Verdict, again.Verdict)
			}
			if err := CheckFloors(r.Floors()); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// bytesSignedBy reports whether b ends with testKey's signature of the
// rest (an input that already carried one).
func bytesSignedBy(b []byte) bool {
	if len(b) < MACSize {
		return false
	}
	return bytes.Equal(appendMAC(bytes.Clone(b[:len(b)-MACSize]), testKey), b)
}

// BenchmarkVerify is what an authentic announcement costs a receiver
// (signature check and decoding), against the cost of refusing a foreign
// one, which is never verified.
func BenchmarkVerify(b *testing.B) {
	m := sample()
	dgram := mustMarshal(b, m, testKey)
	b.Run("authentic", func(b *testing.B) {
		for range b.N {
			if _, err := Unmarshal(dgram, testPub); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("foreign", func(b *testing.B) {
		r := mustReceiver(b, 0)
		r.SetSources([]netip.Addr{netip.MustParseAddr("10.0.0.1")})
		from := netip.MustParseAddr("10.0.0.99")
		for range b.N {
			r.HandleFrom(from, dgram)
		}
	})
}
