package tap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// MaxFrame is the largest frame the endpoint reads or writes: a 64 KiB IP
// packet plus its Ethernet header. With segmentation offload on, TCP
// super-frames up to this size cross the link whole.
const MaxFrame = header.EthernetMinimumSize + 65535

// Hook sees every inbound frame addressed to this endpoint (its own MAC,
// broadcast or multicast) before netstack does. Inbound returns true when it
// has taken the frame; false hands the frame on to netstack. The router
// installs its chain of stages here, once, before the endpoint is attached;
// the contract a stage follows (verdicts, frame ownership, the offload rule
// that WriteFrame and SegmentSize implement, concurrency) is package
// router/stage's. frame is only valid during the call. Inbound is called
// from the endpoint's receive goroutines, one per queue, so it must be safe
// for concurrent use; it must not block.
//
// Frames are handed over in batches (batch.go): WriteFrame of the frame being
// handled returns at once and the write is made at the end of the batch, with
// the batch's other writes, in order. So a hook must not change a frame after
// passing it to WriteFrame.
type Hook interface {
	Inbound(ep *Endpoint, frame []byte) bool
}

// Stats counts the endpoint's per-frame outcomes. All fields are updated
// atomically and may be read at any time.
type Stats struct {
	RxFrames  atomic.Uint64 // frames read from the device (a super-frame counts once)
	RxBytes   atomic.Uint64
	RxRunt    atomic.Uint64 // shorter than an Ethernet header: dropped
	RxForeign atomic.Uint64 // unicast to another MAC (e.g. a bridge flooding): dropped
	RxErrors  atomic.Uint64 // read errors
	TxFrames  atomic.Uint64 // frames written (a super-frame counts once)
	TxBytes   atomic.Uint64
	TxErrors  atomic.Uint64 // write errors (e.g. EIO while the link is down): dropped
	TxTooBig  atomic.Uint64 // larger than MaxFrame: dropped

	RxSuperFrames atomic.Uint64 // TCP super-frames received (segmentation offload)
	TxSuperFrames atomic.Uint64 // TCP super-frames written whole
	Segmented     atomic.Uint64 // super-frames cut in software (for netstack, or for a link without offload)
	BadOffload    atomic.Uint64 // frames whose virtio-net header could not be honoured: dropped
	GSOTooSmall   atomic.Uint64 // super-frames with a gso_size below MinGSOSize: dropped on receipt

	RxAccepted atomic.Uint64 // unicast to an additional MAC (SetAcceptMACs, accept.go): taken in

	RxCarried   atomic.Uint64 // frames a batch cut by a bound handed to the next (hold.go)
	Holds       atomic.Uint64 // batches held open for a frame behind a small TCP segment (hold.go)
	HoldsPaid   atomic.Uint64 // holds ended by a frame of the flow held for
	HoldsMissed atomic.Uint64 // holds that ran out
	RxBatches   atomic.Uint64 // wake-ups that read at least one frame (batch.go); RxFrames/RxBatches is the mean batch
	TxRings     atomic.Uint64 // io_uring submissions that wrote two or more frames of a batch in one system call
}

// Endpoint is a stack.LinkEndpoint over one or more frame-preserving file
// descriptors: the queues of a TAP device, or a SOCK_SEQPACKET socket pair in
// tests. Frames are Ethernet, each preceded by a virtio-net header when the
// TAP was opened with one (IFF_VNET_HDR; see offload.go).
//
// Each queue has its own receive goroutine and buffer. A frame received on
// queue i and forwarded by a hook leaves on queue i (modulo the egress
// endpoint's queue count), so one flow stays on one pair of queues.
type Endpoint struct {
	name   string
	files  []*os.File
	queues []*rxQueue
	vnet   int // virtio-net header length before every frame: 0, or 10 (12)
	mac    tcpip.LinkAddress
	macB   [6]byte
	mtu    atomic.Uint32

	hook        atomic.Pointer[hookRef]
	tap         atomic.Pointer[tapRef] // see capture.go
	dispatcher  atomic.Pointer[dispatcherRef]
	peers       atomic.Pointer[[]*Endpoint] // see Group; nil: this endpoint alone
	accept      atomic.Pointer[acceptSet]   // additional unicast MACs (accept.go)
	onFault     func(error)
	plainWrites bool
	batchDelay  time.Duration // BatchDelay; tests lengthen it
	holdTime    time.Duration // BatchHold; tests lengthen it
	onClose     atomic.Pointer[func()]

	bufs sync.Pool // *[]byte of vnet+MaxFrame bytes, for writes
	wg   sync.WaitGroup

	startOnce sync.Once
	closed    atomic.Bool
	stats     Stats
}

