package tap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// MaxFrame is the largest frame the endpoint reads or writes: a 64 KiB IP
// packet plus its Ethernet header.
const MaxFrame = header.EthernetMinimumSize + 65535

// Hook sees every inbound frame addressed to this endpoint (its own MAC,
// broadcast or multicast) before netstack does. Inbound returns true when it
// has consumed the frame (forwarded it, answered it, or dropped it and
// counted why); false hands the frame on to netstack. frame is only valid
// during the call. Inbound is called from the endpoint's receive goroutines,
// one per queue, so it must be safe for concurrent use; it must not block.
type Hook interface {
	Inbound(ep *Endpoint, frame []byte) bool
}

// Stats counts the endpoint's per-frame outcomes. All fields are updated
// atomically and may be read at any time.
type Stats struct {
	RxFrames  atomic.Uint64 // frames read from the device
	RxBytes   atomic.Uint64
	RxRunt    atomic.Uint64 // shorter than an Ethernet header: dropped
	RxForeign atomic.Uint64 // unicast to another MAC (e.g. a bridge flooding): dropped
	RxErrors  atomic.Uint64 // read errors
	TxFrames  atomic.Uint64 // frames written
	TxBytes   atomic.Uint64
	TxErrors  atomic.Uint64 // write errors (e.g. EIO while the link is down): dropped
	TxTooBig  atomic.Uint64 // larger than MaxFrame: dropped
}

// Endpoint is a stack.LinkEndpoint over one or more frame-preserving file
// descriptors: the queues of a TAP device, or a SOCK_SEQPACKET socket pair in
// tests. Frames are Ethernet.
type Endpoint struct {
	name  string
	files []*os.File
	mac   tcpip.LinkAddress
	macB  [6]byte
	mtu   atomic.Uint32

	hook       atomic.Pointer[hookRef]
	dispatcher atomic.Pointer[dispatcherRef]
	onFault    func(error)
	onClose    atomic.Pointer[func()]

	bufs sync.Pool // *[]byte of MaxFrame bytes, for writes
	wg   sync.WaitGroup

	startOnce sync.Once
	closed    atomic.Bool
	stats     Stats
}

type hookRef struct{ h Hook }
type dispatcherRef struct{ d stack.NetworkDispatcher }

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// EndpointConfig describes an endpoint.
type EndpointConfig struct {
	Name  string           // for messages
	Files []*os.File       // non-blocking, frame-preserving; at least one
	MAC   net.HardwareAddr // the stack's own MAC on this link
	MTU   uint32           // the link's IP MTU
	// OnFault is called (once per receive loop) when a receive loop stops
	// for any reason other than Close. It must not block.
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
	}
	copy(e.macB[:], cfg.MAC)
	e.mtu.Store(cfg.MTU)
	e.bufs.New = func() any {
		b := make([]byte, MaxFrame)
		return &b
	}
	return e, nil
}

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
// receive goroutine per file.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&dispatcherRef{d: d})
	e.startOnce.Do(func() {
		for _, f := range e.files {
			e.wg.Add(1)
			go e.receiveLoop(f)
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
// never sees a link error it would treat as fatal.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	bp := e.bufs.Get().(*[]byte)
	buf := *bp
	n := 0
	for _, pkt := range pkts.AsSlice() {
		n++
		if pkt.Size() > len(buf) {
			e.stats.TxTooBig.Add(1)
			continue
		}
		views, off := pkt.AsViewList()
		m := 0
		for v := views.Front(); v != nil; v = v.Next() {
			s := v.AsSlice()
			if off >= len(s) {
				off -= len(s)
				continue
			}
			m += copy(buf[m:], s[off:])
			off = 0
		}
		e.WriteFrame(buf[:m])
	}
	e.bufs.Put(bp)
	return n, nil
}

// WriteFrame writes one complete Ethernet frame to the link (the first
// queue). Errors are counted and returned; the frame is not retried.
func (e *Endpoint) WriteFrame(frame []byte) error {
	if len(frame) > MaxFrame {
		e.stats.TxTooBig.Add(1)
		return fmt.Errorf("link %s: frame of %d bytes: too big", e.name, len(frame))
	}
	if _, err := e.files[0].Write(frame); err != nil {
		e.stats.TxErrors.Add(1)
		return err
	}
	e.stats.TxFrames.Add(1)
	e.stats.TxBytes.Add(uint64(len(frame)))
	return nil
}

// DeliverToStack hands a frame to netstack, copying it. Hooks call it for
// frames they inspected but do not consume.
func (e *Endpoint) DeliverToStack(frame []byte) {
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

func (e *Endpoint) receiveLoop(f *os.File) {
	defer e.wg.Done()
	buf := make([]byte, MaxFrame)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if e.closed.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			e.stats.RxErrors.Add(1)
			if e.onFault != nil {
				e.onFault(fmt.Errorf("link %s: receive loop stopped: %w", e.name, err))
			}
			return
		}
		e.receive(buf[:n])
	}
}

// receive classifies one frame: runts and foreign unicast are dropped, the
// hook may take it, the rest goes to netstack.
func (e *Endpoint) receive(frame []byte) {
	e.stats.RxFrames.Add(1)
	e.stats.RxBytes.Add(uint64(len(frame)))
	if len(frame) < header.EthernetMinimumSize {
		e.stats.RxRunt.Add(1)
		return
	}
	if frame[0]&1 == 0 && [6]byte(frame[:6]) != e.macB {
		e.stats.RxForeign.Add(1)
		return
	}
	if hr := e.hook.Load(); hr != nil && hr.h.Inbound(e, frame) {
		return
	}
	e.DeliverToStack(frame)
}
