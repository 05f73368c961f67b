package tap

import (
	"errors"
	"io"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched receive. Each wake-up of a queue's receive goroutine reads every frame the
// queue holds, up to a bound, before it handles any of them; then it runs the hook (or
// netstack) over the batch in arrival order, and the frames the hooks forward are written
// at the end of the batch, in that order, all frames for one egress queue in one system
// call (io_uring, uring.go; one write(2) each where io_uring is refused). So frames that
// arrived together leave together: a TCP response and the FIN that followed it reach the
// client's host within one system call, as they would within one softirq batch of a Linux
// router, and the client reads both before it acts. Written one write(2) at a time, the
// client woken by the first frame's write could run (and close first, keeping a TIME_WAIT
// socket) before the second was written. The cost of waking up is also paid once per batch.
//
// The bounds: at most BatchFrames frames and about BatchBytes bytes per batch, and no read
// starts after BatchDelay since the batch's first frame. A batch waits for a frame that has
// not arrived only behind a small TCP segment with data, and only while such holds have
// been paying (hold.go): at most BatchHold. So it adds at most BatchDelay plus one read to
// its first frame's latency, and to an isolated frame nothing, or up to BatchHold.
// (Lingering 25 µs after every read was tried: it kept no more responses and FINs
// together than the batch alone, and added 50 µs to every request-response round trip.)
//
// The writes of a batch are grouped (hold.go, groupPending): each flow's frames leave one
// after the other, a flow's own frames in their order.
//
// A hook's WriteFrame of a frame of the batch returns at once (nil) and the write is made
// at the end of the batch (its error is then counted in the egress endpoint's Stats only);
// a hook must not change the frame after passing it to WriteFrame. Before a frame goes to
// netstack, and before any write of a batch frame that cannot be held (one copied or cut
// for another link), the held writes are made, so arrival order is kept.
const (
	BatchFrames = 64
	BatchBytes  = 256 << 10
	BatchDelay  = 50 * time.Microsecond
)

// span is one frame of a batch: buf[off:off+n] is its virtio-net header (if
// the link has one) and the frame.
type span struct{ off, n int }

// batchAlign keeps every frame of a batch 8-byte aligned in the buffer.
const batchAlign = 8

// readBatch is the queue's raw read callback (syscall.RawConn.Read): it reads
// frames without blocking until the queue is empty (EAGAIN) or a bound is
// reached. It reports false (wait for the descriptor to become readable) only
// when it read nothing and the queue is empty. A read error ends the batch; it
// is kept in q.err and handled after the frames read before it. When the queue
// runs empty behind what may be a response with its FIN on the way, it may
// hold the batch open a few microseconds (hold.go).
func (q *rxQueue) readBatch(fd uintptr) bool {
	room := q.ep.vnet + MaxFrame
	for {
		if q.n >= BatchFrames || q.fill+room > len(q.buf) || q.n > 0 && time.Since(q.start) > q.ep.batchDelay {
			if q.holding { // the batch's time ran out while it was held open
				q.missed()
				return true
			}
			q.bounded = true
			return true
		}
		n, err := rawRead(int(fd), q.buf[q.fill:q.fill+room])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if q.n > 0 && q.hold() {
				continue
			}
			return q.n > 0
		case err != nil:
			q.err = err
			return true
		case n == 0:
			q.err = io.EOF // the other end of a socket pair went away
			return true
		}
		if q.n == 0 {
			q.start = time.Now()
		}
		if q.holding {
			q.arrived(q.frameAt(span{off: q.fill, n: n}))
		}
		q.spans[q.n] = span{off: q.fill, n: n}
		q.n++
		q.fill += (n + batchAlign - 1) &^ (batchAlign - 1)
	}
}

// frameAt is the frame of s, without its virtio-net header (nil for a runt).
func (q *rxQueue) frameAt(s span) []byte {
	if s.n < q.ep.vnet {
		return nil
	}
	return q.buf[s.off+q.ep.vnet : s.off+s.n]
}

// receiveLoop runs until the queue's file is closed or a read fails: read a
// batch, handle its frames in order, again.
func (e *Endpoint) receiveLoop(q *rxQueue) {
	defer e.wg.Done()
	if !e.plainWrites {
		q.ring, q.ringErr = newUring(maxPending)
	} else {
		q.ringErr = errPlainWrites
	}
	defer func() {
		if q.ring != nil {
			q.ring.close()
		}
	}()
	for {
		q.n, q.fill, q.err, q.bounded = 0, 0, nil, false
		q.holding, q.holdEnd = false, time.Time{}
		q.takeCarried()
		err := q.rc.Read(q.readFn)
		if q.n > 0 {
			e.stats.RxBatches.Add(1)
		}
		if q.bounded && q.err == nil && err == nil && q.score > 0 {
			q.carryTail()
		}
		q.active = true
		for i := range q.n {
			e.receiveAt(q, q.spans[i])
		}
		q.flush()
		q.active = false
		if err != nil {
			// The poller fails a raw read only when the file is closed
			// (there are no deadlines here): by Close, or by the owner of
			// the device.
			return
		}
		if err = q.err; err != nil {
			if e.closed.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			e.stats.RxErrors.Add(1)
			if e.onFault != nil {
				e.onFault(&LinkFault{Link: e.name, Err: err})
			}
			return
		}
	}
}

