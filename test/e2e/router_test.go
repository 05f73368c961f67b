package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

const plainRoutes = `
[[route]]
to = "192.0.2.0/25"
via = "198.51.100.254"
`

// TestRouterForwardsPingTCPUDP: a client reaches a server through the
// appliance with ping, HTTP over TCP and UDP; the server-side capture shows
// each packet with its TTL decremented by exactly one and its addresses
// unchanged.
func TestRouterForwardsPingTCPUDP(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 2})
	tp.startServers()
	garp := tp.rtr.Capture("l-s0", "arp")
	tp.start(tp.baseConfig())
	harness.WaitFor(t, 5*time.Second, "a gratuitous ARP for the appliance's LAN address", func() bool {
		for _, p := range garp.Packets() {
			if p.ARPSenderIP.String() == lanAddr && p.ARPTargetIP.String() == lanAddr {
				return true
			}
		}
		return false
	})
	garp.Stop()
	srv := tp.servers[0]
	capUp := tp.rtr.Capture("u-c", "ip")
	capSrv := srv.ns.Capture("e0", "ip")

	out := tp.cli.MustRun("ping", "-c", "3", "-i", "0.2", "-W", "2", "-t", "64", srv.addr.String())
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("ping through the appliance:\n%s", out)
	}
	res := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://"+srv.addr.String()+"/", "-src", clientAddr))
	if got := res[clientAddr]; got != "s0 "+clientAddr {
		t.Fatalf("HTTP answer %q, want %q", got, "s0 "+clientAddr)
	}
	res = peerResults(tp.cli.MustRun(tp.peer, "udp", "-dst", srv.addr.String()+":9000", "-src", clientAddr))
	if got := res[clientAddr]; got != "s0 "+clientAddr {
		t.Fatalf("UDP answer %q, want %q", got, "s0 "+clientAddr)
	}
	pkts := harness.StopAll(capUp, capSrv)
	sent, arrived := ipv4Only(pkts[0]), ipv4Only(pkts[1])

	// Match every client->server packet seen on the client's side with the
	// same packet (same IP ID and protocol) on the server's side.
	type key struct {
		id    uint16
		proto uint8
		sport uint16
	}
	want := map[key]harness.Packet{}
	for _, p := range sent {
		if p.Src.String() == clientAddr && p.Dst == srv.addr {
			want[key{p.IPID, p.Proto, p.SrcPort}] = p
		}
	}
	protos := map[uint8]int{}
	for _, p := range arrived {
		if p.Dst != srv.addr || p.Src.String() != clientAddr {
			continue
		}
		s, ok := want[key{p.IPID, p.Proto, p.SrcPort}]
		if !ok {
			continue
		}
		if p.TTL != s.TTL-1 {
			t.Errorf("TTL %d on the server side, %d on the client side: want exactly one less\n  %v", p.TTL, s.TTL, p)
		}
		protos[p.Proto]++
	}
	for _, pr := range []uint8{harness.ProtoICMP, harness.ProtoTCP, harness.ProtoUDP} {
		if protos[pr] == 0 {
			t.Errorf("no protocol %d packet from the client matched on the server's side", pr)
		}
	}
}

// ttlOneProbe pings srv from the client with TTL 1 and returns what came back
// to the client and whether anything reached the server.
func ttlOneProbe(t *testing.T, tp *topo) (icmpType, icmpCode uint8, from netip.Addr, crossed int) {
	srv := tp.servers[0]
	capCli := tp.cli.Capture("c0", "icmp")
	capSrv := srv.ns.Capture("e0", "icmp")
	tp.cli.Run("ping", "-c", "1", "-t", "1", "-W", "2", srv.addr.String())
	harness.WaitFor(t, 5*time.Second, "an ICMP error back at the client", func() bool {
		for _, p := range capCli.Packets() {
			if p.ICMPType == 11 || p.ICMPType == 3 {
				return true
			}
		}
		return false
	})
	pkts := harness.StopAll(capCli, capSrv)
	for _, p := range pkts[0] {
		if p.Dst.String() == clientAddr && (p.ICMPType == 11 || p.ICMPType == 3) {
			icmpType, icmpCode, from = p.ICMPType, p.ICMPCode, p.Src
		}
	}
	for _, p := range pkts[1] {
		if p.IsICMPEcho(true) {
			crossed++
		}
	}
	return
}

