package announce

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// testKey signs, testPub verifies; otherKey is another appliance's.
var (
	testKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5e}, ed25519.SeedSize))
	testPub  = testKey.Public().(ed25519.PublicKey)
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x07}, ed25519.SeedSize))
)

// appendMAC appends b's signature under key.
func appendMAC(b []byte, key ed25519.PrivateKey) []byte {
	return append(b, ed25519.Sign(key, b)...)
}

// sample is a cluster of three IPv4 servers, one down and one drained,
// given out of ID order.
func sample() *Message {
	return &Message{
		Cluster: "web", Epoch: 1764145441000000000, Seq: 7, Tx: 42, Interval: time.Second,
		Hash: config.HashJhash, Seed: 0x5eed, Buckets: 4096, Ghost: netip.MustParseAddr("203.0.113.10"),
		Members: []Member{
			{ID: 2, Addr: netip.MustParseAddr("10.0.0.13"), Weight: 1, Up: false},
			{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: true},
			{ID: 1, Addr: netip.MustParseAddr("10.0.0.12"), Weight: 0, Up: true},
		},
	}
}

func mustMarshal(t testing.TB, m *Message, key ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := m.Marshal(key)
	if err != nil {
		t.Fatalf("Marshal(%+v): %v", m, err)
	}
	return b
}

// sorted returns m with its members by ascending ID, as Unmarshal returns
// them.
func sorted(m *Message) *Message {
	c := *m
	c.Members = append([]Member(nil), m.Members...)
	for i := range c.Members {
		for j := i + 1; j < len(c.Members); j++ {
			if c.Members[j].ID < c.Members[i].ID {
				c.Members[i], c.Members[j] = c.Members[j], c.Members[i]
			}
		}
	}
	return &c
}

// reference encodes m the slow, obvious way, field by field as the package
// documentation's table lists them, members already in ID order.
func reference(m *Message, key ed25519.PrivateKey) []byte {
	var b bytes.Buffer
	b.WriteString("GHRT")
	b.WriteByte(3)
	b.WriteByte(map[string]byte{"jhash": 1, "modulo": 2}[m.Hash.String()])
	binary.Write(&b, binary.BigEndian, uint16(len(m.Members)))
	binary.Write(&b, binary.BigEndian, m.Epoch)
	binary.Write(&b, binary.BigEndian, m.Seq)
	binary.Write(&b, binary.BigEndian, m.Tx)
	binary.Write(&b, binary.BigEndian, m.Seed)
	binary.Write(&b, binary.BigEndian, uint32(m.Buckets))
	binary.Write(&b, binary.BigEndian, uint32(m.Interval.Milliseconds()))
	b.WriteByte(byte(len(m.Cluster)))
	b.WriteString(m.Cluster)
	addr := func(a netip.Addr) {
		s := a.AsSlice()
		b.WriteByte(byte(len(s)))
		b.Write(s)
	}
	addr(m.Ghost)
	flags := func(up, absent bool) byte {
		var f byte
		if up {
			f |= 1
		}
		if absent {
			f |= 2
		}
		return f
	}
	for _, s := range m.Members {
		binary.Write(&b, binary.BigEndian, uint32(s.ID))
		binary.Write(&b, binary.BigEndian, uint32(s.Weight))
		b.WriteByte(flags(s.Up, s.Absent))
		addr(s.Addr)
	}
	b.WriteByte(byte(len(m.Also)))
	for _, tbl := range m.Also {
		for _, sh := range tbl {
			binary.Write(&b, binary.BigEndian, uint32(sh.Weight))
			b.WriteByte(flags(sh.Up, sh.Absent))
		}
	}
	return append(b.Bytes(), ed25519.Sign(key, b.Bytes())...)
}