// receiveAt handles the frame of a batch at s: it becomes the queue's current
// frame (what WriteFrame and SegmentSize recognise) until the next one.
func (e *Endpoint) receiveAt(q *rxQueue, s span) {
	q.cur = s.off
	if e.vnet > 0 {
		if s.n < e.vnet {
			e.stats.RxRunt.Add(1)
			return
		}
		q.hdr.decode(q.buf[s.off:])
	}
	e.receive(q, q.buf[s.off+e.vnet:s.off+s.n])
}

// maxPending bounds the writes a batch holds back: a frame usually leaves once, a few
// (replicated) more than once; past the bound the held writes are flushed early.
const maxPending = 2 * BatchFrames

var errPlainWrites = errors.New("plain writes asked for (EndpointConfig.PlainWrites)")

// pendingWrite is a write held back until the end of the batch: b (virtio-net header, if
// any, and frame) to queue qi of ep.
type pendingWrite struct {
	ep       *Endpoint
	qi       int
	b        []byte
	frameLen int
}

// writeBatched writes b, a frame of q's batch, to e: held back while q handles its batch
// (the write's error, if any, is then counted in e's Stats only), at once otherwise.
func (e *Endpoint) writeBatched(q *rxQueue, b []byte, frameLen int) error {
	if !q.active {
		return e.writeRaw(q.idx, b, frameLen)
	}
	if q.npend == len(q.pending) {
		q.flush()
	}
	q.pending[q.npend] = pendingWrite{ep: e, qi: q.idx, b: b, frameLen: frameLen}
	q.npend++
	return nil
}

// flush makes the writes q holds back, in order: through io_uring, a run of writes to
// one file in one system call (a lone write too: io_uring_enter is made as a raw system
// call, write(2) through os.File is not); without it, one write(2) each.
func (q *rxQueue) flush() {
	if q.npend > 2 {
		q.groupPending()
	}
	for i := 0; i < q.npend; {
		p := &q.pending[i]
		j := i + 1
		for j < q.npend && q.pending[j].ep == p.ep && q.pending[j].qi%len(p.ep.files) == p.qi%len(p.ep.files) {
			j++
		}
		if q.ring != nil {
			q.grpFrom, q.grpTo, q.grpErr = i, j, nil
			for k := i; k < j; k++ {
				q.wres[k] = resUnset
			}
			out := p.ep.queues[p.qi%len(p.ep.queues)]
			if err := out.rc.Control(q.submitFn); err != nil || q.grpErr != nil {
				// The file is closed, or the ring failed: write what is left frame by
				// frame from now on.
				if q.grpErr != nil {
					q.ring.close()
					q.ring, q.ringErr = nil, q.grpErr
				}
				for k := i; k < j; k++ {
					if q.wres[k] == resUnset {
						pw := &q.pending[k]
						pw.ep.writeRaw(pw.qi, pw.b, pw.frameLen)
					}
				}
			}
		} else {
			for k := i; k < j; k++ {
				pw := &q.pending[k]
				pw.ep.writeRaw(pw.qi, pw.b, pw.frameLen)
			}
		}
		i = j
	}
	clear(q.pending[:q.npend])
	q.npend = 0
}

// resUnset marks a pending write io_uring has not reported on.
const resUnset = -1 << 30

// submitGroup writes the pending writes [grpFrom, grpTo), all to fd, in one io_uring
// submission (the callback of syscall.RawConn.Control, which keeps fd open meanwhile).
func (q *rxQueue) submitGroup(fd uintptr) {
	n := q.grpTo - q.grpFrom
	for k := range n {
		pw := &q.pending[q.grpFrom+k]
		pw.ep.tapFrame(Out, pw.b[len(pw.b)-pw.frameLen:])
		q.wbufs[k] = pw.b
	}
	q.grpErr = q.ring.writeAll(int(fd), q.wbufs[:n], q.wres[q.grpFrom:q.grpTo])
	if n > 1 {
		q.pending[q.grpFrom].ep.stats.TxRings.Add(1)
	}
	for k := range n {
		pw := &q.pending[q.grpFrom+k]
		switch r := q.wres[q.grpFrom+k]; {
		case r == resUnset:
		case r < 0:
			pw.ep.stats.TxErrors.Add(1)
		default:
			pw.ep.stats.TxFrames.Add(1)
			pw.ep.stats.TxBytes.Add(uint64(pw.frameLen))
		}
		q.wbufs[k] = nil
	}
}

// rawRead is read(2) on a non-blocking descriptor, made without the runtime's
// system-call bookkeeping (RawSyscall): the read never blocks, so the goroutine keeps its
// P, and the bookkeeping's wake-ups of the runtime's monitor thread (sysmon), about a
// tenth of the appliance's CPU under small-packet load by perf, are not paid per frame.
func rawRead(fd int, b []byte) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}
