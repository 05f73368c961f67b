package tap

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/kit"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ghostrouter/ghostrouter/router/hdr"
)

// The tier-2 tests of the endpoint: real file descriptors (SOCK_SEQPACKET
// socket pairs standing in for TAP queues, with or without the virtio-net
// header), no root needed.
//
//	test ── peer fd ═══ A (receives) ──hook──> B (writes) ═══ peer fd ── test
//	                       └──> netstack (a recording dispatcher)

var (
	macA   = net.HardwareAddr{2, 0, 0, 0, 0, 1} // the superFrame helper's destination
	macB   = net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	macOut = [6]byte{2, 0, 0, 0, 0, 0xc}
)

// link is an endpoint with the test's ends of its queues.
type link struct {
	ep    *Endpoint
	peers []*os.File
	disp  *recorder
}

func newLink(t testing.TB, name string, mac net.HardwareAddr, vnet bool, queues int) *link {
	t.Helper()
	l := &link{disp: &recorder{}}
	var files []*os.File
	for q := 0; q < queues; q++ {
		// Room for a few super-frames in flight.
		local, p := kit.PairBuffered(t, name, 4<<20)
		files = append(files, local)
		l.peers = append(l.peers, p)
	}
	ep, err := NewEndpoint(EndpointConfig{Name: name, Files: files, MAC: mac, MTU: 1500, VnetHdr: vnet})
	if err != nil {
		t.Fatalf("NewEndpoint: %v", err)
	}
	l.ep = ep
	ep.Attach(l.disp)
	t.Cleanup(func() { ep.Close(); ep.Wait() })
	return l
}

// send writes hdr (when the link has the header) and frame to queue q.
func (l *link) send(t testing.TB, q int, h *vnetHdr, frame []byte) {
	t.Helper()
	var b []byte
	if l.ep.vnet > 0 {
		b = make([]byte, l.ep.vnet)
		if h != nil {
			h.encode(b)
		}
	}
	if _, err := l.peers[q].Write(append(b, frame...)); err != nil {
		t.Fatalf("write to %s queue %d: %v", l.ep.name, q, err)
	}
}

// next reads one frame from queue q, split into header and frame, or nil
// after the timeout.
func (l *link) next(t testing.TB, q int, timeout time.Duration) (*vnetHdr, []byte) {
	t.Helper()
	buf := make([]byte, vnetHdrLen+MaxFrame)
	l.peers[q].SetReadDeadline(time.Now().Add(timeout))
	n, err := l.peers[q].Read(buf)
	if err != nil {
		return nil, nil
	}
	var h vnetHdr
	if l.ep.vnet > 0 {
		h.decode(buf)
	}
	return &h, append([]byte(nil), buf[l.ep.vnet:n]...)
}

// recorder is a netstack dispatcher that keeps copies of what it is handed.
type recorder struct {
	mu     sync.Mutex
	frames [][]byte
}

func (r *recorder) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	defer v.Release()
	r.mu.Lock()
	r.frames = append(r.frames, append([]byte(nil), v.AsSlice()...))
	r.mu.Unlock()
}

