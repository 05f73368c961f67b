package harness

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tier 3 self-tests of the harness (root; under CI=true they fail instead of skipping).
// They use only Linux pieces, so they also pin the reference behaviour the ghostrouter
// e2e tests compare against: where behaviour is standard, the same scenario is also run
// against a Linux namespace router as the reference.

// TestLinuxRouterTopology builds
//
//	 gr-cli-S                       gr-rtr-S  (ip_forward=1)                         gr-srv0-S
//	┌───────────────────┐  veth  ┌──────────────────────────────────────┐  veth  ┌──────────────────┐
//	│ c0 198.51.100.2/24├────────┤r0 198.51.100.1/24   br0 10.0.0.1/24 ├─p0─────┤e0 10.0.0.11/24   │ peer serve s0
//	│ + .10-.17/32      │        │  capture r0         capture br0      │        └──────────────────┘
//	│ default via .1    │        │                          └──────────p1├────────┤e0 10.0.0.12/24   │ peer serve s1
//	└───────────────────┘        └──────────────────────────────────────┘        └──────────────────┘ gr-srv1-S
//
// (s1 also holds the ghost 203.0.113.10/32 on lo, which the router routes via 10.0.0.12),
// sends HTTP and UDP from 8 client sources to both servers and the ghost, pings with TTL 9
// and 1,
// then checks from the captures on both router sides that each forwarded packet crossed
// with TTL one less and everything else, addresses included, unchanged; that replies came
// from the right servers; that the router sent TTL exceeded and never a redirect. Then it
// checks the run's namespaces and artifacts are gone.
func TestLinuxRouterTopology(t *testing.T) {
	RequireRoot(t, "tcpdump", "ping")
	var suffix, artifacts string
	t.Run("run", func(t *testing.T) {
		h := New(t)
		suffix, artifacts = h.Suffix(), h.ArtifactDir()
		linuxRouterTopology(t, h)
	})
	if t.Failed() {
		return
	}
	names, err := listNS()
	if err != nil {
		t.Fatal(err)
	}
	if left := nsWithSuffix(names, suffix); len(left) > 0 {
		t.Errorf("after cleanup, namespaces with suffix %s remain: %v", suffix, left)
	}
	if out, _ := os.ReadFile(filepath.Join(ownerDir, suffix)); out != nil {
		t.Errorf("after cleanup, owner file of suffix %s remains", suffix)
	}
	if _, err := os.Stat(artifacts); os.Getenv(KeepEnv) != "1" && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a passing test, artifact dir %s: stat = %v, want not exist", artifacts, err)
	}
}

