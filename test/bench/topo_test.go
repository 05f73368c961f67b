package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/test/harness"
)

// The standard two-armed topology (harness.TwoArmed, as in test/e2e and the demo), built
// once per mode (see doc.go for the picture). Namespaces are "gr-k-..." for the kernel reference and "gr-g-..." for
// ghostrouter, so both live side by side in one run and the rounds can alternate.
const (
	clientAddr = harness.ClientAddr
	upAddr     = harness.UpAddr
	lanAddr    = harness.LANAddr
	ghostAddr  = harness.GhostAddr
	seed       = 0x5eed
	nServers   = 3
	nSources   = 16 // extra client addresses, 198.51.100.100 and up, for HTTP

	iperfPort      = "5201" // iperf3 on every server, bound to the ghost
	iperfPlainPort = "5202" // iperf3 on server 0, any address: plain routing
)

// Mode is what routes in the rtr namespace.
type Mode string

const (
	Kernel    Mode = "kernel"
	Appliance Mode = "ghostrouter"
	// BareTAP is test/cmd/tapfwd, the least a router over TAPs must do (a read, a header
	// rewrite, a write per frame): the baseline any appliance built on TAPs starts from on
	// this machine. It runs the UDP and web workloads (GHOSTROUTER_BENCH_BARE=0: not at all).
	BareTAP Mode = "bare-tap"
)

// Kernel dispatching to the servers' MACs, two ways (GHOSTROUTER_BENCH_KERNEL_DISPATCH).
const (
	// dispatchMAC: a route GHOST/32 via server 0, and an nftables netdev egress chain on
	// br-lan that rewrites the destination MAC of every packet to the ghost with
	// `ether daddr set jhash ip saddr mod N seed S map { 0 : MAC0, ... }`: the kernel-side
	// peer of routing mode, one rule choosing the server's MAC.
	dispatchMAC = "mac"
	// dispatchFwmark: `meta mark set jhash ip saddr mod N seed S offset 1` at prerouting,
	// `ip rule fwmark K table 100+K`, and `GHOST/32 via SERVER(K-1)` in table 100+K.
	dispatchFwmark = "fwmark"
)

type topo struct {
	t       *testing.T
	h       *harness.H
	mode    Mode
	how     string // kernel dispatch: dispatchMAC or dispatchFwmark
	cli     *harness.NS
	rtr     *harness.NS
	servers []*server
	sources []netip.Addr

	bin, peer     string
	cfgPath, sock string
	app           *harness.Proc // the appliance (Appliance mode)
}

type server struct {
	ns   *harness.NS
	addr netip.Addr
	mac  net.HardwareAddr
}

// newTopo builds the topology for mode, starts the servers (HTTP on 80, iperf3) and, in
// Appliance mode, the appliance; then checks that every client source is answered by the
// server the dispatcher should pick.
func newTopo(t *testing.T, h *harness.H, mode Mode, how string) *topo {
	t.Helper()
	tp := &topo{t: t, h: h, mode: mode, how: how}
	tp.bin = h.Build("cmd/ghostrouter")
	tp.peer = h.Build("test/cmd/peer")
	p := map[Mode]string{Kernel: "k-", Appliance: "g-", BareTAP: "b-"}[mode]
	built := h.TwoArmed(harness.TopoOptions{Prefix: p, Servers: nServers, ClientAddrs: nSources})
	tp.cli, tp.rtr, tp.sources = built.Cli, built.Rtr, built.Clients
	for _, bs := range built.Servers {
		s := &server{ns: bs.NS, addr: bs.Addr, mac: bs.MAC}
		// The ghost on lo and the ARP and rp_filter sysctls (what ghostnode setup does).
		s.ns.AddrAdd("lo", ghostAddr+"/32")
		for _, kv := range [][2]string{
			{"net.ipv4.conf.all.arp_ignore", "1"},
			{"net.ipv4.conf.all.arp_announce", "2"},
			{"net.ipv4.conf.all.rp_filter", "0"},
			{"net.ipv4.conf.e0.rp_filter", "0"},
		} {
			s.ns.Sysctl(kv[0], kv[1])
		}
		tp.servers = append(tp.servers, s)
	}

	tp.startServers()
	switch mode {
	case Kernel:
		tp.kernelRouter()
	case Appliance:
		tp.startAppliance()
	case BareTAP:
		tp.startBare()
	}
	tp.checkDispatch()
	return tp
}

