package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// TestBroadcastModeIPv6: an IPv6 ghost in broadcast mode. The appliance
// routes the ghost via an IPv6 second ghost whose permanent neighbor entry is
// ff:ff:ff:ff:ff:ff; every server receives each packet and its ip6 filter
// keeps only its own clients: each client is answered by the server lookup
// names, and by no other. On a dual-stack LAN the filters come from
// `ghostnode setup`; on an IPv6-only LAN from `ghostnode run`, the table
// announced to the all-nodes group ff02::1 (there is no IPv4 broadcast).
func TestBroadcastModeIPv6(t *testing.T) {
	t.Run("dual-stack LAN", func(t *testing.T) { broadcastIPv6(t, false) })
	t.Run("IPv6-only LAN, announcements", func(t *testing.T) { broadcastIPv6(t, true) })
}

func broadcastIPv6(t *testing.T, v6only bool) {
	const ghost6, second6 = "2001:db8:ffff::20", "2001:db8:2::fa"
	tp := newTopo(t, topoOptions{servers: 3})
	clients := tp.enableIPv6(24, 0x200)
	tp.startServers()
	lanAddrs := `"` + lanAddr + `/24", "2001:db8:2::1/64"`
	more := fmt.Sprintf("mode = \"broadcast\"\nbroadcast_address = %q\n", second6)
	if v6only {
		lanAddrs = `"2001:db8:2::1/64"`
		more += fmt.Sprintf("announce_key_file = %q\nannounce_interval = \"300ms\"\n", announceKeyFile)
	}
	cfg := tp.ipv6Config(lanAddrs, ghost6, more)
	tp.start(cfg)
	if v6only {
		tp.runNodes(tp.cfgPath, 0, len(tp.servers))
		tp.waitInStep(len(tp.servers), "from announcements to ff02::1")
		for i := range tp.servers {
			if st := tp.nodeStatus(i); !strings.Contains(st, "[2001:db8:2::1]:") {
				t.Fatalf("server %d applied no announcement from the appliance's IPv6 address:\n%s", i, st)
			}
		}
	} else {
		tp.setupNodes()
	}
	requirePermanentBroadcast(t, tp.statusJSON(), "lan0", netip.MustParseAddr(second6))
	want := tp.lookup(clients)
	seen := map[int]bool{}
	for _, id := range want {
		seen[id] = true
	}
	if len(seen) < 2 {
		t.Fatalf("the %d clients all map to one server: the test proves nothing", len(clients))
	}

	g := netip.MustParseAddr(ghost6)
	capLAN := tp.rtr.Capture("br-lan", "ip6 dst "+ghost6)
	var capSrv []*harness.Capture
	for _, s := range tp.servers {
		capSrv = append(capSrv, s.ns.Capture("e0", "ip6 src "+ghost6))
	}
	res := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://["+ghost6+"]/", "-src", strings.Join(clients, ",")))
	for _, c := range clients {
		if exp := "s" + strconv.Itoa(want[c]) + " " + c; res[c] != exp {
			t.Errorf("HTTP from %s: got %q, want %q", c, res[c], exp)
		}
	}
	all := harness.StopAll(append([]*harness.Capture{capLAN}, capSrv...)...)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}.String()
	if len(all[0]) < 3*len(clients) {
		t.Fatalf("only %d packets to the ghost on the LAN", len(all[0]))
	}
	for _, p := range all[0] {
		if p.Dst != g || p.DstMAC.String() != bcast || p.TTL != 63 {
			t.Errorf("ghost packet on the LAN to %s, hop limit %d: want %s and 63: %v", p.DstMAC, p.TTL, bcast, p)
		}
	}
	// Each client's answers come from its server alone.
	from := map[string]map[int]bool{}
	for i, pkts := range all[1:] {
		for _, p := range pkts {
			if p.Proto == harness.ProtoTCP && p.TCPFlags&harness.TCPFlagRST != 0 {
				t.Errorf("server %d sent a TCP RST: %v", i, p)
			}
			c := p.Dst.String()
			if from[c] == nil {
				from[c] = map[int]bool{}
			}
			from[c][i] = true
		}
	}
	for _, c := range clients {
		if len(from[c]) != 1 || !from[c][want[c]] {
			t.Errorf("client %s answered by servers %v, want only server %d", c, from[c], want[c])
		}
	}
}
