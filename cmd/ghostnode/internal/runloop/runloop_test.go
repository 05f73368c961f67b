package runloop

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/node"
	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/router/config"
)

var (
	key       = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	appliance = netip.MustParseAddrPort("10.0.0.1:40000")
)

// fakeSource hands the loop the datagrams the test sends, like a UDP
// socket: Close makes a blocked read return net.ErrClosed.
type fakeSource struct {
	ch      chan datagram
	fail    chan error
	closed  chan struct{}
	once    sync.Once
	nClosed atomic.Int32

	mu   sync.Mutex
	sent []datagram // acknowledgements written back
}

func (f *fakeSource) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, datagram{slices.Clone(b), to})
	return len(b), nil
}

func (f *fakeSource) acks() []datagram {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

func newSource() *fakeSource {
	return &fakeSource{ch: make(chan datagram), fail: make(chan error), closed: make(chan struct{})}
}

func (f *fakeSource) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	select {
	case d := <-f.ch:
		return copy(b, d.b), d.from, nil
	case err := <-f.fail:
		return 0, netip.AddrPort{}, err
	case <-f.closed:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

func (f *fakeSource) Close() error {
	f.nClosed.Add(1)
	f.once.Do(func() { close(f.closed) })
	return nil
}

// fakeNode is the Installer: it records each install and fails while fail
// is set, as node.Node.Apply would when nft fails.
type fakeNode struct {
	mu       sync.Mutex
	installs []install
	fail     error
}

type install struct {
	seq   uint64
	owned []uint32
}

func (f *fakeNode) Install(_ context.Context, m *announce.Message, owned, _ []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.installs = append(f.installs, install{m.Seq, slices.Clone(owned)})
	return nil
}

func (f *fakeNode) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

func (f *fakeNode) got() []install {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.installs)
}

// clock is a settable time for the loop.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// syncBuffer is a log destination the loop writes and the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is a running loop for server 1 of cluster web, with its fakes.
type harness struct {
	t      *testing.T
	src    *fakeSource
	node   *fakeNode
	clock  *clock
	logs   *syncBuffer
	done   chan error
	cancel context.CancelFunc

	mu       sync.Mutex
	statuses []*node.RunStatus
}

func start(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, src: newSource(), node: &fakeNode{}, clock: &clock{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	h.clock.ns.Store(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC).UnixNano())
	r, err := announce.NewReceiver("web", key.Public().(ed25519.PublicKey), 1)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(Config{
		Receiver: r, Installer: h.node, Source: h.src, Owned: 5,
		Base:   node.RunStatus{Cluster: "web", Mode: node.ModeBroadcast, Server: 1, PID: 1234, Listen: "0.0.0.0:9470"},
		Status: h.record,
		Logger: slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Tick:   2 * time.Millisecond,
		Now:    h.clock.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return h
}

func (h *harness) record(rs *node.RunStatus) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := *rs
	h.statuses = append(h.statuses, &c)
	return nil
}

func (h *harness) last() *node.RunStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.statuses) == 0 {
		return nil
	}
	return h.statuses[len(h.statuses)-1]
}

// send hands the loop one datagram and waits until the status counts it.
func (h *harness) send(b []byte) {
	h.t.Helper()
	before := uint64(0)
	if s := h.last(); s != nil {
		before = s.Counters.Received
	}
	select {
	case h.src.ch <- datagram{b, appliance}:
	case <-time.After(5 * time.Second):
		h.t.Fatal("the loop does not read")
	}
	h.waitStatus(fmt.Sprintf("received = %d", before+1), func(s *node.RunStatus) bool { return s.Counters.Received == before+1 })
}

func (h *harness) waitStatus(what string, ok func(*node.RunStatus) bool) *node.RunStatus {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s := h.last(); s != nil && ok(s) {
			return s
		}
		time.Sleep(time.Millisecond)
	}
	h.t.Fatalf("timed out waiting for a status with %s; last %+v", what, h.last())
	return nil
}