// TestWireFormat pins the byte layout against the reference encoder and a
// few bytes written out by hand.
func TestWireFormat(t *testing.T) {
	m := sample()
	got := mustMarshal(t, m, testKey)
	if want := reference(sorted(m), testKey); !bytes.Equal(got, want) {
		t.Fatalf("Marshal(sample):\n% x\nwant (reference encoder)\n% x", got, want)
	}
	head := []byte{
		'G', 'H', 'R', 'T', 3, 1, 0, 3, // magic, version, jhash, 3 members
		0x18, 0x7b, 0x80, 0xee, 0x86, 0xee, 0x0a, 0x00, // epoch 1764145441000000000
		0, 0, 0, 0, 0, 0, 0, 7, // seq
		0, 0, 0, 0, 0, 0, 0, 42, // tx
		0, 0, 0x5e, 0xed, 0, 0, 0x10, 0, 0, 0, 0x03, 0xe8, // seed, buckets, interval 1000 ms
		3, 'w', 'e', 'b', 4, 203, 0, 113, 10, // name, ghost
		0, 0, 0, 0, 0, 0, 0, 1, 1, 4, 10, 0, 0, 11, // member 0: weight 1, up
		0, 0, 0, 1, 0, 0, 0, 0, 1, 4, 10, 0, 0, 12, // member 1: drained
		0, 0, 0, 2, 0, 0, 0, 1, 0, 4, 10, 0, 0, 13, // member 2: down
		0, // no further table
	}
	if !bytes.HasPrefix(got, head) || len(got) != len(head)+MACSize {
		t.Errorf("Marshal(sample):\n% x\nwant the body\n% x\nand a 64-byte signature", got, head)
	}
	if len(got) != 115+3+3*14 {
		t.Errorf("len = %d, want 115 + L + 14 per IPv4 member = %d", len(got), 115+3+3*14)
	}

	// A transition: server 3 joins (absent from the table in force, which is
	// the further table), server 2 is drained in the target.
	tr := sample()
	tr.Members = append(sorted(tr).Members, Member{ID: 3, Addr: netip.MustParseAddr("10.0.0.14"), Weight: 2, Up: true})
	tr.Members[1].Weight = 0
	tr.Also = [][]Share{{{Weight: 1, Up: true}, {Weight: 1, Up: true}, {Weight: 1}, {Absent: true}}}
	got = mustMarshal(t, tr, testKey)
	if want := reference(tr, testKey); !bytes.Equal(got, want) {
		t.Fatalf("Marshal(transition):\n% x\nwant (reference encoder)\n% x", got, want)
	}
	tail := []byte{
		1,             // one further table
		0, 0, 0, 1, 1, // member 0: weight 1, up
		0, 0, 0, 1, 1, // member 1: weight 1, up
		0, 0, 0, 1, 0, // member 2: weight 1, down
		0, 0, 0, 0, 2, // member 3: absent
	}
	if body := got[:len(got)-MACSize]; !bytes.HasSuffix(body, tail) {
		t.Errorf("transition body ends\n% x\nwant\n% x", body[len(body)-len(tail):], tail)
	}
	back, err := Unmarshal(got, testPub)
	if err != nil || !reflect.DeepEqual(back.Also, tr.Also) || !reflect.DeepEqual(back.Members, tr.Members) {
		t.Errorf("Unmarshal(transition) = %+v, %v", back, err)
	}
}

