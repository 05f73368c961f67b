package announce

import (
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

func mustReceiver(t testing.TB, id int) *Receiver {
	t.Helper()
	r, err := NewReceiver("web", testPub, id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// members is n servers with ids 10, 13, 16, ... (not positions), weight 1,
// the ones in down not up and the ones in drained with weight 0.
func members(n int, down, drained []int) []Member {
	var ms []Member
	for i := range n {
		id := 10 + 3*i
		ms = append(ms, Member{ID: id, Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i)}), Weight: 1, Up: !slices.Contains(down, id)})
		if slices.Contains(drained, id) {
			ms[i].Weight = 0
		}
	}
	return ms
}

// TestReceiverOwnedIsTheTable: the buckets a receiver applies are exactly
// core.NewTable(...).Owned(id) of the same membership, for every
// server, with servers down and drained; a server not in the membership
// owns none.
func TestReceiverOwnedIsTheTable(t *testing.T) {
	for _, tc := range []struct {
		n             int
		down, drained []int
		buckets       int
	}{
		{3, nil, nil, 4096},
		{3, []int{13}, nil, 4096},
		{5, []int{10, 22}, []int{16}, 4096},
		{8, []int{10, 13, 16, 19, 22, 25, 28, 31}, nil, 64}, // none live
		{4, nil, nil, 1},
		{16, []int{19}, []int{25}, 65536},
	} {
		ms := members(tc.n, tc.down, tc.drained)
		m := sample()
		m.Members, m.Buckets = ms, tc.buckets
		b := mustMarshal(t, m, testKey)
		servers := make([]core.Server, len(ms))
		for i, s := range ms {
			servers[i] = core.Server{ID: s.ID, Addr: s.Addr, Weight: s.Weight, Up: s.Up}
		}
		table, err := core.NewTable(servers, tc.buckets)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		ids := []int{999} // not a member
		for _, s := range ms {
			ids = append(ids, s.ID)
		}
		for _, id := range ids {
			r := mustReceiver(t, id)
			res := r.Handle(b)
			want := table.Owned(id)
			if want == nil {
				want = []uint32{}
			}
			if res.Verdict != Apply || !slices.Equal(res.Owned, want) || res.Owned == nil {
				t.Errorf("%d servers, down %v, drained %v, %d buckets: server %d: %v, %d buckets; want apply, %d buckets (NewTable.Owned)",
					tc.n, tc.down, tc.drained, tc.buckets, id, res.Verdict, len(res.Owned), len(want))
			}
			total += len(res.Owned)
		}
		if live := tc.n - len(tc.down); live > 0 && total != tc.buckets {
			t.Errorf("%d servers, down %v: the receivers own %d buckets in all, want %d", tc.n, tc.down, total, tc.buckets)
		}
	}
}

// ownedBy is how many buckets of 4096 server id owns in the table of ms.
func ownedBy(t *testing.T, ms []Member, id int) int {
	t.Helper()
	tb, err := (&Message{Members: ms, Buckets: 4096}).Table()
	if err != nil {
		t.Fatal(err)
	}
	return len(tb.Owned(id))
}

// TestReceiverSequence walks one receiver through what a LAN can deliver.
func TestReceiverSequence(t *testing.T) {
	r := mustReceiver(t, 10)
	const e1, e2 = 1000, 2000
	msg := func(epoch, seq, tx uint64, ms []Member) []byte {
		m := sample()
		m.Epoch, m.Seq, m.Tx, m.Members = epoch, seq, tx, ms
		return mustMarshal(t, m, testKey)
	}
	all := members(3, nil, nil)
	oneDown := members(3, []int{13}, nil)
	first := msg(e1, 1, 1, all)
	forged := msg(e1, 2, 2, oneDown)
	forged[len(forged)-1] ^= 1
	otherKey, _ := (&Message{Cluster: "web", Epoch: e1, Seq: 9, Tx: 9, Hash: config.HashJhash, Buckets: 4096, Ghost: sample().Ghost}).Marshal(otherKey)
	api := sample()
	api.Cluster = "api"
	apiMsg := mustMarshal(t, api, testKey)
	modulo := sample()
	modulo.Epoch, modulo.Seq, modulo.Tx, modulo.Hash = e1, 5, 5, config.HashModulo
	nAll, nDown := ownedBy(t, all, 10), ownedBy(t, oneDown, 10)

	var wantStats Counters
	steps := []struct {
		name  string
		b     []byte
		want  Verdict
		count *uint64
		owned int // buckets owned after the step, if applied
	}{
		{"first", first, Apply, &wantStats.Newer, nAll},
		{"repeat", msg(e1, 1, 2, all), Repeat, &wantStats.Repeats, nAll},
		{"exact replay of the first", first, IgnoreStale, &wantStats.Stale, nAll},
		{"forged (bad MAC)", forged, IgnoreBadMAC, &wantStats.BadMAC, nAll},
		{"another key", otherKey, IgnoreBadMAC, &wantStats.BadMAC, nAll},
		{"another cluster", apiMsg, IgnoreOtherCluster, &wantStats.OtherCluster, nAll},
		{"garbage", []byte("GET / HTTP/1.0\r\n\r\n"), IgnoreMalformed, &wantStats.Malformed, nAll},
		{"server 13 down", msg(e1, 2, 3, oneDown), Apply, &wantStats.Newer, nDown},
		{"older table, fresh tx", msg(e1, 1, 4, all), IgnoreStale, &wantStats.Stale, nDown},
		{"modulo", mustMarshal(t, modulo, testKey), IgnoreUnsupported, &wantStats.Unsupported, nDown},
		{"tx went back, newer seq", msg(e1, 3, 3, all), IgnoreStale, &wantStats.Stale, nDown},
		{"appliance restarted: newer epoch, lower seq", msg(e2, 1, 1, all), Apply, &wantStats.Newer, nAll},
		{"replay of the old epoch", msg(e1, 2, 3, oneDown), IgnoreStale, &wantStats.Stale, nAll},
		{"replay of the new epoch", msg(e2, 1, 1, all), IgnoreStale, &wantStats.Stale, nAll},
		{"old epoch speaks again (a second appliance): it is in charge", msg(e1, 9, 99, oneDown), Apply, &wantStats.Newer, nDown},
	}
	for _, s := range steps {
		res := r.Handle(s.b)
		*s.count++
		wantStats.Received++
		if res.Verdict != s.want {
			t.Fatalf("%s: %v (%v), want %v", s.name, res.Verdict, res.Err, s.want)
		}
		if res.Verdict == Apply {
			r.Applied(res)
			wantStats.Applied++
		}
		if (res.Verdict == Apply || res.Verdict == Repeat) != (res.Err == nil) {
			t.Errorf("%s: %v with error %v", s.name, res.Verdict, res.Err)
		}
		cur, owned := r.Current()
		if cur == nil || len(owned) != s.owned {
			t.Errorf("%s: current table %+v owns %d buckets, want %d", s.name, cur, len(owned), s.owned)
		}
		if got := r.Stats(); got != wantStats {
			t.Errorf("%s: counters %+v\nwant %+v", s.name, got, wantStats)
		}
	}
}