func (r *recorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// wait returns the frames delivered once there are n of them, or fails.
func (r *recorder) wait(t testing.TB, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		r.mu.Lock()
		got := len(r.frames)
		out := append([][]byte(nil), r.frames...)
		r.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			if got != n {
				t.Fatalf("netstack was handed %d frames, want %d", got, n)
			}
			return out
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hookFunc adapts a function to Hook.
type hookFunc func(ep *Endpoint, frame []byte) bool

func (f hookFunc) Inbound(ep *Endpoint, frame []byte) bool { return f(ep, frame) }

// forwardTo is the hook of a fast path: rewrite the Ethernet header, write
// the frame to out.
func forwardTo(t testing.TB, out *Endpoint) Hook {
	return hookFunc(func(_ *Endpoint, frame []byte) bool {
		copy(frame[0:6], macOut[:])
		copy(frame[6:12], out.macB[:])
		if err := out.WriteFrame(frame); err != nil {
			t.Errorf("WriteFrame: %v", err)
		}
		return true
	})
}

func TestSuperFrameForwardedWhole(t *testing.T) {
	a, b := newLink(t, "a", macA, true, 1), newLink(t, "b", macB, true, 1)
	Group(a.ep, b.ep)
	a.ep.SetHook(forwardTo(t, b.ep))
	payload := bytes.Repeat([]byte("super-frame "), 4000)
	frame, h := superFrame(false, payload, 0x18)
	a.send(t, 0, &h, frame)
	gh, got := b.next(t, 0, 3*time.Second)
	if got == nil {
		t.Fatal("nothing written to b")
	}
	if *gh != h {
		t.Fatalf("virtio-net header written %+v, want the one received %+v", *gh, h)
	}
	if len(got) != len(frame) || !bytes.Equal(got[12:], frame[12:]) {
		t.Fatalf("frame of %d bytes written, want the %d received, unchanged past the MACs", len(got), len(frame))
	}
	if [6]byte(got[0:6]) != macOut {
		t.Fatalf("destination MAC %v, want %v", net.HardwareAddr(got[0:6]), net.HardwareAddr(macOut[:]))
	}
	if n := b.ep.Stats().TxSuperFrames.Load(); n != 1 {
		t.Fatalf("TxSuperFrames = %d, want 1", n)
	}
	if n := a.ep.Stats().RxSuperFrames.Load(); n != 1 {
		t.Fatalf("RxSuperFrames = %d, want 1", n)
	}
}

func TestSuperFrameCutForPlainLink(t *testing.T) {
	a, b := newLink(t, "a", macA, true, 1), newLink(t, "b", macB, false, 1)
	Group(a.ep, b.ep)
	a.ep.SetHook(forwardTo(t, b.ep))
	payload := bytes.Repeat([]byte("0123456789"), 1000)
	frame, h := superFrame(false, payload, 0x18)
	a.send(t, 0, &h, frame)
	var got []byte
	for i := 0; i < 7; i++ {
		_, seg := b.next(t, 0, 3*time.Second)
		if seg == nil {
			t.Fatalf("segment %d not written", i)
		}
		if err := checkSegment(seg); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
		if len(seg) > hdr.EthLen+1500 {
			t.Fatalf("segment %d: %d bytes, larger than the MTU", i, len(seg))
		}
		got = append(got, seg[hdr.EthLen+hdr.IPv4Min+32:]...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("the segments do not carry the super-frame's payload")
	}
	if _, extra := b.next(t, 0, 100*time.Millisecond); extra != nil {
		t.Fatal("more segments than 10000/1448 calls for")
	}
}

func TestSuperFrameCutForNetstack(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		a := newLink(t, "a", macA, true, 1)
		a.ep.SetHook(hookFunc(func(*Endpoint, []byte) bool { return false }))
		payload := bytes.Repeat([]byte("abcdefgh"), 1000)
		frame, h := superFrame(v6, payload, 0x19)
		a.send(t, 0, &h, frame)
		segs := a.disp.wait(t, 6)
		var got []byte
		for i, seg := range segs {
			if err := checkSegment(seg); err != nil {
				t.Fatalf("v6 %v: segment %d: %v", v6, i, err)
			}
			hl := hdr.EthLen + hdr.IPv4Min + 32
			if v6 {
				hl = hdr.EthLen + hdr.IPv6Len + 32
			}
			got = append(got, seg[hl:]...)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("v6 %v: the segments handed to netstack do not carry the payload", v6)
		}
		if n := a.ep.Stats().Segmented.Load(); n != 1 {
			t.Fatalf("v6 %v: Segmented = %d, want 1", v6, n)
		}
	}
}

func TestPartialChecksumCompletedForNetstack(t *testing.T) {
	a := newLink(t, "a", macA, true, 1)
	frame, h := superFrame(false, []byte("small"), 0x18)
	h.gsoType, h.gsoSize = vnetGSONone, 0
	a.send(t, 0, &h, frame)
	got := a.disp.wait(t, 1)
	if err := checkSegment(got[0]); err != nil {
		t.Fatal(err)
	}
}

func TestPlainWritesCarryZeroHeader(t *testing.T) {
	b := newLink(t, "b", macB, true, 1)
	frame, _ := superFrame(false, []byte("built by the router"), 0x18)
	if err := b.ep.WriteFrame(frame); err != nil {
		t.Fatal(err)
	}
	h, got := b.next(t, 0, 3*time.Second)
	if got == nil || *h != (vnetHdr{}) || !bytes.Equal(got, frame) {
		t.Fatalf("written header %+v and %d bytes, want a zero header and the %d-byte frame", h, len(got), len(frame))
	}
}

func TestQueueFollowsReceivingQueue(t *testing.T) {
	a, b := newLink(t, "a", macA, true, 2), newLink(t, "b", macB, true, 2)
	Group(a.ep, b.ep)
	a.ep.SetHook(forwardTo(t, b.ep))
	for q := 0; q < 2; q++ {
		frame, h := superFrame(false, []byte{byte(q)}, 0x18)
		h.gsoType = vnetGSONone
		a.send(t, q, &h, frame)
		if _, got := b.next(t, q, 3*time.Second); got == nil {
			t.Fatalf("a frame received on queue %d did not leave on queue %d", q, q)
		}
	}
}

func TestUngroupedEndpointsExchangePlainFrames(t *testing.T) {
	// Without Group, b does not recognise a's frame: it goes out with a
	// zero header, as any frame built elsewhere. (Group is what the router
	// does; this pins down why it must.)
	a, b := newLink(t, "a", macA, true, 1), newLink(t, "b", macB, true, 1)
	a.ep.SetHook(forwardTo(t, b.ep))
	frame, h := superFrame(false, []byte("x"), 0x18)
	h.gsoType = vnetGSONone
	a.send(t, 0, &h, frame)
	gh, got := b.next(t, 0, 3*time.Second)
	if got == nil || gh.flags != 0 {
		t.Fatalf("ungrouped: header %+v, want all zero", gh)
	}
}

// receiveOne runs the endpoint's receive path on frame as if queue 0 had
// read it (header h).
func receiveOne(e *Endpoint, h *vnetHdr, frame []byte) {
	q := e.queues[0]
	q.cur = 0
	if e.vnet > 0 {
		h.encode(q.buf[:e.vnet])
		q.hdr.decode(q.buf)
	}
	n := copy(q.buf[e.vnet:], frame)
	e.receive(q, q.buf[e.vnet:e.vnet+n])
}

// drain reads and discards everything written to l until the test ends.
func drain(t testing.TB, l *link) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range l.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, vnetHdrLen+MaxFrame)
			for {
				p.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := p.Read(buf); err != nil {
					select {
					case <-done:
						return
					default:
					}
				}
			}
		}()
	}
	t.Cleanup(func() { close(done); wg.Wait() })
}

