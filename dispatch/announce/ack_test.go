package announce

import (
	"bytes"
	"errors"
	"testing"
)

// TestAckWireFormat pins the acknowledgement's bytes.
func TestAckWireFormat(t *testing.T) {
	a := &Ack{Cluster: "web", Server: 2, Epoch: 0x0102030405060708, Seq: 9}
	b, err := a.Marshal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte{'G', 'H', 'A', 'K', 1, 0, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9, 3, 'w', 'e', 'b'}
	if !bytes.Equal(b, appendMAC(bytes.Clone(body), testKey)) {
		t.Fatalf("Marshal = % x\nwant % x and its MAC", b, body)
	}
	back, err := UnmarshalAck(b, testKey)
	if err != nil || *back != *a {
		t.Fatalf("UnmarshalAck = %+v, %v", back, err)
	}
	if _, err := UnmarshalAck(b, []byte("another-key-0123456789")); !errors.Is(err, ErrBadMAC) {
		t.Errorf("another key: %v, want ErrBadMAC", err)
	}
	for _, bad := range [][]byte{nil, b[:10], append(bytes.Clone(b), 0), b[:len(b)-1]} {
		if _, err := UnmarshalAck(bad, testKey); !errors.Is(err, ErrAck) {
			t.Errorf("UnmarshalAck(% x) = %v, want ErrAck", bad, err)
		}
	}
	for _, bad := range []*Ack{{Cluster: "", Server: 1}, {Cluster: "web", Server: -1}} {
		if _, err := bad.Marshal(testKey); !errors.Is(err, ErrInvalid) {
			t.Errorf("Marshal(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzUnmarshalAck: acknowledgements are hostile input. UnmarshalAck never
// panics; what it accepts is exactly what Marshal makes of the result
// (canonical), names the cluster PeekAck names, and is never longer than
// MaxAck. Each input is tried as it is and with a valid MAC appended.
func FuzzUnmarshalAck(f *testing.F) {
	for _, a := range []*Ack{{Cluster: "web", Server: 1, Epoch: 7, Seq: 3}, {Cluster: "x", Server: 1 << 31, Epoch: 1 << 63, Seq: 1 << 62}} {
		b, err := a.Marshal(testKey)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-MACSize])
	}
	f.Add([]byte("GHAK\x01\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, appendMAC(bytes.Clone(b), testKey)} {
			a, err := UnmarshalAck(in, testKey)
			if err != nil {
				if a != nil || !errors.Is(err, ErrAck) && !errors.Is(err, ErrBadMAC) {
					t.Fatalf("UnmarshalAck: %+v, %v", a, err)
				}
				continue
			}
			again, err := a.Marshal(testKey)
			if err != nil || !bytes.Equal(again, in) {
				t.Fatalf("Marshal(UnmarshalAck(b)) = % x, %v; want % x", again, err, in)
			}
			if name, err := PeekAck(in); err != nil || name != a.Cluster || len(in) > MaxAck {
				t.Fatalf("PeekAck = %q, %v; cluster %q, %d bytes", name, err, a.Cluster, len(in))
			}
		}
	})
}