// rxQueue is one queue's receive side. buf, idx, ep and f never change; the
// rest is written and read only by the queue's receive goroutine (and by the
// hooks it calls, on that goroutine).
//
// buf holds a batch (batch.go): the frames one wake-up read, each preceded by
// its virtio-net header, at the offsets in spans. cur is where the frame being
// handled now begins (its header, when the link has one), hdr that header
// decoded.
type rxQueue struct {
	ep  *Endpoint
	idx int
	f   *os.File
	buf []byte  // [header | frame] [header | frame] ...
	cur int     // offset in buf of the frame being handled (of its header)
	hdr vnetHdr // of the frame at cur
	seg []byte  // scratch for cutting super-frames; nil without offload
	cut segmenter

	rc       syscall.RawConn
	readFn   func(fd uintptr) bool // readBatch bound to this queue, made once
	spans    [BatchFrames]span     // the batch: spans[:n]
	n        int
	fill     int               // bytes of buf in use
	start    time.Time         // when the batch's first frame was read
	holding  bool              // the queue ran empty and the batch is held open (hold.go)
	holdEnd  time.Time         // the batch's holds end by then
	holdFlow uint64            // flowHash of the frame the hold waits behind
	score    int               // how well holds have paid lately (hold.go)
	sample   uint32            // eligible batch ends seen while score is 0
	bounded  bool              // the batch was ended by a bound, not by an empty queue
	carry    [carryWindow]span // frames carried over to the next batch (carryTail)
	ncarry   int
	ncarried int   // the batch's first ncarried frames were carried over from the last
	err      error // the read error that ended the batch, if any

	// Writes of the batch's frames, held until the batch is handled (or until
	// something must leave after them) and then made in order (flush).
	active   bool // handling a batch: WriteFrame of its frames is deferred
	pending  [maxPending]pendingWrite
	npend    int
	ring     *uring // nil: write(2) frame by frame
	ringErr  error  // why there is no ring
	wbufs    [maxPending][]byte
	wres     [maxPending]int32
	keys     [maxPending]flowKey // groupPending's scratch
	placed   [maxPending]bool
	order    [maxPending]uint8
	sorted   [maxPending]pendingWrite
	grpFrom  int // the pending writes submitFn writes: [grpFrom, grpTo)
	grpTo    int
	grpErr   error
	submitFn func(fd uintptr)
}

// frameStart is where the frame being handled begins in q.buf.
func (q *rxQueue) frameStart() *byte { return &q.buf[q.cur+q.ep.vnet] }

// hdrBytes is the virtio-net header slot in front of the frame being handled.
func (q *rxQueue) hdrBytes() []byte { return q.buf[q.cur : q.cur+q.ep.vnet] }

type hookRef struct{ h Hook }
type dispatcherRef struct{ d stack.NetworkDispatcher }

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// LinkFault is the error OnFault reports: the receive loop of Link stopped.
type LinkFault struct {
	Link string // the endpoint's name
	Err  error
}

func (f *LinkFault) Error() string {
	return "link " + f.Link + ": receive loop stopped: " + f.Err.Error()
}

func (f *LinkFault) Unwrap() error { return f.Err }