func TestForwardingAllocatesNothing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		out      bool // egress link carries the header
		gso      bool
		wantSegs bool
	}{
		{"super-frame whole", true, true, false},
		{"plain frame", true, false, false},
		{"super-frame cut for a plain link", false, true, true},
	} {
		a, b := newLink(t, "a", macA, true, 1), newLink(t, "b", macB, tc.out, 1)
		drain(t, b)
		Group(a.ep, b.ep)
		a.ep.SetHook(forwardTo(t, b.ep))
		frame, h := superFrame(false, make([]byte, 8000), 0x18)
		if !tc.gso {
			frame, h = superFrame(false, make([]byte, 1000), 0x18)
			h.gsoType, h.flags = vnetGSONone, 0
		}
		allocs := testing.AllocsPerRun(200, func() { receiveOne(a.ep, &h, frame) })
		if allocs != 0 {
			t.Errorf("%s: %v allocations per forwarded frame, want 0", tc.name, allocs)
		}
		if n := b.ep.Stats().TxErrors.Load(); n != 0 {
			t.Errorf("%s: %d write errors", tc.name, n)
		}
	}
}

func BenchmarkForwardSuperFrame(b *testing.B) {
	a, out := newLink(b, "a", macA, true, 1), newLink(b, "b", macB, true, 1)
	drain(b, out)
	Group(a.ep, out.ep)
	a.ep.SetHook(forwardTo(b, out.ep))
	frame, h := superFrame(false, make([]byte, 65000), 0x18)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		receiveOne(a.ep, &h, frame)
	}
}

func TestVnetHeaderRoundTrip(t *testing.T) {
	h := vnetHdr{flags: 1, gsoType: 0x81, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	b := make([]byte, 12)
	for i := range b {
		b[i] = 0xee
	}
	h.encode(b)
	var g vnetHdr
	g.decode(b)
	if g != h || b[10] != 0 || b[11] != 0 {
		t.Fatalf("decode(encode(%+v)) = %+v, tail %x", h, g, b[10:])
	}
	if binary.NativeEndian.Uint16(b[4:6]) != 1448 {
		t.Fatal("gso_size not in host byte order")
	}
}
