package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// Scale-out: two active appliances announce the ghost to an upstream router
// (BIRD 2, the real thing) over BGP, and the upstream spreads flows over both
// with ECMP (L4 hash). The servers answer clients directly through the
// upstream router (their default gateway), so a flow that moves from one
// appliance to the other keeps its server as long as both appliances compute
// the same table.
//
//	cli ── c0 ── c-up [up: BIRD, 192.0.2.1, ECMP] u0 ── u-up ┐              ┌ upa [appliance A] lana ┐
//	192.0.2.10 + clients          198.51.100.254      br-up ┤ (rtr)  br-lan ┤                        │
//	                              10.0.0.254 l0 ── l-up ─────────────────────┤ upb [appliance B] lanb ┤
//	                                                                        └ l-sN ── e0 srvN 10.0.0.1N + ghost
type ecmpTopo struct {
	h            *harness.H
	t            *testing.T
	bin, peer    string
	cli, up, rtr *harness.NS
	servers      []*server
	bird         *harness.Proc
	birdSock     string
	apps         map[string]*ecmpApp
}

type ecmpApp struct {
	name, cfg, sock string
	upAddr          string
	proc            *harness.Proc
}

const (
	ecmpGhost   = "203.0.113.10"
	ecmpUpRtr   = "198.51.100.254"
	ecmpServers = 4
)

func newECMPTopo(t *testing.T) *ecmpTopo {
	harness.RequireRoot(t, "ip", "tcpdump", "bird", "birdc", "iperf3")
	h := harness.New(t)
	e := &ecmpTopo{h: h, t: t, apps: map[string]*ecmpApp{}}
	e.bin, e.peer = h.Build("cmd/ghostrouter"), h.Build("test/cmd/peer")
	e.cli, e.up, e.rtr = h.NS("cli"), h.NS("up"), h.NS("rtr")
	h.Veth(e.cli, "c0", e.up, "c-up")
	h.Veth(e.up, "u0", e.rtr, "u-up")
	h.Veth(e.up, "l0", e.rtr, "l-up")
	ports := []string{"l-up"}
	for i := range ecmpServers {
		s := &server{ns: h.NS(fmt.Sprintf("srv%d", i)), name: fmt.Sprintf("s%d", i), addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i)})}
		port := fmt.Sprintf("l-s%d", i)
		h.Veth(e.rtr, port, s.ns, "e0")
		ports = append(ports, port)
		s.ns.AddrAdd("e0", s.addr.String()+"/24")
		s.ns.AddrAdd("lo", ecmpGhost+"/32")
		for _, k := range []string{"all", "e0"} {
			s.ns.Sysctl("net.ipv4.conf."+k+".arp_ignore", "1")
			s.ns.Sysctl("net.ipv4.conf."+k+".arp_announce", "2")
		}
		s.ns.MustRun("ip", "route", "add", "default", "via", "10.0.0.254")
		e.servers = append(e.servers, s)
	}
	e.rtr.Bridge("br-up", "u-up")
	e.rtr.Bridge("br-lan", ports...)
	e.up.AddrAdd("c-up", "192.0.2.1/24")
	e.up.AddrAdd("u0", ecmpUpRtr+"/24")
	e.up.AddrAdd("l0", "10.0.0.254/24")
	e.up.Sysctl("net.ipv4.ip_forward", "1")
	e.up.Sysctl("net.ipv4.fib_multipath_hash_policy", "1") // L4: flows, not hosts, spread
	e.cli.AddrAdd("c0", "192.0.2.10/24")
	for _, c := range ecmpClients(32) {
		e.cli.AddrAdd("c0", c+"/32")
	}
	e.cli.MustRun("ip", "route", "add", "default", "via", "192.0.2.1")
	return e
}

func ecmpClients(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("192.0.2.%d", 100+i)
	}
	return out
}

// ecmpExpected is the server the patent's function (hash = "modulo") sends
// client c to with every server up: CA mod N, written here from the
// contract, independent of the appliance's code.
func ecmpExpected(c string) int {
	a := netip.MustParseAddr(c).As4()
	return int(binary.BigEndian.Uint32(a[:]) % ecmpServers)
}