// EndpointConfig describes an endpoint.
type EndpointConfig struct {
	Name  string           // for messages
	Files []*os.File       // non-blocking, frame-preserving; at least one
	MAC   net.HardwareAddr // the stack's own MAC on this link
	MTU   uint32           // the link's IP MTU
	// VnetHdr says the files carry a 10-byte virtio-net header before every
	// frame, both ways (socket pairs in tests). A TAP file opened with
	// IFF_VNET_HDR is recognised without it.
	VnetHdr bool
	// PlainWrites makes the endpoint write a batch's frames with one write(2)
	// each instead of one io_uring submission per batch (batch.go, uring.go).
	PlainWrites bool
	// OnFault is called (once per receive loop) when a receive loop stops
	// for any reason other than Close, with a *LinkFault. It must not block.
	OnFault func(error)
}

// NewEndpoint returns an endpoint over cfg.Files. Its receive loops start on
// Attach and stop on Close.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	if len(cfg.Files) == 0 {
		return nil, fmt.Errorf("link %s: no file descriptors", cfg.Name)
	}
	if len(cfg.MAC) != 6 {
		return nil, fmt.Errorf("link %s: MAC %v is not 6 bytes", cfg.Name, cfg.MAC)
	}
	e := &Endpoint{
		name:    cfg.Name,
		files:   cfg.Files,
		mac:     tcpip.LinkAddress(cfg.MAC),
		onFault: cfg.OnFault,

		plainWrites: cfg.PlainWrites,
		batchDelay:  BatchDelay,
		holdTime:    BatchHold,
	}
	for i, f := range cfg.Files {
		n, err := tapVnetHdrLen(f)
		if err != nil {
			return nil, fmt.Errorf("link %s: queue %d: %w", cfg.Name, i, err)
		}
		if n == 0 && cfg.VnetHdr {
			n = vnetHdrLen
		}
		if n != 0 && n < vnetHdrLen || i > 0 && n != e.vnet {
			return nil, fmt.Errorf("link %s: queue %d: virtio-net header of %d bytes, want %d", cfg.Name, i, n, max(e.vnet, vnetHdrLen))
		}
		e.vnet = n
	}
	copy(e.macB[:], cfg.MAC)
	e.mtu.Store(cfg.MTU)
	for i, f := range cfg.Files {
		q := &rxQueue{ep: e, idx: i, f: f, buf: make([]byte, BatchBytes+e.vnet+MaxFrame), score: holdInitial}
		if e.vnet > 0 {
			q.seg = make([]byte, MaxFrame)
		}
		if rc, err := f.SyscallConn(); err == nil {
			q.rc = rc
		} else {
			return nil, fmt.Errorf("link %s: queue %d: %w", cfg.Name, i, err)
		}
		q.readFn = q.readBatch
		q.submitFn = q.submitGroup
		e.queues = append(e.queues, q)
	}
	size := e.vnet + MaxFrame
	e.bufs.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return e, nil
}

// tapVnetHdrLen returns the virtio-net header length of a TAP file opened
// with IFF_VNET_HDR, and 0 for any other file.
func tapVnetHdrLen(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, nil // not a descriptor at all: no header
	}
	n := 0
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			ioErr = err
			return
		}
		if unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr) != nil {
			return // not a TUN/TAP descriptor
		}
		if ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
			return
		}
		n, ioErr = unix.IoctlGetInt(int(fd), unix.TUNGETVNETHDRSZ)
	})
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return 0, fmt.Errorf("virtio-net header size: %w", err)
	}
	return n, nil
}

// Group lets frames cross between the endpoints eps with their offload
// metadata: a frame a hook received on one of them, passed during the hook
// call to WriteFrame of any of them, keeps its virtio-net header (a
// super-frame stays one; a partial checksum stays partial) when the egress
// link carries the header too, and is made plain in software when it does not.
// Without Group an endpoint recognises only its own received frames. It may be
// called at any time; later calls replace earlier ones for the endpoints named.
func Group(eps ...*Endpoint) {
	list := append([]*Endpoint(nil), eps...)
	for _, e := range list {
		e.peers.Store(&list)
	}
}

