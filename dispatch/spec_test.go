package dispatch

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// countingProber answers every tcp check and counts them per address.
type countingProber struct {
	mu    sync.Mutex
	dials map[netip.Addr]int
}

func (p *countingProber) DialTCP(_ context.Context, dst netip.AddrPort) (net.Conn, error) {
	p.mu.Lock()
	p.dials[dst.Addr()]++
	p.mu.Unlock()
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func (p *countingProber) Ping(context.Context, netip.Addr, uint16) error {
	return errors.New("no icmp here")
}

// The cluster of the reload tests; [cluster.health] goes where each test puts
// it.
const (
	specHead = `[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "routing"
buckets = 64
`
	specServers = `
  [[cluster.server]]
  id = 0
  address = "10.0.0.11"

  [[cluster.server]]
  id = 1
  address = "10.0.0.12"
`
	specHealth = `
  [cluster.health]
  check = "tcp"
  port = 80
  interval = "1h"
  timeout = "1s"
`
)

func parseSpecConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("web.toml", []byte(text))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", text, err)
	}
	return cfg
}

// Moving [cluster.health] in the file (a reload whose only change is the
// table's line) keeps the cluster's health checkers running: the manager
// compares what the checks do, never where the file wrote them. A change of
// the checks themselves still restarts them.
func TestReloadMovingHealthKeepsCheckers(t *testing.T) {
	first := parseSpecConfig(t, specHead+specHealth+specServers)
	moved := parseSpecConfig(t, specHead+specServers+specHealth)
	h1, h2 := first.Clusters[0].Health, moved.Clusters[0].Health
	if h1.Line == h2.Line || reflect.DeepEqual(h1, h2) {
		t.Fatalf("the two files do not differ in the health table's line: %+v, %+v", h1, h2)
	}
	if h1.Line = h2.Line; !reflect.DeepEqual(h1, h2) {
		t.Fatalf("the two files differ in more than the line: %+v, %+v", h1, h2)
	}

	lan := nullLAN(t, "lan0")
	p := &countingProber{dials: map[netip.Addr]int{}}
	m, err := NewManager(first, Deps{
		Endpoint: func(name string) (*tap.Endpoint, bool) { return lan, name == "lan0" },
		Resolver: fakeResolver{},
		Prober:   p,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	checker := func() any {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.clusters[0].checker
	}
	before := checker()
	if before == nil || reflect.ValueOf(before).IsNil() {
		t.Fatal("the cluster has no health checker")
	}
	// The first server is checked at once (the second half an interval,
	// 30 minutes, later): wait for that check.
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		n := p.dials[netip.MustParseAddr("10.0.0.11")]
		p.mu.Unlock()
		if n == 1 {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("%d checks of server 0 before the reload, want 1", n)
		}
		time.Sleep(5 * time.Millisecond)
	}

	if err := m.Apply(moved); err != nil {
		t.Fatal(err)
	}
	if after := checker(); after != before {
		t.Fatal("moving [cluster.health] in the file restarted the cluster's health checkers")
	}
	if st := m.State()[0]; st.Health.Interval != time.Hour || st.Health.Port != 80 {
		t.Errorf("state after the reload shows health %+v", st.Health)
	}

	changed := parseSpecConfig(t, specHead+specServers+strings.Replace(specHealth, `timeout = "1s"`, `timeout = "2s"`, 1))
	if err := m.Apply(changed); err != nil {
		t.Fatal(err)
	}
	if checker() == before {
		t.Fatal("a new timeout kept the old health checkers")
	}
}
