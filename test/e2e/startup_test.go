package e2e

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// TestGhostFramesFromTheFirstInstant: a client floods a routing-mode ghost
// with UDP (128 flows, about 12 800 datagrams a second) before the
// appliance exists, through its start-up and after. The client knows the
// appliance's MAC in advance (a permanent neighbor), so its frames reach
// the TAP device from the moment the appliance creates it and joins it to
// the bridge, and queue there until the receive loop reads them. Every one
// of them must meet the datapath's stages: netstack has no route to the
// ghost and would answer a ghost packet it received with ICMP destination
// unreachable, so the kernel's capture on the client must hold no ICMP
// error from the appliance at all, and netstack's own count of packets it
// found no route for must stay 0 (it also covers the first moments, before
// netstack has the addresses to send an error from). The server does not answer ARP until the
// appliance runs, so the dispatcher drops the ghost packets of the first
// moments as no_mac (the datapath's verdict counter for that agrees with
// the cluster's own); once it answers, they are dispatched.
func TestGhostFramesFromTheFirstInstant(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 1})
	const upMAC = "02:5a:9e:00:00:01"
	cfg := strings.Replace(tp.baseConfig(), `name = "up0"`, `name = "up0"`+"\nmac = \""+upMAC+`"`, 1) +
		tp.clusterConfig("routing", "jhash", "")
	tp.cli.MustRun("ip", "neigh", "replace", upAddr, "lladdr", upMAC, "dev", "c0", "nud", "permanent")
	srv := tp.servers[0]
	srv.ns.MustRun("ip", "link", "set", "e0", "arp", "off")
	// 128 flow sources without 128 addresses: the client takes the whole
	// range as local (AnyIP) and binds to any of it.
	tp.cli.MustRun("ip", "route", "add", "local", "198.51.101.0/25", "dev", "lo")
	capCli := tp.cli.Capture("c0", "icmp")
	flood := tp.cli.Start("flood", tp.peer, "udpload", "-dst", ghostAddr+":9000", "-src-range", "198.51.101.1-198.51.101.128",
		"-duration", "12s", "-interval", "10ms", "-tries", "1", "-retry", "1s")
	start := txPackets(t, tp.cli, "c0")
	harness.WaitFor(t, 10*time.Second, "the client's flood to the ghost", func() bool {
		return txPackets(t, tp.cli, "c0") >= start+2000
	})
	tp.start(cfg)
	harness.WaitFor(t, 10*time.Second, "ghost packets dropped for the unresolved server", func() bool {
		return tp.clusterCounter("drop_no_mac") > 0
	})
	srv.ns.MustRun("ip", "link", "set", "e0", "arp", "on")
	harness.WaitFor(t, 15*time.Second, "ghost packets dispatched once the server answers ARP", func() bool {
		return tp.clusterCounter("packets") > 0
	})
	if err := flood.Wait(30 * time.Second); err != nil {
		t.Fatalf("the flood did not finish: %v\n%s", err, flood.Log())
	}
	sent := txPackets(t, tp.cli, "c0") - start
	pkts := capCli.Stop()
	up := netip.MustParseAddr(upAddr)
	errs := 0
	for _, p := range pkts {
		if p.Src == up && p.Proto == harness.ProtoICMP {
			errs++
			if errs <= 3 {
				t.Errorf("the appliance sent ICMP type %d code %d to the client: a ghost packet reached netstack", p.ICMPType, p.ICMPCode)
			}
		}
	}
	if errs > 0 {
		t.Errorf("%d ICMP errors from the appliance in all", errs)
	}

	var st struct {
		Counters map[string]uint64
		Clusters []struct {
			Name     string
			Counters map[string]uint64
		}
		Stages   []string `json:"stages"`
		Verdicts []struct {
			Stage, Verdict, Reason string
			Frames                 uint64
		} `json:"verdicts"`
	}
	out := tp.rtr.MustRun(tp.bin, "status", "--socket", tp.sock, "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	// netstack has no route to the ghost: one ghost packet handed to it,
	// before or after its addresses and routes are in place, is one it
	// cannot forward.
	if n := st.Counters["netstack_forward_unrouteable"]; n != 0 {
		t.Errorf("netstack found no route for %d packets: ghost packets reached it past the stages", n)
	}
	if len(st.Clusters) != 1 {
		t.Fatalf("status shows %d clusters:\n%s", len(st.Clusters), out)
	}
	noMAC := st.Clusters[0].Counters["drop_no_mac"]
	var verdict uint64
	for _, v := range st.Verdicts {
		if v.Stage == "dispatch" && v.Verdict == "dropped" && v.Reason == "no_mac" {
			verdict = v.Frames
		}
	}
	t.Logf("verdicts %+v", st.Verdicts)
	if noMAC == 0 {
		t.Errorf("the dispatcher dropped no ghost packet for an unresolved server MAC: the earliest frames were not judged by it\n%s", tp.status())
	}
	if verdict != noMAC {
		t.Errorf("the datapath counted %d no_mac drops by the dispatch stage, the cluster %d", verdict, noMAC)
	}
	if len(st.Stages) == 0 || !strings.Contains(strings.Join(st.Stages, " "), "dispatch l2-policy ttl-guard") {
		t.Errorf("status shows the stages %v", st.Stages)
	}
	t.Logf("%d frames sent by the client, %d ghost packets dispatched, %d dropped by the dispatcher before the server's MAC was known, %d ICMP errors from the appliance, netstack: %d IP packets received, %d unrouteable",
		sent, st.Clusters[0].Counters["packets"], noMAC, errs, st.Counters["netstack_ip_received"], st.Counters["netstack_forward_unrouteable"])
}

// clusterCounter is a counter of the appliance's only cluster.
func (tp *topo) clusterCounter(name string) uint64 {
	tp.t.Helper()
	var st struct {
		Clusters []struct{ Counters map[string]uint64 }
	}
	out := tp.rtr.MustRun(tp.bin, "status", "--socket", tp.sock, "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Clusters) != 1 {
		tp.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st.Clusters[0].Counters[name]
}

// txPackets is the count of packets ns has sent on ifname.
func txPackets(t *testing.T, ns *harness.NS, ifname string) uint64 {
	t.Helper()
	out := ns.MustRun("ip", "-s", "-j", "link", "show", ifname)
	var links []struct {
		Stats64 struct {
			Tx struct {
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show %s: %v\n%s", ifname, err, out)
	}
	return links[0].Stats64.Tx.Packets
}
