package announce

import (
	"bytes"
	"errors"
	"testing"
)

// TestAckWireFormat pins the acknowledgement's bytes.
func TestAckWireFormat(t *testing.T) {
	a := &Ack{Cluster: "web", Server: 2, Epoch: 0x0102030405060708, Seq: 9}
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{'G', 'H', 'A', 'K', 2, 0, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9, 3, 'w', 'e', 'b'}
	if !bytes.Equal(b, want) {
		t.Fatalf("Marshal = % x\nwant % x", b, want)
	}
	back, err := UnmarshalAck(b)
	if err != nil || *back != *a {
		t.Fatalf("UnmarshalAck = %+v, %v", back, err)
	}
	v1 := bytes.Clone(b)
	v1[4] = 1 // the HMAC-carrying format
	for _, bad := range [][]byte{nil, b[:10], append(bytes.Clone(b), 0), b[:len(b)-1], v1} {
		if _, err := UnmarshalAck(bad); !errors.Is(err, ErrAck) {
			t.Errorf("UnmarshalAck(% x) = %v, want ErrAck", bad, err)
		}
	}
	for _, bad := range []*Ack{{Cluster: "", Server: 1}, {Cluster: "web", Server: -1}} {
		if _, err := bad.Marshal(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Marshal(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzUnmarshalAck: acknowledgements are hostile input. UnmarshalAck never
// panics; what it accepts is exactly what Marshal makes of the result
// (canonical), names the cluster PeekAck names, and is never longer than
// MaxAck.
func FuzzUnmarshalAck(f *testing.F) {
	for _, a := range []*Ack{{Cluster: "web", Server: 1, Epoch: 7, Seq: 3}, {Cluster: "x", Server: 1 << 31, Epoch: 1 << 63, Seq: 1 << 62}} {
		b, err := a.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte("GHAK\x02\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := UnmarshalAck(in)
		if err != nil {
			if a != nil || !errors.Is(err, ErrAck) {
				t.Fatalf("UnmarshalAck: %+v, %v", a, err)
			}
			return
		}
		again, err := a.Marshal()
		if err != nil || !bytes.Equal(again, in) {
			t.Fatalf("Marshal(UnmarshalAck(b)) = % x, %v; want % x", again, err, in)
		}
		if name, err := PeekAck(in); err != nil || name != a.Cluster || len(in) > MaxAck {
			t.Fatalf("PeekAck = %q, %v; cluster %q, %d bytes", name, err, a.Cluster, len(in))
		}
	})
}
