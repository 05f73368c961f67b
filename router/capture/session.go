package capture

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/bpf"

	"github.com/ghostrouter/ghostrouter/router/tap"
)

// Limits of a session.
const (
	// MaxSnapLen is the largest snap length: tcpdump's default, more than
	// the largest frame a link carries (a 64 KiB super-frame plus its
	// Ethernet header).
	MaxSnapLen = 262144
	// MaxFilter is the most instructions a filter may have (the kernel's
	// BPF_MAXINSNS).
	MaxFilter = 4096
	// DefaultQueue is how many frames wait for the reader at most.
	DefaultQueue = 4096
	// DefaultBudget is how many captured bytes wait for the reader at most.
	DefaultBudget = 16 << 20
	// MaxSessions is how many sessions may run at once, over all links: each
	// holds up to its budget in memory.
	MaxSessions = 8
)

// Options describe a session.
type Options struct {
	SnapLen int                  // bytes kept of each frame; 0: MaxSnapLen
	Filter  []bpf.RawInstruction // nil: every frame
	Queue   int                  // 0: DefaultQueue
	Budget  int                  // 0: DefaultBudget
}

// Record is one captured frame.
type Record struct {
	Time    time.Time
	Dir     tap.Direction
	OrigLen int    // the frame's length on the wire
	Data    []byte // its first min(OrigLen, snap length, filter's return) bytes
}

// Session is one running capture on one link. Its counters may be read at
// any time.
type Session struct {
	link   string
	vm     *bpf.VM
	snap   int
	budget int64
	queue  chan Record
	queued atomic.Int64 // bytes in queue

	matched atomic.Uint64 // frames that passed the filter
	dropped atomic.Uint64 // of those, lost because the reader was behind

	hub    *Hub
	closed atomic.Bool
	done   chan struct{}
}

// Link is the name of the link the session captures on.
func (s *Session) Link() string { return s.link }

// SnapLen is the session's snap length.
func (s *Session) SnapLen() int { return s.snap }

// Records are the captured frames, in the order they were captured on each
// datapath goroutine.
func (s *Session) Records() <-chan Record { return s.queue }

// Done is closed when the session is closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Matched counts the frames that passed the filter; Dropped counts those of
// them that were lost because the reader was behind.
func (s *Session) Matched() uint64 { return s.matched.Load() }

// Dropped counts the frames lost because the reader was behind.
func (s *Session) Dropped() uint64 { return s.dropped.Load() }

// Release returns a record's bytes to the session's budget. The reader calls
// it once it has written the record out.
func (s *Session) Release(r Record) { s.queued.Add(-int64(len(r.Data))) }

// Close stops the capture. Records already queued stay readable.
func (s *Session) Close() {
	if s.closed.CompareAndSwap(false, true) {
		s.hub.remove(s)
		close(s.done)
	}
}

// offer runs the filter on frame and queues a copy of what it keeps. It
// never blocks.
func (s *Session) offer(dir tap.Direction, frame []byte) {
	keep := len(frame)
	if s.vm != nil {
		n, err := s.vm.Run(frame)
		if err != nil || n <= 0 {
			return
		}
		keep = min(keep, n)
	}
	keep = min(keep, s.snap)
	s.matched.Add(1)
	if s.queued.Add(int64(keep)) > s.budget {
		s.queued.Add(-int64(keep))
		s.dropped.Add(1)
		return
	}
	r := Record{Time: time.Now(), Dir: dir, OrigLen: len(frame), Data: make([]byte, keep)}
	copy(r.Data, frame)
	select {
	case s.queue <- r:
	default:
		s.queued.Add(-int64(keep))
		s.dropped.Add(1)
	}
}

// Hub is the set of running sessions of one appliance, by link.
type Hub struct {
	mu     sync.Mutex
	links  map[*tap.Endpoint]*fanout
	closed bool
	stats  HubStats
}

// HubStats count over every session a hub ran.
type HubStats struct {
	Sessions atomic.Uint64 // sessions started
	Captured atomic.Uint64 // frames that passed a session's filter
	Dropped  atomic.Uint64 // of those, lost because the reader was behind
}

// NewHub returns a hub with no sessions.
func NewHub() *Hub { return &Hub{links: map[*tap.Endpoint]*fanout{}} }

// Stats returns the hub's counters. Captured and Dropped include the
// running sessions' counts only once they end.
func (h *Hub) Stats() *HubStats { return &h.stats }

// fanout is the tap installed on a link with sessions: it shows each frame
// to every session of the link. Its slice is never modified, only replaced.
type fanout struct {
	ep       *tap.Endpoint
	sessions []*Session
}

func (f *fanout) Frame(dir tap.Direction, frame []byte) {
	for _, s := range f.sessions {
		s.offer(dir, frame)
	}
}

// Start begins a capture on ep (called name in messages).
func (h *Hub) Start(ep *tap.Endpoint, opt Options) (*Session, error) {
	if opt.SnapLen < 0 || opt.SnapLen > MaxSnapLen {
		return nil, fmt.Errorf("snap length %d: must be 0 to %d", opt.SnapLen, MaxSnapLen)
	}
	if opt.SnapLen == 0 {
		opt.SnapLen = MaxSnapLen
	}
	if opt.Queue <= 0 {
		opt.Queue = DefaultQueue
	}
	if opt.Budget <= 0 {
		opt.Budget = DefaultBudget
	}
	s := &Session{
		link: ep.Name(), snap: opt.SnapLen, budget: int64(opt.Budget),
		queue: make(chan Record, opt.Queue), hub: h, done: make(chan struct{}),
	}
	if opt.Filter != nil {
		vm, err := newVM(opt.Filter)
		if err != nil {
			return nil, err
		}
		s.vm = vm
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("the appliance is stopping")
	}
	running := 0
	for _, f := range h.links {
		running += len(f.sessions)
	}
	if running >= MaxSessions {
		return nil, fmt.Errorf("%d captures are running already; at most %d at once", running, MaxSessions)
	}
	old := h.links[ep]
	f := &fanout{ep: ep}
	if old != nil {
		f.sessions = append(f.sessions, old.sessions...)
	}
	f.sessions = append(f.sessions, s)
	h.links[ep] = f
	ep.SetTap(f)
	h.stats.Sessions.Add(1)
	return s, nil
}

// Close ends every session and refuses new ones.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	var all []*Session
	for _, f := range h.links {
		all = append(all, f.sessions...)
	}
	h.mu.Unlock()
	for _, s := range all {
		s.Close()
	}
}

// remove detaches s from its link; the last session removes the tap.
func (h *Hub) remove(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stats.Captured.Add(s.matched.Load())
	h.stats.Dropped.Add(s.dropped.Load())
	for ep, f := range h.links {
		var rest []*Session
		found := false
		for _, o := range f.sessions {
			if o == s {
				found = true
			} else {
				rest = append(rest, o)
			}
		}
		if !found {
			continue
		}
		if len(rest) == 0 {
			delete(h.links, ep)
			ep.SetTap(nil)
		} else {
			nf := &fanout{ep: ep, sessions: rest}
			h.links[ep] = nf
			ep.SetTap(nf)
		}
		return
	}
}

// newVM checks a filter program and prepares it to run.
func newVM(raw []bpf.RawInstruction) (*bpf.VM, error) {
	if len(raw) == 0 || len(raw) > MaxFilter {
		return nil, fmt.Errorf("filter: %d instructions; want 1 to %d", len(raw), MaxFilter)
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		return nil, errors.New("filter: contains an instruction the BPF interpreter does not know")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	return vm, nil
}
