package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

const secondGhost = "10.0.0.250"

// broadcastTopo is the standard topology with a broadcast-mode cluster: the
// appliance routes the ghost via the second ghost 10.0.0.250, whose permanent
// neighbor entry is ff:ff:ff:ff:ff:ff; ghostnode installs each server's filter.
func broadcastTopo(t *testing.T, servers, clients int) *topo {
	tp := newTopo(t, topoOptions{servers: servers, clientAddrs: clients})
	tp.startServers()
	tp.start(tp.baseConfig() + tp.clusterConfig("broadcast", "jhash", broadcastExtra("")))
	tp.setupNodes()
	return tp
}

// broadcastExtra is the broadcast-mode part of the cluster section.
func broadcastExtra(more string) string {
	return fmt.Sprintf("broadcast_address = %q\nannounce_key_file = %q\nannounce_interval = \"300ms\"\n%s", secondGhost, announceKeyFile, more)
}

// synackOf names the connection a SYN-ACK from the ghost answers: the
// client, its port and its SYN's sequence number (ports are reused by later
// connections; a retransmitted SYN-ACK names the same connection again).
func synackOf(p harness.Packet) (string, bool) {
	if p.Src.String() != ghostAddr || p.Proto != harness.ProtoTCP || p.TCPFlags&(harness.TCPFlagSYN|harness.TCPFlagACK) != harness.TCPFlagSYN|harness.TCPFlagACK {
		return "", false
	}
	return fmt.Sprintf("%s:%d syn %d", p.Dst, p.DstPort, p.TCPAck-1), true
}

var filterCounter = regexp.MustCompile(`(?m)^\s*(accepted new|accepted established|dropped)\s+(\d+) packets`)

// filterCounters parses `ghostnode status` into counter name -> packets.
func filterCounters(t *testing.T, status string) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, sm := range filterCounter.FindAllStringSubmatch(status, -1) {
		n, _ := strconv.Atoi(sm[2])
		m[sm[1]] = n
	}
	if len(m) != 3 {
		t.Fatalf("ghostnode status without the three filter counters:\n%s", status)
	}
	return m
}

// TestBroadcastModeDispatch: 4 servers, 64 clients over HTTP, UDP and ping.
// Each client is answered by exactly the server lookup names; each client
// packet to the ghost crosses the LAN once, to ff:ff:ff:ff:ff:ff with the
// ghost as destination IP; no RST and no second SYN-ACK anywhere; the other
// servers' filters count the drops.
func TestBroadcastModeDispatch(t *testing.T) {
	const nClients = 64
	tp := broadcastTopo(t, 4, nClients)
	clients := tp.clientSources(nClients)
	want := tp.lookup(clients)

	capLAN := tp.rtr.Capture("br-lan", "ip")
	capUp := tp.rtr.Capture("u-c", "ip")
	var capSrv []*harness.Capture
	for _, s := range tp.servers {
		capSrv = append(capSrv, s.ns.Capture("e0", "ip"))
	}
	tp.askAll(clients, want)
	for _, c := range clients {
		tp.cli.Run("ping", "-c", "1", "-W", "1", "-I", c, ghostAddr)
	}
	all := harness.StopAll(append([]*harness.Capture{capLAN, capUp}, capSrv...)...)
	lan, up := all[0], all[1]
	ghost := netip.MustParseAddr(ghostAddr)
	type key struct {
		src   netip.Addr
		id    uint16
		proto uint8
	}
	upCount, lanCount := map[key]int{}, map[key]int{}
	for _, p := range up {
		if p.Dst == ghost {
			upCount[key{p.Src, p.IPID, p.Proto}]++
		}
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}.String()
	for _, p := range lan {
		if p.Dst != ghost {
			continue
		}
		lanCount[key{p.Src, p.IPID, p.Proto}]++
		if p.DstMAC.String() != bcast {
			t.Errorf("ghost packet on the LAN to %s, want %s: %v", p.DstMAC, bcast, p)
		}
	}
	for k, n := range upCount {
		if lanCount[k] != n {
			t.Errorf("packet %v: %d upstream, %d on the LAN", k, n, lanCount[k])
		}
	}
	// Exactly one server answers each client; no RST, no second SYN-ACK.
	synacks := map[string]map[int]bool{}
	pingFrom := map[string]map[int]bool{}
	for i, pkts := range all[2:] {
		for _, p := range pkts {
			if p.Src != ghost {
				continue
			}
			c := p.Dst.String()
			if p.Proto == harness.ProtoTCP && p.TCPFlags&harness.TCPFlagRST != 0 {
				t.Errorf("server %d sent a TCP RST: %v", i, p)
			}
			if conn, ok := synackOf(p); ok {
				if synacks[conn] == nil {
					synacks[conn] = map[int]bool{}
				}
				synacks[conn][i] = true
			}
			if p.IsICMPEcho(false) {
				if pingFrom[c] == nil {
					pingFrom[c] = map[int]bool{}
				}
				pingFrom[c][i] = true
			}
		}
	}
	for conn, servers := range synacks {
		if len(servers) != 1 {
			t.Errorf("connection %s got SYN-ACKs from servers %v, want one", conn, servers)
		}
	}
	if len(synacks) < nClients {
		t.Errorf("only %d connections were answered", len(synacks))
	}
	for _, c := range clients {
		if len(pingFrom[c]) != 1 || !pingFrom[c][want[c]] {
			t.Errorf("ping from %s answered by servers %v, want only server %d", c, pingFrom[c], want[c])
		}
	}
	for i := range tp.servers {
		fc := filterCounters(t, tp.nodeStatus(i))
		if fc["dropped"] == 0 || fc["accepted new"] == 0 {
			t.Errorf("server %d filter counters %v: want both accepted and dropped packets", i, fc)
		}
	}
	t.Logf("%d client->ghost packets, each broadcast once on the LAN; every client answered by its server alone", len(upCount))
}

