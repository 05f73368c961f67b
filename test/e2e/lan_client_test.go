package e2e

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// A client on the cluster LAN of a broadcast cluster, with send_redirects
// on. Its ghost traffic goes to the appliance, which routes the ghost via the
// second ghost, out of the link it came in on: a plain router would send a
// redirect naming the second ghost, cutting the client off. And a unicast
// packet it sends in a broadcast frame must not be forwarded.
//
//	lc 10.0.0.50 ── e0 ─ l-lc ┐
//	                          br-lan ── lan0 [ghostrouter] up0 ── br-up ── cli 198.51.100.10
//	srv0, srv1 ───────────────┘         (second ghost 10.0.0.250 = ff:ff:ff:ff:ff:ff)
const lanClient = "10.0.0.50"

func lanClientTopo(t *testing.T) (*topo, *harness.NS) {
	tp := newTopo(t, topoOptions{servers: 2})
	lc := tp.h.NS("lc")
	tp.h.Veth(lc, "e0", tp.rtr, "l-lc")
	tp.rtr.MustRun("ip", "link", "set", "l-lc", "master", "br-lan")
	lc.AddrAdd("e0", lanClient+"/24")
	lc.MustRun("ip", "route", "add", "default", "via", lanAddr)
	tp.startServers()
	base := strings.Replace(tp.baseConfig(), "metrics_address = \"\"\n", "metrics_address = \"\"\nsend_redirects = true\n", 1)
	if base == tp.baseConfig() {
		t.Fatal("could not turn send_redirects on in the base configuration")
	}
	tp.start(base + tp.clusterConfig("broadcast", "jhash", broadcastExtra("")))
	tp.setupNodes()
	return tp, lc
}

// TestNoRedirectForBroadcastClusterLANClient: the LAN client's ghost traffic
// is answered and draws no ICMP redirect; ordinary traffic that the client
// sends through the appliance back onto the LAN does (so redirects are on and
// the capture would show one).
func TestNoRedirectForBroadcastClusterLANClient(t *testing.T) {
	tp, lc := lanClientTopo(t)
	other := tp.servers[1].addr.String()
	lc.MustRun("ip", "route", "add", other+"/32", "via", lanAddr)

	capLC := lc.Capture("e0", "icmp")
	pingOut := lc.MustRun("ping", "-c", "3", "-i", "0.2", "-W", "2", ghostAddr)
	httpOut := lc.MustRun(tp.peer, "http", "-url", "http://"+ghostAddr+"/", "-src", lanClient)
	ctl, ctlErr := lc.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", other)
	pkts := capLC.Stop()
	if !strings.Contains(pingOut, " 0% packet loss") {
		t.Fatalf("the LAN client's pings to the ghost were not all answered:\n%s", pingOut)
	}
	if res := peerResults(httpOut); !strings.HasPrefix(res[lanClient], "s") {
		t.Fatalf("the LAN client's HTTP request to the ghost: %q", httpOut)
	}
	if ctlErr != nil {
		t.Fatalf("ping %s through the appliance: %v\n%s", other, ctlErr, ctl)
	}
	ghost := netip.MustParseAddr(ghostAddr)
	clusterRedirects, ordinary := 0, 0
	for _, p := range pkts {
		if p.Proto != harness.ProtoICMP || p.ICMPType != 5 {
			continue
		}
		hl := int(p.Network[0]&0x0f) * 4
		q := p.Network[hl+8:]
		if len(q) < 20 {
			t.Fatalf("a redirect quoting %d bytes", len(q))
		}
		qsrc, qdst := netip.AddrFrom4([4]byte(q[12:16])), netip.AddrFrom4([4]byte(q[16:20]))
		gw := netip.AddrFrom4([4]byte(p.Network[hl+4 : hl+8]))
		switch {
		case qdst == ghost || qsrc == ghost:
			clusterRedirects++
			t.Errorf("ICMP redirect for cluster traffic on the wire: %v (gateway %s)", p, gw)
		case qdst.String() == other:
			ordinary++
		}
	}
	if ordinary == 0 {
		t.Fatalf("no redirect for ordinary traffic sent back onto the LAN: send_redirects is not working, so the check above proves nothing")
	}
	if n := tp.statusJSON().Counters["redirects_sent"]; n == 0 {
		t.Errorf("redirects_sent = 0 after %d redirects on the wire", ordinary)
	}
	t.Logf("ghost traffic from the LAN client: answered, %d redirects; ordinary traffic: %d redirects", clusterRedirects, ordinary)
}

// TestUnicastInBroadcastFrameNotForwarded: the LAN client binds its gateway
// to ff:ff:ff:ff:ff:ff, so its packets to the upstream client leave in
// broadcast frames. The appliance counts them and forwards none; the same
// packets in unicast frames cross.
func TestUnicastInBroadcastFrameNotForwarded(t *testing.T) {
	tp, lc := lanClientTopo(t)
	// The path works with a unicast frame.
	if out, err := lc.Run("ping", "-c", "1", "-W", "2", clientAddr); err != nil {
		t.Fatalf("the LAN client cannot reach %s through the appliance: %v\n%s", clientAddr, err, out)
	}
	before := tp.statusJSON().Counters["unicast_in_broadcast_dropped"]
	lc.MustRun("ip", "neigh", "replace", lanAddr, "lladdr", "ff:ff:ff:ff:ff:ff", "dev", "e0", "nud", "permanent")
	capCli := tp.cli.Capture("c0", "icmp")
	capLAN := tp.rtr.Capture("l-lc", "icmp")
	out, err := lc.Run("ping", "-c", "5", "-i", "0.2", "-W", "1", clientAddr)
	all := harness.StopAll(capCli, capLAN)
	if err == nil {
		t.Fatalf("pings sent in broadcast frames were answered:\n%s", out)
	}
	inBcast := 0
	for _, p := range all[1] {
		if p.Src.String() == lanClient && p.Dst.String() == clientAddr && p.DstMAC.String() == "ff:ff:ff:ff:ff:ff" {
			inBcast++
		}
	}
	if inBcast != 5 {
		t.Fatalf("%d echo requests in broadcast frames on the LAN, want 5", inBcast)
	}
	for _, p := range all[0] {
		if p.Src.String() == lanClient {
			t.Errorf("forwarded to the upstream client: %v", p)
		}
	}
	if d := tp.statusJSON().Counters["unicast_in_broadcast_dropped"] - before; d != 5 {
		t.Errorf("unicast_in_broadcast_dropped rose by %d, want 5", d)
	}
}
