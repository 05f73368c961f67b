package e2e

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// enableIPv6 gives the topology IPv6: the client 2001:db8:1::10/64 and n
// more /128 client addresses from 2001:db8:1::first (hex), the servers
// 2001:db8:2::11 and up, default routes via the appliance's 2001:db8:1::1
// and 2001:db8:2::1; it waits for duplicate address detection to finish (a
// tentative address cannot source a server's neighbor solicitations) and
// returns the n client addresses.
func (tp *topo) enableIPv6(n, first int) []string {
	tp.t.Helper()
	hosts := []*harness.NS{tp.cli}
	for _, s := range tp.servers {
		hosts = append(hosts, s.ns)
	}
	for _, ns := range hosts {
		ns.Sysctl("net.ipv6.conf.all.disable_ipv6", "0")
	}
	var clients []string
	tp.cli.AddrAdd("c0", "2001:db8:1::10/64")
	for i := range n {
		c := fmt.Sprintf("2001:db8:1::%x", first+i)
		tp.cli.AddrAdd("c0", c+"/128")
		clients = append(clients, c)
	}
	tp.cli.MustRun("ip", "-6", "route", "add", "default", "via", "2001:db8:1::1")
	for i, s := range tp.servers {
		s.ns.AddrAdd("e0", fmt.Sprintf("2001:db8:2::%x/64", 0x11+i))
		s.ns.MustRun("ip", "-6", "route", "add", "default", "via", "2001:db8:2::1")
	}
	for _, ns := range hosts {
		harness.WaitFor(tp.t, 10*time.Second, "IPv6 duplicate address detection in "+ns.Name, func() bool {
			out, err := ns.Run("ip", "-6", "addr", "show", "tentative")
			return err == nil && strings.TrimSpace(out) == ""
		})
	}
	return clients
}

// ipv6Config is the appliance's configuration for a topology made IPv6 by
// enableIPv6: up0 dual-stack (2001:db8:1::1/64), lan0 holding lanAddrs (a
// TOML list's items), and cluster "web" for ghost6 with the keys in more and
// the servers at 2001:db8:2::11 and up.
func (tp *topo) ipv6Config(lanAddrs, ghost6, more string) string {
	cfg := strings.Replace(tp.baseConfig(), `addresses = ["`+upAddr+`/24"]`, `addresses = ["`+upAddr+`/24", "2001:db8:1::1/64"]`, 1)
	cfg = strings.Replace(cfg, `addresses = ["`+lanAddr+`/24"]`, `addresses = [`+lanAddrs+`]`, 1)
	cfg += fmt.Sprintf("\n[[cluster]]\nname = \"web\"\naddress = %q\ninterface = \"lan0\"\nseed = 0x5eed\n%s", ghost6, more)
	for i := range tp.servers {
		cfg += fmt.Sprintf("\n  [[cluster.server]]\n  id = %d\n  address = \"2001:db8:2::%x\"\n", i, 0x11+i)
	}
	return cfg
}

// TestRoutingModeIPv6: an IPv6 ghost in routing mode. Each client address is
// answered by the server lookup names; on the LAN each packet to the ghost
// goes to that server's MAC with its hop limit decremented by one.
func TestRoutingModeIPv6(t *testing.T) {
	const ghost6 = "2001:db8:ffff::10"
	tp := newTopo(t, topoOptions{servers: 3})
	clients := tp.enableIPv6(16, 0x100)
	tp.startServers()
	cfg := tp.ipv6Config(`"`+lanAddr+`/24", "2001:db8:2::1/64"`, ghost6, "mode = \"routing\"\n")
	tp.start(cfg)
	tp.setupNodes()
	want := tp.lookup(clients)
	capLAN := tp.rtr.Capture("br-lan", "ip6 dst "+ghost6)
	res := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://["+ghost6+"]/", "-src", strings.Join(clients, ",")))
	for _, c := range clients {
		if exp := "s" + strconv.Itoa(want[c]) + " " + c; res[c] != exp {
			t.Errorf("HTTP from %s: got %q, want %q", c, res[c], exp)
		}
	}
	// Hop limit 1 to the ghost: time exceeded from the appliance, not forwarded.
	out, _ := tp.cli.Run("ping", "-6", "-c", "1", "-t", "1", "-W", "2", "-I", clients[0], ghost6)
	if !strings.Contains(out, "From 2001:db8:1::1") || !strings.Contains(out, "Time exceeded") {
		t.Errorf("hop limit 1 to the ghost did not draw time exceeded from the appliance:\n%s", out)
	}
	pkts := capLAN.Stop()
	if len(pkts) < 3*len(clients) {
		t.Fatalf("only %d packets to the ghost on the LAN", len(pkts))
	}
	g := netip.MustParseAddr(ghost6)
	for _, p := range pkts {
		id, ok := want[p.Src.String()]
		if !ok || p.Dst != g {
			t.Errorf("unexpected packet on the LAN: %v", p)
			continue
		}
		if p.TTL == 0 {
			t.Errorf("a hop-limit-1 packet crossed the appliance: %v", p)
		}
		if p.DstMAC.String() != tp.servers[id].mac.String() || p.TTL != 63 {
			t.Errorf("packet from %s to MAC %s hop limit %d, want server %d's %s and 63", p.Src, p.DstMAC, p.TTL, id, tp.servers[id].mac)
		}
	}
}
