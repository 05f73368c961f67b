// Package e2e holds the end-to-end tests: real network namespaces, veths and
// Linux bridges, the real appliance on real TAP devices, real Linux servers,
// and tcpdump captures read back as the evidence. They need root; outside CI
// they skip with a message, under CI=true they must run.
package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// The standard two-armed topology. The router namespace holds two Linux
// bridges; the appliance's TAP devices up0 and lan0 join them, or, for the
// reference runs, a Linux router puts the same addresses on the bridges
// themselves.
//
//	cli ── c0 ─── u-c ┐                           ┌ l-s0 ─── e0 ── srv0 10.0.0.11
//	198.51.100.10/24  br-up ── up0 [ghostrouter] lan0 ── br-lan ┤ l-s1 ─── e0 ── srv1 10.0.0.12
//	+ client addrs    │     198.51.100.1   10.0.0.1      └ ...
//	                  └ (rtr namespace)
type topo struct {
	h       *harness.H
	t       *testing.T
	cli     *harness.NS
	rtr     *harness.NS
	servers []*server
	linux   bool // the reference: a Linux router instead of the appliance

	bin, peer, node string
	cfgPath, sock   string
	app             *harness.Proc
}

type server struct {
	ns   *harness.NS
	name string
	addr netip.Addr
	mac  net.HardwareAddr
	peer *harness.Proc
}

const (
	clientAddr = "198.51.100.10"
	upAddr     = "198.51.100.1"
	lanAddr    = "10.0.0.1"
	ghostAddr  = "203.0.113.10"
)

// topoOptions shape a topology.
type topoOptions struct {
	servers int
	linux   bool
	// clientAddrs extra /32 addresses on the client, 198.51.100.100 and up.
	clientAddrs int
}

func newTopo(t *testing.T, o topoOptions) *topo {
	t.Helper()
	harness.RequireRoot(t, "ip", "tcpdump")
	h := harness.New(t)
	tp := &topo{h: h, t: t, linux: o.linux}
	tp.bin = h.Build("cmd/ghostrouter")
	tp.peer = h.Build("test/cmd/peer")
	tp.cli, tp.rtr = h.NS("cli"), h.NS("rtr")
	h.Veth(tp.cli, "c0", tp.rtr, "u-c")
	tp.rtr.Bridge("br-up", "u-c")
	var lanPorts []string
	for i := 0; i < o.servers; i++ {
		s := &server{
			ns:   h.NS(fmt.Sprintf("srv%d", i)),
			name: fmt.Sprintf("s%d", i),
			addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i)}),
		}
		port := fmt.Sprintf("l-s%d", i)
		h.Veth(tp.rtr, port, s.ns, "e0")
		lanPorts = append(lanPorts, port)
		s.ns.AddrAdd("e0", s.addr.String()+"/24")
		s.ns.MustRun("ip", "route", "add", "default", "via", lanAddr)
		s.mac = s.ns.MAC("e0")
		tp.servers = append(tp.servers, s)
	}
	tp.rtr.Bridge("br-lan", lanPorts...)
	tp.cli.AddrAdd("c0", clientAddr+"/24")
	for i := 0; i < o.clientAddrs; i++ {
		tp.cli.AddrAdd("c0", tp.clientSource(i)+"/32")
	}
	tp.cli.MustRun("ip", "route", "add", "default", "via", upAddr)
	if o.linux {
		tp.rtr.AddrAdd("br-up", upAddr+"/24")
		tp.rtr.AddrAdd("br-lan", lanAddr+"/24")
		tp.rtr.Sysctl("net.ipv4.ip_forward", "1")
	}
	return tp
}

// clientSource is the i-th extra client source address.
func (tp *topo) clientSource(i int) string {
	return fmt.Sprintf("198.51.%d.%d", 100+(100+i)/256, (100+i)%256)
}

func (tp *topo) clientSources(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = tp.clientSource(i)
	}
	return out
}

// baseConfig is the [router] and [[interface]] part of the appliance's
// configuration for this topology.
func (tp *topo) baseConfig() string {
	tp.sock = filepath.Join(tp.h.ArtifactDir(), "ctl.sock")
	return fmt.Sprintf(`[router]
log_level = "debug"
control_socket = %q
metrics_address = ""

[[interface]]
name = "up0"
addresses = ["%s/24"]
bridge = "br-up"

[[interface]]
name = "lan0"
addresses = ["%s/24"]
bridge = "br-lan"
`, tp.sock, upAddr, lanAddr)
}

// writeConfig writes text as the appliance's configuration file, and the
// announcement key pair its announce_key_file names (announceKeyFile, next
// to it) when there is none yet.
func (tp *topo) writeConfig(text string) string {
	tp.t.Helper()
	tp.ensureAnnounceKey()
	tp.cfgPath = filepath.Join(tp.h.ArtifactDir(), "ghostrouter.toml")
	if err := os.WriteFile(tp.cfgPath, []byte(text), 0o644); err != nil {
		tp.t.Fatal(err)
	}
	return tp.cfgPath
}

// start runs the appliance in the router namespace with the configuration
// text and waits until it answers on its control socket with every server's
// MAC resolved.
func (tp *topo) start(text string) {
	tp.t.Helper()
	if tp.linux {
		tp.t.Fatal("start: this topology has a Linux router")
	}
	tp.writeConfig(text)
	tp.app = tp.rtr.Start("ghostrouter", tp.bin, "run", "-c", tp.cfgPath)
	harness.WaitFor(tp.t, 15*time.Second, "the appliance's control socket", func() bool {
		if tp.app.Exited() {
			tp.t.Fatalf("the appliance exited:\n%s", tp.app.Log())
		}
		_, err := tp.rtr.Run(tp.bin, "status", "--socket", tp.sock)
		return err == nil
	})
}

// status returns the appliance's `status` text.
func (tp *topo) status() string {
	tp.t.Helper()
	return tp.rtr.MustRun(tp.bin, "status", "--socket", tp.sock)
}

// startServers runs the peer server (HTTP on 80, UDP on 9000) on every server.
func (tp *topo) startServers() {
	tp.t.Helper()
	for _, s := range tp.servers {
		s.peer = s.ns.Start("peer-"+s.name, tp.peer, "serve", "-name", s.name, "-http", ":80", "-udp", ":9000", "-lifetime", "5m")
	}
	for _, s := range tp.servers {
		s.peer.WaitForLog("ready", 10*time.Second)
	}
}

// peerResults parses `peer http|udp` output into src -> body (or "FAIL ...").
func peerResults(out string) map[string]string {
	res := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			continue
		}
		if f[1] == "OK" && len(f) == 3 {
			res[f[0]] = strings.TrimSpace(f[2])
		} else {
			res[f[0]] = strings.Join(f[1:], " ")
		}
	}
	return res
}

// ipOnly keeps the IPv4 packets of pkts.
func ipv4Only(pkts []harness.Packet) []harness.Packet {
	var out []harness.Packet
	for _, p := range pkts {
		if p.Src.Is4() {
			out = append(out, p)
		}
	}
	return out
}
