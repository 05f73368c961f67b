package tap

import (
	"bytes"
	"encoding/binary"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// queuedLink is a one-queue endpoint over a socket pair whose receive loop
// has not started: the test queues frames first, then calls Attach, so the
// first wake-up finds them all waiting.
func queuedLink(t testing.TB, name string, mac []byte, vnet bool) *link {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	p := os.NewFile(uintptr(fds[1]), name+"-peer")
	t.Cleanup(func() { p.Close() })
	ep, err := NewEndpoint(EndpointConfig{Name: name, Files: []*os.File{os.NewFile(uintptr(fds[0]), name)}, MAC: mac, MTU: 1500, VnetHdr: vnet})
	if err != nil {
		t.Fatalf("NewEndpoint: %v", err)
	}
	t.Cleanup(func() { ep.Close(); ep.Wait() })
	return &link{ep: ep, peers: []*os.File{p}, disp: &recorder{}}
}

// tagged is a TCP frame to macA whose payload starts with i (big endian), of
// size bytes of payload; a super-frame (gso_size 1000+i) when gso.
func tagged(i, size int, gso bool) ([]byte, vnetHdr) {
	payload := make([]byte, size)
	binary.BigEndian.PutUint32(payload, uint32(i))
	f, h := superFrame(false, payload, 0x18)
	if gso {
		h.gsoSize = uint16(1000 + i)
	} else {
		h.gsoType, h.gsoSize = vnetGSONone, 0
	}
	return f, h
}

// TestBatchHandlesQueuedFramesInOrder: frames that wait in the queue together
// are read in one wake-up, forwarded in arrival order, each with its own
// virtio-net header (the headers differ frame to frame), and the batch is
// read whole before the first frame is handled.
func TestBatchHandlesQueuedFramesInOrder(t *testing.T) {
	const n = 12
	a, b := queuedLink(t, "a", macA, true), newLink(t, "b", macB, true, 1)
	a.ep.batchDelay = time.Minute // the frame bound decides here, not the machine's load
	Group(a.ep, b.ep)
	var inBatch atomic.Int64 // frames read when the first was handled, +1
	fwd := forwardTo(t, b.ep)
	a.ep.SetHook(hookFunc(func(ep *Endpoint, frame []byte) bool {
		inBatch.CompareAndSwap(0, int64(ep.queues[0].n)+1) // q.n: on the receive goroutine, safe
		return fwd.Inbound(ep, frame)
	}))
	var want [][]byte
	var hdrs []vnetHdr
	for i := range n {
		f, h := tagged(i, 200+700*i, i%3 == 0)
		a.send(t, 0, &h, f)
		want, hdrs = append(want, f), append(hdrs, h)
	}
	a.ep.Attach(a.disp)
	for i := range n {
		h, got := b.next(t, 0, 3*time.Second)
		if got == nil {
			t.Fatalf("frame %d of %d never came out", i, n)
		}
		if tag := binary.BigEndian.Uint32(got[hdr.EthLen+hdr.IPv4Min+32:]); tag != uint32(i) {
			t.Fatalf("output %d carries frame %d: order lost", i, tag)
		}
		if !bytes.Equal(got[12:], want[i][12:]) || h.gsoSize != hdrs[i].gsoSize || h.gsoType != hdrs[i].gsoType {
			t.Fatalf("frame %d: header %+v, want %+v (or its bytes changed)", i, *h, hdrs[i])
		}
	}
	if got := inBatch.Load() - 1; got != n {
		t.Errorf("the first frame was handled with %d frames read, want all %d queued", got, n)
	}
	if got := a.ep.Stats().RxBatches.Load(); got != 1 {
		t.Errorf("%d batches, want 1", got)
	}
}

// TestBatchIsBounded: a full queue is read in batches of at most BatchFrames
// frames and about BatchBytes bytes, and nothing is lost between them.
func TestBatchIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name      string
		frames    int
		size      int
		maxFrames int
	}{
		{"small frames", 3*BatchFrames + 5, 20, BatchFrames},
		{"super-frames", 20, 60000, BatchBytes/60000 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := queuedLink(t, "a", macA, true)
			a.ep.batchDelay = time.Minute
			var largest, seen atomic.Int64 // written by the hook, read by the test
			a.ep.SetHook(hookFunc(func(ep *Endpoint, frame []byte) bool {
				if n := int64(ep.queues[0].n); n > largest.Load() {
					largest.Store(n)
				}
				if tag := binary.BigEndian.Uint32(frame[hdr.EthLen+hdr.IPv4Min+32:]); int64(tag) != seen.Load() {
					t.Errorf("frame %d handled as number %d", tag, seen.Load())
				}
				seen.Add(1)
				return true
			}))
			for i := range tc.frames {
				f, h := tagged(i, tc.size, tc.size > 1500)
				a.send(t, 0, &h, f)
			}
			a.ep.Attach(a.disp)
			deadline := time.Now().Add(5 * time.Second)
			for a.ep.Stats().RxFrames.Load() < uint64(tc.frames) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			st := a.ep.Stats()
			if got := st.RxFrames.Load(); got != uint64(tc.frames) {
				t.Fatalf("%d frames handled, want %d", got, tc.frames)
			}
			if l := int(largest.Load()); l > tc.maxFrames || l < 2 {
				t.Errorf("largest batch %d frames, want 2 to %d", l, tc.maxFrames)
			}
			if b := st.RxBatches.Load(); b*uint64(tc.maxFrames) < uint64(tc.frames) {
				t.Errorf("%d batches for %d frames: a batch exceeded %d", b, tc.frames, tc.maxFrames)
			}
		})
	}
}

