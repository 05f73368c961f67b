package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/ghostrouter/ghostrouter/router"
	"github.com/ghostrouter/ghostrouter/router/capture"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/test/kit"
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

// The whole capture path without root: a router over a socket pair, the
// control socket, the client. An ARP request sent to the router and
// netstack's reply are both captured, with a filter, as pcap; a frame the
// filter rejects is not; -c ends the capture.
func TestCaptureOverControlSocket(t *testing.T) {
	cfg, err := config.Parse("t.toml", []byte("[router]\nmetrics_address = \"\"\n[[interface]]\nname = \"lan0\"\naddresses = [\"10.0.0.1/24\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	local, peer := kit.Pair(t, "lan0")
	ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: "lan0", Files: []*os.File{local}, MAC: cfg.Interfaces[0].MAC.HardwareAddr(), MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	r, err := router.New(cfg, router.Options{Logger: log, Endpoints: map[string]*tap.Endpoint{"lan0": ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := &appliance{log: log, cfg: cfg, r: r, captures: capture.NewHub()}
	defer a.captures.Close()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go a.serveControl(l, "t.toml", func() ReloadReply { return ReloadReply{} })

	// ARP only: ether proto 0x0806.
	arpOnly, _ := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0806, SkipFalse: 1},
		bpf.RetConstant{Val: capture.MaxSnapLen},
		bpf.RetConstant{Val: 0},
	})
	type result struct {
		end captureEnd
		err error
	}
	var out bytes.Buffer
	done := make(chan result, 1)
	var msgs bytes.Buffer
	go func() {
		end, err := runCapture(context.Background(), sock, captureRequest{Interface: "lan0", Count: 2, Filter: arpOnly}, &out, &msgs)
		done <- result{end, err}
	}()
	// Once the session runs (the hub has it), send a frame the filter
	// rejects, then an ARP request for the router's address.
	deadline := time.Now().Add(5 * time.Second)
	for a.captures.Stats().Sessions.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the capture did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mac := cfg.Interfaces[0].MAC.HardwareAddr()
	other := []byte{2, 0, 0, 0, 0, 2}
	ipv4 := append(append(append([]byte{}, mac...), other...), 0x08, 0x00)
	ipv4 = append(ipv4, make([]byte, 46)...)
	arp := append(append(append([]byte{}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), other...), 0x08, 0x06,
		0, 1, 8, 0, 6, 4, 0, 1)
	arp = append(append(append(append(arp, other...), 10, 0, 0, 2), make([]byte, 6)...), 10, 0, 0, 1)
	for _, f := range [][]byte{ipv4, arp} {
		if _, err := peer.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("capture -c 2 did not end")
	}
	if res.err != nil || res.end.Captured != 2 || res.end.Reason != "count reached" {
		t.Fatalf("capture: %+v, %v", res.end, res.err)
	}
	if !strings.Contains(msgs.String(), "capturing on lan0") {
		t.Errorf("no start message: %q", msgs.String())
	}
	b := out.Bytes()
	if len(b) < capture.FileHeaderLen || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != capture.LinkTypeEthernet {
		t.Fatalf("not an Ethernet pcap file: % x", b[:min(len(b), 24)])
	}
	b = b[capture.FileHeaderLen:]
	var frames [][]byte
	for len(b) >= capture.RecordHeaderLen {
		n := int(binary.LittleEndian.Uint32(b[8:]))
		frames = append(frames, b[capture.RecordHeaderLen:capture.RecordHeaderLen+n])
		b = b[capture.RecordHeaderLen+n:]
	}
	if len(frames) != 2 || !bytes.Equal(frames[0], arp) {
		t.Fatalf("captured %d frames; want the ARP request, then the reply", len(frames))
	}
	reply := frames[1]
	if !bytes.Equal(reply[0:6], other) || !bytes.Equal(reply[6:12], mac) || reply[21] != 2 || !bytes.Equal(reply[28:32], []byte{10, 0, 0, 1}) {
		t.Fatalf("second frame is not netstack's ARP reply from %s: % x", mac, reply[:42])
	}

	// Refused requests say why, and start nothing.
	for want, req := range map[string]captureRequest{
		`no interface "up9"`: {Interface: "up9"},
		"snap length":        {Interface: "lan0", SnapLen: capture.MaxSnapLen + 1},
		"filter":             {Interface: "lan0", Filter: []bpf.RawInstruction{{Op: 0xffff}}},
	} {
		_, err := runCapture(context.Background(), sock, req, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("request %+v: err %v, want %q", req, err, want)
		}
	}
	if n := a.captures.Stats().Sessions.Load(); n != 1 {
		t.Errorf("%d sessions started, want 1", n)
	}
}

func TestCaptureUsage(t *testing.T) {
	for _, args := range [][]string{
		{"capture"}, // no -i
		{"capture", "-i", "lan0", "-s", "300000"},     // snap length too large
		{"capture", "-i", "lan0", "-c", "x"},          // not a count
		{"capture", "udp", "-i", "lan0", "-q"},        // unknown flag after the filter
		{"capture", "-i", "lan0", "udp", "prot", "5"}, // tcpdump rejects the expression (or is missing)
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (bad usage)\n%s", args, code, errb.String())
		}
	}
	// Flags after the filter's words are flags; the socket is absent: 1.
	var out, errb bytes.Buffer
	sock := filepath.Join(t.TempDir(), "none.sock")
	args := []string{"capture", "-i", "lan0", "--socket", sock}
	if _, err := exec.LookPath("tcpdump"); err == nil {
		args = []string{"capture", "udp", "-i", "lan0", "--socket", sock}
	}
	if code := run(args, &out, &errb); code != 1 || !strings.Contains(errb.String(), "is the appliance running") {
		t.Errorf("no appliance: exit %d: %s", code, errb.String())
	}
}