// origin returns the receive queue, of e or of an endpoint grouped with it,
// whose current frame begins where frame does, or nil.
func (e *Endpoint) origin(frame []byte) *rxQueue {
	if len(frame) == 0 {
		return nil
	}
	p := &frame[0]
	if ps := e.peers.Load(); ps != nil {
		for _, pe := range *ps {
			if q := pe.ownOrigin(p); q != nil {
				return q
			}
		}
		return nil
	}
	return e.ownOrigin(p)
}

func (e *Endpoint) ownOrigin(p *byte) *rxQueue {
	for _, q := range e.queues {
		// Only a frame inside q's batch buffer can be q's current frame, and such a
		// frame is only handed out on q's receive goroutine: q.cur is read only there
		// (other goroutines' frames fail the range test, which reads nothing mutable).
		if q.holds(p) && p == q.frameStart() {
			return q
		}
	}
	return nil
}

// holds reports whether p points into q's batch buffer.
func (q *rxQueue) holds(p *byte) bool {
	base := uintptr(unsafe.Pointer(unsafe.SliceData(q.buf)))
	a := uintptr(unsafe.Pointer(p))
	return a >= base && a < base+uintptr(len(q.buf))
}

// SegmentSize reports, for a frame received on e and being handed to a hook,
// the TCP segment size it is to be cut into when it is a super-frame, or 0
// for a plain frame.
func (e *Endpoint) SegmentSize(frame []byte) int {
	if e.vnet == 0 || len(frame) == 0 {
		return 0
	}
	q := e.ownOrigin(&frame[0])
	if q == nil || !q.hdr.gso() {
		return 0
	}
	return int(q.hdr.gsoSize)
}

// Offload reports whether the endpoint's files carry a virtio-net header.
func (e *Endpoint) Offload() bool { return e.vnet > 0 }

// Name is the link's name.
func (e *Endpoint) Name() string { return e.name }

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() *Stats { return &e.stats }

// MACBytes is the stack's MAC on this link.
func (e *Endpoint) MACBytes() [6]byte { return e.macB }

// SetHook installs h (nil removes it). It may be called at any time.
func (e *Endpoint) SetHook(h Hook) {
	if h == nil {
		e.hook.Store(nil)
		return
	}
	e.hook.Store(&hookRef{h: h})
}

// MTU implements stack.NetworkLinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.NetworkLinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.NetworkLinkEndpoint.
func (e *Endpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.NetworkLinkEndpoint.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress { return e.mac }

// SetLinkAddress implements stack.NetworkLinkEndpoint. The MAC is fixed at
// creation; the call is ignored.
func (e *Endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.NetworkLinkEndpoint.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired
}

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (e *Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// Attach implements stack.NetworkLinkEndpoint. The first attach starts one
// receive goroutine per queue.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&dispatcherRef{d: d})
	e.startOnce.Do(func() {
		for _, q := range e.queues {
			e.wg.Add(1)
			go e.receiveLoop(q)
		}
	})
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (e *Endpoint) IsAttached() bool { return e.dispatcher.Load() != nil }

// Wait implements stack.NetworkLinkEndpoint: it waits for the receive loops
// to stop.
func (e *Endpoint) Wait() { e.wg.Wait() }

// AddHeader implements stack.NetworkLinkEndpoint.
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = e.mac
	}
	eth.Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.NetworkLinkEndpoint.
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	hdr, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if !ok {
		return false
	}
	pkt.NetworkProtocolNumber = header.Ethernet(hdr).Type()
	return true
}

// Close implements stack.NetworkLinkEndpoint. It closes the files, which ends
// the receive loops. Closing the device itself is the owner's business.
func (e *Endpoint) Close() {
	if !e.closed.CompareAndSwap(false, true) {
		return
	}
	// The action netstack installs removes the NIC, which calls Close again:
	// the flag above makes that a no-op.
	if f := e.onClose.Load(); f != nil {
		(*f)()
	}
	for _, f := range e.files {
		f.Close()
	}
}

