package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/ghostrouter/ghostrouter/arp/neigh"
	"github.com/ghostrouter/ghostrouter/router/config"
)

func TestPrintServerNeighbors(t *testing.T) {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	printServerNeighbors(tw, []neigh.Entry{
		{Interface: "lan0", Address: netip.MustParseAddr("10.0.0.11"), Role: "server 0 of cluster web", MAC: "02:aa:00:00:00:01", State: neigh.StateReachable, Age: "1m2.5s", Answered: "3s ago"},
		{Interface: "lan0", Address: netip.MustParseAddr("10.0.0.99"), Role: "server 1 of cluster web", State: neigh.StateUnresolved},
	})
	tw.Flush()
	out := b.String()
	for _, want := range []string{
		"server neighbors (resolved by the appliance): 1 of 2 resolved",
		"unresolved: 10.0.0.99",
		"10.0.0.11  02:aa:00:00:00:01  reachable   1m2.5s  3s ago",
		"10.0.0.99  (unresolved)       unresolved  -",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status section lacks %q:\n%s", want, out)
		}
	}
}

// Only routing-mode servers are resolved; mac and a [[neighbor]] pin them.
func TestServerTargets(t *testing.T) {
	cfg, err := config.Parse("t.toml", []byte(`
[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]

[[neighbor]]
address = "10.0.0.13"
mac = "02:00:00:00:00:13"
interface = "lan0"

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "routing"
  [[cluster.server]]
  id = 0
  address = "10.0.0.11"
  [[cluster.server]]
  id = 1
  address = "10.0.0.12"
  mac = "02:00:00:00:00:12"
  [[cluster.server]]
  id = 2
  address = "10.0.0.13"

[[cluster]]
name = "api"
address = "203.0.113.12"
interface = "lan0"
mode = "routing"
  [[cluster.server]]
  id = 7
  address = "10.0.0.11"
  mac = "02:00:00:00:00:11"

[[cluster]]
name = "bc"
address = "203.0.113.11"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
  [[cluster.server]]
  id = 0
  address = "10.0.0.21"
`))
	if err != nil {
		t.Fatal(err)
	}
	ts := serverTargets(cfg)
	if len(ts) != 3 {
		t.Fatalf("targets %+v, want the 3 routing-mode servers", ts)
	}
	if ts[0].Pin != [6]byte{2, 0, 0, 0, 0, 0x11} || ts[0].External || ts[0].Role != "server 0 of cluster web, server 7 of cluster api" {
		t.Errorf("server 0: %+v, want one target for both clusters, pinned by the second's mac", ts[0])
	}
	if ts[1].Pin != [6]byte{2, 0, 0, 0, 0, 0x12} || ts[1].External {
		t.Errorf("server 1: %+v, want pinned by its mac", ts[1])
	}
	if ts[2].Pin != [6]byte{2, 0, 0, 0, 0, 0x13} || !ts[2].External {
		t.Errorf("server 2: %+v, want pinned by the [[neighbor]], netstack's entry left to the router", ts[2])
	}
}
