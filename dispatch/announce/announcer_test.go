package announce

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch"
	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// The manager schedules its announcements through this type.
var _ dispatch.Announcer = (*Announcer)(nil)

func webCluster() *config.Cluster {
	return &config.Cluster{
		Name: "web", Address: netip.MustParseAddr("203.0.113.10"), Interface: "lan0", Mode: config.ModeBroadcast,
		Hash: config.HashJhash, Seed: 0x5eed, Buckets: 4096,
		AnnounceKey: testKey, AnnouncePort: DefaultPort, AnnounceInterval: 500 * time.Millisecond,
	}
}

// fakeClock is a settable time for an Announcer.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// TestAnnouncerToReceiver: what the appliance's announcer sends, the
// servers' receivers apply and acknowledge. The first announcement of an
// epoch grants nothing; the table follows once every server has
// acknowledged it. A failure first releases the failed server's buckets
// (nobody owns them), and they go to the survivors only after the failed
// server's acknowledgement of the release. Repetitions are Repeats; a
// replay is stale.
func TestAnnouncerToReceiver(t *testing.T) {
	var sent [][]byte
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a := NewAnnouncer(1000, func(cl *config.Cluster, b []byte) error {
		if cl.Name != "web" {
			t.Errorf("sent for cluster %s", cl.Name)
		}
		sent = append(sent, bytes.Clone(b))
		return nil
	}, nil)
	a.now = clk.now
	cl := webCluster()
	servers := []core.Server{
		{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: true},
		{ID: 1, Addr: netip.MustParseAddr("10.0.0.12"), Weight: 1, Up: true},
		{ID: 2, Addr: netip.MustParseAddr("10.0.0.13"), Weight: 1, Up: true},
	}
	rs := []*Receiver{mustReceiver(t, 0), mustReceiver(t, 1), mustReceiver(t, 2)}
	// deliver hands datagram i to the receivers in ids and returns their
	// verdicts; acks go back to the announcer when ack is set.
	deliver := func(i int, ack bool, ids ...int) []Verdict {
		var vs []Verdict
		for _, id := range ids {
			res := rs[id].Handle(sent[i])
			if res.Verdict == Apply {
				rs[id].Applied(res)
			}
			vs = append(vs, res.Verdict)
			if b, ok := rs[id].Ack(); ok && ack && (res.Verdict == Apply || res.Verdict == Repeat) {
				a.HandleAck(b, netip.AddrPortFrom(servers[id].Addr, 9470)) // each from its own address
			}
		}
		return vs
	}
	owned := func(id int) []uint32 { _, o := rs[id].Current(); return o }

	a.Announce(cl, 1, servers)
	if len(sent) != 1 {
		t.Fatalf("%d datagrams after the first Announce, want 1", len(sent))
	}
	if vs := deliver(0, false, 0, 1, 2); !slices.Equal(vs, []Verdict{Apply, Apply, Apply}) {
		t.Fatalf("first announcement: %v", vs)
	}
	for id := range 3 {
		if len(owned(id)) != 0 {
			t.Errorf("server %d owns %d buckets after the epoch's first announcement, want none", id, len(owned(id)))
		}
	}
	a.Announce(cl, 1, servers) // the periodic repetition, before any acknowledgement
	if len(sent) != 2 {
		t.Fatalf("%d datagrams, want 2: nothing may be granted before the acknowledgements", len(sent))
	}
	deliver(1, true, 0, 1) // two repeats acknowledged: still waiting for server 2
	if len(sent) != 2 {
		t.Fatalf("the table went out before server 2 acknowledged")
	}
	deliver(1, true, 2) // the last acknowledgement issues the table at once
	if len(sent) != 3 {
		t.Fatalf("%d datagrams after every acknowledgement, want 3", len(sent))
	}
	deliver(2, true, 0, 1, 2)
	tb, err := core.NewTable(servers, cl.Buckets)
	if err != nil {
		t.Fatal(err)
	}
	for id := range 3 {
		if !slices.Equal(owned(id), tb.Owned(id)) {
			t.Errorf("server %d owns %d buckets, the appliance's table gives it %d", id, len(owned(id)), len(tb.Owned(id)))
		}
	}

	// Server 0 fails.
	servers[0].Up = false
	a.Announce(cl, 2, servers)
	if len(sent) != 4 {
		t.Fatalf("%d datagrams after the failure, want 4 (the release)", len(sent))
	}
	deliver(3, true, 1, 2)
	if len(sent) != 4 {
		t.Fatal("the failed server's buckets were given away before it acknowledged their release")
	}
	for _, id := range []int{1, 2} {
		if !slices.Equal(owned(id), tb.Owned(id)) {
			t.Errorf("server %d's buckets changed with the release", id)
		}
	}
	if st := a.Status(); len(st) != 1 || st[0].Settled || st[0].Unowned != len(tb.Owned(0)) {
		t.Errorf("status during the release: %+v", st)
	}
	deliver(3, true, 0) // the old owner releases: the acquisition goes out
	if len(sent) != 5 {
		t.Fatalf("%d datagrams, want 5 (the acquisition)", len(sent))
	}
	deliver(4, true, 0, 1, 2)
	after, err := core.NewTable(servers, cl.Buckets)
	if err != nil {
		t.Fatal(err)
	}
	for id := range 3 {
		if !slices.Equal(owned(id), after.Owned(id)) {
			t.Errorf("after the failure server %d owns %d buckets, want %d", id, len(owned(id)), len(after.Owned(id)))
		}
	}
	st := a.Status()
	if len(st) != 1 || !st[0].Settled || st[0].Seq != 4 || st[0].Acks.Accepted != 12 {
		t.Fatalf("status: %+v", st)
	}
	for i, s := range st[0].Servers {
		if s.AckedSeq != 4 || s.Behind != 0 || s.Late || s.From != netip.AddrPortFrom(servers[i].Addr, 9470).String() {
			t.Errorf("server status %+v", s)
		}
	}
	if res := rs[1].Handle(sent[0]); res.Verdict != IgnoreStale {
		t.Errorf("replay of the first datagram: %v, want stale", res.Verdict)
	}
	if s, f := a.Stats(); s != 5 || f != 0 {
		t.Errorf("Stats = %d sent, %d failed", s, f)
	}
}