// SetOnCloseAction implements stack.NetworkLinkEndpoint.
func (e *Endpoint) SetOnCloseAction(f func()) { e.onClose.Store(&f) }

// WritePackets implements stack.LinkWriter. A packet that cannot be written
// is counted and dropped; the call never fails, so netstack's forwarding
// never sees a link error it would treat as fatal. netstack's packets are
// plain (complete checksums, at most the MTU): their virtio-net header, if
// the link has one, is all zeros.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	bp := e.bufs.Get().(*[]byte)
	buf := *bp
	clear(buf[:e.vnet])
	n := 0
	for _, pkt := range pkts.AsSlice() {
		n++
		if pkt.Size() > MaxFrame {
			e.stats.TxTooBig.Add(1)
			continue
		}
		views, off := pkt.AsViewList()
		m := e.vnet
		for v := views.Front(); v != nil; v = v.Next() {
			s := v.AsSlice()
			if off >= len(s) {
				off -= len(s)
				continue
			}
			m += copy(buf[m:], s[off:])
			off = 0
		}
		e.writeRaw(0, buf[:m], m-e.vnet)
	}
	e.bufs.Put(bp)
	return n, nil
}

// WriteFrame writes one complete Ethernet frame to the link. A frame that a
// hook received on this endpoint or one grouped with it (see Group) and
// passes on during the hook call keeps its offload metadata and leaves on the
// queue matching the one it came in on; any other frame is plain and leaves
// on the first queue. Errors are counted and returned; the frame is not
// retried. It allocates nothing.
func (e *Endpoint) WriteFrame(frame []byte) error {
	if len(frame) > MaxFrame {
		e.stats.TxTooBig.Add(1)
		return errTooBig
	}
	src := e.origin(frame)
	if src == nil {
		if e.vnet == 0 {
			return e.writeRaw(0, frame, len(frame))
		}
		return e.writeCopy(0, frame, nil)
	}
	if src.ep.vnet == 0 {
		if e.vnet == 0 {
			return e.writeBatched(src, frame, len(frame))
		}
		src.flush()
		return e.writeCopy(src.idx, frame, nil)
	}
	if e.vnet == 0 {
		src.flush()
		return e.writePlain(src, frame)
	}
	// The header as received, made consistent with the frame as it leaves
	// (a hook may have trimmed padding: hdr_len is at most the frame), and
	// written back in front of it.
	h := &src.hdr
	if int(h.hdrLen) > len(frame) {
		h.hdrLen = uint16(len(frame))
	}
	if h.gso() {
		e.stats.TxSuperFrames.Add(1)
	}
	if src.ep.vnet != e.vnet {
		src.flush()
		return e.writeCopy(src.idx, frame, h)
	}
	h.encode(src.hdrBytes())
	return e.writeBatched(src, src.buf[src.cur:src.cur+e.vnet+len(frame)], len(frame))
}

var errTooBig = errors.New("tap: frame larger than MaxFrame")

// writeCopy writes frame behind a virtio-net header (h, or all zeros).
func (e *Endpoint) writeCopy(qi int, frame []byte, h *vnetHdr) error {
	bp := e.bufs.Get().(*[]byte)
	buf := *bp
	if h != nil {
		h.encode(buf[:e.vnet])
	} else {
		clear(buf[:e.vnet])
	}
	n := copy(buf[e.vnet:], frame)
	err := e.writeRaw(qi, buf[:e.vnet+n], n)
	e.bufs.Put(bp)
	return err
}