func linuxRouterTopology(t *testing.T, h *H) {
	peer := h.Build("test/cmd/peer")

	cli, rtr, srv0, srv1 := h.NS("cli"), h.NS("rtr"), h.NS("srv0"), h.NS("srv1")
	h.Veth(cli, "c0", rtr, "r0")
	h.Veth(rtr, "p0", srv0, "e0")
	h.Veth(rtr, "p1", srv1, "e0")
	rootBrNF, _ := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables") // root ns: read only
	rtr.Bridge("br0", "p0", "p1")
	if v, err := rtr.ReadSysctl("net.bridge.bridge-nf-call-iptables"); err == nil && v != "0" {
		t.Errorf("router bridge-nf-call-iptables = %s after Bridge, want 0", v)
	}
	if after, _ := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables"); string(after) != string(rootBrNF) {
		t.Errorf("root namespace bridge-nf-call-iptables changed by Bridge: %q → %q", rootBrNF, after)
	}
	rtr.Sysctl("net.ipv4.ip_forward", "1")
	if v, err := rtr.ReadSysctl("net.ipv4.ip_forward"); err != nil || v != "1" {
		t.Fatalf("router ip_forward = %q, %v; want 1", v, err)
	}
	if v, err := cli.ReadSysctl("net.ipv4.ip_forward"); err != nil || v != "0" {
		t.Fatalf("client ip_forward = %q, %v; want 0 (Sysctl must stay in its namespace)", v, err)
	}
	rtr.AddrAdd("r0", "198.51.100.1/24")
	rtr.AddrAdd("br0", "10.0.0.1/24")
	cli.AddrAdd("c0", "198.51.100.2/24")
	var sources []string
	for i := 10; i < 18; i++ {
		sources = append(sources, fmt.Sprintf("198.51.100.%d", i))
		cli.AddrAdd("c0", sources[len(sources)-1]+"/32")
	}
	cli.MustRun("ip", "route", "add", "default", "via", "198.51.100.1")
	servers := []struct {
		ns   *NS
		name string
		addr netip.Addr
	}{{srv0, "s0", netip.MustParseAddr("10.0.0.11")}, {srv1, "s1", netip.MustParseAddr("10.0.0.12")}}
	for _, s := range servers {
		s.ns.AddrAdd("e0", s.addr.String()+"/24")
		s.ns.MustRun("ip", "route", "add", "default", "via", "10.0.0.1")
		p := s.ns.Start("peer-"+s.name, peer, "serve", "-name", s.name, "-http", ":8080", "-udp", ":9000", "-lifetime", "1m")
		p.WaitForLog("ready", 10*time.Second)
	}
	// s1 also holds a ghost address on lo, routed to it by the router: UDP answers must
	// leave from the ghost, not from s1's primary address (the peer's IP_PKTINFO path).
	srv1.AddrAdd("lo", ghost.String()+"/32")
	rtr.MustRun("ip", "route", "add", ghost.String()+"/32", "via", "10.0.0.12")
	serverMAC := map[netip.Addr]net.HardwareAddr{servers[0].addr: srv0.MAC("e0"), servers[1].addr: srv1.MAC("e0"), ghost: srv1.MAC("e0")}
	brMAC, r0MAC, c0MAC := rtr.MAC("br0"), rtr.MAC("r0"), cli.MAC("c0")

	// IPv6 is left out: its link-local chatter (router solicitations, MLD) is noise here.
	up, lan := rtr.Capture("r0", "not ip6"), rtr.Capture("br0", "not ip6")

	for _, s := range servers {
		out := cli.MustRun(peer, "http", "-url", "http://"+s.addr.String()+":8080/", "-src-range", "198.51.100.10-198.51.100.17")
		checkPeerLines(t, "http to "+s.name, out, sources, s.name)
		out = cli.MustRun(peer, "udp", "-dst", s.addr.String()+":9000", "-src", strings.Join(sources, ","))
		checkPeerLines(t, "udp to "+s.name, out, sources, s.name)
	}

	out := cli.MustRun(peer, "udp", "-dst", ghost.String()+":9000", "-src-range", "198.51.100.10-198.51.100.17")
	checkPeerLines(t, "udp to the ghost on s1", out, sources, "s1")
	out = cli.MustRun(peer, "http", "-url", "http://"+ghost.String()+":8080/", "-src", "198.51.100.10")
	checkPeerLines(t, "http to the ghost on s1", out, sources[:1], "s1")

	// Do: a socket opened inside it lives in the client namespace (198.51.100.2 exists only
	// there), and talks through the router like the peer does.
	var body string
	if err := cli.Do(func() error {
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.2:0")),
			net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.12:9000")))
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("do\n")); err != nil {
			return err
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		body = string(buf[:n])
		return err
	}); err != nil || body != "s1 198.51.100.2\n" {
		t.Errorf("UDP from cli.Do: body %q, err %v; want %q", body, err, "s1 198.51.100.2\n")
	}

	if out := cli.MustRun("ping", "-c", "3", "-i", "0.2", "-t", "9", "-W", "2", "10.0.0.12"); !strings.Contains(out, "3 received") {
		t.Errorf("ping -t 9 10.0.0.12: want 3 replies:\n%s", out)
	}
	// TTL 1 reaches the router, which must answer with ICMP time exceeded.
	if out, err := cli.Run("ping", "-c", "1", "-t", "1", "-W", "2", "10.0.0.11"); err == nil || !strings.Contains(out, "exceeded") {
		t.Errorf("ping -t 1 10.0.0.11: want failure with Time to live exceeded, got err %v:\n%s", err, out)
	}
	// Rather than only trusting Stop's grace, poll until the last expected packets (the
	// three echo replies, forwarded to the client side) are on file.
	WaitFor(t, 5*time.Second, "3 echo replies on r0", func() bool {
		n := 0
		for _, p := range up.Packets() {
			if p.IsICMPEcho(false) {
				n++
			}
		}
		return n == 3
	})
	both := StopAll(up, lan)
	upPkts, lanPkts := both[0], both[1]

	// The TTL 1 echo is not forwarded: the router answers it with time exceeded (below).
	checkForwarded(t, "client→server", ipOnly(upPkts, func(p Packet) bool { return isClientToServer(p) && p.TTL > 1 }),
		ipOnly(lanPkts, isClientToServer))
	checkForwarded(t, "server→client", ipOnly(lanPkts, isServerToClient), ipOnly(upPkts, isServerToClient))

	syns := map[netip.Addr]map[netip.Addr]bool{} // server → client sources that reached it
	var echoReq, echoRep, exceeded int
	for _, p := range lanPkts {
		if !p.IsIP() {
			continue
		}
		if isClientToServer(p) {
			if !slices.Equal(p.DstMAC, serverMAC[p.Dst]) || !slices.Equal(p.SrcMAC, brMAC) {
				t.Errorf("on br0, to server %s: MACs %s > %s, want %s > %s: %v", p.Dst, p.SrcMAC, p.DstMAC, brMAC, serverMAC[p.Dst], p)
			}
			if p.Proto == ProtoTCP && p.TCPFlags == TCPFlagSYN {
				if syns[p.Dst] == nil {
					syns[p.Dst] = map[netip.Addr]bool{}
				}
				syns[p.Dst][p.Src] = true
			}
			if p.IsICMPEcho(true) {
				echoReq++
				if p.TTL != 8 {
					t.Errorf("echo request sent with TTL 9 crossed with TTL %d, want 8: %v", p.TTL, p)
				}
			}
		}
		if isServerToClient(p) && !slices.Equal(p.SrcMAC, serverMAC[p.Src]) {
			t.Errorf("on br0, reply from %s has source MAC %s, want %s: %v", p.Src, p.SrcMAC, serverMAC[p.Src], p)
		}
	}
	for _, s := range servers {
		if len(syns[s.addr]) != len(sources) {
			t.Errorf("on br0, SYNs to %s came from %d distinct clients, want %d (addresses unchanged): %v",
				s.addr, len(syns[s.addr]), len(sources), syns[s.addr])
		}
	}
	for _, p := range upPkts {
		switch {
		case p.Proto == ProtoICMP && p.ICMPType == 5:
			t.Errorf("ICMP redirect on r0: %v", p)
		case p.IsICMPEcho(false) && isServerToClient(p):
			echoRep++
			if p.TTL != 63 || !slices.Equal(p.SrcMAC, r0MAC) || !slices.Equal(p.DstMAC, c0MAC) {
				t.Errorf("echo reply on r0: TTL %d MACs %s > %s, want 63, %s > %s: %v", p.TTL, p.SrcMAC, p.DstMAC, r0MAC, c0MAC, p)
			}
		case p.Proto == ProtoICMP && p.ICMPType == 11:
			exceeded++
			quoted := DecodeIP(p.Payload)
			if p.Src != netip.MustParseAddr("198.51.100.1") || p.Dst != netip.MustParseAddr("198.51.100.2") ||
				quoted.Dst != netip.MustParseAddr("10.0.0.11") || quoted.TTL != 1 || quoted.Proto != ProtoICMP {
				t.Errorf("time exceeded: %v quoting %v; want 198.51.100.1 > 198.51.100.2 quoting the TTL 1 echo to 10.0.0.11", p, quoted)
			}
		}
	}
	for _, p := range lanPkts {
		if p.Proto == ProtoICMP && (p.ICMPType == 5 || p.ICMPType == 11) {
			t.Errorf("ICMP type %d on br0: %v", p.ICMPType, p)
		}
	}
	if echoReq != 3 || echoRep != 3 || exceeded != 1 {
		t.Errorf("echo requests on br0 %d, echo replies on r0 %d, time exceeded on r0 %d; want 3, 3, 1", echoReq, echoRep, exceeded)
	}

	// A pcap written by tcpdump, cut anywhere: ReadPcap returns an error (a cut exactly at
	// a record boundary is a valid shorter file), never panics.
	checkTruncations(t, up.Path())
}