// messages of cluster web, epoch 100; tx counts up as the appliance's does.
type sender struct {
	t  *testing.T
	tx uint64
}

func (s *sender) msg(seq uint64, down ...int) ([]byte, []uint32) {
	s.t.Helper()
	s.tx++
	m := &announce.Message{Cluster: "web", Epoch: 100, Seq: seq, Tx: s.tx, Interval: time.Second, Hash: config.HashJhash, Seed: 0x5eed, Buckets: 64,
		Ghost: netip.MustParseAddr("203.0.113.10")}
	for id := range 3 {
		m.Members = append(m.Members, announce.Member{ID: id, Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + id)}), Weight: 1, Up: !slices.Contains(down, id)})
	}
	b, err := m.Marshal(key)
	if err != nil {
		s.t.Fatal(err)
	}
	tb, err := m.Table()
	if err != nil {
		s.t.Fatal(err)
	}
	return b, tb.Owned(1)
}

// TestLoopAppliesNewerIgnoresTheRest: newer tables are installed, each
// logged once; repeats, replays, forgeries, other clusters and garbage
// change nothing and are counted; ignored ones are logged once per reason.
func TestLoopAppliesNewerIgnoresTheRest(t *testing.T) {
	h := start(t)
	s := &sender{t: t}
	first, owned1 := s.msg(1)
	h.send(first)
	repeat, _ := s.msg(1)
	h.send(repeat)
	h.send(first) // replay
	forged := bytes.Clone(repeat)
	forged[len(forged)-1] ^= 0xff
	for range 3 {
		h.send(forged)
	}
	other := bytes.Clone(first)
	copy(other[45:], "api") // another cluster's (its MAC is not checked)
	h.send(other)
	h.send([]byte("hello"))
	second, owned2 := s.msg(2, 0)
	h.send(second)

	if got := h.node.got(); len(got) != 2 || got[0].seq != 1 || !slices.Equal(got[0].owned, owned1) || got[1].seq != 2 || !slices.Equal(got[1].owned, owned2) {
		t.Errorf("installs %+v; want seq 1 with %v, seq 2 with %v", got, owned1, owned2)
	}
	st := h.waitStatus("applied seq 2", func(s *node.RunStatus) bool { return s.Applied != nil && s.Applied.Seq == 2 })
	want := announce.Counters{Received: 9, Newer: 2, Applied: 2, Repeats: 1, Stale: 1, BadMAC: 3, OtherCluster: 1, Malformed: 1, Acks: 3}
	if st.Counters != want {
		t.Errorf("counters %+v\nwant %+v", st.Counters, want)
	}
	// Each applied table and each repeat is acknowledged to the
	// announcement's source, naming the table this server runs.
	var acked []uint64
	for _, d := range h.src.acks() {
		a, err := announce.UnmarshalAck(d.b)
		if err != nil || d.from != appliance || a.Cluster != "web" || a.Server != 1 || a.Epoch != 100 {
			t.Errorf("acknowledgement %+v to %v: %v", a, d.from, err)
			continue
		}
		acked = append(acked, a.Seq)
	}
	if !slices.Equal(acked, []uint64{1, 1, 2}) {
		t.Errorf("acknowledged seqs %v, want [1 1 2] (apply, repeat, apply)", acked)
	}
	if a := st.Applied; a.Epoch != 100 || a.Owned != len(owned2) || a.Members != 3 || a.Live != 2 || a.From != appliance.String() || a.Buckets != 64 {
		t.Errorf("applied %+v", a)
	}
	if st.Floor == nil || *st.Floor != (node.Floor{Epoch: 100, Tx: 3}) || st.Cluster != "web" || st.PID != 1234 || st.Quiet {
		t.Errorf("status %+v", st)
	}

	logs := h.logs.String()
	for _, line := range []string{
		fmt.Sprintf("cluster web: table epoch 100 seq 1 applied: owns %d buckets (was 5)", len(owned1)),
		fmt.Sprintf("cluster web: table epoch 100 seq 2 applied: owns %d buckets (was %d)", len(owned2), len(owned1)),
	} {
		if strings.Count(logs, line) != 1 {
			t.Errorf("log has %q %d times, want once:\n%s", line, strings.Count(logs, line), logs)
		}
	}
	for reason, level := range map[string]string{"bad_mac": "WARN", "stale": "DEBUG", "other_cluster": "DEBUG", "malformed": "WARN"} {
		if n := strings.Count(logs, "ignored announcement: "+reason); n != 1 {
			t.Errorf("log has %d lines about %s, want 1 (rate-limited):\n%s", n, reason, logs)
		}
		if !strings.Contains(logs, "level="+level+` msg="cluster web: ignored announcement: `+reason) {
			t.Errorf("%s not logged at %s:\n%s", reason, level, logs)
		}
	}
	if strings.Contains(logs, "repeat") {
		t.Errorf("a repeat was logged:\n%s", logs)
	}
}