// startBird runs BIRD 2 in the upstream namespace: passive eBGP sessions to
// both appliances, multipath merged into the kernel's table.
func (e *ecmpTopo) startBird() {
	dir := e.h.ArtifactDir()
	e.birdSock = filepath.Join(dir, "bird.ctl")
	conf := fmt.Sprintf(`
router id %[1]s;
log stderr all;
protocol device { scan time 1; }
protocol kernel {
  ipv4 { import none; export all; };
  merge paths on;
}
template bgp appliance {
  local %[1]s as 65000;
  passive on;
  error wait time 1, 5;   # readmit a restarted appliance at once (default 60 s)
  hold time 3;
  ipv4 { import all; export none; };
}
protocol bgp ga from appliance { neighbor 198.51.100.1 as 65010; }
protocol bgp gb from appliance { neighbor 198.51.100.2 as 65010; }
`, ecmpUpRtr)
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.bird = e.up.Start("bird", "bird", "-f", "-c", path, "-s", e.birdSock, "-P", filepath.Join(dir, "bird.pid"))
	harness.WaitFor(e.t, 10*time.Second, "BIRD's control socket", func() bool {
		if e.bird.Exited() {
			e.t.Fatalf("bird exited:\n%s", e.bird.Log())
		}
		_, err := e.up.Run("birdc", "-s", e.birdSock, "show", "status")
		return err == nil
	})
}

