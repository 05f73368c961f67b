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
	"github.com/ghostrouter/ghostrouter/router/config"
)

func webCluster() *config.Cluster {
	return &config.Cluster{
		Name: "web", Address: netip.MustParseAddr("203.0.113.10"), Interface: "lan0", Mode: config.ModeBroadcast,
		Hash: config.HashJhash, Seed: 0x5eed, Buckets: 4096,
		AnnounceKey: testKey, AnnouncePort: DefaultPort, AnnounceInterval: 500 * time.Millisecond,
	}
}

// TestAnnouncerToReceiver: what the appliance's announcer sends, a server's
// receiver applies; the periodic repetition of one version is a Repeat; a
// table change is applied; a replay of an earlier datagram is stale.
func TestAnnouncerToReceiver(t *testing.T) {
	var sent [][]byte
	a := NewAnnouncer(1000, func(cl *config.Cluster, b []byte) error {
		if cl.Name != "web" {
			t.Errorf("sent for cluster %s", cl.Name)
		}
		sent = append(sent, bytes.Clone(b))
		return nil
	}, nil)
	cl := webCluster()
	servers := []dispatch.Server{
		{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: true},
		{ID: 1, Addr: netip.MustParseAddr("10.0.0.12"), Weight: 1, Up: true},
		{ID: 2, Addr: netip.MustParseAddr("10.0.0.13"), Weight: 1, Up: true},
	}
	r := mustReceiver(t, 1)
	a.Announce(cl, 1, servers)
	a.Announce(cl, 1, servers) // the periodic repetition
	servers[0].Up = false
	a.Announce(cl, 2, servers)
	if len(sent) != 3 {
		t.Fatalf("%d datagrams sent, want 3", len(sent))
	}
	want := []Verdict{Apply, Repeat, Apply}
	for i, b := range sent {
		res := r.Handle(b)
		if res.Verdict != want[i] {
			t.Errorf("datagram %d: %v (%v), want %v", i+1, res.Verdict, res.Err, want[i])
		}
		if res.Verdict == Apply {
			r.Applied(res)
		}
		if m := res.Msg; m == nil || m.Epoch != 1000 || m.Tx != uint64(i+1) || m.Interval != cl.AnnounceInterval || m.Ghost != cl.Address {
			t.Errorf("datagram %d: %+v", i+1, m)
		}
	}
	tb, err := dispatch.NewTable(servers, cl.Buckets)
	if err != nil {
		t.Fatal(err)
	}
	if _, owned := r.Current(); !slices.Equal(owned, tb.Owned(1)) {
		t.Errorf("server 1 owns %d buckets, the appliance's table gives it %d", len(owned), len(tb.Owned(1)))
	}
	if res := r.Handle(sent[0]); res.Verdict != IgnoreStale {
		t.Errorf("replay of the first datagram: %v, want stale", res.Verdict)
	}
	if s, f := a.Stats(); s != 3 || f != 0 {
		t.Errorf("Stats = %d sent, %d failed", s, f)
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