// TestTTLOneLikeLinux: a packet sent with TTL 1 draws ICMP time exceeded from
// the router and never reaches the far side, for the appliance exactly as
// for a Linux router namespace.
func TestTTLOneLikeLinux(t *testing.T) {
	type result struct {
		typ, code uint8
		from      netip.Addr
		crossed   int
	}
	run := func(linux bool) result {
		tp := newTopo(t, topoOptions{servers: 1, linux: linux})
		if !linux {
			tp.start(tp.baseConfig())
		}
		// Let the router learn the server's MAC first, as a normal ping would.
		tp.cli.MustRun("ping", "-c", "1", "-W", "2", tp.servers[0].addr.String())
		var r result
		r.typ, r.code, r.from, r.crossed = ttlOneProbe(t, tp)
		return r
	}
	linux := run(true)
	app := run(false)
	if linux.typ != 11 || linux.code != 0 || linux.from.String() != upAddr || linux.crossed != 0 {
		t.Fatalf("reference Linux router: ICMP %d/%d from %s, %d crossed; the reference itself is off", linux.typ, linux.code, linux.from, linux.crossed)
	}
	if app != linux {
		t.Fatalf("appliance: ICMP %d/%d from %s, %d crossed; Linux: ICMP %d/%d from %s, %d crossed",
			app.typ, app.code, app.from, app.crossed, linux.typ, linux.code, linux.from, linux.crossed)
	}
}

// TestNoRouteUnreachable: a destination with no route draws ICMP destination
// unreachable from the appliance, as from a Linux router.
func TestNoRouteUnreachable(t *testing.T) {
	for _, linux := range []bool{true, false} {
		tp := newTopo(t, topoOptions{servers: 1, linux: linux})
		if !linux {
			tp.start(tp.baseConfig())
		}
		capCli := tp.cli.Capture("c0", "icmp")
		out, _ := tp.cli.Run("ping", "-c", "1", "-W", "2", "192.0.2.99")
		harness.WaitFor(t, 5*time.Second, "destination unreachable at the client", func() bool {
			for _, p := range capCli.Packets() {
				if p.ICMPType == 3 && p.Src.String() == upAddr {
					return true
				}
			}
			return false
		})
		capCli.Stop()
		if !strings.Contains(out, "Unreachable") {
			t.Errorf("linux=%v: ping did not report unreachable:\n%s", linux, out)
		}
	}
}

// TestForeignMACAndLinkDown: frames for a foreign unicast MAC (a bridge
// flooding them) do not stop the router, and a TAP set down under traffic
// does not crash it.
func TestForeignMACAndLinkDown(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 1})
	tp.start(tp.baseConfig())
	srv := tp.servers[0].addr.String()
	tp.cli.MustRun("ping", "-c", "1", "-W", "2", srv)

	// The client sends to a MAC nobody has: br-up floods those frames to up0.
	tp.cli.MustRun("ip", "neigh", "replace", upAddr, "lladdr", "02:de:ad:be:ef:01", "dev", "c0", "nud", "permanent")
	tp.cli.Run("ping", "-c", "5", "-i", "0.1", "-W", "1", srv)
	tp.cli.MustRun("ip", "neigh", "del", upAddr, "dev", "c0")
	out := tp.cli.MustRun("ping", "-c", "3", "-i", "0.2", "-W", "2", srv)
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("traffic did not continue after foreign-MAC frames:\n%s", out)
	}
	if n := tp.statusJSON().linkCounter(t, "up0", "rx_foreign"); n != 5 {
		t.Errorf("up0 counted %d foreign frames, want 5:\n%s", n, tp.status())
	}

	// lan0 down under traffic: writes fail with EIO; the router must live.
	ping := tp.cli.Start("ping-flow", "ping", "-c", "40", "-i", "0.05", "-W", "1", srv)
	tp.rtr.MustRun("ip", "link", "set", "lan0", "down")
	harness.WaitFor(t, 10*time.Second, "write errors counted on lan0", func() bool {
		return !strings.Contains(linkLine(tp.status(), "lan0"), "tx_errors=0 ")
	})
	tp.rtr.MustRun("ip", "link", "set", "lan0", "up")
	ping.Wait(10 * time.Second)
	if tp.app.Exited() {
		t.Fatalf("the appliance died with its link down:\n%s", tp.app.Log())
	}
	out = tp.cli.MustRun("ping", "-c", "3", "-i", "0.2", "-W", "2", srv)
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("traffic did not resume after lan0 came back up:\n%s", out)
	}
}