// writePlain writes a received frame that needs its offload completed to a
// link without the header: a super-frame is cut in software, a partial
// checksum is completed in place.
func (e *Endpoint) writePlain(src *rxQueue, frame []byte) error {
	h := &src.hdr
	if !h.gso() {
		if h.flags&vnetNeedsCsum != 0 && !completeChecksum(frame, h) {
			e.stats.BadOffload.Add(1)
			return errBadOffload
		}
		return e.writeRaw(src.idx, frame, len(frame))
	}
	var s segmenter
	if !s.reset(frame, h) {
		e.stats.BadOffload.Add(1)
		return errBadOffload
	}
	e.stats.Segmented.Add(1)
	bp := e.bufs.Get().(*[]byte)
	var err error
	for seg := s.next(*bp); seg != nil; seg = s.next(*bp) {
		if werr := e.writeRaw(src.idx, seg, len(seg)); werr != nil {
			err = werr
		}
	}
	e.bufs.Put(bp)
	return err
}

var errBadOffload = errors.New("tap: virtio-net header does not fit the frame")

// writeRaw writes b (header and frame) on queue qi (modulo the queues).
func (e *Endpoint) writeRaw(qi int, b []byte, frameLen int) error {
	f := e.files[0]
	if qi > 0 && len(e.files) > 1 {
		f = e.files[qi%len(e.files)]
	}
	e.tapFrame(Out, b[len(b)-frameLen:])
	if _, err := f.Write(b); err != nil {
		e.stats.TxErrors.Add(1)
		return err
	}
	e.stats.TxFrames.Add(1)
	e.stats.TxBytes.Add(uint64(frameLen))
	return nil
}

// DeliverToStack hands a frame to netstack, copying it. Hooks call it for
// frames they inspected but do not consume. A frame received on e keeps its
// offload metadata: a super-frame is cut and a partial checksum completed.
func (e *Endpoint) DeliverToStack(frame []byte) {
	var q *rxQueue
	if len(frame) > 0 {
		q = e.ownOrigin(&frame[0])
	}
	e.deliver(q, frame)
}

// deliver makes frame (received on q, or nil) plain and hands it to netstack.
func (e *Endpoint) deliver(q *rxQueue, frame []byte) {
	if q != nil {
		q.flush() // what the batch forwarded so far leaves before netstack acts
	}
	if q == nil || e.vnet == 0 || q.hdr.plain() {
		e.deliverPlain(frame)
		return
	}
	h := &q.hdr
	if !h.gso() {
		if !completeChecksum(frame, h) {
			e.stats.BadOffload.Add(1)
			return
		}
		e.deliverPlain(frame)
		return
	}
	if !q.cut.reset(frame, h) {
		e.stats.BadOffload.Add(1)
		return
	}
	e.stats.Segmented.Add(1)
	for seg := q.cut.next(q.seg); seg != nil; seg = q.cut.next(q.seg) {
		e.deliverPlain(seg)
	}
}

func (e *Endpoint) deliverPlain(frame []byte) {
	dr := e.dispatcher.Load()
	if dr == nil || len(frame) < header.EthernetMinimumSize {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	if !e.ParseHeader(pkt) {
		return
	}
	dr.d.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
}

// receive classifies one frame: runts and foreign unicast are dropped, the
// hook may take it, the rest goes to netstack.
func (e *Endpoint) receive(q *rxQueue, frame []byte) {
	e.stats.RxFrames.Add(1)
	e.stats.RxBytes.Add(uint64(len(frame)))
	e.tapFrame(In, frame)
	if len(frame) < header.EthernetMinimumSize {
		e.stats.RxRunt.Add(1)
		return
	}
	if frame[0]&1 == 0 && [6]byte(frame[:6]) != e.macB && !e.takeForeign(frame) {
		e.stats.RxForeign.Add(1)
		return
	}
	if q.hdr.gso() {
		e.stats.RxSuperFrames.Add(1)
		if q.hdr.gsoSize < MinGSOSize {
			e.stats.GSOTooSmall.Add(1)
			return
		}
	}
	if hr := e.hook.Load(); hr != nil && hr.h.Inbound(e, frame) {
		return
	}
	e.deliver(q, frame)
}