// appConfig is appliance letter x's configuration (A: .1, B: .2), with
// server 1 at weight w1.
func (e *ecmpTopo) appConfig(x string, w1 int) *ecmpApp {
	n := map[string]int{"a": 1, "b": 2}[x]
	app := e.apps[x]
	if app == nil {
		app = &ecmpApp{name: "app-" + x, cfg: filepath.Join(e.h.ArtifactDir(), "ghostrouter-"+x+".toml"),
			sock: filepath.Join(e.h.ArtifactDir(), "ctl-"+x+".sock"), upAddr: fmt.Sprintf("198.51.100.%d", n)}
		e.apps[x] = app
	}
	var b strings.Builder
	fmt.Fprintf(&b, `[router]
log_level = "debug"
control_socket = %q
metrics_address = ""

[[interface]]
name = "up%[2]s"
addresses = ["198.51.100.%[3]d/24"]
bridge = "br-up"

[[interface]]
name = "lan%[2]s"
addresses = ["10.0.0.%[3]d/24"]
bridge = "br-lan"

[[route]]
to = "0.0.0.0/0"
via = %[4]q

[bgp]
asn = 65010
router_id = "198.51.100.%[3]d"
hold_time = "3s"

  [[bgp.neighbor]]
  address = %[4]q
  asn = 65000

[[cluster]]
name = "web"
address = %[5]q
interface = "lan%[2]s"
mode = "routing"
hash = "modulo"

  [cluster.health]
  check = "tcp"
  port = 80
  interval = "200ms"
  timeout = "150ms"
  rise = 1
  fall = 2
`, app.sock, x, n, ecmpUpRtr, ecmpGhost)
	for i, s := range e.servers {
		w := 1
		if i == 1 {
			w = w1
		}
		fmt.Fprintf(&b, "\n  [[cluster.server]]\n  id = %d\n  address = %q\n  weight = %d\n", i, s.addr, w)
	}
	if err := os.WriteFile(app.cfg, []byte(b.String()), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return app
}

func (e *ecmpTopo) startApp(x string) *ecmpApp {
	e.t.Helper()
	app := e.appConfig(x, 1)
	app.proc = e.rtr.Start(fmt.Sprintf("%s-%d", app.name, time.Now().UnixNano()), e.bin, "run", "-c", app.cfg)
	harness.WaitFor(e.t, 15*time.Second, app.name+"'s control socket", func() bool {
		if app.proc.Exited() {
			e.t.Fatalf("%s exited:\n%s", app.name, app.proc.Log())
		}
		_, err := e.rtr.Run(e.bin, "status", "--socket", app.sock)
		return err == nil
	})
	return app
}

// appStatus is the part of `status --json` this test reads.
type appStatus struct {
	Clusters []struct {
		TableFingerprint string `json:"table_fingerprint"`
		Servers          []struct {
			Packets uint64 `json:"packets"`
		} `json:"servers"`
	} `json:"clusters"`
	BGP []struct {
		State       string   `json:"state"`
		Announced   []string `json:"announced"`
		Established uint64   `json:"established"`
		UptimeSec   float64  `json:"uptime_seconds"`
	} `json:"bgp"`
}

func (e *ecmpTopo) status(app *ecmpApp) appStatus {
	e.t.Helper()
	var st appStatus
	out := e.rtr.MustRun(e.bin, "status", "--json", "--socket", app.sock)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func (s appStatus) packets() uint64 {
	var n uint64
	for _, c := range s.Clusters {
		for _, sv := range c.Servers {
			n += sv.Packets
		}
	}
	return n
}

var nexthopRE = regexp.MustCompile(`nexthop via (\S+)|^\S+ via (\S+)`)

// nextHops returns the upstream kernel's next hops for the ghost (the
// routes BIRD installed), sorted as the kernel lists them.
func (e *ecmpTopo) nextHops() []string {
	out, _ := e.up.Run("ip", "route", "show", ecmpGhost+"/32")
	var hops []string
	for _, line := range strings.Split(out, "\n") {
		if m := nexthopRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			hops = append(hops, m[1]+m[2])
		}
	}
	return hops
}

func (e *ecmpTopo) waitHops(want []string, within time.Duration, what string) time.Duration {
	e.t.Helper()
	start := time.Now()
	harness.WaitFor(e.t, within, what, func() bool {
		got := e.nextHops()
		return strings.Join(got, ",") == strings.Join(want, ",")
	})
	return time.Since(start)
}

// askAll checks that every client is answered by the server the contract
// predicts; it returns how many answered.
func (e *ecmpTopo) askAll(clients []string) {
	e.t.Helper()
	res := peerResults(e.cli.MustRun(e.peer, "http", "-url", "http://"+ecmpGhost+"/", "-src", strings.Join(clients, ","), "-parallel", "8"))
	for _, c := range clients {
		want := fmt.Sprintf("s%d %s", ecmpExpected(c), c)
		if res[c] != want {
			e.t.Errorf("HTTP from %s: got %q, want %q (CA mod %d)", c, res[c], want, ecmpServers)
		}
	}
}

// longLived starts one iperf3 flow per server from a client it owns (two per
// server), each to its own iperf3 server port; wait reports the failures.
func (e *ecmpTopo) longLived(secs int) (wait func() []string) {
	e.t.Helper()
	type flow struct {
		src  string
		port int
		p    *harness.Proc
	}
	var flows []flow
	perServer := map[int]int{}
	for _, c := range ecmpClients(32) {
		s := ecmpExpected(c)
		if perServer[s] == 2 {
			continue
		}
		perServer[s]++
		flows = append(flows, flow{src: c, port: 5200 + perServer[s]})
	}
	for i := range flows {
		f := &flows[i]
		f.p = e.cli.Start(fmt.Sprintf("iperf-%s-%d", f.src, time.Now().UnixNano()), "iperf3", "-c", ecmpGhost, "-B", f.src,
			"-p", fmt.Sprint(f.port), "-t", fmt.Sprint(secs), "-b", "2M", "--connect-timeout", "3000", "--forceflush")
	}
	// Every flow is connected before the caller stops an appliance: a flow
	// still connecting is not a long-lived connection (under load its SYN
	// may still be in flight through the appliance about to be killed).
	harness.WaitFor(e.t, 10*time.Second, "every long-lived flow connected", func() bool {
		for _, f := range flows {
			if !strings.Contains(f.p.Log(), " connected to ") {
				return false
			}
		}
		return true
	})
	return func() []string {
		var bad []string
		for _, f := range flows {
			if err := f.p.Wait(time.Duration(secs+20) * time.Second); err != nil {
				bad = append(bad, fmt.Sprintf("%s:%d: %v\n%s", f.src, f.port, err, f.p.Log()))
			}
		}
		return bad
	}
}

func (e *ecmpTopo) startServers() {
	for _, s := range e.servers {
		s.peer = s.ns.Start("peer-"+s.name, e.peer, "serve", "-name", s.name, "-http", ":80", "-udp", ":9000", "-lifetime", "5m")
		for _, port := range []string{"5201", "5202"} {
			s.ns.Start("iperf-"+s.name+"-"+port, "iperf3", "-s", "-p", port)
		}
	}
	for _, s := range e.servers {
		s.peer.WaitForLog("ready", 10*time.Second)
	}
}

// TestECMPScaleOutBGP: two appliances behind an upstream router with
// multipath, announced with BGP to BIRD.
func TestECMPScaleOutBGP(t *testing.T) {
	e := newECMPTopo(t)
	e.startServers()
	e.startBird()
	a, b := e.startApp("a"), e.startApp("b")
	both := []string{a.upAddr, b.upAddr}

	// 1. Both appliances peer with BIRD; the upstream kernel has both next hops.
	el := e.waitHops(both, 20*time.Second, "both appliances as next hops of the ghost in the upstream kernel")
	t.Logf("both next hops installed %.1fs after the second appliance started", el.Seconds())
	for _, app := range []*ecmpApp{a, b} {
		st := e.status(app)
		if len(st.BGP) != 1 || st.BGP[0].State != "Established" || strings.Join(st.BGP[0].Announced, ",") != ecmpGhost+"/32" {
			t.Fatalf("%s bgp status %+v", app.name, st.BGP)
		}
	}
	// Both compute the same table: status shows the same fingerprint.
	harness.WaitFor(t, 5*time.Second, "the same table fingerprint on both appliances", func() bool {
		fa, fb := e.status(a).Clusters[0].TableFingerprint, e.status(b).Clusters[0].TableFingerprint
		return fa != "" && fa == fb
	})
	birdProto := e.up.MustRun("birdc", "-s", e.birdSock, "show", "route", "for", ecmpGhost, "all")
	if !strings.Contains(birdProto, "BGP.as_path: 65010") || !strings.Contains(birdProto, "BGP.next_hop: 198.51.100.1") || !strings.Contains(birdProto, "BGP.next_hop: 198.51.100.2") {
		t.Errorf("BIRD's routes for the ghost:\n%s", birdProto)
	}

	// 2. Many clients: flows reach both appliances, every client is answered
	// by the server the contract predicts, whichever appliance carried it.
	clients := ecmpClients(32)
	pa, pb := e.status(a).packets(), e.status(b).packets()
	e.askAll(clients)
	da, db := e.status(a).packets()-pa, e.status(b).packets()-pb
	t.Logf("dispatched packets: appliance A %d, appliance B %d", da, db)
	if da == 0 || db == 0 {
		t.Errorf("flows did not reach both appliances: A %d packets, B %d", da, db)
	}

	// 3a. SIGTERM: A withdraws at once; flows move to B and keep their
	// servers; long-lived connections survive.
	capA := e.rtr.Capture("upa", "tcp and (port 5201 or port 5202)")
	wait := e.longLived(6)
	harness.WaitFor(t, 5*time.Second, "long-lived flows through A", func() bool { return len(capA.Packets()) > 20 })
	if err := a.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	el = e.waitHops([]string{b.upAddr}, 2*time.Second, "A's next hop withdrawn after SIGTERM")
	t.Logf("SIGTERM: A's next hop gone after %dms", el.Milliseconds())
	if err := a.proc.Wait(10 * time.Second); err != nil {
		t.Errorf("appliance A after SIGTERM: %v", err)
	}
	throughA := map[string]bool{}
	for _, p := range capA.Stop() {
		if p.IsIP() && p.Dst.String() == ecmpGhost {
			throughA[p.Src.String()] = true
		}
	}
	if bad := wait(); len(bad) > 0 {
		t.Errorf("long-lived connections broken by A's SIGTERM:\n%s", strings.Join(bad, "\n"))
	}
	if len(throughA) == 0 {
		t.Errorf("no long-lived flow went through A before it stopped; the test proved nothing")
	}
	t.Logf("long-lived flows that A carried before SIGTERM and B after: %d", len(throughA))
	e.askAll(clients)

	// 3b. SIGKILL: B dies without a word; BIRD drops it within the hold time.
	a = e.startApp("a")
	e.waitHops(both, 20*time.Second, "A back as a next hop")
	capB := e.rtr.Capture("upb", "tcp and (port 5201 or port 5202)")
	wait = e.longLived(10)
	harness.WaitFor(t, 5*time.Second, "long-lived flows through B", func() bool { return len(capB.Packets()) > 20 })
	if err := b.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	el = e.waitHops([]string{a.upAddr}, 6*time.Second, "B's next hop withdrawn after SIGKILL (hold time 3s)")
	t.Logf("SIGKILL: B's next hop gone after %dms (hold time 3s)", el.Milliseconds())
	if el > 4*time.Second {
		t.Errorf("B withdrawn after %s, want within the 3 s hold time (plus BIRD's timer granularity)", el)
	}
	capB.Stop()
	if bad := wait(); len(bad) > 0 {
		t.Errorf("long-lived connections broken by B's SIGKILL:\n%s", strings.Join(bad, "\n"))
	}
	e.askAll(clients)
	b = e.startApp("b")
	e.waitHops(both, 20*time.Second, "B back as a next hop")

	// 4. Every server down: the ghost is withdrawn; one back: announced again.
	for _, s := range e.servers {
		s.peer.Signal(syscall.SIGTERM)
		s.peer.Wait(5 * time.Second)
	}
	el = e.waitHops(nil, 5*time.Second, "the ghost withdrawn with every server down")
	t.Logf("all servers down: ghost withdrawn after %dms", el.Milliseconds())
	s0 := e.servers[0]
	s0.peer = s0.ns.Start(fmt.Sprintf("peer-%s-%d", s0.name, time.Now().UnixNano()), e.peer, "serve", "-name", s0.name, "-http", ":80", "-lifetime", "5m")
	s0.peer.WaitForLog("ready", 10*time.Second)
	el = e.waitHops(both, 5*time.Second, "the ghost announced again with one server up")
	t.Logf("one server back: ghost announced again after %dms", el.Milliseconds())
	for _, s := range e.servers[1:] {
		s.peer = s.ns.Start(fmt.Sprintf("peer-%s-%d", s.name, time.Now().UnixNano()), e.peer, "serve", "-name", s.name, "-http", ":80", "-lifetime", "5m")
		s.peer.WaitForLog("ready", 10*time.Second)
	}

	// 5. A reload that changes a weight keeps the session up.
	before := e.status(a).BGP[0]
	birdBefore := birdSince(t, e, "ga")
	e.appConfig("a", 3)
	if out, err := e.rtr.Run(e.bin, "reload", "--socket", a.sock); err != nil || !strings.Contains(out, "reloaded") {
		t.Fatalf("reload: %v: %s", err, out)
	}
	time.Sleep(4 * time.Second) // longer than the hold time: a reset would show
	after := e.status(a).BGP[0]
	if after.Established != before.Established || after.State != "Established" || after.UptimeSec < before.UptimeSec+3 {
		t.Errorf("reload reset the session: before %+v, after %+v", before, after)
	}
	if birdAfter := birdSince(t, e, "ga"); birdAfter != birdBefore {
		t.Errorf("BIRD's session to A restarted across the reload: since %q, now %q", birdBefore, birdAfter)
	}
	if got := e.nextHops(); strings.Join(got, ",") != strings.Join(both, ",") {
		t.Errorf("next hops after reload: %v", got)
	}
}

// birdSince is the "since" column of BIRD's protocol, which restarts with
// the session.
func birdSince(t *testing.T, e *ecmpTopo, proto string) string {
	t.Helper()
	out := e.up.MustRun("birdc", "-s", e.birdSock, "show", "protocols", proto)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[0] == proto {
			if f[3] != "up" || f[5] != "Established" {
				t.Errorf("BIRD protocol %s: %s", proto, line)
			}
			return f[4]
		}
	}
	t.Fatalf("no protocol %s in:\n%s", proto, out)
	return ""
}