// TestAnnouncerAckInput: acknowledgements are hostile input: forged,
// garbage, another epoch's, a future seq, an unknown server and another
// cluster's are each counted and change nothing.
func TestAnnouncerAckInput(t *testing.T) {
	var sent int
	a := NewAnnouncer(1000, func(*config.Cluster, []byte) error { sent++; return nil }, nil)
	cl := webCluster()
	a.Announce(cl, 1, []core.Server{
		{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: true},
		{ID: 1, Addr: netip.MustParseAddr("10.0.0.12"), Weight: 1, Up: true},
	})
	from := netip.MustParseAddrPort("10.0.0.11:9470")
	from1 := netip.MustParseAddrPort("10.0.0.12:9470")
	mk := func(ack Ack) []byte {
		b, err := ack.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := Ack{Cluster: "web", Server: 0, Epoch: 1000, Seq: 1}
	a.HandleAck(mk(good), netip.MustParseAddrPort("10.0.0.99:9470")) // not server 0's address
	a.HandleAck(mk(good), from1)                                     // server 1's address
	a.HandleAck([]byte("GHAK"), from)
	a.HandleAck(append(mk(good), 0), from)
	a.HandleAck(mk(Ack{Cluster: "web", Server: 0, Epoch: 999, Seq: 1}), from)
	a.HandleAck(mk(Ack{Cluster: "web", Server: 0, Epoch: 1000, Seq: 2}), from)
	a.HandleAck(mk(Ack{Cluster: "web", Server: 7, Epoch: 1000, Seq: 1}), from)
	a.HandleAck(mk(Ack{Cluster: "api", Server: 0, Epoch: 1000, Seq: 1}), from)
	st := a.Status()[0]
	want := AckCounters{BadSource: 2, OtherEpoch: 1, Future: 1, UnknownServer: 1}
	if st.Acks != want || st.Servers[0].AckedSeq != 0 || sent != 1 {
		t.Errorf("acks %+v (want %+v), server %+v, %d sent", st.Acks, want, st.Servers[0], sent)
	}
	if m, u := a.AckDrops(); m != 2 || u != 1 {
		t.Errorf("AckDrops = %d malformed, %d unknown cluster; want 2, 1", m, u)
	}
	a.HandleAck(mk(good), from)
	a.HandleAck(mk(Ack{Cluster: "web", Server: 1, Epoch: 1000, Seq: 1}), from1)
	if st := a.Status()[0]; st.Acks.Accepted != 2 || !st.Settled || sent != 2 {
		t.Errorf("after a good acknowledgement: %+v, %d sent", st, sent)
	}
}

// TestAnnouncerFailures: failures are counted; only the first of a run is
// logged, then the recovery; a cluster without a usable key fails to
// encode.
func TestAnnouncerFailures(t *testing.T) {
	var logs bytes.Buffer
	fail := true
	a := NewAnnouncer(1, func(*config.Cluster, []byte) error {
		if fail {
			return errors.New("network is unreachable")
		}
		return nil
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	cl := webCluster()
	for range 3 {
		a.Announce(cl, 1, nil)
	}
	fail = false
	a.Announce(cl, 1, nil)
	short := webCluster()
	short.AnnounceKey = ed25519.PrivateKey("short")
	a.Announce(short, 1, nil)
	if s, f := a.Stats(); s != 1 || f != 4 {
		t.Errorf("Stats = %d sent, %d failed; want 1, 4", s, f)
	}
	out := logs.String()
	if strings.Count(out, "announcement not sent") != 2 || strings.Count(out, "announcements sent again") != 1 ||
		!strings.Contains(out, "network is unreachable") || !strings.Contains(out, "not an Ed25519 key") {
		t.Errorf("log:\n%s", out)
	}
}

// TestAnnouncerSeqAcrossReplacement: a cluster whose key changes gets a new
// Transition, whose announcements go on counting up from the old seq (a
// server would take a lower seq of the same epoch for an old table).
func TestAnnouncerSeqAcrossReplacement(t *testing.T) {
	var last []byte
	a := NewAnnouncer(1000, func(_ *config.Cluster, b []byte) error { last = bytes.Clone(b); return nil }, nil)
	cl := webCluster()
	one := []core.Server{{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: true}}
	a.Announce(cl, 1, one)
	m, err := Unmarshal(last, testPub)
	if err != nil {
		t.Fatal(err)
	}
	first := m.Seq
	cl2 := webCluster()
	cl2.AnnounceKey = otherKey
	a.Announce(cl2, 2, one)
	m2, err := Unmarshal(last, otherKey.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if m2.Seq <= first {
		t.Errorf("after the key changed the seq went from %d to %d, want more", first, m2.Seq)
	}
}

// TestAnnouncerAckRoundTrip: each server's first acknowledgement of an
// issued announcement is timed once, from its issue on the Announcer's
// clock; repeats and other servers' are not mixed in.
func TestAnnouncerAckRoundTrip(t *testing.T) {
	var sent [][]byte
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a := NewAnnouncer(1000, func(_ *config.Cluster, b []byte) error { sent = append(sent, bytes.Clone(b)); return nil }, nil)
	a.now = clk.now
	type obs struct {
		cluster string
		rtt     time.Duration
	}
	var got []obs
	a.OnAck(func(c string, d time.Duration) { got = append(got, obs{c, d}) })
	servers := []core.Server{
		{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: true},
		{ID: 1, Addr: netip.MustParseAddr("10.0.0.12"), Weight: 1, Up: true},
	}
	a.Announce(webCluster(), 1, servers)
	ack := func(id int, seq uint64) {
		b, err := (&Ack{Cluster: "web", Server: id, Epoch: 1000, Seq: seq}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		a.HandleAck(b, netip.AddrPortFrom(servers[id].Addr, 9470))
	}
	clk.advance(30 * time.Millisecond)
	ack(0, 1)
	ack(0, 1) // a repeat's acknowledgement: not timed again
	clk.advance(20 * time.Millisecond)
	ack(1, 1) // the last one issues seq 2 at +50ms
	clk.advance(5 * time.Millisecond)
	ack(1, 2)
	want := []obs{{"web", 30 * time.Millisecond}, {"web", 50 * time.Millisecond}, {"web", 5 * time.Millisecond}}
	if !slices.Equal(got, want) {
		t.Errorf("round trips %v, want %v", got, want)
	}
}
