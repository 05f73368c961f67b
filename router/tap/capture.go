package tap

// Taps: a way for a packet capture to see every frame a link reads or
// writes, as it is on the wire (Ethernet header included, after any MAC
// rewrite), including the frames the datapath stages consume before
// netstack. With no tap installed the cost is one atomic load per frame.

// Direction says which way a frame crossed the link.
type Direction uint8

// The directions a tap sees.
const (
	In  Direction = 1 // read from the device
	Out Direction = 2 // written to the device
)

// Tap sees every frame the endpoint reads (before the foreign-MAC check and
// the hook) and every frame it writes (as written: a super-frame whole, a
// segment of one cut in software each on its own). Frame is called on the
// datapath goroutines, concurrently: it must be safe for concurrent use,
// must not block, and must not keep frame after it returns.
type Tap interface {
	Frame(dir Direction, frame []byte)
}

type tapRef struct{ t Tap }

// SetTap installs t (nil removes it). It may be called at any time.
func (e *Endpoint) SetTap(t Tap) {
	if t == nil {
		e.tap.Store(nil)
		return
	}
	e.tap.Store(&tapRef{t: t})
}

// tapFrame shows frame to the installed tap, if any. It is small enough to
// be inlined: without a tap, the cost is the load and the branch.
func (e *Endpoint) tapFrame(dir Direction, frame []byte) {
	if r := e.tap.Load(); r != nil {
		r.show(dir, frame)
	}
}

//go:noinline
func (r *tapRef) show(dir Direction, frame []byte) { r.t.Frame(dir, frame) }
