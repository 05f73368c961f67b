package e2e

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// clusterConfig is a [[cluster]] section for the topology's servers.
func (tp *topo) clusterConfig(mode, hash string, extra string) string {
	return tp.clusterConfigN(mode, hash, extra, len(tp.servers))
}

// clusterConfigN is clusterConfig with only the first n servers as members.
func (tp *topo) clusterConfigN(mode, hash string, extra string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
[[cluster]]
name = "web"
address = %q
interface = "lan0"
mode = %q
hash = %q
seed = 0x5eed
buckets = 4096
%s`, ghostAddr, mode, hash, extra)
	for i, s := range tp.servers[:n] {
		fmt.Fprintf(&b, `
  [[cluster.server]]
  id = %d
  address = %q
`, i, s.addr)
	}
	return b.String()
}

// setupNodes runs `ghostnode setup` on every server for cluster "web" of the
// appliance's configuration: the ghost as a secondary address, the ARP and
// rp_filter sysctls, and in broadcast mode the server's filter.
func (tp *topo) setupNodes() {
	tp.t.Helper()
	tp.setupNodesN(len(tp.servers))
}

// setupNodesN runs `ghostnode setup` on the first n servers.
func (tp *topo) setupNodesN(n int) {
	tp.t.Helper()
	if tp.node == "" {
		tp.node = tp.h.Build("cmd/ghostnode")
	}
	for i, s := range tp.servers[:n] {
		out := s.ns.MustRun(tp.node, "setup", "-c", tp.cfgPath, "--cluster", "web", "--id", strconv.Itoa(i), "--state-dir", tp.h.ArtifactDir()+"/node-"+s.name)
		if !strings.Contains(out, "cluster web: set up") && !strings.Contains(out, "already set up") {
			tp.t.Fatalf("ghostnode setup on %s did not report adding the ghost:\n%s", s.name, out)
		}
	}
}

// nodeStatus runs `ghostnode status` on server i.
func (tp *topo) nodeStatus(i int) string {
	s := tp.servers[i]
	return s.ns.MustRun(tp.node, "status", "--cluster", "web", "--state-dir", tp.h.ArtifactDir()+"/node-"+s.name)
}

// askAll asks the ghost once over HTTP and once over UDP from every client
// and checks that each is answered by the server want names.
func (tp *topo) askAll(clients []string, want map[string]int) {
	tp.t.Helper()
	httpRes := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://"+ghostAddr+"/", "-src", strings.Join(clients, ","), "-parallel", "8"))
	udpRes := peerResults(tp.cli.MustRun(tp.peer, "udp", "-dst", ghostAddr+":9000", "-src", strings.Join(clients, ","), "-parallel", "8"))
	for _, c := range clients {
		exp := fmt.Sprintf("s%d %s", want[c], c)
		if httpRes[c] != exp {
			tp.t.Errorf("HTTP from %s: got %q, want %q", c, httpRes[c], exp)
		}
		if udpRes[c] != exp {
			tp.t.Errorf("UDP from %s: got %q, want %q", c, udpRes[c], exp)
		}
	}
}

// lookup runs `ghostrouter lookup` for the clients and returns client ->
// server id.
func (tp *topo) lookup(clients []string) map[string]int {
	tp.t.Helper()
	args := append([]string{"lookup", "-c", tp.cfgPath, "--cluster", "web"}, clients...)
	out := tp.rtr.MustRun(append([]string{tp.bin}, args...)...)
	m := map[string]int{}
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		id, err := strconv.Atoi(f[2])
		if err != nil {
			tp.t.Fatalf("lookup line %q", line)
		}
		m[f[0]] = id
	}
	if len(m) != len(clients) {
		tp.t.Fatalf("lookup answered %d of %d clients:\n%s", len(m), len(clients), out)
	}
	return m
}

// TestRoutingModeDispatch: 4 servers, 64 client addresses plus pairs of
// addresses that share a bucket. The oracle is independent of the
// appliance: each server's kernel computes nftables' jhash bucket of every
// ghost packet it receives, which must be the hash contract's (a reference
// written in the test); every client's packets reach exactly one server;
// clients of one bucket reach the same server, whatever their address; the
// table is balanced (contract 2). Then, on the wire: every packet to the
// ghost appears once on the LAN, with the ghost as destination IP and that
// server's MAC; no server sees a ghost packet meant for another; no ICMP
// redirect anywhere. `lookup` (the offline tool) must agree with what the
// datapath did.
func TestRoutingModeDispatch(t *testing.T) {
	const nClients = 64
	tp := newTopo(t, topoOptions{servers: 4, clientAddrs: nClients})
	tp.startServers()
	withMetrics := strings.Replace(tp.baseConfig(), `metrics_address = ""`, `metrics_address = "127.0.0.1:9469"`, 1)
	tp.start(withMetrics + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	clients := tp.clientSources(nClients)
	used := map[string]bool{clientAddr: true, upAddr: true}
	for _, c := range clients {
		used[c] = true
	}
	pairs := bucketPairs(used, 0x5eed, 4096, 6)
	if len(pairs) < 2 {
		t.Fatalf("only %d pairs of addresses sharing a bucket", len(pairs))
	}
	for _, p := range pairs {
		for _, a := range p {
			tp.cli.AddrAdd("c0", a+"/32")
			clients = append(clients, a)
		}
	}
	for _, s := range tp.servers {
		recordKernelBuckets(t, s.ns, 0x5eed, 4096)
	}
	want := tp.lookup(clients)
	perServer := map[int]int{}
	for _, id := range want {
		perServer[id]++
	}
	if len(perServer) != 4 {
		t.Fatalf("%d clients map to only %d servers: %v", len(clients), len(perServer), perServer)
	}

	capLAN := tp.rtr.Capture("br-lan", "ip")
	capUp := tp.rtr.Capture("u-c", "ip")
	var capSrv []*harness.Capture
	for _, s := range tp.servers {
		capSrv = append(capSrv, s.ns.Capture("e0", "ip"))
	}
	tp.askAll(clients, want)
	all := harness.StopAll(append([]*harness.Capture{capLAN, capUp}, capSrv...)...)
	lan, up := all[0], all[1]
	macOf := map[int]string{}
	for i, s := range tp.servers {
		macOf[i] = s.mac.String()
	}
	ghost := netip.MustParseAddr(ghostAddr)

	// Each client->ghost packet seen upstream appears exactly once on the LAN.
	type key struct {
		src   netip.Addr
		id    uint16
		proto uint8
	}
	upCount := map[key]int{}
	upTotal := 0
	for _, p := range up {
		if p.Dst == ghost {
			upCount[key{p.Src, p.IPID, p.Proto}]++
			upTotal++
		}
	}
	lanCount := map[key]int{}
	for _, p := range lan {
		if p.ICMPType == 5 && p.Proto == harness.ProtoICMP {
			t.Errorf("ICMP redirect on the LAN: %v", p)
		}
		if p.Dst != ghost {
			continue
		}
		lanCount[key{p.Src, p.IPID, p.Proto}]++
		id, ok := want[p.Src.String()]
		if !ok {
			t.Errorf("LAN packet to the ghost from an unknown client: %v", p)
			continue
		}
		if p.DstMAC.String() != macOf[id] {
			t.Errorf("packet from %s to the ghost sent to MAC %s, want server %d's %s", p.Src, p.DstMAC, id, macOf[id])
		}
	}
	if len(upCount) < 2*nClients {
		t.Fatalf("only %d distinct client->ghost packets upstream", len(upCount))
	}
	for k, n := range upCount {
		if lanCount[k] != n {
			t.Errorf("packet %v: %d upstream, %d on the LAN (want the same)", k, n, lanCount[k])
		}
	}
	for _, p := range up {
		if p.Proto == harness.ProtoICMP && p.ICMPType == 5 {
			t.Errorf("ICMP redirect upstream: %v", p)
		}
	}
	for i, pkts := range all[2:] {
		for _, p := range pkts {
			if p.Dst == ghost && want[p.Src.String()] != i {
				t.Errorf("server %d captured a ghost packet meant for server %d: %v", i, want[p.Src.String()], p)
			}
		}
	}
	checkAgainstKernel(t, tp, clients, pairs, want)
	t.Logf("%d clients over 4 servers %v; %d client->ghost packets upstream, each once on the LAN to its server's MAC", len(clients), perServer, len(upCount))
	metrics := tp.rtr.MustRun("curl", "-sf", "http://127.0.0.1:9469/metrics")
	if !strings.Contains(metrics, fmt.Sprintf(`ghostrouter_cluster_packets_total{cluster="web"} %d`, upTotal)) {
		t.Errorf("metrics do not count the %d dispatched packets:\n%s", upTotal, metrics)
	}
	st := tp.status()
	if !strings.Contains(st, "cluster web: routing mode") {
		t.Errorf("status does not show the cluster:\n%s", st)
	}
	// Servers set up by ghostnode never claim the ghost, whatever the traffic.
	if !strings.Contains(st, "address conflicts (ARP claims of protected addresses, dropped)\n  none") {
		t.Errorf("address conflicts with correctly set-up servers:\n%s", st)
	}
}

// checkAgainstKernel checks the dispatch against the servers' kernels: each
// client reached exactly one server, in the bucket the hash contract gives
// (the reference and the kernel's nft jhash agree), every bucket went to one
// server, the pairs sharing a bucket went together, the table is balanced,
// and lookup names the server the datapath chose.
func checkAgainstKernel(t *testing.T, tp *topo, clients []string, pairs [][2]string, lookup map[string]int) {
	t.Helper()
	seenAt := map[netip.Addr][]int{}
	kbucket := map[netip.Addr]int{}
	for i, s := range tp.servers {
		for a, b := range kernelBuckets(t, s.ns) {
			seenAt[a] = append(seenAt[a], i)
			kbucket[a] = b
		}
	}
	serverOfBucket := map[int]int{}
	for _, c := range clients {
		a := netip.MustParseAddr(c)
		at := seenAt[a]
		if len(at) != 1 {
			t.Errorf("client %s reached servers %v, want exactly one", c, at)
			continue
		}
		if ref := refBucket4(a, 0x5eed, 4096); kbucket[a] != ref {
			t.Errorf("client %s: the kernel's jhash bucket %d, the contract's %d", c, kbucket[a], ref)
		}
		if o, ok := serverOfBucket[kbucket[a]]; ok && o != at[0] {
			t.Errorf("bucket %d went to servers %d and %d", kbucket[a], o, at[0])
		}
		serverOfBucket[kbucket[a]] = at[0]
		if lookup[c] != at[0] {
			t.Errorf("client %s reached server %d; lookup names %d", c, at[0], lookup[c])
		}
	}
	for _, p := range pairs {
		x, y := seenAt[netip.MustParseAddr(p[0])], seenAt[netip.MustParseAddr(p[1])]
		if len(x) != 1 || len(y) != 1 || x[0] != y[0] {
			t.Errorf("%s and %s share bucket %d but reached servers %v and %v", p[0], p[1], refBucket4(netip.MustParseAddr(p[0]), 0x5eed, 4096), x, y)
		}
	}
	d := tp.statusJSON()
	total := 0
	for _, c := range d.Clusters {
		for _, s := range c.Servers {
			total += s.Buckets
			if s.Buckets < 4096/4*99/100 || s.Buckets > 4096/4*101/100+1 {
				t.Errorf("server %d owns %d of 4096 buckets, want 1024 within 1%%", s.ID, s.Buckets)
			}
		}
	}
	if total != 4096 {
		t.Errorf("the servers own %d buckets, want 4096", total)
	}
}