// TestBroadcastPermanentEntryAndGuard: the appliance shows the second ghost's
// permanent broadcast entry, and a LAN host claiming the second ghost (ARP
// reply, gratuitous ARP) changes nothing and is counted.
func TestBroadcastPermanentEntryAndGuard(t *testing.T) {
	const nClients = 8
	tp := broadcastTopo(t, 2, nClients)
	clients := tp.clientSources(nClients)
	want := tp.lookup(clients)
	// The appliance announces the table to the LAN's broadcast address.
	capAnn := tp.servers[0].ns.Capture("e0", "udp port 9470")
	harness.WaitFor(t, 5*time.Second, "two table announcements at a server", func() bool {
		n := 0
		for _, p := range capAnn.Packets() {
			if p.Src.String() == lanAddr && p.Dst.String() == "10.0.0.255" && p.DstMAC.String() == "ff:ff:ff:ff:ff:ff" {
				n++
			}
		}
		return n >= 2
	})
	capAnn.Stop()
	row := regexp.MustCompile(`lan0\s+` + regexp.QuoteMeta(secondGhost) + `\s+ff:ff:ff:ff:ff:ff\s+PERMANENT`)
	route := regexp.MustCompile(regexp.QuoteMeta(ghostAddr+"/32") + `\s+` + regexp.QuoteMeta(secondGhost) + `\s+lan0`)
	if st := tp.status(); !route.MatchString(st) {
		t.Fatalf("no route %s/32 via %s on lan0 in:\n%s", ghostAddr, secondGhost, st)
	}
	if st := tp.status(); !row.MatchString(neighborRows(st)) {
		t.Fatalf("no permanent ff:ff:ff:ff:ff:ff entry for %s in:\n%s", secondGhost, st)
	}
	liar := tp.servers[1]
	sg := netip.MustParseAddr(secondGhost)
	bc := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	appMAC := appMACFromStatus(t, tp.status(), "lan0")
	sendARP(t, liar.ns, "e0", 2, appMAC, liar.mac, sg, appMAC, netip.MustParseAddr(lanAddr))
	sendARP(t, liar.ns, "e0", 1, bc, liar.mac, sg, net.HardwareAddr{0, 0, 0, 0, 0, 0}, sg)
	harness.WaitFor(t, 5*time.Second, "2 rejected ARP claims in status", func() bool {
		return strings.Contains(tp.status(), "arp_claims_dropped=2 ")
	})
	if st := tp.status(); !row.MatchString(neighborRows(st)) {
		t.Fatalf("the permanent entry changed after the claims:\n%s", st)
	}
	res := peerResults(tp.cli.MustRun(tp.peer, "udp", "-dst", ghostAddr+":9000", "-src", strings.Join(clients, ",")))
	for _, c := range clients {
		if exp := fmt.Sprintf("s%d %s", want[c], c); res[c] != exp {
			t.Errorf("after the claims, UDP from %s got %q, want %q", c, res[c], exp)
		}
	}
}

// TestBroadcastWithoutFilterDuplicates: with server 0's filter removed, it
// answers clients that are not its own, so clients get two answers: the
// filter is what makes broadcast mode work, not the topology.
func TestBroadcastWithoutFilterDuplicates(t *testing.T) {
	const nClients = 16
	tp := broadcastTopo(t, 2, nClients)
	clients := tp.clientSources(nClients)
	want := tp.lookup(clients)
	tp.servers[0].ns.MustRun("nft", "delete", "table", "ip", "ghost_web") // test only: the filter is gone
	capCli := tp.cli.Capture("c0", "udp port 9000")
	tp.cli.MustRun(tp.peer, "udp", "-dst", ghostAddr+":9000", "-src", strings.Join(clients, ","))
	pkts := capCli.Stop()
	replies := map[string]int{}
	for _, p := range pkts {
		if p.Src.String() == ghostAddr {
			replies[p.Dst.String()]++
		}
	}
	dup := 0
	for _, c := range clients {
		if want[c] != 0 {
			if replies[c] < 2 {
				t.Errorf("client %s (server 1's) got %d answers with server 0 unfiltered, want 2", c, replies[c])
			} else {
				dup++
			}
		} else if replies[c] != 1 {
			t.Errorf("client %s (server 0's) got %d answers, want 1", c, replies[c])
		}
	}
	if dup == 0 {
		t.Fatal("no duplicate answers: the test proves nothing")
	}
	t.Logf("%d clients got duplicate answers once server 0's filter was removed", dup)
}
