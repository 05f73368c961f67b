package tap

import (
	"errors"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Batched receive. Each wake-up of a queue's receive goroutine reads every
// frame the queue holds, up to a bound, before it handles any of them; then it
// runs the hook (or netstack) over the batch in arrival order. A forwarded
// frame is written during its hook call, so the results leave in the order
// the frames arrived, back to back: a TCP segment and the FIN that followed it
// on the wire, read in one wake-up, are written one right after the other,
// instead of the first being written (and the receiving host woken, inside
// that write) before the second has even been read. The cost of waking up
// (the poller, the goroutine switch) is paid once per batch.
//
// The bounds: at most BatchFrames frames and about BatchBytes bytes per batch,
// and no read is started once BatchDelay has passed since the batch's first
// frame was read. A batch never waits for a frame that has not arrived: it is
// what the queue held, so the latency it adds to its first frame is the time
// to read the others, at most BatchDelay plus one read.
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
// is kept in q.err and handled after the frames read before it.
func (q *rxQueue) readBatch(fd uintptr) bool {
	room := q.ep.vnet + MaxFrame
	for q.n < BatchFrames && q.fill+room <= len(q.buf) {
		if q.n > 0 && time.Since(q.start) > BatchDelay {
			return true
		}
		n, err := unix.Read(int(fd), q.buf[q.fill:q.fill+room])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
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
		q.spans[q.n] = span{off: q.fill, n: n}
		q.n++
		q.fill += (n + batchAlign - 1) &^ (batchAlign - 1)
	}
	return true
}

// receiveLoop runs until the queue's file is closed or a read fails: read a
// batch, handle its frames in order, again.
func (e *Endpoint) receiveLoop(q *rxQueue) {
	defer e.wg.Done()
	for {
		q.n, q.fill, q.err = 0, 0, nil
		err := q.rc.Read(q.readFn)
		if q.n > 0 {
			e.stats.RxBatches.Add(1)
		}
		for i := range q.n {
			e.receiveAt(q, q.spans[i])
		}
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