// linkLine is the counters line of one link in `status`.
func linkLine(status, name string) string {
	if i := strings.Index(status, "\nlinks\n"); i >= 0 {
		status = status[i:]
	}
	for _, l := range strings.Split(status, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), name+" ") {
			return l + " "
		}
	}
	return ""
}

// TestBadConfigStartsNothing: a configuration with errors opens no device and
// names each bad key with FILE:LINE; check rejects it and accepts every
// example in configs/.
func TestBadConfigStartsNothing(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 1})
	bad := tp.baseConfig() + `
[[route]]
to = "0.0.0.0/0"
via = "192.0.2.1"

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan9"
mode = "routing"
colour = "blue"
  [[cluster.server]]
  id = 0
  address = "10.0.0.11"
`
	path := tp.writeConfig(bad)
	out, err := tp.rtr.Run(tp.bin, "run", "-c", path)
	if err == nil {
		t.Fatalf("run accepted a bad configuration:\n%s", out)
	}
	lines := strings.Split(bad, "\n")
	lineOf := func(prefix string) int {
		for i, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line %q in the test config", prefix)
		return 0
	}
	for _, want := range []struct{ prefix, key string }{
		{`via = "192.0.2.1"`, "via"},
		{`interface = "lan9"`, "interface"},
		{`colour = "blue"`, "colour"},
	} {
		loc := fmt.Sprintf("%s:%d:", path, lineOf(want.prefix))
		found := false
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, loc) && strings.Contains(l, want.key) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %q line naming %q in:\n%s", loc, want.key, out)
		}
	}
	links := tp.rtr.MustRun("ip", "-o", "link", "show")
	if strings.Contains(links, "up0") || strings.Contains(links, "lan0") {
		t.Fatalf("a bad configuration created devices:\n%s", links)
	}
	if out, err := tp.rtr.Run(tp.bin, "check", "-c", path); err == nil {
		t.Fatalf("check exited 0 for a bad configuration:\n%s", out)
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	examples, _ := filepath.Glob(filepath.Join(root, "configs", "*.toml"))
	if len(examples) == 0 {
		t.Fatal("no example configurations found")
	}
	for _, f := range examples {
		out, err := exec.Command(tp.bin, "check", "-c", f).CombinedOutput()
		text, _ := os.ReadFile(f)
		keyLine := regexp.MustCompile(`(?m)^announce_key_file = "([^"]+)"`).FindSubmatch(text)
		if keyLine == nil {
			if err != nil {
				t.Errorf("check %s: %v\n%s", f, err, out)
			}
			continue
		}
		// An example ships no key: check refuses it until one is
		// generated, for that reason only; with a generated key in
		// place it passes.
		if err == nil || !strings.Contains(string(out), ": 1 problem(s)") || !strings.Contains(string(out), "announce_key_file") {
			t.Errorf("check %s without its key file: %v, want exactly one problem about announce_key_file:\n%s", f, err, out)
		}
		dir := t.TempDir()
		key := filepath.Join(dir, "example.key")
		if out, err := exec.Command(tp.bin, "keygen", "--private", key).CombinedOutput(); err != nil {
			t.Fatalf("keygen: %v\n%s", err, out)
		}
		copyPath := filepath.Join(dir, filepath.Base(f))
		os.WriteFile(copyPath, bytes.ReplaceAll(text, keyLine[1], []byte(key)), 0o644)
		if out, err := exec.Command(tp.bin, "check", "-c", copyPath).CombinedOutput(); err != nil {
			t.Errorf("check %s with a generated key: %v\n%s", f, err, out)
		}
	}
}

