// Package health owns the appliance's health checks of cluster servers (the
// patent's watchd): one check (tcp connect, http GET, icmp echo) sent from
// the appliance's own netstack toward a server's primary address, and the
// rise/fall state machine that turns a series of check results into up and
// down transitions.
//
// A server starts up: the appliance serves traffic from the first packet, and
// a server that is really down is found after fall failed checks. Each
// transition is reported once, with the reason, to the caller.
package health

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// Spec is how a cluster's servers are checked: a [cluster.health] table as
// the checks run it. Unlike the decoded table it carries no line number, so
// two specs are equal (==) exactly when they check alike.
type Spec struct {
	Check        config.Check
	Port         int // tcp and http
	Path         string
	ExpectStatus int // http
	Interval     time.Duration
	Timeout      time.Duration // > 0 and <= Interval
	Rise, Fall   int
}

// SpecOf is the spec of a validated [cluster.health] table.
func SpecOf(h config.Health) Spec {
	return Spec{Check: h.Check, Port: h.Port, Path: h.Path, ExpectStatus: h.ExpectStatus,
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall}
}

// Prober is what checks need from the appliance's stack.
type Prober interface {
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	Ping(ctx context.Context, dst netip.Addr, seq uint16) error
}

// Check performs one check of kind h on target, bounded by h.Timeout.
func Check(ctx context.Context, p Prober, h Spec, target netip.Addr, seq uint16) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	switch h.Check {
	case config.CheckTCP:
		c, err := p.DialTCP(ctx, netip.AddrPortFrom(target, uint16(h.Port)))
		if err != nil {
			return fmt.Errorf("tcp connect to port %d: %w", h.Port, err)
		}
		c.Close()
		return nil
	case config.CheckHTTP:
		return checkHTTP(ctx, p, h, target)
	case config.CheckICMP:
		if err := p.Ping(ctx, target, seq); err != nil {
			return fmt.Errorf("icmp echo: %w", err)
		}
		return nil
	case config.CheckNone:
		return nil
	default:
		return fmt.Errorf("unknown check %q", h.Check)
	}
}