// TestLoopApplyFailure: a table that cannot be installed is counted and
// reported, the last table stays, and the next repetition installs it.
func TestLoopApplyFailure(t *testing.T) {
	h := start(t)
	s := &sender{t: t}
	first, _ := s.msg(1)
	h.send(first)
	h.node.setFail(errors.New("nft: injected failure"))
	second, owned2 := s.msg(2, 2)
	h.send(second)
	st := h.waitStatus("an apply error", func(s *node.RunStatus) bool { return s.Counters.ApplyErrors == 1 })
	if st.Applied.Seq != 1 || !strings.Contains(st.LastError, "injected failure") {
		t.Errorf("after a failed apply: applied %+v, last error %q", st.Applied, st.LastError)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "table epoch 100 seq 2 not applied (the last table stays): nft: injected failure") {
		t.Errorf("log:\n%s", logs)
	}
	h.node.setFail(nil)
	again, _ := s.msg(2, 2)
	h.send(again)
	st = h.waitStatus("seq 2 applied", func(s *node.RunStatus) bool { return s.Applied.Seq == 2 })
	if got := h.node.got(); len(got) != 2 || !slices.Equal(got[1].owned, owned2) || st.LastError != "" || st.Counters.Applied != 2 {
		t.Errorf("installs %+v, status %+v", got, st)
	}
}

// TestLoopQuiet: when the appliance goes quiet the last table stays in
// force; that is logged once, and so is its return.
func TestLoopQuiet(t *testing.T) {
	h := start(t)
	s := &sender{t: t}
	first, owned := s.msg(1)
	h.send(first)
	h.clock.advance(2 * time.Second)
	time.Sleep(20 * time.Millisecond) // ticks pass; not yet quiet
	if st := h.last(); st.Quiet {
		t.Fatal("quiet after 2 intervals")
	}
	h.clock.advance(2 * time.Second)
	h.waitStatus("quiet", func(s *node.RunStatus) bool { return s.Quiet })
	time.Sleep(20 * time.Millisecond) // more ticks: logged once only
	logs := h.logs.String()
	want := fmt.Sprintf("cluster web: no announcement for 4s (the appliance repeats every 1s): keeping table epoch 100 seq 1 (%d buckets)", len(owned))
	if strings.Count(logs, want) != 1 || !strings.Contains(logs, "level=WARN") {
		t.Errorf("log has %q %d times, want once:\n%s", want, strings.Count(logs, want), logs)
	}
	if got := h.node.got(); len(got) != 1 {
		t.Errorf("installs while quiet: %+v", got)
	}
	// A replay does not count as the appliance being back.
	h.send(first)
	if st := h.last(); !st.Quiet {
		t.Error("a replay ended the quiet")
	}
	repeat, _ := s.msg(1)
	h.send(repeat)
	h.waitStatus("not quiet", func(s *node.RunStatus) bool { return !s.Quiet })
	if logs := h.logs.String(); !strings.Contains(logs, "cluster web: announcements resumed after 4s") {
		t.Errorf("log:\n%s", logs)
	}
}