// TestSize: the sizes the package documentation quotes.
func TestSize(t *testing.T) {
	m := sample()
	m.Members = nil
	for i := range 96 {
		m.Members = append(m.Members, Member{ID: i, Addr: netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), Weight: 1, Up: true})
	}
	if n := len(mustMarshal(t, m, testKey)); n > 1500-20-8 {
		t.Errorf("96 IPv4 members: %d bytes, more than a 1500-byte frame's UDP payload", n)
	}
	m.Members = m.Members[:64]
	if n := len(mustMarshal(t, m, testKey)); n != 1014 {
		t.Errorf("64 IPv4 members: %d bytes, want 1014", n)
	}
	m.Members = nil
	for i := range MaxMembers {
		m.Members = append(m.Members, Member{ID: i, Addr: netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 15: byte(i)}), Weight: 1})
	}
	m.Ghost = netip.MustParseAddr("2001:db8::10")
	m.Cluster = strings.Repeat("x", MaxName)
	if _, err := m.Marshal(testKey); err != nil {
		t.Errorf("MaxMembers IPv6 members, longest name: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	v6 := sample()
	v6.Ghost = netip.MustParseAddr("2001:db8::10")
	v6.Members[0].Addr = netip.MustParseAddr("2001:db8::13")
	v6.Members[1].Addr = netip.MustParseAddr("::ffff:10.0.0.11") // 16 bytes on the wire, kept so
	modulo := sample()
	modulo.Hash, modulo.Interval = config.HashModulo, 0
	empty := sample()
	empty.Members = nil
	big := sample()
	big.Epoch, big.Seq, big.Tx, big.Seed, big.Buckets = 1<<64-1, 1<<64-1, 1<<64-1, 1<<32-1, MaxBuckets
	big.Members = []Member{{ID: 1<<32 - 1, Addr: netip.MustParseAddr("10.0.0.1"), Weight: core.MaxWeight, Up: true}}
	big.Interval = (1<<32 - 1) * time.Millisecond
	for name, m := range map[string]*Message{"ipv4": sample(), "ipv6": v6, "modulo": modulo, "no members": empty, "limits": big} {
		b := mustMarshal(t, m, testKey)
		got, err := Unmarshal(b, testPub)
		if err != nil {
			t.Errorf("%s: Unmarshal(Marshal(m)): %v", name, err)
			continue
		}
		want := sorted(m)
		if len(want.Members) == 0 {
			want.Members = []Member{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Unmarshal(Marshal(m)) =\n%+v\nwant\n%+v", name, got, want)
		}
		if again := mustMarshal(t, got, testKey); !bytes.Equal(again, b) {
			t.Errorf("%s: Marshal(Unmarshal(b)) != b", name)
		}
		if c, err := Peek(b); c != m.Cluster || err != nil {
			t.Errorf("%s: Peek = %q, %v", name, c, err)
		}
	}
}

// TestTamper: changing any single byte, in any way tried, is detected: in
// the MAC-protected body past the header it is ErrBadMAC; in the header
// (magic, version, name) it may be caught earlier as malformed.
func TestTamper(t *testing.T) {
	b := mustMarshal(t, sample(), testKey)
	nameEnd := fixedLen + 3
	for i := range b {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			c := bytes.Clone(b)
			c[i] ^= x
			m, err := Unmarshal(c, testPub)
			switch {
			case err == nil:
				t.Fatalf("byte %d ^ %#x: accepted: %+v", i, x, m)
			case i >= nameEnd || (i >= 5 && i < fixedLen-1):
				if !errors.Is(err, ErrBadMAC) {
					t.Errorf("byte %d ^ %#x: %v, want ErrBadMAC", i, x, err)
				}
			case !errors.Is(err, ErrBadMAC) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion):
				t.Errorf("byte %d ^ %#x (header): %v", i, x, err)
			}
		}
	}
}

func TestWrongKey(t *testing.T) {
	b := mustMarshal(t, sample(), testKey)
	flipped := bytes.Clone(testPub)
	flipped[0] ^= 1
	for _, k := range []ed25519.PublicKey{otherKey.Public().(ed25519.PublicKey), flipped} {
		if _, err := Unmarshal(b, k); !errors.Is(err, ErrBadMAC) {
			t.Errorf("Unmarshal with key %x: %v, want ErrBadMAC", k, err)
		}
	}
	// A server holds only the public key: the 32 bytes used as a private
	// key's seed sign with another key, which its own public key refuses.
	fromPub := ed25519.NewKeyFromSeed(testPub)
	if _, err := Unmarshal(mustMarshal(t, sample(), fromPub), testPub); !errors.Is(err, ErrBadMAC) {
		t.Errorf("signed with a key made from the public key: %v, want ErrBadMAC", err)
	}
	if _, err := Unmarshal(b, ed25519.PublicKey("short")); !errors.Is(err, ErrKey) {
		t.Errorf("Unmarshal with a 5-byte key: %v, want ErrKey", err)
	}
	if _, err := sample().Marshal(ed25519.PrivateKey(testPub)); !errors.Is(err, ErrKey) {
		t.Errorf("Marshal with a public key: %v, want ErrKey", err)
	}
}

