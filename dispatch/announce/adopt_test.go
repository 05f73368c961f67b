package announce

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// The takeover model: the Transition model's network and servers, with a
// second appliance (a backup) that hears the master's broadcasts through a
// Follower, losing some. At a random moment, in the middle of changes or
// not, the master hands over (it stops issuing, repeats its announcement
// in force once, and is gone: its acknowledgements are lost from then on)
// or dies (no repetition). The backup continues from its Follower's Window
// when it can vouch for one, afresh otherwise, while the membership goes on
// changing. The oracle is the safety property after every delivery: no
// bucket in two filters, across the change of appliance.

// takeoverModel is a model whose announcer can be replaced by a backup's.
type takeoverModel struct {
	*model
	fol     *Follower
	folLoss float64
	gone    bool // the master stopped: what it sent is in flight, it sends nothing more
}

func newTakeoverModel(t *testing.T, seed uint64, n int) *takeoverModel {
	tm := &takeoverModel{model: newModel(t, seed, n)}
	f, err := NewFollower("web", testPub)
	if err != nil {
		t.Fatal(err)
	}
	tm.fol = f
	send := tm.a.send
	tm.a.send = func(cl *config.Cluster, b []byte) error {
		if tm.gone {
			return nil
		}
		if tm.rng.Float64() >= tm.folLoss {
			if err := tm.fol.Hear(b, tm.clk.t); err != nil {
				t.Fatalf("the follower refused the master's datagram: %v", err)
			}
		}
		return send(cl, b)
	}
	return tm
}

// takeOver replaces the master by a backup of epoch 8 at the current time,
// continuing the Follower's window when it can. It reports whether it did
// and, if not, why.
func (tm *takeoverModel) takeOver(graceful bool) (bool, error) {
	if graceful {
		tm.a.Flush()
	}
	tm.gone = true
	tm.a.Close()
	// The backup notices: after its skew time (graceful) or the master
	// down interval. Deliveries go on meanwhile; acknowledgements to the
	// old master are lost.
	wait := 60 * time.Millisecond
	if !graceful {
		wait = 400 * time.Millisecond
	}
	old := tm.a
	b := NewAnnouncer(8, func(_ *config.Cluster, d []byte) error {
		tm.sent = append(tm.sent, slices.Clone(d))
		for _, h := range tm.hosts {
			tm.transmit(h.id, d, toAppliance)
		}
		return nil
	}, nil)
	b.now = tm.clk.now
	b.ackTimeout = old.ackTimeout
	end := tm.clk.t.Add(wait)
	for tm.clk.t.Before(end) {
		tm.clk.advance(time.Millisecond)
		tm.deliver()
	}
	heard, err := tm.fol.Window(tm.clk.t, AckTimeout(tm.cl.AnnounceInterval), tm.cl.AnnounceInterval+wait+100*time.Millisecond)
	if err == nil {
		b.Adopt("web", heard)
		for _, m := range heard {
			tm.t.Logf("takeover at %v: adopted seq %d (%d further tables)", tm.clk.t.Format("15:04:05.000"), m.Seq, len(m.Also))
		}
	}
	tm.a = b
	return err == nil, err
}

// TestTakeoverModel: the safety property across takeovers, graceful and
// not, under loss, duplication, delay and reordering, with the membership
// changing before and after (and the backup seeing it as the master did).
// No server is ever excused (the bound is an hour): safety must hold
// without exception. Most takeovers must continue the master's
// announcements.
func TestTakeoverModel(t *testing.T) {
	continued, fresh := 0, 0
	reasons := map[string]int{}
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			tm := newTakeoverModel(t, seed, 6)
			tm.a.ackTimeout = time.Hour
			tm.loss, tm.dup, tm.delay = 0.2, 0.1, 30*time.Millisecond
			tm.folLoss = 0.05
			ms := &membership{in: []bool{true, true, true, true, false, false}, up: make([]bool, 6), weight: []int{1, 1, 1, 1, 1, 1}}
			for i := range ms.up {
				ms.up[i] = true
			}
			tm.a.Announce(tm.cl, 0, ms.servers())
			tm.run(2*time.Second, ms, 0)
			for range 8 + tm.rng.IntN(8) {
				tm.run(time.Duration(20+tm.rng.IntN(400))*time.Millisecond, ms, 0.02)
				ms.change(tm.rng)
				tm.a.Announce(tm.cl, 0, ms.servers())
			}
			tm.run(time.Duration(tm.rng.IntN(300))*time.Millisecond, ms, 0.02)
			ok, err := tm.takeOver(seed%2 == 0)
			if ok {
				continued++
			} else {
				fresh++
				for _, e := range []error{ErrNothingHeard, ErrHeardTooShort, ErrSilent, ErrSeqGap, ErrEpochStart} {
					if errors.Is(err, e) {
						reasons[e.Error()]++
					}
				}
			}
			tm.a.ackTimeout = time.Hour
			tm.a.Announce(tm.cl, 0, ms.servers())
			for range 6 {
				tm.run(time.Duration(20+tm.rng.IntN(400))*time.Millisecond, ms, 0)
				ms.change(tm.rng)
				tm.a.Announce(tm.cl, 0, ms.servers())
			}
			tm.settle(ms)
		})
	}
	t.Logf("%d takeovers continued the master's announcements, %d afresh %v", continued, fresh, reasons)
	if continued < 30 {
		t.Errorf("only %d of 40 takeovers continued the master's announcements (afresh: %v)", continued, reasons)
	}
}