// TestLoopStops: Run returns nil when its context ends, closes the source
// and writes a last status marked stopped; a failing source ends it with
// the error.
func TestLoopStops(t *testing.T) {
	h := start(t)
	s := &sender{t: t}
	b, _ := s.msg(1)
	h.send(b)
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	h.done <- nil // for the cleanup
	if st := h.last(); st.Stopped.IsZero() || st.Applied == nil {
		t.Errorf("last status %+v: want stopped, with the applied table", st)
	}
	if h.src.nClosed.Load() == 0 {
		t.Error("the source was not closed")
	}

	h2 := start(t)
	h2.src.fail <- errors.New("socket gone")
	select {
	case err := <-h2.done:
		if err == nil || !strings.Contains(err.Error(), "cluster web: reading announcements: socket gone") {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the source failed")
	}
	h2.done <- nil
}

func TestNewChecks(t *testing.T) {
	r, _ := announce.NewReceiver("web", key.Public().(ed25519.PublicKey), 1)
	for _, c := range []Config{
		{Installer: &fakeNode{}, Source: newSource(), Base: node.RunStatus{Cluster: "web"}},
		{Receiver: r, Source: newSource(), Base: node.RunStatus{Cluster: "web"}},
		{Receiver: r, Installer: &fakeNode{}, Base: node.RunStatus{Cluster: "web"}},
		{Receiver: r, Installer: &fakeNode{}, Source: newSource()},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}

// TestLoopReassemblesSegments: an announcement too long for one datagram
// arrives as segments, last first, one twice, after an unreadable one; the
// loop reassembles it, the Receiver verifies and applies it once (3000
// members), and the status counts every segment by outcome.
func TestLoopReassemblesSegments(t *testing.T) {
	h := start(t)
	m := &announce.Message{Cluster: "web", Epoch: 100, Seq: 1, Tx: 1, Interval: time.Second, Hash: config.HashJhash, Seed: 0x5eed, Buckets: 4096,
		Ghost: netip.MustParseAddr("203.0.113.10")}
	for id := range 3000 {
		m.Members = append(m.Members, announce.Member{ID: id, Addr: netip.AddrFrom4([4]byte{10, 0, byte(id >> 8), byte(id)}), Weight: 1, Up: id%4 != 0})
	}
	b, err := m.Marshal(key)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := m.Table()
	if err != nil {
		t.Fatal(err)
	}
	segs, err := announce.Segments(b)
	if err != nil || len(segs) < 2 {
		t.Fatalf("%d segments, %v", len(segs), err)
	}
	push := func(d []byte) {
		select {
		case h.src.ch <- datagram{d, appliance}:
		case <-time.After(5 * time.Second):
			t.Fatal("the loop does not read")
		}
	}
	push(segs[0][:announce.SegmentHeaderLen+1])
	for k := len(segs) - 1; k >= 0; k-- {
		push(segs[k])
		if k == len(segs)-1 {
			push(segs[k])
		}
	}
	st := h.waitStatus("the reassembled table applied", func(s *node.RunStatus) bool { return s.Applied != nil })
	if got := h.node.got(); len(got) != 1 || !slices.Equal(got[0].owned, tb.Owned(1)) {
		t.Errorf("installs %+v; want one with %d buckets", got, len(tb.Owned(1)))
	}
	n := uint64(len(segs))
	want := announce.ReassemblyCounters{Segments: n + 2, Held: n - 1, Completed: 1, Duplicates: 1, Malformed: 1}
	if st.Applied.Members != 3000 || st.Segments != want || st.Counters.Received != 1 || st.Counters.Applied != 1 {
		t.Errorf("applied %+v, segments %+v (want %+v), counters %+v", st.Applied, st.Segments, want, st.Counters)
	}
}