// kernelRouter makes the rtr namespace a Linux router that dispatches the ghost.
func (tp *topo) kernelRouter() {
	tp.t.Helper()
	r := tp.rtr
	r.AddrAdd("br-up", upAddr+"/24")
	r.AddrAdd("br-lan", lanAddr+"/24")
	r.Sysctl("net.ipv4.ip_forward", "1")
	var rules string
	switch tp.how {
	case dispatchMAC:
		r.MustRun("ip", "route", "add", ghostAddr+"/32", "via", tp.servers[0].addr.String(), "dev", "br-lan")
		var m []string
		for i, s := range tp.servers {
			m = append(m, fmt.Sprintf("%d : %s", i, s.mac))
		}
		rules = fmt.Sprintf(`table netdev ghostbench {
	chain lan_egress {
		type filter hook egress device "br-lan" priority filter; policy accept;
		ip daddr %s ether daddr set jhash ip saddr mod %d seed %#x map { %s }
	}
}
`, ghostAddr, nServers, seed, strings.Join(m, ", "))
	case dispatchFwmark:
		for i, s := range tp.servers {
			table := strconv.Itoa(101 + i)
			r.MustRun("ip", "rule", "add", "fwmark", strconv.Itoa(1+i), "table", table)
			r.MustRun("ip", "route", "add", ghostAddr+"/32", "via", s.addr.String(), "dev", "br-lan", "table", table)
		}
		rules = fmt.Sprintf(`table ip ghostbench {
	chain pre {
		type filter hook prerouting priority mangle; policy accept;
		ip daddr %s meta mark set jhash ip saddr mod %d seed %#x offset 1
	}
}
`, ghostAddr, nServers, seed)
	default:
		tp.t.Fatalf("kernel dispatch %q: want %q or %q", tp.how, dispatchMAC, dispatchFwmark)
	}
	path := filepath.Join(tp.h.ArtifactDir(), "kernel-dispatch.nft")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		tp.t.Fatal(err)
	}
	r.MustRun("nft", "-f", path)
}

// applianceConfig is the appliance's configuration: the e2e topology's two arms and one
// routing-mode cluster over the servers, no health checks (no traffic of its own).
func (tp *topo) applianceConfig() string {
	tp.sock = filepath.Join(tp.h.ArtifactDir(), "ctl.sock")
	var b strings.Builder
	b.WriteString(harness.TwoArmedConfig(tp.sock, "info"))
	fmt.Fprintf(&b, `
[[cluster]]
name = "web"
address = %q
interface = "lan0"
mode = "routing"
hash = "jhash"
seed = %#x
buckets = 4096
`, ghostAddr, seed)
	for i, s := range tp.servers {
		fmt.Fprintf(&b, "\n  [[cluster.server]]\n  id = %d\n  address = %q\n", i, s.addr)
	}
	return b.String()
}

// startAppliance runs ghostrouter in the rtr namespace and waits for its control socket.
func (tp *topo) startAppliance() {
	tp.t.Helper()
	tp.cfgPath = filepath.Join(tp.h.ArtifactDir(), "ghostrouter.toml")
	if err := os.WriteFile(tp.cfgPath, []byte(tp.applianceConfig()), 0o644); err != nil {
		tp.t.Fatal(err)
	}
	tp.app = tp.rtr.Start("ghostrouter", tp.bin, "run", "-c", tp.cfgPath)
	harness.WaitFor(tp.t, 15*time.Second, "the appliance's control socket", func() bool {
		if tp.app.Exited() {
			tp.t.Fatalf("the appliance exited:\n%s", tp.app.Log())
		}
		_, err := tp.rtr.Run(tp.bin, "status", "--socket", tp.sock)
		return err == nil
	})
}

// startBare runs test/cmd/tapfwd in the rtr namespace, on the appliance's two arms.
func (tp *topo) startBare() {
	tp.t.Helper()
	args := []string{tp.h.Build("test/cmd/tapfwd"),
		"-link", "up0=" + upAddr + "/24@br-up", "-link", "lan0=" + lanAddr + "/24@br-lan",
		"-ghost", ghostAddr, "-seed", strconv.Itoa(seed)}
	for _, s := range tp.servers {
		args = append(args, "-server", s.addr.String()+"="+s.mac.String())
	}
	tp.app = tp.rtr.Start("tapfwd", args...)
	tp.app.WaitForLog("ready", 10*time.Second)
}