// TestTakeoverSettledGrantsAtOnce: a backup that heard a settled master
// continues with an announcement that grants the whole table at once (no
// unowned bucket, no gap), under its own epoch, and the servers apply it
// keeping exactly their buckets.
func TestTakeoverSettledGrantsAtOnce(t *testing.T) {
	for _, graceful := range []bool{true, false} {
		tm := newTakeoverModel(t, 3, 4)
		tm.delay = 5 * time.Millisecond
		ms := &membership{in: []bool{true, true, true, true}, up: []bool{true, true, true, true}, weight: []int{1, 1, 1, 1}}
		tm.a.Announce(tm.cl, 0, ms.servers())
		tm.run(3*time.Second, ms, 0)
		tm.settle(ms)
		before := map[int][]uint32{}
		for _, h := range tm.hosts {
			before[h.id] = slices.Clone(h.owned)
		}
		ok, err := tm.takeOver(graceful)
		if !ok {
			t.Fatalf("graceful %v: the takeover started afresh: %v", graceful, err)
		}
		applied := tm.applied
		tm.a.Announce(tm.cl, 0, ms.servers())
		st := tm.a.Status()[0]
		if !st.Settled || st.Unowned != 0 || st.Continued == nil || st.Epoch != 8 {
			t.Fatalf("graceful %v: the backup's first announcement: %+v", graceful, st)
		}
		for range 50 {
			tm.clk.advance(time.Millisecond)
			tm.a.Tick()
			tm.deliver()
			for _, h := range tm.hosts {
				if len(h.owned) != len(before[h.id]) {
					t.Fatalf("graceful %v: server %d holds %d buckets during the takeover, %d before", graceful, h.id, len(h.owned), len(before[h.id]))
				}
			}
		}
		if tm.applied-applied != len(tm.hosts) {
			t.Errorf("graceful %v: %d servers applied the backup's table, want %d", graceful, tm.applied-applied, len(tm.hosts))
		}
		for _, h := range tm.hosts {
			if e, _, _ := h.r.Floor(); e != 8 || !slices.Equal(h.owned, before[h.id]) {
				t.Errorf("graceful %v: server %d: epoch %d, owns %d buckets, had %d", graceful, h.id, e, len(h.owned), len(before[h.id]))
			}
		}
	}
}

