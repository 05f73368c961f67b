package e2e

import (
	"encoding/binary"
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

// A thousand servers on one LAN, in a few namespaces.
const (
	fleetServers = 1000
	fleetNS      = 4 // namespaces, fleetServers/fleetNS macvlan servers each
	fleetClients = 2000
)

// fleetAddr is server i's address, fleetMAC its MAC.
func fleetAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 0, byte(1 + i/200), byte(10 + i%200)})
}
func fleetMAC(i int) string { return fmt.Sprintf("02:aa:00:00:%02x:%02x", i>>8, i&0xff) }

// fleetClient is the k-th client address, 10.128.0.0 + k.
func fleetClient(k int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0x0a800000+uint32(k))
	return netip.AddrFrom4(b)
}

// moduloServer is the patent's dispatching function, written here from its
// text as the test's reference (not the appliance's code): with N servers in
// id order and CA the client address as an integer, server k = CA mod N;
// if server k has failed, j = CA mod (N-1) and the packet goes to j if
// j < k, else to j+1.
func moduloServer(client netip.Addr, n int, failed int) int {
	b := client.As4()
	ca := uint64(binary.BigEndian.Uint32(b[:]))
	k := int(ca % uint64(n))
	if k != failed {
		return k
	}
	j := int(ca % uint64(n-1))
	if j < k {
		return j
	}
	return j + 1
}