// TestReceiverFailedApply: when installing a table fails, the applied table
// stays, and the next repetition of the new one is Apply again.
func TestReceiverFailedApply(t *testing.T) {
	r := mustReceiver(t, 10)
	m := sample()
	m.Members = members(3, nil, nil)
	m.Tx = 1
	res := r.Handle(mustMarshal(t, m, testKey))
	r.Applied(res)
	m.Seq++
	m.Tx++
	m.Members[1].Up = false
	res = r.Handle(mustMarshal(t, m, testKey))
	if res.Verdict != Apply {
		t.Fatalf("newer table: %v", res.Verdict)
	}
	r.Failed(res)
	if cur, owned := r.Current(); cur.Seq != 7 || len(owned) != ownedBy(t, members(3, nil, nil), 10) {
		t.Errorf("after a failed apply, current is seq %d with %d buckets; want the old seq 7's", cur.Seq, len(owned))
	}
	m.Tx++
	if res := r.Handle(mustMarshal(t, m, testKey)); res.Verdict != Apply {
		t.Errorf("repetition after a failed apply: %v, want apply", res.Verdict)
	} else {
		r.Applied(res)
	}
	if st := r.Stats(); st.ApplyErrors != 1 || st.Applied != 2 || st.Newer != 3 {
		t.Errorf("counters %+v: want 3 newer, 2 applied, 1 apply error", st)
	}
}

// TestReceiverFloor: a restarted agent given its old floor ignores replays
// of what it had heard, and takes the next fresh datagram even when it
// repeats a table it had applied before the restart.
func TestReceiverFloor(t *testing.T) {
	m := sample()
	m.Tx = 50
	old := mustMarshal(t, m, testKey)
	r := mustReceiver(t, 0)
	if _, _, ok := r.Floor(); ok {
		t.Error("a new receiver has a floor")
	}
	r.SetFloor(m.Epoch, 50)
	if res := r.Handle(old); res.Verdict != IgnoreStale {
		t.Errorf("replay at the floor: %v, want stale", res.Verdict)
	}
	m.Tx = 51
	if res := r.Handle(mustMarshal(t, m, testKey)); res.Verdict != Apply {
		t.Errorf("fresh repeat after the floor: %v, want apply", res.Verdict)
	}
	if e, tx, ok := r.Floor(); e != m.Epoch || tx != 51 || !ok {
		t.Errorf("Floor = %d, %d, %v", e, tx, ok)
	}
}

func TestNewReceiverErrors(t *testing.T) {
	for _, tc := range []struct {
		cluster string
		key     ed25519.PublicKey
		id      int
	}{
		{"", testPub, 0},
		{"web", ed25519.PublicKey("short"), 0},
		{"web", testPub, -1},
	} {
		if _, err := NewReceiver(tc.cluster, tc.key, tc.id); err == nil {
			t.Errorf("NewReceiver(%q, %q, %d) succeeded", tc.cluster, tc.key, tc.id)
		}
	}
}

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{Apply: "apply", IgnoreBadMAC: "bad_mac", IgnoreOtherCluster: "other_cluster", 0: "verdict(0)", 99: "verdict(99)"} {
		if got := fmt.Sprint(v); got != want {
			t.Errorf("Verdict(%d) = %q, want %q", uint8(v), got, want)
		}
	}
}
