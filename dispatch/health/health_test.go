package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

func TestRecordRiseFall(t *testing.T) {
	bad := errors.New("refused")
	now := time.Now()
	s := State{Up: true, Since: now}
	// fall 3: two failures change nothing, a success resets the count.
	for i, step := range []struct {
		err     error
		changed bool
		up      bool
	}{
		{bad, false, true}, {bad, false, true}, {nil, false, true},
		{bad, false, true}, {bad, false, true}, {bad, true, false},
		{nil, false, false}, {bad, false, false}, {nil, false, false}, {nil, true, true},
	} {
		changed := s.Record(step.err, now.Add(time.Duration(i)*time.Second), 2, 3)
		if changed != step.changed || s.Up != step.up {
			t.Fatalf("step %d (err %v): changed %v up %v, want changed %v up %v", i, step.err, changed, s.Up, step.changed, step.up)
		}
	}
	if s.Transitions != 2 || s.Checks != 10 || s.Failures != 6 || s.LastError != "refused" {
		t.Fatalf("state %+v: want 2 transitions, 10 checks, 6 failures, last error refused", s)
	}
}

// fakeProber dials real loopback sockets for TCP and answers pings from a set.
type fakeProber struct {
	mu    sync.Mutex
	alive map[netip.Addr]bool
}

func (f *fakeProber) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", dst.String())
}

func (f *fakeProber) Ping(ctx context.Context, dst netip.Addr, seq uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.alive[dst] {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func TestCheckKinds(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		http.NotFound(w, r)
	})}
	go srv.Serve(l)
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port
	lo := netip.MustParseAddr("127.0.0.1")
	p := &fakeProber{alive: map[netip.Addr]bool{lo: true}}
	base := Spec{Timeout: time.Second, Interval: time.Second}
	closed := func() int { // a port with nothing listening
		c, _ := net.Listen("tcp", "127.0.0.1:0")
		n := c.Addr().(*net.TCPAddr).Port
		c.Close()
		return n
	}()
	for _, tc := range []struct {
		name string
		h    Spec
		ok   bool
	}{
		{"tcp open", Spec{Check: config.CheckTCP, Port: port}, true},
		{"tcp closed", Spec{Check: config.CheckTCP, Port: closed}, false},
		{"http expected status", Spec{Check: config.CheckHTTP, Port: port, Path: "/healthz", ExpectStatus: 204}, true},
		{"http wrong status", Spec{Check: config.CheckHTTP, Port: port, Path: "/other", ExpectStatus: 204}, false},
		{"icmp alive", Spec{Check: config.CheckICMP}, true},
		{"none", Spec{Check: config.CheckNone}, true},
	} {
		h := tc.h
		h.Timeout, h.Interval = base.Timeout, base.Interval
		err := Check(context.Background(), p, h, lo, 1)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Check = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	h := Spec{Check: config.CheckICMP, Timeout: 50 * time.Millisecond}
	if err := Check(context.Background(), p, h, netip.MustParseAddr("127.0.0.2"), 1); err == nil {
		t.Error("icmp to a dead address passed")
	}
}

func TestCheckerReportsTransitionsOnce(t *testing.T) {
	dead := netip.MustParseAddr("127.0.0.2")
	live := netip.MustParseAddr("127.0.0.1")
	p := &fakeProber{alive: map[netip.Addr]bool{live: true}}
	events := make(chan Event, 16)
	h := Spec{Check: config.CheckICMP, Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 3}
	c := NewChecker(h, []Target{{ID: 0, Addr: live}, {ID: 1, Addr: dead}}, p, nil, func(ev Event) { events <- ev })
	defer c.Stop()
	select {
	case ev := <-events:
		if ev.ServerID != 1 || ev.Up || ev.Detect <= 0 {
			t.Fatalf("first event %+v: want server 1 down with a detection time", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no down event for the dead server")
	}
	if d := c.Down(); !d[1] || d[0] {
		t.Fatalf("Down() = %v, want only server 1", d)
	}
	p.mu.Lock()
	p.alive[dead] = true
	p.mu.Unlock()
	select {
	case ev := <-events:
		if ev.ServerID != 1 || !ev.Up {
			t.Fatalf("second event %+v: want server 1 up", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no up event after recovery")
	}
	select {
	case ev := <-events:
		t.Fatalf("an extra event: %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	if s := c.States()[1]; s.Transitions != 2 {
		t.Fatalf("server 1 transitions = %d, want 2", s.Transitions)
	}
}

// The spec of a [cluster.health] table is its settings alone: the same
// settings on another line of the file are the same spec.
func TestSpecOfIgnoresTheLine(t *testing.T) {
	a := config.Health{Check: config.CheckHTTP, Port: 80, Path: "/", ExpectStatus: 200, Interval: time.Second, Timeout: time.Second / 2, Rise: 2, Fall: 3, Line: 12}
	b := a
	b.Line = 40
	if SpecOf(a) != SpecOf(b) {
		t.Errorf("specs of one table on lines 12 and 40 differ: %+v, %+v", SpecOf(a), SpecOf(b))
	}
	b.Fall = 4
	if SpecOf(a) == SpecOf(b) {
		t.Error("specs with different fall compare equal")
	}
	want := Spec{Check: config.CheckHTTP, Port: 80, Path: "/", ExpectStatus: 200, Interval: time.Second, Timeout: time.Second / 2, Rise: 2, Fall: 3}
	if SpecOf(a) != want {
		t.Errorf("SpecOf = %+v, want %+v", SpecOf(a), want)
	}
}
