package announce

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// An announcement with pins is format 4: the format-3 body, then the pins
// section, written by hand here from the layout; it round-trips
// canonically. Without pins nothing changes (format 3).
func TestPinsWire(t *testing.T) {
	m := sample()
	plain := mustMarshal(t, m, testKey)
	if plain[4] != FormatVersion {
		t.Fatalf("without pins: format %d, want %d", plain[4], FormatVersion)
	}
	m.Pins = []Pin{{Client: netip.MustParseAddr("192.0.2.7"), ID: 2}, {Client: netip.MustParseAddr("198.51.100.9"), ID: 0}}
	b := mustMarshal(t, m, testKey)
	want := append([]byte(nil), plain[:len(plain)-MACSize]...)
	want[4] = FormatVersionPins
	want = append(want, 2, 4, 192, 0, 2, 7)
	want = binary.BigEndian.AppendUint32(want, 2)
	want = append(want, 4, 198, 51, 100, 9)
	want = binary.BigEndian.AppendUint32(want, 0)
	want = appendMAC(want, testKey)
	if string(b) != string(want) {
		t.Fatalf("with pins:\n got %x\nwant %x", b, want)
	}
	if n := m.wireSize(); n != len(b) {
		t.Errorf("wireSize %d, datagram %d", n, len(b))
	}
	got, err := Unmarshal(b, testPub)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Pins, m.Pins) {
		t.Errorf("pins read back %+v, want %+v", got.Pins, m.Pins)
	}
	if again := mustMarshal(t, got, testKey); string(again) != string(b) {
		t.Error("not canonical: Marshal(Unmarshal(b)) != b")
	}

	body := func(edit func([]byte) []byte) []byte {
		x := append([]byte(nil), b[:len(b)-MACSize]...)
		return appendMAC(edit(x), testKey)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"no pins in format 4", appendMAC(append(append([]byte(nil), want[:len(plain)-MACSize]...), 0), testKey), "0 pins"},
		{"descending", body(func(x []byte) []byte { x[len(x)-8] = 100; return x }), "must ascend"},
		{"wrong family", body(func(x []byte) []byte {
			return append(x[:len(x)-9], 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0)
		}), "ghost's family"},
		{"truncated", body(func(x []byte) []byte { return x[:len(x)-2] }), "truncated"},
		{"trailing", body(func(x []byte) []byte { return append(x, 0) }), "after the last member"},
	} {
		_, err := Unmarshal(tc.b, testPub)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrMalformed mentioning %q", tc.name, err, tc.want)
		}
	}
	m.Pins = []Pin{{Client: netip.MustParseAddr("198.51.100.9"), ID: 0}, {Client: netip.MustParseAddr("192.0.2.7"), ID: 2}}
	if _, err := m.Marshal(testKey); !errors.Is(err, ErrInvalid) {
		t.Errorf("pins out of order: Marshal %v, want ErrInvalid", err)
	}
}

// PinGrants: a pin goes to its server in every table where that server is
// live, else to its bucket's owner; tables that disagree grant it to
// nobody.
func TestPinGrants(t *testing.T) {
	m := sample() // server 0 up, 1 drained, 2 down
	m.Pins = []Pin{{Client: netip.MustParseAddr("192.0.2.7"), ID: 0}, {Client: netip.MustParseAddr("192.0.2.8"), ID: 2}}
	g, err := m.PinGrants()
	if err != nil {
		t.Fatal(err)
	}
	tb, err := m.Table()
	if err != nil {
		t.Fatal(err)
	}
	// The hash itself is checked against the kernel's elsewhere.
	hashed, _ := tb.OwnerID(core.Bucket(core.JHash(netip.MustParseAddr("192.0.2.8"), m.Seed), uint32(m.Buckets)))
	if g[0] != 0 || int(g[1]) != hashed {
		t.Errorf("grants %v, want [0 %d] (server 2 is down: its client is hashed)", g, hashed)
	}
	// A release with a table where server 0 is down: its client is nobody's.
	m.Also = [][]Share{{{Weight: 1, Up: false}, {Weight: 0, Up: true}, {Weight: 1, Up: false}}}
	if g, _ := m.PinGrants(); g[0] != Nobody {
		t.Errorf("pin of a server down in one table granted to %d, want nobody", g[0])
	}
	here, away, err := sample().PinnedFor(0)
	if err != nil || here != nil || away != nil {
		t.Errorf("no pins: %v %v %v", here, away, err)
	}
}