var (
	clientNet = netip.MustParsePrefix("198.51.100.0/24")
	serverNet = netip.MustParsePrefix("10.0.0.0/24")
	ghost     = netip.MustParseAddr("203.0.113.10")
)

func serverSide(a netip.Addr) bool   { return serverNet.Contains(a) || a == ghost }
func isClientToServer(p Packet) bool { return clientNet.Contains(p.Src) && serverSide(p.Dst) }
func isServerToClient(p Packet) bool { return serverSide(p.Src) && clientNet.Contains(p.Dst) }

func ipOnly(pkts []Packet, keep func(Packet) bool) []Packet {
	var r []Packet
	for _, p := range pkts {
		if p.IsIP() && keep(p) {
			r = append(r, p)
		}
	}
	return r
}

// forwardKey is a packet's IP header and payload with the TTL and header checksum zeroed:
// what a router must leave unchanged.
func forwardKey(p Packet) string {
	b := slices.Clone(p.Network)
	if len(b) >= 20 {
		b[8], b[10], b[11] = 0, 0, 0
	}
	return string(b)
}

// checkForwarded: every packet seen on the ingress side appears on the egress side exactly
// as often, identical but for a TTL one less.
func checkForwarded(t *testing.T, dir string, in, out []Packet) {
	t.Helper()
	if len(in) == 0 {
		t.Errorf("%s: no packets captured on the ingress side", dir)
	}
	pending := map[string][]Packet{}
	for _, p := range in {
		pending[forwardKey(p)] = append(pending[forwardKey(p)], p)
	}
	for _, q := range out {
		k := forwardKey(q)
		if len(pending[k]) == 0 {
			t.Errorf("%s: forwarded packet not seen on ingress (changed in flight?): %v", dir, q)
			continue
		}
		p := pending[k][0]
		pending[k] = pending[k][1:]
		if q.TTL != p.TTL-1 {
			t.Errorf("%s: TTL %d on ingress, %d on egress; want one less: %v", dir, p.TTL, q.TTL, q)
		}
	}
	for _, ps := range pending {
		for _, p := range ps {
			t.Errorf("%s: packet not forwarded: %v", dir, p)
		}
	}
}

