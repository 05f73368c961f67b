// Package e2e holds the end-to-end tests: real network namespaces, veths and
// Linux bridges, the real appliance on real TAP devices, real Linux servers,
// and tcpdump captures read back as the evidence. They need root; outside CI
// they skip with a message, under CI=true they must run.
package e2e

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// The standard two-armed topology, built by harness.TwoArmed (its picture is there):
// the client, the router namespace with br-up and br-lan, and the servers.
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
	clientAddr = harness.ClientAddr
	upAddr     = harness.UpAddr
	lanAddr    = harness.LANAddr
	ghostAddr  = harness.GhostAddr
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
	built := h.TwoArmed(harness.TopoOptions{Servers: o.servers, ClientAddrs: o.clientAddrs, LinuxRouter: o.linux})
	tp.cli, tp.rtr = built.Cli, built.Rtr
	for _, s := range built.Servers {
		tp.servers = append(tp.servers, &server{ns: s.NS, name: s.Name, addr: s.Addr, mac: s.MAC})
	}
	return tp
}

// clientSource is the i-th extra client source address.
func (tp *topo) clientSource(i int) string { return harness.ClientSource(i).String() }

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
	return harness.TwoArmedConfig(tp.sock, "debug")
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
