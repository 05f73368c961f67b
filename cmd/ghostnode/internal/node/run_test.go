package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/announce"
)

// TestApply: how `ghostnode run` installs announced tables. The first one
// sets the cluster up; the same hash with other buckets is one set update
// that prints nothing and keeps the counters; another seed replaces the
// table; a table deleted behind the agent's back is put back; another
// ghost is refused.
func TestApply(t *testing.T) {
	h := newFakeHost()
	n, out := newNode(t, h)
	ctx := context.Background()

	if err := n.Apply(ctx, broadcast("web", ghost, 1, 2)); err != nil {
		t.Fatal(err)
	}
	if tb := h.tables["ip ghost_web"]; tb == nil || !slices.Equal(tb.owned, []uint32{1, 2}) {
		t.Fatalf("table after the first Apply: %+v", tb)
	}
	if !strings.Contains(out.String(), "cluster web: set up (broadcast mode") {
		t.Errorf("first Apply printed:\n%s", out)
	}
	out.Reset()

	h.tables["ip ghost_web"].counters[2].Packets = 7
	ops := len(h.ops)
	if err := n.Apply(ctx, broadcast("web", ghost, 3, 4, 5)); err != nil {
		t.Fatal(err)
	}
	if got := h.ops[ops:]; !slices.Equal(got, []string{"nft update ip ghost_web"}) {
		t.Errorf("Apply of new buckets made %v, want one set update", got)
	}
	if tb := h.tables["ip ghost_web"]; !slices.Equal(tb.owned, []uint32{3, 4, 5}) || tb.counters[2].Packets != 7 {
		t.Errorf("after Apply: %+v", tb)
	}
	if out.Len() != 0 {
		t.Errorf("a set update printed:\n%s", out)
	}
	// A release: the same owned buckets, others owned by nobody. Only the
	// unowned set changes, in one update.
	rel := broadcast("web", ghost, 3, 4, 5)
	rel.Filter.Unowned = []uint32{0, 1, 2}
	ops = len(h.ops)
	if err := n.Apply(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if tb := h.tables["ip ghost_web"]; !slices.Equal(tb.owned, []uint32{3, 4, 5}) || !slices.Equal(tb.unowned, []uint32{0, 1, 2}) ||
		!slices.Equal(h.ops[ops:], []string{"nft update ip ghost_web"}) {
		t.Errorf("after a release: %+v, ops %v", tb, h.ops[ops:])
	}

	s := broadcast("web", ghost, 9)
	s.Filter.Seed = 0xbeef
	if err := n.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if tb := h.tables["ip ghost_web"]; !strings.Contains(tb.hash, "seed 0xbeef") || !slices.Equal(tb.owned, []uint32{9}) {
		t.Errorf("after Apply with a new seed: %+v", tb)
	}
	out.Reset()

	delete(h.tables, "ip ghost_web")
	if err := n.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if tb := h.tables["ip ghost_web"]; tb == nil || !slices.Equal(tb.owned, []uint32{9}) {
		t.Errorf("after Apply to a deleted table: %+v", tb)
	}
	if !strings.Contains(out.String(), "no such nftables table") || !strings.Contains(out.String(), "setting it up again") {
		t.Errorf("Apply to a deleted table printed:\n%s", out)
	}

	if err := n.Apply(ctx, broadcast("web", ghost2, 1)); !errors.Is(err, ErrConflict) {
		t.Errorf("Apply with another ghost: %v, want ErrConflict", err)
	}
	if err := n.Apply(ctx, routing("web", ghost)); !errors.Is(err, ErrBadSpec) {
		t.Errorf("Apply of a routing spec: %v, want ErrBadSpec", err)
	}
}

// TestRunStatus: the run status round-trips, shows in Status, is never
// taken for a cluster's state, and teardown removes it.
func TestRunStatus(t *testing.T) {
	h := newFakeHost()
	n, _ := newNode(t, h)
	ctx := context.Background()
	mustSetup(t, n, broadcast("web", ghost, 1))

	if rs, err := n.ReadRunStatus("web"); rs != nil || err != nil {
		t.Errorf("ReadRunStatus before any run: %+v, %v", rs, err)
	}
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	rs := &RunStatus{
		Cluster: "web", Mode: ModeBroadcast, Server: 1, PID: os.Getpid(), Listen: "0.0.0.0:9470",
		Started: now, Updated: now, Heard: now, IntervalMS: 1000,
		Applied:  &AppliedTable{Epoch: 5, Seq: 2, At: now, From: "10.0.0.1:9470", Buckets: 16, Seed: 0x5eed, Members: 3, Live: 2, Owned: 8},
		Floor:    &Floor{Epoch: 5, Tx: 40},
		Counters: announce.Counters{Received: 41, Newer: 2, Applied: 2, Repeats: 37, Stale: 1, BadMAC: 1},
	}
	if err := n.WriteRunStatus(rs); err != nil {
		t.Fatal(err)
	}
	got, err := n.ReadRunStatus("web")
	if err != nil || got == nil || *got.Applied != *rs.Applied || *got.Floor != *rs.Floor || got.Counters != rs.Counters || !got.Heard.Equal(now) {
		t.Errorf("ReadRunStatus = %+v, %v\nwant %+v", got, err, rs)
	}

	if n.RunActive("web") {
		t.Error("RunActive before LockRun")
	}
	unlock, err := n.LockRun("web")
	if err != nil {
		t.Fatal(err)
	}
	if !n.RunActive("web") {
		t.Error("not RunActive while locked")
	}
	if _, err := n.LockRun("web"); !errors.Is(err, ErrRunning) {
		t.Errorf("second LockRun: %v, want ErrRunning", err)
	}
	unlock()
	if n.RunActive("web") {
		t.Error("RunActive after unlock")
	}

	reps, err := n.Status(ctx, "")
	if err != nil || len(reps) != 1 || reps[0].Run == nil || reps[0].Run.Counters.BadMAC != 1 {
		t.Fatalf("Status = %+v, %v (the run status must not be read as a cluster)", reps, err)
	}

	mustTeardown(t, n, "web")
	if _, err := os.Stat(filepath.Join(n.StateDir, RunDir, "web.json")); !os.IsNotExist(err) {
		t.Errorf("run status after teardown: %v", err)
	}
}
