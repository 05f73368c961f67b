package dispatch

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// TestManagerPrepare: a plan changes nothing until Commit; Discard leaves
// the running clusters; a plan the manager cannot build (a table, a
// routing cluster's interface) is refused at Prepare; an open plan holds
// off other reconfigurations until it is committed or discarded.
func TestManagerPrepare(t *testing.T) {
	ghost := netip.MustParseAddr("203.0.113.10")
	m := newTestManager(t, testConfig(config.ModeRouting, 3), nil)
	view := func() *View { return m.Forwarder().Clusters()[ghost].View() }
	v := view()

	p, err := m.Prepare(testConfig(config.ModeRouting, 4))
	if err != nil {
		t.Fatal(err)
	}
	if view() != v {
		t.Fatal("Prepare published a table")
	}
	applied := make(chan error, 1)
	go func() { applied <- m.Apply(testConfig(config.ModeRouting, 2)) }()
	select {
	case <-applied:
		t.Fatal("Apply ran while a plan was open")
	case <-time.After(100 * time.Millisecond):
	}
	p.Discard()
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	if n := len(view().Servers); n != 2 {
		t.Fatalf("after Discard and Apply: %d servers, want 2", n)
	}
	v = view()

	bad := testConfig(config.ModeRouting, 4)
	bad.Clusters[0].Buckets = 0
	if _, err := m.Prepare(bad); err == nil {
		t.Fatal("Prepare accepted a table that cannot be built")
	}
	elsewhere := testConfig(config.ModeRouting, 4)
	elsewhere.Clusters[0].Interface = "lan9"
	if _, err := m.Prepare(elsewhere); err == nil {
		t.Fatal("Prepare accepted a routing cluster on an interface without endpoint")
	}
	if view() != v {
		t.Fatal("a refused plan changed the published table")
	}

	p, err = m.Prepare(testConfig(config.ModeRouting, 4))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := len(view().Servers); n != 4 {
		t.Fatalf("after Commit: %d servers, want 4", n)
	}
	if err := p.Commit(); err == nil {
		t.Fatal("a plan committed twice")
	}
	p.Discard() // no-op after Commit: must not unlock twice
	if err := m.Apply(testConfig(config.ModeRouting, 3)); err != nil {
		t.Fatal(err)
	}
}