// TestSIGTERMLeavesNoTAP: SIGTERM removes the TAP devices the appliance
// created and leaves one it only opened as it was.
func TestSIGTERMLeavesNoTAP(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 1})
	// lan0 exists beforehand as a persistent TAP: it must survive.
	tp.rtr.MustRun("ip", "tuntap", "add", "dev", "lan0", "mode", "tap")
	tp.start(tp.baseConfig())
	tp.cli.MustRun("ping", "-c", "1", "-W", "2", tp.servers[0].addr.String())
	if err := tp.app.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := tp.app.Wait(10 * time.Second); err != nil {
		t.Fatalf("the appliance did not exit cleanly on SIGTERM: %v\n%s", err, tp.app.Log())
	}
	if _, err := tp.rtr.Run("ip", "link", "show", "up0"); err == nil {
		t.Fatal("up0, created by the appliance, still exists after SIGTERM")
	}
	if _, err := tp.rtr.Run("ip", "link", "show", "lan0"); err != nil {
		t.Fatal("lan0, which existed before, was removed")
	}
	// Running as nobody, the appliance cannot unlink its socket from a
	// root-owned directory: what it leaves must be a stale socket, which
	// the next start replaces.
	if fi, err := os.Lstat(tp.sock); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("left at the control socket's path: %v", fi.Mode())
		}
		if c, err := net.Dial("unix", tp.sock); err == nil {
			c.Close()
			t.Fatal("something still answers on the control socket")
		}
		tp.rtr.MustRun("ip", "link", "del", "lan0") // left enslaved to br-lan by the first run
		tp.start(tp.baseConfig())
	}
}

// TestIPv6Forwarding: with IPv6 addresses configured, the appliance routes
// IPv6 too (NDP, hop limit decremented by one, addresses unchanged), and a
// hop limit of 1 draws ICMPv6 time exceeded.
func TestIPv6Forwarding(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 1})
	srv := tp.servers[0]
	for _, ns := range []*harness.NS{tp.cli, srv.ns} {
		ns.Sysctl("net.ipv6.conf.all.disable_ipv6", "0")
	}
	tp.cli.AddrAdd("c0", "2001:db8:1::10/64")
	tp.cli.MustRun("ip", "-6", "route", "add", "default", "via", "2001:db8:1::1")
	srv.ns.AddrAdd("e0", "2001:db8:2::11/64")
	srv.ns.MustRun("ip", "-6", "route", "add", "default", "via", "2001:db8:2::1")
	cfg := strings.Replace(tp.baseConfig(), `addresses = ["`+upAddr+`/24"]`, `addresses = ["`+upAddr+`/24", "2001:db8:1::1/64"]`, 1)
	cfg = strings.Replace(cfg, `addresses = ["`+lanAddr+`/24"]`, `addresses = ["`+lanAddr+`/24", "2001:db8:2::1/64"]`, 1)
	tp.start(cfg)
	capSrv := srv.ns.Capture("e0", "icmp6 and ip6[40] == 128")
	out := tp.cli.MustRun("ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-t", "64", "2001:db8:2::11")
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("ping6 through the appliance:\n%s", out)
	}
	pkts := capSrv.Stop()
	n := 0
	for _, p := range pkts {
		if p.Src.String() == "2001:db8:1::10" && p.Dst.String() == "2001:db8:2::11" {
			n++
			if p.TTL != 63 {
				t.Errorf("hop limit %d at the server, want 63: %v", p.TTL, p)
			}
		}
	}
	if n != 3 {
		t.Fatalf("%d echo requests reached the server, want 3", n)
	}
	out, _ = tp.cli.Run("ping", "-6", "-c", "1", "-t", "1", "-W", "2", "2001:db8:2::11")
	if !strings.Contains(out, "Time exceeded") {
		t.Fatalf("hop limit 1 did not draw time exceeded:\n%s", out)
	}
}
