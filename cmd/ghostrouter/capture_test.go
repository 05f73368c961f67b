package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/capture"
)

// chunk frames payload as the appliance does.
func chunk(kind byte, payload []byte) []byte {
	b := []byte{kind, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func record(n, orig int) []byte {
	return capture.AppendRecord(nil, capture.Record{Time: time.Unix(1700000000, 5000), OrigLen: orig, Data: bytes.Repeat([]byte{0xab}, n)})
}

func TestCopyRecords(t *testing.T) {
	var in []byte
	in = append(in, chunk(chunkRecord, record(60, 60))...)
	in = append(in, chunk(chunkRecord, record(100, 1500))...)
	in = append(in, chunk(chunkEnd, []byte(`{"matched":5,"dropped":3,"reason":"count reached"}`))...)
	in = append(in, chunk(chunkRecord, record(10, 10))...) // after the end: not read
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	end, err := copyRecords(context.Background(), bufio.NewReader(bytes.NewReader(in)), bw, 100)
	bw.Flush()
	if err != nil {
		t.Fatal(err)
	}
	if end.Captured != 2 || end.Dropped != 3 || end.Matched != 5 {
		t.Fatalf("end %+v", end)
	}
	if want := append(record(60, 60), record(100, 1500)...); !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("copied %d bytes, want the two records (%d)", out.Len(), len(want))
	}
	for name, bad := range map[string][]byte{
		"over the snap length": chunk(chunkRecord, record(101, 101)),
		"caplen > origlen":     chunk(chunkRecord, record(50, 40)),
		"short":                chunk(chunkRecord, []byte{1, 2, 3}),
		"unknown kind":         chunk('x', nil),
		"truncated":            chunk(chunkRecord, record(60, 60))[:30],
		"huge":                 {chunkRecord, 0xff, 0xff, 0xff, 0xff},
	} {
		bw := bufio.NewWriter(&bytes.Buffer{})
		if _, err := copyRecords(context.Background(), bufio.NewReader(bytes.NewReader(bad)), bw, 100); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Whatever the appliance sends, the client writes only well-formed records
// within the snap length, one per counted frame, and never panics.
func FuzzCopyRecords(f *testing.F) {
	f.Add(append(chunk(chunkRecord, record(60, 60)), chunk(chunkEnd, []byte(`{}`))...), 100)
	f.Add(chunk(chunkRecord, record(10, 5)), 64)
	f.Add([]byte{chunkEnd, 0, 0, 0, 2, '{', '}'}, 1)
	f.Fuzz(func(t *testing.T, in []byte, snap int) {
		snap = 1 + (snap&0x7fffffff)%capture.MaxSnapLen
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		end, _ := copyRecords(context.Background(), bufio.NewReader(bytes.NewReader(in)), bw, snap)
		bw.Flush()
		b := out.Bytes()
		n := uint64(0)
		for len(b) > 0 {
			if len(b) < capture.RecordHeaderLen {
				t.Fatalf("a partial record header in the output")
			}
			capLen := int(binary.LittleEndian.Uint32(b[8:]))
			if capLen > snap || capLen > len(b)-capture.RecordHeaderLen {
				t.Fatalf("record of %d bytes (snap %d, %d left)", capLen, snap, len(b)-capture.RecordHeaderLen)
			}
			b = b[capture.RecordHeaderLen+capLen:]
			n++
		}
		if n != end.Captured {
			t.Fatalf("%d records written, %d counted", n, end.Captured)
		}
	})
}
