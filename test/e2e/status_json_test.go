package e2e

import (
	"encoding/json"
	"net/netip"
	"testing"
)

// statusDoc is the part of `status --json` the tests read, decoded here
// from the document's field names (not through the appliance's own types).
type statusDoc struct {
	Neighbors []neighborRow `json:"neighbors"`
	Counters  map[string]uint64
	Clusters  []struct {
		Name     string
		Counters map[string]uint64
		Servers  []struct {
			ID      int
			Up      bool
			Buckets int
		}
	}
	Links []struct {
		Name     string
		MAC      string
		Counters map[string]uint64
	}
	// ServerNeighbors are the servers' MACs as the appliance resolves them.
	ServerNeighbors []struct {
		Address string `json:"address"`
		MAC     string `json:"mac"`
		State   string `json:"state"`
		AgeMS   int64  `json:"age_ms"`
		Changes int    `json:"changes"`
	} `json:"server_neighbors"`
	Conflicts []struct {
		Address string `json:"address"`
		Role    string `json:"role"`
		MAC     string `json:"mac"`
		Claims  uint64 `json:"claims"`
	} `json:"conflicts"`
}

// linkCounter returns one counter of the named link.
func (d statusDoc) linkCounter(t *testing.T, link, name string) uint64 {
	t.Helper()
	for _, l := range d.Links {
		if l.Name == link {
			v, ok := l.Counters[name]
			if !ok {
				t.Fatalf("link %s has no counter %s: %v", link, name, l.Counters)
			}
			return v
		}
	}
	t.Fatalf("no link %s in status", link)
	return 0
}

// neighborRow is one row of the appliance's neighbor table as netstack
// holds it.
type neighborRow struct {
	Interface string
	Addr      netip.Addr
	MAC       string
	State     string
	Permanent bool
}

// statusJSON returns the appliance's `status --json` document.
func (tp *topo) statusJSON() statusDoc {
	tp.t.Helper()
	out := tp.rtr.MustRun(tp.bin, "status", "--socket", tp.sock, "--json")
	var d statusDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		tp.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return d
}

// neighbor returns the neighbor table's row for addr on ifname.
func (d statusDoc) neighbor(ifname string, addr netip.Addr) (neighborRow, bool) {
	for _, n := range d.Neighbors {
		if n.Interface == ifname && n.Addr == addr {
			return n, true
		}
	}
	return neighborRow{}, false
}

// requirePermanentBroadcast fails t unless the appliance's neighbor table
// (read from the running netstack through `status --json`) binds addr on
// ifname permanently to ff:ff:ff:ff:ff:ff.
func requirePermanentBroadcast(t *testing.T, d statusDoc, ifname string, addr netip.Addr) {
	t.Helper()
	n, ok := d.neighbor(ifname, addr)
	if !ok {
		t.Fatalf("no neighbor row for %s on %s in %+v", addr, ifname, d.Neighbors)
	}
	if !n.Permanent || n.MAC != "ff:ff:ff:ff:ff:ff" {
		t.Fatalf("neighbor row for %s on %s: %+v, want permanent ff:ff:ff:ff:ff:ff", addr, ifname, n)
	}
}

// clusterCounter returns one counter of the named cluster.
func (d statusDoc) clusterCounter(t *testing.T, cluster, name string) uint64 {
	t.Helper()
	for _, c := range d.Clusters {
		if c.Name == cluster {
			v, ok := c.Counters[name]
			if !ok {
				t.Fatalf("cluster %s has no counter %s: %v", cluster, name, c.Counters)
			}
			return v
		}
	}
	t.Fatalf("no cluster %s in status", cluster)
	return 0
}