// TestThousandServers: 1,000 servers on one LAN (macvlan devices in four
// namespaces, each its own MAC and address, the ghost on lo with
// arp_ignore=1 and arp_announce=2), routing mode with the patent's modulo
// function and ICMP health checks. All are resolved by the appliance within
// a bound; 2,000 clients (every server exactly twice) each send a datagram
// to the ghost, and the capture on the LAN shows each going to the MAC of
// the server the reference above names; one server then fails (its device
// goes down), health checks take it out, and only its clients move, to the
// servers the patent's failure rule names.
//
//	cli 198.51.100.10 + 10.128.0.0..2000 ── br-up ── up0 [ghostrouter] lan0 10.0.0.1/16 ── br-lan ─┬─ fleet0: e0 + 250 macvlans
//	                                                                                               ├─ ...
//	                                                                                               └─ fleet3
func TestThousandServers(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 0})
	start := time.Now()
	var fleet []*harness.NS
	for n := range fleetNS {
		ns := tp.h.NS(fmt.Sprintf("fleet%d", n))
		port := fmt.Sprintf("l-f%d", n)
		tp.h.Veth(tp.rtr, port, ns, "e0")
		tp.rtr.MustRun("ip", "link", "set", port, "master", "br-lan")
		for _, k := range []string{"all", "default"} {
			ns.Sysctl("net.ipv6.conf."+k+".disable_ipv6", "1")
			ns.Sysctl("net.ipv4.conf."+k+".arp_ignore", "1")
			ns.Sysctl("net.ipv4.conf."+k+".arp_announce", "2")
			ns.Sysctl("net.ipv4.conf."+k+".rp_filter", "0")
		}
		ns.AddrAdd("lo", ghostAddr+"/32")
		var b strings.Builder
		per := fleetServers / fleetNS
		for i := n * per; i < (n+1)*per; i++ {
			m := fmt.Sprintf("m%d", i)
			fmt.Fprintf(&b, "link add link e0 name %s address %s type macvlan mode bridge bcqueuelen 20000\n", m, fleetMAC(i))
			fmt.Fprintf(&b, "addr add %s/16 dev %s\n", fleetAddr(i), m)
			fmt.Fprintf(&b, "link set %s up\n", m)
		}
		batch := filepath.Join(tp.h.ArtifactDir(), ns.Name+".ip")
		if err := os.WriteFile(batch, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		ns.MustRun("ip", "-batch", batch)
		ns.MustRun("ip", "route", "add", "default", "via", lanAddr, "dev", fmt.Sprintf("m%d", n*per))
		fleet = append(fleet, ns)
	}
	var cb strings.Builder
	for k := range fleetClients {
		fmt.Fprintf(&cb, "addr add %s/32 dev c0\n", fleetClient(k))
	}
	batch := filepath.Join(tp.h.ArtifactDir(), "clients.ip")
	if err := os.WriteFile(batch, []byte(cb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tp.cli.MustRun("ip", "-batch", batch)
	t.Logf("topology: %d servers in %d namespaces, %d client addresses, built in %v", fleetServers, fleetNS, fleetClients, time.Since(start).Round(time.Millisecond))

	cfg := strings.Replace(tp.baseConfig(), `addresses = ["`+lanAddr+`/24"]`, `addresses = ["`+lanAddr+`/16"]`, 1)
	cfg += "\n[[route]]\nto = \"10.128.0.0/16\"\nvia = \"" + clientAddr + "\"\n"
	var b strings.Builder
	fmt.Fprintf(&b, "\n[[cluster]]\nname = \"web\"\naddress = %q\ninterface = \"lan0\"\nmode = \"routing\"\nhash = \"modulo\"\n", ghostAddr)
	b.WriteString("  [cluster.health]\n  check = \"icmp\"\n  interval = \"1s\"\n  timeout = \"500ms\"\n  rise = 1\n  fall = 2\n")
	for i := range fleetServers {
		fmt.Fprintf(&b, "  [[cluster.server]]\n  id = %d\n  address = %q\n", i, fleetAddr(i))
	}
	cfg = strings.Replace(cfg, `log_level = "debug"`, `log_level = "info"`, 1) + b.String()
	t0 := time.Now()
	tp.start(cfg)
	var st jsonStatus
	harness.WaitFor(t, 20*time.Second, "all 1,000 servers resolved", func() bool {
		st = tp.statusJSON()
		n := 0
		for _, e := range st.ServerNeighbors {
			if e.MAC != "" {
				n++
			}
		}
		return n == fleetServers
	})
	resolved := time.Since(t0)
	t.Logf("resolution: %d requests sent, %d held back by the rate, %d MACs learned", st.Counters["server_neighbor_requests"],
		st.Counters["server_neighbor_deferred"], st.Counters["server_neighbor_learned"])
	macs := st.serverMACs()
	for i := range fleetServers {
		if macs[fleetAddr(i).String()] != fleetMAC(i) {
			t.Fatalf("server %d (%s) resolved to %q, want %s", i, fleetAddr(i), macs[fleetAddr(i).String()], fleetMAC(i))
		}
	}
	harness.WaitFor(t, 20*time.Second, "all 1,000 servers up by their health checks", func() bool {
		return upCount(tp.statusJSON()) == fleetServers
	})
	t.Logf("all %d servers resolved %v after the appliance started (bound 10 s); all up after %v", fleetServers, resolved.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	if resolved > 10*time.Second {
		t.Errorf("resolution took %v, want within 10 s", resolved)
	}

	clients := make([]netip.Addr, fleetClients)
	for k := range clients {
		clients[k] = fleetClient(k)
	}
	send := func() []harness.Packet {
		c := tp.rtr.Capture("br-lan", "udp and dst host "+ghostAddr+" and dst port 9")
		err := tp.cli.Do(func() error {
			for _, src := range clients {
				conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: net.ParseIP(ghostAddr), Port: 9})
				if err != nil {
					return err
				}
				_, err = conn.Write([]byte("fleet"))
				conn.Close()
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("send from the clients: %v", err)
		}
		harness.WaitFor(t, 10*time.Second, "every client's datagram on the LAN", func() bool { return len(c.Packets()) >= len(clients) })
		return c.Stop()
	}
	// check compares each client's datagram with the reference and returns
	// the MAC it went to.
	check := func(pkts []harness.Packet, failed int) map[netip.Addr]string {
		seen := map[netip.Addr]int{}
		got := map[netip.Addr]string{}
		for _, p := range pkts {
			seen[p.Src]++
			got[p.Src] = p.DstMAC.String()
			want := moduloServer(p.Src, fleetServers, failed)
			if p.DstMAC.String() != fleetMAC(want) {
				t.Errorf("client %s sent to %s, want server %d's %s (failed: %d)", p.Src, p.DstMAC, want, fleetMAC(want), failed)
			}
		}
		for _, c := range clients {
			if seen[c] != 1 {
				t.Errorf("client %s: %d datagrams on the LAN, want 1", c, seen[c])
			}
		}
		return got
	}
	t1 := time.Now()
	before := check(send(), -1)
	reached := map[string]bool{}
	for _, m := range before {
		reached[m] = true
	}
	if len(reached) != fleetServers {
		t.Errorf("traffic reached %d server MACs, want all %d", len(reached), fleetServers)
	}
	t.Logf("%d clients dispatched to all %d servers, each to its reference server's MAC (%v)", fleetClients, len(reached), time.Since(t1).Round(time.Millisecond))

	// One server fails.
	const victim = 617
	victimNS := fleet[victim/(fleetServers/fleetNS)]
	failedAt := time.Now()
	victimNS.MustRun("ip", "link", "set", fmt.Sprintf("m%d", victim), "down")
	harness.WaitFor(t, 15*time.Second, "server 617 down by its health checks", func() bool {
		st := tp.statusJSON()
		for _, c := range st.Clusters {
			for _, s := range c.Servers {
				if s.ID == victim {
					return !s.Up
				}
			}
		}
		return false
	})
	detected := time.Since(failedAt)
	if n := upCount(tp.statusJSON()); n != fleetServers-1 {
		t.Fatalf("%d servers up after one failure, want %d", n, fleetServers-1)
	}
	after := check(send(), victim)
	moved := 0
	for c, m := range after {
		if m != before[c] {
			moved++
			if before[c] != fleetMAC(victim) {
				t.Errorf("client %s moved from %s (a live server) to %s", c, before[c], m)
			}
		}
	}
	if moved != fleetClients/fleetServers {
		t.Errorf("%d clients moved, want the failed server's %d", moved, fleetClients/fleetServers)
	}
	t.Logf("server %d failed: down after %v; only its %d clients moved, each to the server the failure rule names", victim, detected.Round(time.Millisecond), moved)
}

func upCount(st jsonStatus) int {
	n := 0
	for _, c := range st.Clusters {
		for _, s := range c.Servers {
			if s.Up {
				n++
			}
		}
	}
	return n
}