// TestTruncated: every proper prefix, and the datagram with a byte added,
// is rejected.
func TestTruncated(t *testing.T) {
	b := mustMarshal(t, sample(), testKey)
	for n := range len(b) {
		if m, err := Unmarshal(b[:n], testPub); err == nil || !(errors.Is(err, ErrMalformed) || errors.Is(err, ErrBadMAC)) {
			t.Errorf("Unmarshal of the first %d of %d bytes: %+v, %v; want ErrMalformed or ErrBadMAC", n, len(b), m, err)
		}
	}
	if _, err := Unmarshal(append(bytes.Clone(b), 0), testPub); !errors.Is(err, ErrBadMAC) {
		t.Errorf("one byte appended: %v, want ErrBadMAC", err)
	}
}

// remac replaces b's MAC with a valid one: an authentic datagram with a
// bad body, as a buggy sender holding the key would make.
func remac(b []byte) []byte {
	body := bytes.Clone(b[:len(b)-MACSize])
	return appendMAC(body, testKey)
}

// TestMalformedAuthentic: a datagram with a valid MAC but a bad field is
// ErrMalformed, never a panic or a half-read message.
func TestMalformedAuthentic(t *testing.T) {
	good := mustMarshal(t, sample(), testKey)
	ghostAt := fixedLen + 3
	m0 := ghostAt + 5 // first member
	edit := func(f func(b []byte) []byte) []byte {
		b := bytes.Clone(good[:len(good)-MACSize])
		return appendMAC(f(b), testKey)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"hash kind 0", edit(func(b []byte) []byte { b[5] = 0; return b }), "hash kind 0"},
		{"hash kind 3", edit(func(b []byte) []byte { b[5] = 3; return b }), "hash kind 3"},
		{"0 buckets", edit(func(b []byte) []byte { copy(b[36:], []byte{0, 0, 0, 0}); return b }), "0 buckets"},
		{"too many buckets", edit(func(b []byte) []byte { copy(b[36:], []byte{0, 0x10, 0, 1}); return b }), "1048577 buckets"},
		{"oversized table: one bucket over the configuration's limit", edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[36:], MaxBuckets+1); return b }), "65537 buckets"},
		{"count too large", edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], MaxMembers+1); return b }), "4097 members"},
		{"count one more", edit(func(b []byte) []byte { b[7] = 4; return b }), "member 4 of 4: truncated"},
		{"count one less", edit(func(b []byte) []byte { b[7] = 2; return b }), "14 bytes after the last member"},
		{"ghost length 5", edit(func(b []byte) []byte { b[ghostAt] = 5; return b }), "ghost address: length 5"},
		{"reserved flag", edit(func(b []byte) []byte { b[m0+8] |= 0x04; return b }), "reserved flags 0x5"},
		{"absent with weight", edit(func(b []byte) []byte { b[m0+8] |= 0x02; return b }), "absent, yet weight 1"},
		{"further tables 4", edit(func(b []byte) []byte { b[len(b)-1] = 4; return b }), "4 further tables"},
		{"further table truncated", edit(func(b []byte) []byte { b[len(b)-1] = 1; return b }), "truncated"},
		{"weight too large", edit(func(b []byte) []byte { copy(b[m0+4:], []byte{0, 0x10, 0, 1}); return b }), "weight 1048577"},
		{"ids not ascending", edit(func(b []byte) []byte { b[m0+14+3] = 0; return b }), "member 0 after 0"},
		{"member address length 0", edit(func(b []byte) []byte { b[m0+9] = 0; return b }), "member 0: address: length 0"},
		{"trailing byte", edit(func(b []byte) []byte { return append(b, 0) }), "1 bytes after the last member"},
		{"further share absent with weight", edit(func(b []byte) []byte {
			b[len(b)-1] = 1
			for range 3 {
				b = append(b, 0, 0, 0, 1, 2)
			}
			return b
		}), "further table 1, member 1: absent, yet weight 1"},
		{"bad name", edit(func(b []byte) []byte { b[fixedLen] = '-'; return b }), `cluster name "-eb"`},
		{"empty name", edit(func(b []byte) []byte { b[fixedLen-1] = 0; return b }), `cluster name ""`},
		{"name past the end", edit(func(b []byte) []byte { b[fixedLen-1] = 255; return b }), "truncated cluster name"},
		{"magic", edit(func(b []byte) []byte { b[0] = 'g'; return b }), `magic "gHRT"`},
	} {
		m, err := Unmarshal(tc.b, testPub)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Unmarshal = %+v, %v; want ErrMalformed mentioning %q", tc.name, m, err, tc.want)
		}
	}
	for _, v := range []byte{1, 2, 5} {
		other := edit(func(b []byte) []byte { b[4] = v; return b })
		if _, err := Unmarshal(other, testPub); !errors.Is(err, ErrVersion) {
			t.Errorf("version %d: %v, want ErrVersion", v, err)
		}
	}
}

func TestMarshalInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m *Message)
	}{
		{"hash", func(m *Message) { m.Hash = config.Hash(7) }},
		{"hash past the last", func(m *Message) { m.Hash = config.Hash(255) }},
		{"name", func(m *Message) { m.Cluster = "web cluster" }},
		{"long name", func(m *Message) { m.Cluster = strings.Repeat("w", 64) }},
		{"0 buckets", func(m *Message) { m.Buckets = 0 }},
		{"too many buckets", func(m *Message) { m.Buckets = MaxBuckets + 1 }},
		{"negative interval", func(m *Message) { m.Interval = -time.Second }},
		{"huge interval", func(m *Message) { m.Interval = 1 << 32 * time.Millisecond }},
		{"no ghost", func(m *Message) { m.Ghost = netip.Addr{} }},
		{"zoned ghost", func(m *Message) { m.Ghost = netip.MustParseAddr("fe80::1%eth0") }},
		{"duplicate id", func(m *Message) { m.Members[1].ID = 2 }},
		{"negative id", func(m *Message) { m.Members[1].ID = -1 }},
		{"negative weight", func(m *Message) { m.Members[1].Weight = -1 }},
		{"weight too large", func(m *Message) { m.Members[1].Weight = core.MaxWeight + 1 }},
		{"no address", func(m *Message) { m.Members[1].Addr = netip.Addr{} }},
		{"too many members", func(m *Message) {
			m.Members = make([]Member, MaxMembers+1)
			for i := range m.Members {
				m.Members[i] = Member{ID: i, Addr: netip.MustParseAddr("10.0.0.1")}
			}
		}},
	} {
		m := sample()
		tc.edit(m)
		if b, err := m.Marshal(testKey); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Marshal = %d bytes, %v; want ErrInvalid", tc.name, len(b), err)
		}
	}
}

func TestNewer(t *testing.T) {
	msg := func(epoch, seq uint64) *Message { return &Message{Epoch: epoch, Seq: seq} }
	for _, tc := range []struct {
		a, b *Message
		want bool
	}{
		{msg(1, 2), msg(1, 1), true},
		{msg(1, 1), msg(1, 1), false},
		{msg(1, 1), msg(1, 2), false},
		{msg(2, 1), msg(1, 9), true}, // a restarted appliance wins with a lower seq
		{msg(1, 9), msg(2, 1), true}, // epochs are random: another one is in charge
		{msg(0, 0), nil, true},
	} {
		if got := tc.a.Newer(tc.b); got != tc.want {
			t.Errorf("(%d,%d).Newer(%v) = %v, want %v", tc.a.Epoch, tc.a.Seq, tc.b, got, tc.want)
		}
	}
}

