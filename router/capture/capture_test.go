package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/test/kit"
)

// endpoint returns a link endpoint over a socket pair; frames are shown to
// its tap by writing them to the peer (inbound).
func endpoint(t testing.TB) (*tap.Endpoint, *os.File) {
	t.Helper()
	local, peer := kit.Pair(t, "lan0")
	ep, err := tap.NewEndpoint(tap.EndpointConfig{
		Name: "lan0", Files: []*os.File{local},
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, MTU: 1500,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close(); ep.Wait(); peer.Close() })
	return ep, peer
}

// udpFrame is an Ethernet/IPv4/UDP frame to dstPort with n payload bytes.
func udpFrame(dstPort uint16, n int) []byte {
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
	return kit.Ethernet([]byte{2, 0, 0, 0, 0, 1}, []byte{2, 0, 0, 0, 0, 2}, kit.TypeIPv4,
		kit.IPv4(src, dst, 64, 17, 0, kit.UDP(src, dst, 40000, dstPort, make([]byte, n))))
}

// udpPortFilter is `udp dst port P` for IPv4 without fragments or options,
// written by hand: accept the whole frame.
func udpPortFilter(port uint32) []bpf.RawInstruction {
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x0800, SkipTrue: 4},
		bpf.LoadAbsolute{Off: 23, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 17, SkipTrue: 2},
		bpf.LoadAbsolute{Off: 36, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: port, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: MaxSnapLen},
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err)
	}
	return raw
}

func TestSessionFiltersAndCuts(t *testing.T) {
	ep, _ := endpoint(t)
	h := NewHub()
	s, err := h.Start(ep, Options{SnapLen: 60, Filter: udpPortFilter(53)})
	if err != nil {
		t.Fatal(err)
	}
	f := h.links[ep]
	f.Frame(tap.In, udpFrame(53, 100))
	f.Frame(tap.Out, udpFrame(54, 100))
	f.Frame(tap.Out, udpFrame(53, 10))
	s.Close()
	var got []Record
	for len(s.Records()) > 0 {
		got = append(got, <-s.Records())
	}
	if len(got) != 2 || s.Matched() != 2 || s.Dropped() != 0 {
		t.Fatalf("got %d records (matched %d, dropped %d), want the two frames to port 53", len(got), s.Matched(), s.Dropped())
	}
	if got[0].Dir != tap.In || got[0].OrigLen != 142 || len(got[0].Data) != 60 || !bytes.Equal(got[0].Data, udpFrame(53, 100)[:60]) {
		t.Errorf("first record: dir %d, orig %d, %d bytes; want inbound, 142 bytes cut at 60", got[0].Dir, got[0].OrigLen, len(got[0].Data))
	}
	if got[1].Dir != tap.Out || got[1].OrigLen != 52 || len(got[1].Data) != 52 {
		t.Errorf("second record: dir %d, orig %d, %d bytes; want outbound, 52 bytes whole", got[1].Dir, got[1].OrigLen, len(got[1].Data))
	}
	// Closed: the tap is gone from the link.
	if len(h.links) != 0 {
		t.Errorf("closed session left %d links tapped", len(h.links))
	}
	if h.Stats().Captured.Load() != 2 {
		t.Errorf("hub counted %d captured, want 2", h.Stats().Captured.Load())
	}
}