// startServers runs, on every server, the test peer's HTTP server on port 80 and an
// iperf3 server bound to the ghost (UDP answers must come from the ghost); on server 0
// also an iperf3 server on any address, for plain routing.
func (tp *topo) startServers() {
	tp.t.Helper()
	var procs []*harness.Proc
	for i, s := range tp.servers {
		name := fmt.Sprintf("%s-s%d", tp.mode, i)
		procs = append(procs,
			s.ns.Start("peer-"+name, tp.peer, "serve", "-name", fmt.Sprintf("s%d", i), "-http", ":80", "-lifetime", "40m"),
			s.ns.Start("iperf3-"+name, "iperf3", "-s", "-B", ghostAddr, "-p", iperfPort, "--forceflush", "--rcv-timeout", "10000"))
		if i == 0 {
			procs = append(procs, s.ns.Start("iperf3-plain-"+name, "iperf3", "-s", "-p", iperfPlainPort, "--forceflush", "--rcv-timeout", "10000"))
		}
	}
	for _, p := range procs {
		if strings.HasPrefix(filepath.Base(p.LogPath()), "peer-") {
			p.WaitForLog("ready", 10*time.Second)
		} else {
			p.WaitForLog("Server listening", 10*time.Second)
		}
	}
}

// expected maps each client source to the server that should answer it: for the kernel,
// bucket = jhash(src, seed) scaled to N (what nft's `jhash ... mod N` computes: the hash
// contract in package dispatch/core's documentation); for the appliance, what `ghostrouter lookup` says.
func (tp *topo) expected() map[netip.Addr]int {
	tp.t.Helper()
	want := map[netip.Addr]int{}
	if tp.mode != Appliance {
		for _, a := range tp.sources {
			want[a] = int(core.Bucket(core.JHash(a, seed), nServers))
		}
		return want
	}
	args := []string{tp.bin, "lookup", "-c", tp.cfgPath, "--cluster", "web"}
	for _, a := range tp.sources {
		args = append(args, a.String())
	}
	out := tp.rtr.MustRun(args...)
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		a, err1 := netip.ParseAddr(f[0])
		id, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			tp.t.Fatalf("ghostrouter lookup: line %q", line)
		}
		want[a] = id
	}
	if len(want) != len(tp.sources) {
		tp.t.Fatalf("ghostrouter lookup answered %d of %d sources:\n%s", len(want), len(tp.sources), out)
	}
	return want
}

// checkDispatch sends one HTTP request from every client source to the ghost (retrying,
// bounded, until all are answered: ARP and the appliance's server MACs settle first) and
// checks each was answered by the expected server, and that more than one server answered.
func (tp *topo) checkDispatch() {
	tp.t.Helper()
	want := tp.expected()
	var srcs []string
	for _, a := range tp.sources {
		srcs = append(srcs, a.String())
	}
	var got map[string]string
	var out string
	harness.WaitFor(tp.t, 20*time.Second, string(tp.mode)+": every client source answered through the ghost", func() bool {
		out, _ = tp.cli.Run(tp.peer, "http", "-url", "http://"+ghostAddr+"/", "-src", strings.Join(srcs, ","), "-timeout", "1s")
		got = map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.SplitN(line, " ", 3); len(f) == 3 && f[1] == "OK" {
				got[f[0]] = strings.TrimSpace(f[2])
			}
		}
		return len(got) == len(srcs)
	})
	seen := map[int]bool{}
	for _, a := range tp.sources {
		exp := fmt.Sprintf("s%d %s", want[a], a)
		if got[a.String()] != exp {
			tp.t.Fatalf("%s (%s dispatch): %s answered %q, want %q\n%s", tp.mode, tp.how, a, got[a.String()], exp, out)
		}
		seen[want[a]] = true
	}
	if len(seen) < 2 {
		tp.t.Fatalf("%s: %d sources all map to one server: the check proves nothing", tp.mode, len(tp.sources))
	}
	tp.t.Logf("%s: %d client sources answered by the predicted server (servers %v)", tp.mode, len(tp.sources), seen)
}