// checkPeerLines parses peer client output: one "SRC OK NAME SRC" line per source.
func checkPeerLines(t *testing.T, what, out string, sources []string, server string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(sources) {
		t.Errorf("%s: %d lines, want %d:\n%s", what, len(lines), len(sources), out)
		return
	}
	for i, l := range lines {
		if want := sources[i] + " OK " + server + " " + sources[i]; l != want {
			t.Errorf("%s: line %d = %q, want %q", what, i, l, want)
		}
	}
}

func checkTruncations(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	full, err := ParsePcap(data)
	if err != nil || len(full) == 0 {
		t.Fatalf("%s: %d packets, %v", path, len(full), err)
	}
	boundary := map[int]bool{24: true}
	off := 24
	for _, p := range full {
		off += 16 + len(p.Raw)
		boundary[off] = true
	}
	dir := t.TempDir()
	step := max(1, len(data)/400)
	for cut := 0; cut < len(data); cut += step {
		for _, c := range []int{cut, cut + 1} { // +1 also lands just past each stride
			if c >= len(data) {
				continue
			}
			p := filepath.Join(dir, "cut.pcap")
			if err := os.WriteFile(p, data[:c], 0o644); err != nil {
				t.Fatal(err)
			}
			pkts, err := ReadPcap(p)
			switch {
			case c < 24 && !errors.Is(err, ErrNotPcap):
				t.Errorf("cut at %d: err %v, want ErrNotPcap", c, err)
			case c >= 24 && boundary[c] && err != nil:
				t.Errorf("cut at record boundary %d: err %v, want nil", c, err)
			case c >= 24 && !boundary[c] && !errors.Is(err, ErrTruncated):
				t.Errorf("cut at %d: %d packets, err %v; want ErrTruncated", c, len(pkts), err)
			}
		}
	}
	// Also at every record boundary ± 1.
	for b := range boundary {
		for _, c := range []int{b - 1, b + 1} {
			if c < 24 || c >= len(data) {
				continue
			}
			if _, err := ParsePcap(data[:c]); !errors.Is(err, ErrTruncated) {
				t.Errorf("cut at %d (next to a record boundary): err %v, want ErrTruncated", c, err)
			}
		}
	}
}

// recorder stands in for a testing.T in tests of the harness's own failure paths. It embeds
// testing.TB only to satisfy the interface; every method the harness calls is overridden.
type recorder struct {
	testing.TB
	name     string
	failed   bool
	cleanups []func()
	logs     []string
}

type fatal struct{ msg string }

func (r *recorder) Helper()          {}
func (r *recorder) Name() string     { return r.name }
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Failed() bool     { return r.failed }
func (r *recorder) Logf(f string, a ...any) {
	r.logs = append(r.logs, fmt.Sprintf(f, a...))
}
func (r *recorder) Errorf(f string, a ...any) {
	r.failed = true
	r.logs = append(r.logs, "ERROR "+fmt.Sprintf(f, a...))
}
func (r *recorder) Fatalf(f string, a ...any) {
	r.failed = true
	panic(fatal{fmt.Sprintf(f, a...)})
}
func (r *recorder) Skipf(f string, a ...any) {
	r.logs = append(r.logs, "SKIP "+fmt.Sprintf(f, a...))
	panic(fatal{"skip"})
}