// TestBatchedLoopAllocatesNothing: the receive loop itself (wake-up, batch
// read, hand-off to the hook, holds, grouping by flow, forwarding write)
// allocates nothing per frame. The frames go through the real goroutine;
// allocations are counted process-wide, so the test's own side uses raw system
// calls only.
func TestBatchedLoopAllocatesNothing(t *testing.T) {
	a, b := newLink(t, "a", macA, true, 1), newLink(t, "b", macB, true, 1)
	Group(a.ep, b.ep)
	a.ep.SetHook(forwardTo(t, b.ep))
	// Three TCP data segments of two flows (A, B, A): the batch's writes are grouped
	// by flow, and the queue may hold the batch open behind the last one.
	var ins [][]byte
	for i, port := range []uint16{40000, 40001, 40000} {
		f, h := tagged(i, 100, false)
		binary.BigEndian.PutUint16(f[hdr.EthLen+hdr.IPv4Min:], port)
		in := make([]byte, vnetHdrLen+len(f))
		h.encode(in)
		copy(in[vnetHdrLen:], f)
		ins = append(ins, in)
	}
	out := make([]byte, vnetHdrLen+MaxFrame)
	inFd, outFd := int(a.peers[0].Fd()), int(b.peers[0].Fd())
	unix.SetNonblock(inFd, true)
	unix.SetNonblock(outFd, true)
	roundTrip := func() bool {
		for _, in := range ins {
			if _, err := unix.Write(inFd, in); err != nil {
				return false
			}
		}
		got := 0
		for deadline := time.Now().Add(2 * time.Second); got < len(ins) && time.Now().Before(deadline); {
			if n, err := unix.Read(outFd, out); err == nil && n == len(ins[0]) {
				got++
				continue
			}
			runtime.Gosched()
		}
		return got == len(ins)
	}
	for range 20 { // warm up: pools, the poller
		if !roundTrip() {
			t.Fatal("a frame did not come through")
		}
	}
	const rounds = 250
	frames := rounds * len(ins)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range rounds {
		if !roundTrip() {
			t.Fatal("a frame did not come through")
		}
	}
	runtime.ReadMemStats(&m1)
	// time.Now in the test's loop allocates nothing; a few allocations by
	// the runtime itself (timers, the poller) are tolerated, not one per frame.
	if got := m1.Mallocs - m0.Mallocs; got > uint64(frames/10) {
		t.Errorf("%d allocations for %d frames through the receive loop, want (almost) none", got, frames)
	}
	if st := a.ep.Stats(); st.Holds.Load() == 0 {
		t.Logf("no batch was held open in this run (holds %d): the hold path was not measured", st.Holds.Load())
	}
}

// TestBatchWritesInOneSubmission: the frames of one batch bound for one queue are
// written through io_uring in one submission, in order, and counted like any write;
// with PlainWrites (or where the kernel refuses io_uring) one write(2) each, in the
// same order.
func TestBatchWritesInOneSubmission(t *testing.T) {
	for _, plain := range []bool{false, true} {
		a, b := queuedLink(t, "a", macA, true), newLink(t, "b", macB, true, 1)
		a.ep.plainWrites, a.ep.batchDelay = plain, time.Minute
		Group(a.ep, b.ep)
		a.ep.SetHook(forwardTo(t, b.ep))
		const n = 10
		for i := range n {
			f, h := tagged(i, 100+i, false)
			a.send(t, 0, &h, f)
		}
		a.ep.Attach(a.disp)
		for i := range n {
			_, got := b.next(t, 0, 3*time.Second)
			if got == nil {
				t.Fatalf("plain=%v: frame %d never came out", plain, i)
			}
			if tag := binary.BigEndian.Uint32(got[hdr.EthLen+hdr.IPv4Min+32:]); tag != uint32(i) {
				t.Fatalf("plain=%v: output %d carries frame %d", plain, i, tag)
			}
		}
		st := b.ep.Stats()
		// Counted once the submission returns, which may be after the peer read them.
		for deadline := time.Now().Add(2 * time.Second); st.TxFrames.Load() < n && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if st.TxFrames.Load() != n || st.TxBytes.Load() == 0 || st.TxErrors.Load() != 0 {
			t.Errorf("plain=%v: counted %d frames, %d bytes, %d errors; want %d, >0, 0", plain, st.TxFrames.Load(), st.TxBytes.Load(), st.TxErrors.Load(), n)
		}
		q := a.ep.queues[0]
		switch rings := st.TxRings.Load(); {
		case plain && rings != 0:
			t.Errorf("plain writes: %d io_uring submissions", rings)
		case !plain && q.ringErr != nil:
			t.Logf("io_uring unavailable here (%v): the plain path was tested", q.ringErr)
		case !plain && rings != 1:
			t.Errorf("%d io_uring submissions for one batch to one queue, want 1", rings)
		}
	}
}
