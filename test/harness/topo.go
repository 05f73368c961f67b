package harness

import (
	"fmt"
	"net"
	"net/netip"
)

// The standard two-armed topology, one builder for the end-to-end tests, the benchmarks and
// the demo. The router namespace holds two Linux bridges; the appliance's TAP devices up0 and
// lan0 join them (the appliance creates them: `bridge = "br-up"` / `"br-lan"`), or, for a
// Linux reference router, the same addresses go on the bridges themselves.
//
//	cli ── c0 ─── u-c ┐                                    ┌ l-s0 ─── e0 ── srv0 10.0.0.11
//	198.51.100.10/24  br-up ── up0 [appliance] lan0 ── br-lan ┤ l-s1 ─── e0 ── srv1 10.0.0.12
//	+ client addresses│     198.51.100.1   10.0.0.1         └ ...
//	                  └──────────── (rtr namespace) ─────────┘
//
// The servers' default route goes via LANAddr and the client's via UpAddr. What runs on the
// servers (a peer, the ghost on lo, ghostnode) is the caller's.
const (
	ClientAddr = "198.51.100.10" // the client's own address on c0 (/24)
	UpAddr     = "198.51.100.1"  // the router's address on the clients' side
	LANAddr    = "10.0.0.1"      // the router's address on the servers' LAN
	GhostAddr  = "203.0.113.10"  // the cluster address the tests and the demo use
)

// TopoOptions shape a two-armed topology.
type TopoOptions struct {
	// Prefix is prepended to every namespace base ("k-", "g-"), so that two topologies
	// can live side by side in one run.
	Prefix string
	// Servers is the number of servers: srv<i>, address 10.0.0.(11+i)/24.
	Servers int
	// ClientAddrs extra /32 addresses on the client, ClientSource(0) and up.
	ClientAddrs int
	// LinuxRouter puts UpAddr and LANAddr on the bridges and turns on forwarding: the
	// rtr namespace's kernel is the router (the reference runs), instead of an appliance.
	LinuxRouter bool
}

// Topo is a built two-armed topology.
type Topo struct {
	Cli     *NS
	Rtr     *NS
	Servers []*TopoServer
	Clients []netip.Addr // the extra client addresses, in order
}

// TopoServer is one server of a Topo.
type TopoServer struct {
	NS   *NS
	Name string // "s<i>", what its peer answers with
	Addr netip.Addr
	MAC  net.HardwareAddr // of its e0
}

// ClientSource is the i-th extra client address: 198.51.100.100 and up (past .255 it
// continues in 198.51.101.0/24).
func ClientSource(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, byte(100 + (100+i)/256), byte((100 + i) % 256)})
}

// TwoArmed builds the standard two-armed topology (see above) and returns it. Everything
// is removed at cleanup with the harness's namespaces.
func (h *H) TwoArmed(o TopoOptions) *Topo {
	h.t.Helper()
	tp := &Topo{Cli: h.NS(o.Prefix + "cli"), Rtr: h.NS(o.Prefix + "rtr")}
	h.Veth(tp.Cli, "c0", tp.Rtr, "u-c")
	tp.Rtr.Bridge("br-up", "u-c")
	var lanPorts []string
	for i := 0; i < o.Servers; i++ {
		s := &TopoServer{
			NS:   h.NS(fmt.Sprintf("%ssrv%d", o.Prefix, i)),
			Name: fmt.Sprintf("s%d", i),
			Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i)}),
		}
		port := fmt.Sprintf("l-s%d", i)
		h.Veth(tp.Rtr, port, s.NS, "e0")
		lanPorts = append(lanPorts, port)
		s.NS.AddrAdd("e0", s.Addr.String()+"/24")
		s.NS.MustRun("ip", "route", "add", "default", "via", LANAddr)
		s.MAC = s.NS.MAC("e0")
		tp.Servers = append(tp.Servers, s)
	}
	tp.Rtr.Bridge("br-lan", lanPorts...)
	tp.Cli.AddrAdd("c0", ClientAddr+"/24")
	for i := 0; i < o.ClientAddrs; i++ {
		a := ClientSource(i)
		tp.Clients = append(tp.Clients, a)
		tp.Cli.AddrAdd("c0", a.String()+"/32")
	}
	tp.Cli.MustRun("ip", "route", "add", "default", "via", UpAddr)
	if o.LinuxRouter {
		tp.Rtr.AddrAdd("br-up", UpAddr+"/24")
		tp.Rtr.AddrAdd("br-lan", LANAddr+"/24")
		tp.Rtr.Sysctl("net.ipv4.ip_forward", "1")
	}
	return tp
}

// TwoArmedConfig is the head of the appliance's configuration for the
// TwoArmed topology: the [router] table (logLevel, the control socket at
// sock, no metrics listener) and the two interfaces, up0 on br-up with
// UpAddr and lan0 on br-lan with LANAddr. Callers append their clusters.
func TwoArmedConfig(sock, logLevel string) string {
	return fmt.Sprintf(`[router]
log_level = %q
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
`, logLevel, sock, UpAddr, LANAddr)
}