func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// catch runs fn and reports the message of a recorder Fatalf/Skipf, "" if none.
func catch(fn func()) (msg string) {
	defer func() {
		if v := recover(); v != nil {
			f, ok := v.(fatal)
			if !ok {
				panic(v)
			}
			msg = f.msg
		}
	}()
	fn()
	return ""
}

// TestArtifactsKeptOnFailure: a failing test keeps its artifacts and logs where; a passing
// one deletes them; both delete their namespaces and processes.
func TestArtifactsKeptOnFailure(t *testing.T) {
	RequireRoot(t, "sleep")
	for _, fail := range []bool{true, false} {
		r := &recorder{name: fmt.Sprintf("%s/fail=%v", t.Name(), fail)}
		var h *H
		if msg := catch(func() { h = newH(r) }); msg != "" {
			t.Fatalf("newH: %s", msg)
		}
		var ns *NS
		var proc *Proc
		if msg := catch(func() {
			ns = h.NS("keep")
			proc = ns.Start("sleeper", "sleep", "30")
		}); msg != "" {
			r.runCleanups()
			t.Fatalf("setup: %s", msg)
		}
		r.failed = fail
		r.runCleanups()

		_, err := os.Stat(h.ArtifactDir())
		logged := slices.ContainsFunc(r.logs, func(l string) bool { return strings.Contains(l, h.ArtifactDir()) })
		if fail && (err != nil || !logged) {
			t.Errorf("failing test: artifact dir stat %v, path logged %v; want kept and logged (logs %q)", err, logged, r.logs)
		}
		if !fail && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("passing test: artifact dir stat %v, want removed", err)
		}
		if fail {
			if b, err := os.ReadFile(filepath.Join(h.ArtifactDir(), "sleeper.log")); err != nil {
				t.Errorf("kept artifacts lack the process log: %v %q", err, b)
			}
			os.RemoveAll(h.ArtifactDir())
		}
		if !proc.Exited() {
			t.Errorf("process %d still running after cleanup", proc.Pid())
		}
		if names, _ := listNS(); slices.Contains(names, ns.Name) {
			t.Errorf("namespace %s left after cleanup", ns.Name)
		}
		for _, l := range r.logs {
			if strings.HasPrefix(l, "ERROR") {
				t.Errorf("cleanup reported: %s", l)
			}
		}
	}
}

// TestRequireRoot: a missing tool skips, or fails under CI=true.
func TestRequireRoot(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recorder{name: "x"}
		msg := catch(func() { RequireRoot(r, "ghostrouter-no-such-tool") })
		switch {
		case ci == "true" && (msg == "skip" || !strings.Contains(msg, "ghostrouter-no-such-tool")):
			t.Errorf("CI=true: RequireRoot with a missing tool: %q, want a failure naming it", msg)
		case ci == "" && msg != "skip":
			t.Errorf("CI unset: RequireRoot with a missing tool: %q, want a skip", msg)
		}
	}
	r := &recorder{name: "x"}
	if msg := catch(func() { RequireRoot(r) }); msg != "" && os.Geteuid() == 0 && !testing.Short() {
		t.Errorf("as root with ip present: RequireRoot = %q, want pass", msg)
	}
}

// TestReapStale: namespaces of a run whose owner died are deleted by the next New.
func TestReapStale(t *testing.T) {
	RequireRoot(t)
	// A suffix owned by a process that has exited.
	dead := deadPid(t)
	suffix := fmt.Sprintf("z%04x", time.Now().UnixNano()&0xffff)
	owner := filepath.Join(ownerDir, suffix)
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(owner, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Skipf("suffix %s taken: %v", suffix, err)
	}
	fmt.Fprintf(f, "%d\n", dead)
	f.Close()
	name := "gr-stale-" + suffix
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", name).Run()
		os.Remove(owner)
	})
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", name, err, out)
	}
	New(t)
	if names, _ := listNS(); slices.Contains(names, name) {
		t.Errorf("stale namespace %s of dead pid %d not reaped", name, dead)
	}
	if _, err := os.Stat(owner); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale owner file %s: stat %v, want removed", owner, err)
	}
}

// deadPid returns the pid of a process that has exited.
func deadPid(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}
