package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// The one-armed layout (the patent's FIG. 4 as drawn): a Linux router "gw"
// routes the ghost /32 to the appliance, which sits on the servers' LAN with a
// single interface; ghost packets come in on lan0 and leave on lan0.
//
//	cli 198.51.100.10 ── gw ──── br-lan (rtr namespace) ──┬─ lan0 [ghostrouter] 10.0.0.1
//	                  .254  10.0.0.254                    ├─ srv0 10.0.0.11 (+ ghost on lo)
//	   gw: ghost/32 via 10.0.0.1                          └─ ...
//	   servers: default via 10.0.0.254 (replies bypass the appliance)
func newOneArmed(t *testing.T, servers int, sendRedirects bool) *topo {
	t.Helper()
	harness.RequireRoot(t, "ip", "tcpdump")
	h := harness.New(t)
	tp := &topo{h: h, t: t}
	tp.bin = h.Build("cmd/ghostrouter")
	tp.peer = h.Build("test/cmd/peer")
	tp.cli, tp.rtr = h.NS("cli"), h.NS("rtr")
	gw := h.NS("gw")
	h.Veth(tp.cli, "c0", gw, "g-up")
	h.Veth(gw, "g-lan", tp.rtr, "l-gw")
	ports := []string{"l-gw"}
	for i := 0; i < servers; i++ {
		s := &server{ns: h.NS(fmt.Sprintf("srv%d", i)), name: fmt.Sprintf("s%d", i), addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i)})}
		port := fmt.Sprintf("l-s%d", i)
		h.Veth(tp.rtr, port, s.ns, "e0")
		ports = append(ports, port)
		s.ns.AddrAdd("e0", s.addr.String()+"/24")
		s.ns.MustRun("ip", "route", "add", "default", "via", "10.0.0.254")
		s.mac = s.ns.MAC("e0")
		tp.servers = append(tp.servers, s)
	}
	tp.rtr.Bridge("br-lan", ports...)
	tp.cli.AddrAdd("c0", clientAddr+"/24")
	tp.cli.MustRun("ip", "route", "add", "default", "via", "198.51.100.254")
	gw.AddrAdd("g-up", "198.51.100.254/24")
	gw.AddrAdd("g-lan", "10.0.0.254/24")
	gw.Sysctl("net.ipv4.ip_forward", "1")
	gw.MustRun("ip", "route", "add", ghostAddr+"/32", "via", lanAddr)
	tp.startServers()
	cfg := fmt.Sprintf(`[router]
control_socket = %q
metrics_address = ""
send_redirects = %v

[[interface]]
name = "lan0"
addresses = ["%s/24"]
bridge = "br-lan"

[[route]]
to = "0.0.0.0/0"
via = "10.0.0.254"
`, h.ArtifactDir()+"/ctl.sock", sendRedirects, lanAddr)
	tp.sock = h.ArtifactDir() + "/ctl.sock"
	tp.start(cfg + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	return tp
}

// TestOneArmedNoRedirectForClusterTraffic: cluster traffic that enters and
// leaves by lan0 is dispatched and never draws an ICMP redirect, even with
// send_redirects on; an ordinary packet hairpinning through lan0 does draw
// one then, and does not when send_redirects is off.
func TestOneArmedNoRedirectForClusterTraffic(t *testing.T) {
	for _, redirects := range []bool{true, false} {
		t.Run(fmt.Sprintf("send_redirects=%v", redirects), func(t *testing.T) {
			tp := newOneArmed(t, 3, redirects)
			clients := []string{clientAddr}
			want := tp.lookup(clients)
			capLAN := tp.rtr.Capture("br-lan", "ip")
			res := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://"+ghostAddr+"/", "-src", clientAddr, "-count", "5"))
			if exp := fmt.Sprintf("s%d %s", want[clientAddr], clientAddr); res[clientAddr] != exp {
				t.Fatalf("one-armed HTTP: got %q, want %q", res[clientAddr], exp)
			}
			// Ordinary traffic: server 1 sends to the client through the
			// appliance, which must forward it back out lan0 to gw, a next hop
			// on server 1's own subnet.
			s1 := tp.servers[1]
			s1.ns.MustRun("ip", "route", "add", clientAddr+"/32", "via", lanAddr)
			out, _ := s1.ns.Run("ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", s1.addr.String(), clientAddr)
			if !strings.Contains(out, " 0% packet loss") {
				t.Fatalf("hairpinned ping through the appliance failed:\n%s", out)
			}
			pkts := capLAN.Stop()
			var clusterRedirects, ordinaryRedirects int
			for _, p := range pkts {
				if p.Proto != harness.ProtoICMP || p.ICMPType != 5 {
					continue
				}
				if q := harness.DecodeIP(p.Payload); q.Dst.String() == ghostAddr {
					clusterRedirects++
				} else if p.Dst == s1.addr {
					ordinaryRedirects++
					gwAddr := netip.AddrFrom4([4]byte(p.Raw[14+20+4 : 14+20+8]))
					if gwAddr.String() != "10.0.0.254" {
						t.Errorf("redirect names gateway %s, want 10.0.0.254", gwAddr)
					}
				}
			}
			if clusterRedirects != 0 {
				t.Fatalf("%d ICMP redirects for cluster traffic", clusterRedirects)
			}
			if redirects && ordinaryRedirects == 0 {
				t.Fatal("send_redirects = true, yet no redirect for ordinary hairpinned traffic: suppression is not a policy")
			}
			if !redirects && ordinaryRedirects != 0 {
				t.Fatalf("send_redirects = false, yet %d redirects were sent", ordinaryRedirects)
			}
		})
	}
}

