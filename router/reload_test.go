package router

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// routeRows is the routing table as netstack holds it, one "to via iface"
// string per row.
func routeRows(r *Router) []string {
	var out []string
	for _, row := range r.Routes() {
		out = append(out, row.To+" "+row.Via+" "+row.Interface)
	}
	return out
}

// TestPrepareChangesNothing: a plan the router refuses (a next hop that is
// a ghost; a new next hop nobody answers ARP for) leaves netstack's table
// as it was; a plan that validates changes nothing until Commit; Running
// puts the table back.
func TestPrepareChangesNothing(t *testing.T) {
	rig := newFastRig(t)
	base := *rig.cfg
	base.Routes = []config.Route{{To: netip.MustParsePrefix("203.0.113.0/28"), Via: netip.MustParseAddr("198.51.100.20"), Interface: "b"}}
	if err := rig.r.Reconfigure(&base); err != nil {
		t.Fatal(err)
	}
	running := routeRows(rig.r)
	if !slices.Contains(running, "203.0.113.0/28 198.51.100.20 b") {
		t.Fatalf("the route is not installed: %q", running)
	}

	ghost := base
	ghost.Clusters = []config.Cluster{{Name: "web", Address: netip.MustParseAddr("192.0.2.99"), Interface: "a", Mode: config.ModeRouting}}
	ghost.Routes = []config.Route{{To: netip.MustParsePrefix("10.9.0.0/16"), Via: netip.MustParseAddr("192.0.2.99"), Interface: "a"}}
	if _, err := rig.r.Prepare(&ghost); err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("Prepare accepted a next hop that is a ghost (err %v)", err)
	}

	// A2 is on link a's subnet but nobody answers for it.
	moved := base
	moved.Routes = []config.Route{{To: netip.MustParsePrefix("203.0.113.0/28"), Via: ipA2, Interface: "a"}}
	plan, err := rig.r.Prepare(&moved)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := plan.CheckNextHops(ctx); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("CheckNextHops passed a next hop that never answered (err %v)", err)
	}
	if got := routeRows(rig.r); !slices.Equal(got, running) {
		t.Errorf("a refused plan changed the table:\n got %q\nwant %q", got, running)
	}

	// Once A2 answers, the same change validates, and still changes
	// nothing before Commit.
	plan, err = rig.r.Prepare(&moved)
	if err != nil {
		t.Fatal(err)
	}
	checked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		checked <- plan.CheckNextHops(ctx)
	}()
	answerARP(t, rig.a, ipA2, macA2, macRA, ipRA)
	if err := <-checked; err != nil {
		t.Fatalf("CheckNextHops with A2 answering: %v", err)
	}
	if got := routeRows(rig.r); !slices.Equal(got, running) {
		t.Errorf("a validated plan changed the table before Commit:\n got %q\nwant %q", got, running)
	}
	back := rig.r.Running()
	if err := plan.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := routeRows(rig.r); !slices.Contains(got, "203.0.113.0/28 192.0.2.20 a") {
		t.Errorf("Commit did not install the new route: %q", got)
	}
	if err := plan.Commit(); err == nil {
		t.Error("a plan committed twice")
	}
	if err := back.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := routeRows(rig.r); !slices.Equal(got, running) {
		t.Errorf("Running did not put the table back:\n got %q\nwant %q", got, running)
	}
}