func checkHTTP(ctx context.Context, p Prober, h Spec, target netip.Addr) error {
	dst := netip.AddrPortFrom(target, uint16(h.Port))
	c, err := p.DialTCP(ctx, dst)
	if err != nil {
		return fmt.Errorf("http: connect to port %d: %w", h.Port, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+dst.String()+h.Path, nil)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	req.Header.Set("User-Agent", "ghostrouter-health/1")
	req.Close = true
	if err := req.Write(c); err != nil {
		return fmt.Errorf("http: send GET %s: %w", h.Path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return fmt.Errorf("http: GET %s: %w", h.Path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != h.ExpectStatus {
		return fmt.Errorf("http: GET %s: status %d, want %d", h.Path, resp.StatusCode, h.ExpectStatus)
	}
	return nil
}

// State is one server's health as the state machine sees it.
type State struct {
	Up          bool
	Since       time.Time // of the last transition (or the start)
	LastOK      time.Time // of the last good check
	LastError   string    // of the last failed check
	Transitions int
	Checks      uint64
	Failures    uint64
	run         int // consecutive results against the current state
}

// Event is a transition.
type Event struct {
	ServerID int
	Addr     netip.Addr
	Up       bool
	Reason   string
	At       time.Time
	// Detect is, for a down event, how long the server had been failing
	// (since its last good check).
	Detect time.Duration
}

// Record feeds one check result into s with the rise/fall thresholds and
// reports whether the state changed.
func (s *State) Record(err error, now time.Time, rise, fall int) bool {
	s.Checks++
	if err == nil {
		s.LastOK = now
	} else {
		s.Failures++
		s.LastError = err.Error()
	}
	good := err == nil
	if good == s.Up {
		s.run = 0
		return false
	}
	s.run++
	need := fall
	if !s.Up {
		need = rise
	}
	if s.run < need {
		return false
	}
	s.Up, s.Since, s.run = good, now, 0
	s.Transitions++
	return true
}

// Target is a server to check.
type Target struct {
	ID   int
	Addr netip.Addr
}

// Checker checks the servers of one cluster, each on its own goroutine,
// and reports transitions through onChange (called from those goroutines,
// one at a time per server).
type Checker struct {
	h        Spec
	p        Prober
	onChange func(Event)

	mu     sync.Mutex // guards states
	states map[int]*State

	cancel context.CancelFunc
	wg     sync.WaitGroup

	observe func(id int, d time.Duration, err error) // may be nil
}

// Option adjusts a Checker.
type Option func(*Checker)

// WithObserver has every check's duration and result reported to f, from
// the checking goroutines.
func WithObserver(f func(server int, d time.Duration, err error)) Option {
	return func(c *Checker) { c.observe = f }
}

// NewChecker returns a checker for targets; every target starts up, with the
// state it had in prev if it is there (so a reload keeps what is known).
func NewChecker(h Spec, targets []Target, p Prober, prev map[int]State, onChange func(Event), opts ...Option) *Checker {
	c := &Checker{h: h, p: p, onChange: onChange, states: map[int]*State{}}
	for _, o := range opts {
		o(c)
	}
	now := time.Now()
	for _, t := range targets {
		st := State{Up: true, Since: now}
		if ps, ok := prev[t.ID]; ok {
			st = ps
		}
		c.states[t.ID] = &st
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if h.Check == config.CheckNone {
		return c
	}
	for i, t := range targets {
		c.wg.Add(1)
		go c.loop(ctx, t, time.Duration(i)*h.Interval/time.Duration(len(targets)))
	}
	return c
}

func (c *Checker) loop(ctx context.Context, t Target, offset time.Duration) {
	defer c.wg.Done()
	timer := time.NewTimer(offset)
	defer timer.Stop()
	var seq uint16
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		seq++
		start := time.Now()
		err := Check(ctx, c.p, c.h, t.Addr, seq)
		if ctx.Err() != nil {
			return
		}
		if c.observe != nil {
			c.observe(t.ID, time.Since(start), err)
		}
		now := time.Now()
		c.mu.Lock()
		st := c.states[t.ID]
		changed := st.Record(err, now, c.h.Rise, c.h.Fall)
		ev := Event{ServerID: t.ID, Addr: t.Addr, Up: st.Up, At: now}
		if changed {
			if st.Up {
				ev.Reason = fmt.Sprintf("%d good checks in a row", c.h.Rise)
			} else {
				ev.Reason = fmt.Sprintf("%d failed checks in a row, last: %s", c.h.Fall, st.LastError)
				ev.Detect = now.Sub(st.LastOK)
			}
		}
		c.mu.Unlock()
		if changed && c.onChange != nil {
			c.onChange(ev)
		}
		timer.Reset(c.h.Interval)
	}
}

// States returns a copy of every server's state.
func (c *Checker) States() map[int]State {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int]State, len(c.states))
	for id, s := range c.states {
		out[id] = *s
	}
	return out
}

// Down returns the ids of the servers that are down.
func (c *Checker) Down() map[int]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]bool{}
	for id, s := range c.states {
		if !s.Up {
			out[id] = true
		}
	}
	return out
}

// Stop stops the checks and waits for them.
func (c *Checker) Stop() {
	c.cancel()
	c.wg.Wait()
}

// Describe is a short text for a check setting, e.g. "tcp/80 every 1s".
func Describe(h Spec) string {
	switch h.Check {
	case config.CheckTCP:
		return "tcp/" + strconv.Itoa(h.Port) + " every " + h.Interval.String()
	case config.CheckHTTP:
		return fmt.Sprintf("http GET :%d%s = %d every %s", h.Port, h.Path, h.ExpectStatus, h.Interval)
	case config.CheckICMP:
		return "icmp every " + h.Interval.String()
	default:
		return "none"
	}
}
