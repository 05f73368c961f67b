package capture

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/ghostrouter/ghostrouter/router/tap"
)

// What ParseDDD accepts prints back, in tcpdump's format, to text it
// parses to the same program.
func FuzzParseDDD(f *testing.F) {
	f.Add([]byte("3\n40 0 0 12\n21 0 1 2048\n6 0 0 262144\n"))
	f.Add([]byte("1\n6 0 0 0\n"))
	f.Add([]byte("2\n6 0 0 0"))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := ParseDDD(in)
		if err != nil {
			return
		}
		if len(p) < 1 || len(p) > MaxFilter {
			t.Fatalf("accepted %d instructions", len(p))
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%d\n", len(p))
		for _, ins := range p {
			fmt.Fprintf(&b, "%d %d %d %d\n", ins.Op, ins.Jt, ins.Jf, ins.K)
		}
		q, err := ParseDDD([]byte(b.String()))
		if err != nil || len(q) != len(p) {
			t.Fatalf("the canonical form of an accepted program is rejected: %v", err)
		}
		for i := range p {
			if p[i] != q[i] {
				t.Fatalf("instruction %d: %v, then %v", i, p[i], q[i])
			}
		}
	})
}

// Any program the session accepts runs on any frame without panicking,
// and what it keeps is a prefix of the frame, within the snap length.
func FuzzSessionFilter(f *testing.F) {
	raw, _ := bpf.Assemble([]bpf.Instruction{bpf.LoadAbsolute{Off: 12, Size: 2}, bpf.RetA{}})
	seed := func(p []bpf.RawInstruction) []byte {
		var b []byte
		for _, i := range p {
			b = binary.BigEndian.AppendUint16(b, i.Op)
			b = append(b, i.Jt, i.Jf)
			b = binary.BigEndian.AppendUint32(b, i.K)
		}
		return b
	}
	f.Add(seed(raw), udpFrame(53, 20), uint16(64))
	f.Add(seed(udpPortFilter(53)), udpFrame(53, 20), uint16(0))
	f.Add([]byte{0, 6, 0, 0, 0xff, 0xff, 0xff, 0xff}, []byte{1, 2, 3}, uint16(10))
	ep, _ := endpoint(f)
	f.Fuzz(func(t *testing.T, prog, frame []byte, snap uint16) {
		var p []bpf.RawInstruction
		for len(prog) >= 8 && len(p) < 64 {
			p = append(p, bpf.RawInstruction{Op: binary.BigEndian.Uint16(prog), Jt: prog[2], Jf: prog[3], K: binary.BigEndian.Uint32(prog[4:])})
			prog = prog[8:]
		}
		h := NewHub()
		s, err := h.Start(ep, Options{SnapLen: int(snap), Filter: p, Queue: 4})
		if err != nil {
			return
		}
		defer s.Close()
		h.links[ep].Frame(tap.In, frame)
		if len(s.Records()) == 0 {
			return
		}
		r := <-s.Records()
		if len(r.Data) > len(frame) || len(r.Data) > s.SnapLen() || !bytes.Equal(r.Data, frame[:len(r.Data)]) || r.OrigLen != len(frame) {
			t.Fatalf("kept %d bytes of a %d-byte frame (snap %d), not its prefix", len(r.Data), len(frame), s.SnapLen())
		}
	})
}