func TestOpen(t *testing.T) {
	b := mustMarshal(t, sample(), testKey)
	if _, err := Open(b, "api", testPub); !errors.Is(err, ErrCluster) {
		t.Errorf("Open for cluster api: %v, want ErrCluster", err)
	}
	// Another cluster's key: its MAC is never checked.
	if _, err := Open(b, "api", otherKey.Public().(ed25519.PublicKey)); !errors.Is(err, ErrCluster) {
		t.Errorf("Open for cluster api with its key: %v, want ErrCluster", err)
	}
	if m, err := Open(b, "web", testPub); err != nil || m.Seq != 7 {
		t.Errorf("Open for cluster web: %+v, %v", m, err)
	}
	// The name is inside the MAC: renaming "web" to "api" breaks it.
	c := bytes.Clone(b)
	copy(c[fixedLen:], "api")
	if _, err := Open(c, "api", testPub); !errors.Is(err, ErrBadMAC) {
		t.Errorf("renamed to api, same key: %v, want ErrBadMAC", err)
	}
}

// FuzzUnmarshal: Unmarshal, Peek and Open never panic; whatever Unmarshal
// accepts re-encodes to the same bytes (the encoding is canonical) and is
// a message Marshal accepts. Each input is tried as it is (it almost never
// passes the MAC) and with a valid MAC appended, which sends it through
// the field parser.
func FuzzUnmarshal(f *testing.F) {
	// Seeds: a valid announcement; its body (to be re-MACed); an IPv6 one;
	// one without members; a truncated one; a header alone.
	v6 := sample()
	v6.Ghost = netip.MustParseAddr("2001:db8::10")
	v6.Members[2].Addr = netip.MustParseAddr("2001:db8::13")
	empty := sample()
	empty.Members = nil
	moving := sample()
	moving.Also = [][]Share{{{Weight: 1, Up: true}, {Absent: true}, {Weight: 3}}, {{}, {}, {Weight: 1, Up: true}}}
	for _, m := range []*Message{sample(), v6, empty, moving} {
		b := mustMarshal(f, m, testKey)
		f.Add(b)
		f.Add(b[:len(b)-MACSize])
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte("GHRT\x02"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, appendMAC(bytes.Clone(b), testKey)} {
			Peek(in)
			Open(in, "web", testPub)
			m, err := Unmarshal(in, testPub)
			if err != nil {
				if m != nil {
					t.Fatalf("Unmarshal returned a message with error %v", err)
				}
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadMAC) && !errors.Is(err, ErrVersion) {
					t.Fatalf("Unmarshal: unexpected error %v", err)
				}
				continue
			}
			again, err := m.Marshal(testKey)
			if err != nil {
				t.Fatalf("Marshal(Unmarshal(b)) failed: %v\n%+v", err, m)
			}
			if !bytes.Equal(again, in) {
				t.Fatalf("Marshal(Unmarshal(b)) != b:\n% x\n% x", again, in)
			}
			if _, err := m.Table(); err != nil {
				t.Fatalf("decoded message's table: %v", err)
			}
			g, err := m.Grants()
			if err != nil || len(g) != m.Buckets {
				t.Fatalf("decoded message's grants: %d, %v", len(g), err)
			}
			// A bucket is granted only to a server every table gives it.
			for i := 0; i <= len(m.Also); i++ {
				tbl, err := core.NewTable(m.tableServers(i), m.Buckets)
				if err != nil {
					t.Fatal(err)
				}
				for b, o := range g {
					if id, ok := tbl.OwnerID(uint32(b)); o != Nobody && (!ok || id != int(o)) {
						t.Fatalf("bucket %d granted to %d; table %d gives it to %d (%v)", b, o, i, id, ok)
					}
				}
			}
		}
	})
}
