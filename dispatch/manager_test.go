package dispatch

import (
	"crypto/ed25519"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

type fakeResolver struct{}

func (fakeResolver) LinkAddress(_ string, a netip.Addr) ([6]byte, bool) {
	b := a.As4()
	return [6]byte{0x02, 0, 0, 0, b[2], b[3]}, true
}

type recordedAnnounce struct {
	mu       sync.Mutex
	versions []uint64
	servers  [][]core.Server
}

func (r *recordedAnnounce) Announce(_ *config.Cluster, version uint64, servers []core.Server) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.versions = append(r.versions, version)
	r.servers = append(r.servers, servers)
}

func testConfig(mode config.Mode, n int) *config.Config {
	cl := config.Cluster{
		Name: "web", Address: netip.MustParseAddr("203.0.113.10"), Interface: "lan0", Mode: mode,
		Hash: config.HashJhash, Seed: 0x5eed, Buckets: 4096, AnnounceKey: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)),
		AnnounceInterval: time.Hour, Health: config.Health{Check: config.CheckNone},
	}
	if mode == config.ModeBroadcast {
		cl.BroadcastAddress = netip.MustParseAddr("10.0.0.250")
	}
	for i := 0; i < n; i++ {
		cl.Servers = append(cl.Servers, config.Server{ID: i, Address: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i)}), Weight: 1})
	}
	return &config.Config{Clusters: []config.Cluster{cl}}
}

func newTestManager(t *testing.T, cfg *config.Config, ann Announcer) *Manager {
	t.Helper()
	lan := nullLAN(t, "lan0")
	m, err := NewManager(cfg, Deps{
		Endpoint: func(name string) (*tap.Endpoint, bool) { return lan, name == "lan0" },
		Resolver: fakeResolver{},
		Announce: ann,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func owners(t *testing.T, m *Manager) map[uint32]int {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	js := m.clusters[0].sel.(*core.JHashSelector)
	out := map[uint32]int{}
	for b := 0; b < js.Table().Buckets(); b++ {
		id, _ := js.Table().OwnerID(uint32(b))
		out[uint32(b)] = id
	}
	return out
}

// A server going down moves only its buckets; coming back restores the
// table; every change is announced with a newer version.
func TestManagerHealthMovesOnlyTheFailedServer(t *testing.T) {
	ann := &recordedAnnounce{}
	m := newTestManager(t, testConfig(config.ModeBroadcast, 4), ann)
	before := owners(t, m)
	m.healthChanged("web", health.Event{ServerID: 2, Up: false, At: time.Now()})
	during := owners(t, m)
	for b, id := range before {
		if id != 2 && during[b] != id {
			t.Fatalf("bucket %d of server %d moved to %d when server 2 failed", b, id, during[b])
		}
		if id == 2 && during[b] == 2 {
			t.Fatalf("bucket %d stayed with the failed server", b)
		}
	}
	m.healthChanged("web", health.Event{ServerID: 2, Up: true, At: time.Now()})
	after := owners(t, m)
	for b, id := range before {
		if after[b] != id {
			t.Fatalf("bucket %d: owner %d after recovery, %d before the failure", b, after[b], id)
		}
	}
	ann.mu.Lock()
	defer ann.mu.Unlock()
	if len(ann.versions) != 3 || !(ann.versions[0] < ann.versions[1] && ann.versions[1] < ann.versions[2]) {
		t.Fatalf("announced versions %v: want three, increasing", ann.versions)
	}
	for _, s := range ann.servers[1] {
		if s.ID == 2 && s.Up {
			t.Fatal("the failure's announcement shows server 2 up")
		}
	}
	st := m.State()[0]
	if len(st.Events) != 2 || st.Events[0].Up || !st.Events[1].Up || st.Events[0].ServerID != 2 {
		t.Fatalf("status events %+v: want the down and the up of server 2", st.Events)
	}
}

// A reload keeps counters and MACs, applies a new server, and a bad one
// changes nothing.
func TestManagerApply(t *testing.T) {
	m := newTestManager(t, testConfig(config.ModeRouting, 3), nil)
	m.resolveOnce()
	c := m.Forwarder().Clusters()[netip.MustParseAddr("203.0.113.10")]
	if c == nil {
		t.Fatal("routing cluster not in the forwarder")
	}
	v := c.View()
	v.Stats[0].Packets.Add(7)
	if v.MACs[0] == ([6]byte{}) {
		t.Fatal("MACs not resolved")
	}
	if err := m.Apply(testConfig(config.ModeRouting, 4)); err != nil {
		t.Fatal(err)
	}
	c2 := m.Forwarder().Clusters()[netip.MustParseAddr("203.0.113.10")]
	v2 := c2.View()
	if len(v2.Servers) != 4 || v2.Version <= v.Version {
		t.Fatalf("after the reload: %d servers, version %d (was %d)", len(v2.Servers), v2.Version, v.Version)
	}
	if v2.Stats[0].Packets.Load() != 7 || v2.MACs[0] != v.MACs[0] {
		t.Fatal("the reload lost server 0's counters or MAC")
	}
	bad := testConfig(config.ModeRouting, 4)
	bad.Clusters[0].Buckets = 0
	if err := m.Apply(bad); err == nil {
		t.Fatal("a table that cannot be built was applied")
	}
	if got := m.Forwarder().Clusters()[netip.MustParseAddr("203.0.113.10")].View(); got != v2 {
		t.Fatal("a failed reload changed the published table")
	}
	empty := &config.Config{}
	if err := m.Apply(empty); err != nil {
		t.Fatal(err)
	}
	if len(m.Forwarder().Clusters()) != 0 || len(m.State()) != 0 {
		t.Fatal("a removed cluster is still served")
	}
}