// A reader that does not read loses frames, counted, and the datapath is
// never held up.
func TestSlowReaderLosesFramesNeverBlocks(t *testing.T) {
	ep, _ := endpoint(t)
	h := NewHub()
	s, err := h.Start(ep, Options{Queue: 8, Budget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := h.links[ep]
	frame := udpFrame(9, 1000)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			f.Frame(tap.In, frame)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("offering frames to a session nobody reads blocked")
	}
	if len(s.Records()) != 8 || s.Dropped() != 992 || s.Matched() != 1000 {
		t.Fatalf("queued %d, dropped %d, matched %d; want 8, 992, 1000", len(s.Records()), s.Dropped(), s.Matched())
	}
	// The byte budget bounds too: 3 frames of 1042 bytes fit in 3200.
	s2, _ := h.Start(ep, Options{Queue: 100, Budget: 3200})
	defer s2.Close()
	for i := 0; i < 10; i++ {
		h.links[ep].Frame(tap.In, frame)
	}
	if len(s2.Records()) != 3 || s2.Dropped() != 7 {
		t.Fatalf("byte budget: queued %d, dropped %d; want 3, 7", len(s2.Records()), s2.Dropped())
	}
	// Released bytes make room again.
	s2.Release(<-s2.Records())
	h.links[ep].Frame(tap.In, frame)
	if len(s2.Records()) != 3 {
		t.Fatalf("after a release, queued %d, want 3", len(s2.Records()))
	}
}

// A capture whose filter rejects the frame costs the datapath no allocation.
func TestRejectedFrameAllocatesNothing(t *testing.T) {
	ep, _ := endpoint(t)
	h := NewHub()
	s, err := h.Start(ep, Options{Filter: udpPortFilter(53)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, frame := h.links[ep], udpFrame(80, 100)
	if n := testing.AllocsPerRun(1000, func() { f.Frame(tap.In, frame) }); n != 0 {
		t.Fatalf("%v allocations per rejected frame, want 0", n)
	}
}

func TestTwoSessionsOnOneLink(t *testing.T) {
	ep, _ := endpoint(t)
	h := NewHub()
	a, _ := h.Start(ep, Options{})
	b, _ := h.Start(ep, Options{Filter: udpPortFilter(53)})
	f := h.links[ep]
	f.Frame(tap.In, udpFrame(53, 1))
	f.Frame(tap.In, udpFrame(80, 1))
	a.Close()
	if h.links[ep] == nil || len(h.links[ep].sessions) != 1 {
		t.Fatal("closing one session removed the other")
	}
	h.links[ep].Frame(tap.In, udpFrame(53, 1))
	if len(a.Records()) != 2 || len(b.Records()) != 2 {
		t.Fatalf("a queued %d (want 2), b queued %d (want 2)", len(a.Records()), len(b.Records()))
	}
	b.Close()
}

func TestStartRejectsBadOptions(t *testing.T) {
	ep, _ := endpoint(t)
	h := NewHub()
	for _, o := range []Options{
		{SnapLen: -1},
		{SnapLen: MaxSnapLen + 1},
		{Filter: []bpf.RawInstruction{}},
		{Filter: make([]bpf.RawInstruction, MaxFilter+1)},
		{Filter: []bpf.RawInstruction{{Op: 0xffff}}},
		{Filter: []bpf.RawInstruction{{Op: 0x15, Jt: 5}}}, // jumps out of the program, no return
	} {
		if s, err := h.Start(ep, o); err == nil {
			s.Close()
			t.Errorf("Start(%+v) accepted", o)
		}
	}
	if len(h.links) != 0 {
		t.Error("a rejected session left a tap")
	}
}

func TestParseDDD(t *testing.T) {
	good := "3\n40 0 0 12\n21 0 1 2048\n6 0 0 262144\n"
	p, err := ParseDDD([]byte(good))
	if err != nil || len(p) != 3 || p[1] != (bpf.RawInstruction{Op: 21, Jt: 0, Jf: 1, K: 2048}) {
		t.Fatalf("ParseDDD = %v, %v", p, err)
	}
	for _, bad := range []string{"", "x", "2\n6 0 0 0\n", "1\n6 0 0\n", "1\n6 0 256 0\n", "1\n70000 0 0 0\n", "0\n", "1\n6 0 0 -1\n"} {
		if _, err := ParseDDD([]byte(bad)); err == nil {
			t.Errorf("ParseDDD(%q) accepted", bad)
		}
	}
}

// The filter compiled by tcpdump and run by the interpreter selects what
// tcpdump itself selects from the same frames (tcpdump reading a savefile
// with the expression is the oracle).
func TestCompiledFilterAgreesWithTcpdump(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tcpdump not installed")
		}
		t.Skip("tcpdump not installed")
	}
	frames := [][]byte{udpFrame(53, 10), udpFrame(80, 10), udpFrame(53, 500), udpFrame(5353, 1)}
	frames[3][14+9] = 6 // TCP, not UDP, to port 5353
	var file []byte
	file = append(file, FileHeader(MaxSnapLen)...)
	for i, f := range frames {
		file = AppendRecord(file, Record{Time: time.Unix(1700000000, int64(i)*1000), OrigLen: len(f), Data: f})
	}
	path := filepath.Join(t.TempDir(), "in.pcap")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{"udp port 53", "udp and greater 200", "tcp", "not udp port 53", "ether dst 02:00:00:00:00:01 and udp"} {
		prog, err := Compile(context.Background(), expr, MaxSnapLen)
		if err != nil {
			t.Fatalf("Compile(%q): %v", expr, err)
		}
		vm, err := newVM(prog)
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		var ours []int
		for i, f := range frames {
			if n, _ := vm.Run(f); n > 0 {
				ours = append(ours, i)
			}
		}
		out, err := exec.Command("tcpdump", "-r", path, "-n", "-tt", expr).Output()
		if err != nil {
			t.Fatalf("tcpdump -r %q: %v", expr, err)
		}
		var theirs []int
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l == "" {
				continue
			}
			// -tt prints seconds.microseconds; the microseconds are the index.
			var sec, us int
			if _, err := fmtSscanf(l, &sec, &us); err != nil {
				t.Fatalf("tcpdump line %q: %v", l, err)
			}
			theirs = append(theirs, us)
		}
		if !equalInts(ours, theirs) {
			t.Errorf("%q: interpreter kept frames %v, tcpdump %v", expr, ours, theirs)
		}
	}
	if _, err := Compile(context.Background(), "udp prot 53", 0); err == nil || !strings.Contains(err.Error(), "tcpdump") {
		t.Errorf("a bad expression: err = %v, want tcpdump's complaint", err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func fmtSscanf(line string, sec, us *int) (int, error) {
	return fmt.Sscanf(strings.Fields(line)[0], "%d.%d", sec, us)
}

// The default snap length keeps a whole 64 KiB TCP super-frame.
func TestSuperFrameKeptWhole(t *testing.T) {
	ep, _ := endpoint(t)
	h := NewHub()
	s, err := h.Start(ep, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	frame := udpFrame(9, tap.MaxFrame-14-28)
	h.links[ep].Frame(tap.Out, frame)
	r := <-s.Records()
	if len(r.Data) != tap.MaxFrame || r.OrigLen != tap.MaxFrame || !bytes.Equal(r.Data, frame) {
		t.Fatalf("kept %d of %d bytes, want all %d", len(r.Data), r.OrigLen, tap.MaxFrame)
	}
	var b []byte
	b = AppendRecord(b, r)
	if len(b) != RecordHeaderLen+tap.MaxFrame || binary.LittleEndian.Uint32(b[8:]) != tap.MaxFrame {
		t.Fatalf("pcap record of %d bytes, caplen %d", len(b), binary.LittleEndian.Uint32(b[8:]))
	}
}

func TestSessionsAreLimited(t *testing.T) {
	ep, _ := endpoint(t)
	h := NewHub()
	var ss []*Session
	for i := 0; i < MaxSessions; i++ {
		s, err := h.Start(ep, Options{})
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		ss = append(ss, s)
	}
	if _, err := h.Start(ep, Options{}); err == nil {
		t.Fatal("a session beyond the limit was started")
	}
	ss[0].Close()
	s, err := h.Start(ep, Options{})
	if err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	h.Close()
	select {
	case <-s.Done():
	default:
		t.Fatal("Close of the hub left a session running")
	}
	if _, err := h.Start(ep, Options{}); err == nil {
		t.Fatal("a closed hub started a session")
	}
	if len(h.links) != 0 {
		t.Fatal("a closed hub left taps")
	}
}