// TestFollowerWindow: what a Follower vouches for, and what it refuses.
func TestFollowerWindow(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ackTO := time.Second
	mk := func(epoch, seq, tx uint64, down ...int) []byte {
		m := Message{Cluster: "web", Epoch: epoch, Seq: seq, Tx: tx, Hash: config.HashJhash, Seed: 1, Buckets: 64,
			Ghost: webCluster().Address, Members: members3(down...)}
		b, err := m.Marshal(testKey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	release := func(epoch, seq, tx uint64) []byte {
		m := compose(config.HashJhash, 1, 64, nil, [][]Member{members3(1), members3()})
		m.Cluster, m.Epoch, m.Seq, m.Tx, m.Ghost = "web", epoch, seq, tx, webCluster().Address
		b, err := m.Marshal(testKey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	nothing := func(epoch, seq, tx uint64) []byte {
		m := compose(config.HashJhash, 1, 64, nil, [][]Member{members3(), {}})
		m.Cluster, m.Epoch, m.Seq, m.Tx, m.Ghost = "web", epoch, seq, tx, webCluster().Address
		b, err := m.Marshal(testKey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	hear := func(f *Follower, b []byte, ms int) {
		t.Helper()
		if err := f.Hear(b, at(ms)); err != nil {
			t.Fatal(err)
		}
	}
	newF := func() *Follower {
		f, err := NewFollower("web", testPub)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	// Nothing heard; heard too briefly; silent too long.
	f := newF()
	if _, err := f.Window(at(0), ackTO, time.Second); !errors.Is(err, ErrNothingHeard) {
		t.Errorf("nothing heard: %v", err)
	}
	hear(f, mk(5, 2, 10), 0)
	if _, err := f.Window(at(500), ackTO, time.Second); !errors.Is(err, ErrHeardTooShort) {
		t.Errorf("heard for 500ms: %v", err)
	}
	if _, err := f.Window(at(3000), ackTO, time.Second); !errors.Is(err, ErrSilent) {
		t.Errorf("silent for 3s: %v", err)
	}
	// A settled table heard long enough and recently: adopted alone.
	hear(f, mk(5, 2, 11), 2500)
	w, err := f.Window(at(2600), ackTO, time.Second)
	if err != nil || len(w) != 1 || w[0].Seq != 2 {
		t.Fatalf("settled: %v %v", w, err)
	}
	// Replays (old tx) and a forgery change nothing.
	hear(f, mk(5, 1, 3), 2600)
	forged := mk(5, 3, 12)
	forged[len(forged)-1] ^= 1
	if err := f.Hear(forged, at(2600)); !errors.Is(err, ErrBadMAC) {
		t.Errorf("forged: %v", err)
	}
	if c := f.Counters(); c.Stale != 1 || c.Refused != 1 || c.Heard != 2 {
		t.Errorf("counters %+v", c)
	}
	// A change: release (3) and acquisition (4). Within AckTimeout the
	// window holds all three, the settled one replaced, the release.
	hear(f, release(5, 3, 13), 2700)
	hear(f, mk(5, 4, 14, 1), 2800)
	w, err = f.Window(at(2900), ackTO, time.Second)
	if err != nil || len(w) != 3 || w[0].Seq != 2 || w[2].Seq != 4 {
		t.Fatalf("after a change: %d announcements, %v", len(w), err)
	}
	// Past AckTimeout (plus the margin) only the one in force remains.
	hear(f, mk(5, 4, 15, 1), 4000)
	w, err = f.Window(at(4100), ackTO, time.Second)
	if err != nil || len(w) != 1 || w[0].Seq != 4 {
		t.Fatalf("long after the change: %d announcements, %v", len(w), err)
	}
	// A missed seq inside the window is refused.
	hear(f, mk(5, 6, 16), 4200)
	if _, err := f.Window(at(4300), ackTO, time.Second); !errors.Is(err, ErrSeqGap) {
		t.Errorf("seq 5 missed: %v", err)
	}
	// A new epoch starts the count again; its first announcement (grants
	// nothing) in the window is refused even after long listening.
	hear(f, nothing(9, 1, 1), 4300)
	if _, err := f.Window(at(6000), ackTO, 2*time.Second); !errors.Is(err, ErrEpochStart) {
		t.Errorf("the epoch's first announcement in force: %v", err)
	}
	hear(f, mk(9, 2, 2), 4400)
	if _, err := f.Window(at(5000), ackTO, time.Second); !errors.Is(err, ErrHeardTooShort) {
		t.Errorf("new epoch heard 700ms: %v", err)
	}
	hear(f, mk(9, 2, 3), 6000)
	w, err = f.Window(at(6000), ackTO, time.Second)
	if err != nil || len(w) != 1 || w[0].Epoch != 9 || w[0].Seq != 2 {
		t.Fatalf("new epoch, settled: %v %v", w, err)
	}
	// The retired epoch's datagrams are stale now.
	hear(f, mk(5, 7, 99), 6000)
	if e, s, _ := f.Last(); e != 9 || s != 2 {
		t.Errorf("after a retired epoch's datagram: last %d/%d", e, s)
	}
	if _, err := NewFollower("web", ed25519.PublicKey{1}); !errors.Is(err, ErrKey) {
		t.Errorf("short key: %v", err)
	}
}

// TestAdoptRelease: a release heard in force is continued as a release:
// the Transition's announcement in force grants what the release grants,
// the acquisition it may have missed counts as possibly issued, and the
// target is acquired only once the old owners acknowledged.
func TestAdoptRelease(t *testing.T) {
	l := Message{Hash: config.HashJhash, Seed: 1, Buckets: 64, Members: members3(), Seq: 7}
	r := compose(config.HashJhash, 1, 64, nil, [][]Member{members3(1), members3()})
	r.Seq = 8
	var tr Transition
	tr.AckTimeout = time.Hour
	if err := tr.Adopt([]*Message{&l, &r}); err != nil {
		t.Fatal(err)
	}
	rg, _ := r.Grants()
	if !slices.Equal(tr.CurrentGrants(), rg) {
		t.Fatalf("the adopted announcement in force is not the release")
	}
	now := time.Unix(1_800_000_000, 0)
	if _, err := tr.SetTarget(config.HashJhash, 1, 64, members3(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(now); err != nil {
		t.Fatal(err)
	}
	if tr.Settled() {
		t.Fatal("acquired before the old owner (server 1) acknowledged")
	}
	if !slices.Equal(tr.CurrentGrants(), rg) {
		t.Fatal("the first announcement grants more than the release")
	}
	if _, err := tr.Ack(1, tr.Seq(), now); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(now); err != nil || !tr.Settled() {
		t.Fatalf("not acquired after the old owner acknowledged: %v", err)
	}
	if err := tr.Adopt([]*Message{&l}); err == nil {
		t.Error("Adopt after the first announcement accepted")
	}
}

// FuzzFollower: a Follower fed hostile datagrams (raw bytes, and authentic
// announcements with arbitrary epoch, seq and tx, in any order) never
// panics, and whatever Window vouches for is one epoch's announcements with
// consecutive ascending seqs, the last the largest heard in that epoch.
func FuzzFollower(f *testing.F) {
	f.Add([]byte{1, 5, 2, 10, 1, 5, 3, 11, 0, 'G', 'H', 'R', 'T'})
	f.Add([]byte{1, 5, 2, 10, 1, 5, 4, 12, 1, 6, 1, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		fol, err := NewFollower("web", testPub)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1_800_000_000, 0)
		maxSeq := map[uint64]uint64{}
		for ops := 0; len(in) > 0 && ops < 64; ops++ {
			op := in[0]
			in = in[1:]
			now = now.Add(time.Duration(op) * 10 * time.Millisecond)
			if op%2 == 0 || len(in) < 3 {
				n := min(len(in), int(op)%64)
				fol.Hear(in[:n], now)
				in = in[n:]
				continue
			}
			epoch, seq, tx := uint64(in[0]%3+1), uint64(in[1]%8+1), uint64(in[2])
			in = in[3:]
			m := Message{Cluster: "web", Epoch: epoch, Seq: seq, Tx: tx, Hash: config.HashJhash, Seed: 1, Buckets: 16,
				Ghost: webCluster().Address, Members: members3(int(seq % 3))}
			b, err := m.Marshal(testKey)
			if err != nil {
				t.Fatal(err)
			}
			last, _, _ := fol.Last()
			before := fol.Counters().Heard
			if err := fol.Hear(b, now); err != nil {
				t.Fatalf("authentic datagram refused: %v", err)
			}
			if fol.Counters().Heard > before {
				if epoch != last {
					maxSeq[epoch] = 0
				}
				maxSeq[epoch] = max(maxSeq[epoch], seq)
			}
		}
		w, err := fol.Window(now, time.Second, time.Hour)
		if err != nil {
			return
		}
		for i := 1; i < len(w); i++ {
			if w[i].Epoch != w[0].Epoch || w[i].Seq != w[i-1].Seq+1 {
				t.Fatalf("window not one epoch's consecutive seqs: %d/%d after %d/%d", w[i].Epoch, w[i].Seq, w[i-1].Epoch, w[i-1].Seq)
			}
		}
		if last := w[len(w)-1]; last.Seq != maxSeq[last.Epoch] {
			t.Fatalf("window ends at seq %d, the largest heard in epoch %d is %d", last.Seq, last.Epoch, maxSeq[last.Epoch])
		}
	})
}