// sendARP sends one ARP frame from ifname inside ns.
func sendARP(t *testing.T, ns *harness.NS, ifname string, op uint16, dstMAC, senderMAC net.HardwareAddr, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) {
	t.Helper()
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		f := make([]byte, 42)
		copy(f[0:6], dstMAC)
		copy(f[6:12], senderMAC)
		binary.BigEndian.PutUint16(f[12:], unix.ETH_P_ARP)
		binary.BigEndian.PutUint16(f[14:], 1)
		binary.BigEndian.PutUint16(f[16:], unix.ETH_P_IP)
		f[18], f[19] = 6, 4
		binary.BigEndian.PutUint16(f[20:], op)
		s, d := senderIP.As4(), targetIP.As4()
		copy(f[22:28], senderMAC)
		copy(f[28:32], s[:])
		copy(f[32:38], targetMAC)
		copy(f[38:42], d[:])
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], dstMAC)
		return unix.Sendto(fd, f, 0, sa)
	})
	if err != nil {
		t.Fatalf("send ARP from %s: %v", ns.Name, err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestARPGuard: a server sending gratuitous ARP, ARP replies and ARP
// requests that claim the ghost changes nothing: dispatch goes on to the
// right servers and the appliance counts the rejected claims.
func TestARPGuard(t *testing.T) {
	const nClients = 16
	tp := newTopo(t, topoOptions{servers: 3, clientAddrs: nClients})
	tp.startServers()
	tp.start(tp.baseConfig() + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	clients := tp.clientSources(nClients)
	want := tp.lookup(clients)
	check := func(when string) {
		res := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://"+ghostAddr+"/", "-src", strings.Join(clients, ","), "-parallel", "8"))
		for _, c := range clients {
			if exp := fmt.Sprintf("s%d %s", want[c], c); res[c] != exp {
				t.Errorf("%s: HTTP from %s got %q, want %q", when, c, res[c], exp)
			}
		}
	}
	check("before the claims")
	liar := tp.servers[2]
	ghost := netip.MustParseAddr(ghostAddr)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	appMAC := appMACFromStatus(t, tp.status(), "lan0")
	sendARP(t, liar.ns, "e0", 1, bcast, liar.mac, ghost, net.HardwareAddr{0, 0, 0, 0, 0, 0}, ghost)                        // gratuitous (request form)
	sendARP(t, liar.ns, "e0", 2, bcast, liar.mac, ghost, bcast, ghost)                                                     // gratuitous (reply form)
	sendARP(t, liar.ns, "e0", 2, appMAC, liar.mac, ghost, appMAC, netip.MustParseAddr(lanAddr))                            // unsolicited reply
	sendARP(t, liar.ns, "e0", 1, bcast, liar.mac, ghost, net.HardwareAddr{0, 0, 0, 0, 0, 0}, netip.MustParseAddr(lanAddr)) // request from the ghost
	harness.WaitFor(t, 5*time.Second, "4 rejected ARP claims in status", func() bool {
		return strings.Contains(tp.status(), "arp_claims_dropped=4 ")
	})
	check("after the claims")
	st := tp.status()
	if strings.Contains(neighborRows(st), ghostAddr) {
		t.Fatalf("the ghost appears in the appliance's neighbor table:\n%s", st)
	}
	// The claims name the liar as an address conflict.
	row := conflictRows(st)[ghostAddr]
	if f := strings.Fields(row); !strings.Contains(row, liar.mac.String()) || !strings.Contains(row, "lan0") || len(f) < 8 || f[7] != "4" {
		t.Fatalf("address conflict for the ghost: %q, want it claimed by %s on lan0, 4 claims\n%s", row, liar.mac, st)
	}
}

// appMACFromStatus reads the appliance's MAC on a link from `status`.
func appMACFromStatus(t *testing.T, status, link string) net.HardwareAddr {
	t.Helper()
	f := strings.Fields(linkLine(status, link))
	if len(f) < 2 {
		t.Fatalf("no link %s in status:\n%s", link, status)
	}
	mac, err := net.ParseMAC(strings.TrimSuffix(f[1], ":"))
	if err != nil {
		t.Fatalf("link %s MAC %q: %v", link, f[1], err)
	}
	return mac
}

// neighborRows is the neighbor table part of `status`.
func neighborRows(status string) string { return statusSection(status, "neighbors") }

// statusSection is the part of `status` from the line starting with title
// up to the next blank line.
func statusSection(status, title string) string {
	i := strings.Index("\n"+status, "\n"+title)
	if i < 0 {
		return ""
	}
	rest := status[i:]
	if j := strings.Index(rest, "\n\n"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}
