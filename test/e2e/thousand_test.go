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
// namespaces, each its own MAC and address, the ghosts on lo with
// arp_ignore=1 and arp_announce=2), in two routing-mode clusters with ICMP
// health checks: one with the patent's modulo function, one with the
// default jhash table. All are resolved by the appliance within a bound;
// 2,000 clients (every server exactly twice under modulo) each send a
// datagram to each ghost, and the capture on the LAN shows each modulo
// client going to the MAC of the server the reference above names, and the
// jhash clients of one bucket (the kernel's hash, written here) to one
// server. One server then fails (its device goes down), health checks take
// it out of both clusters, and only its clients move: under modulo to the
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
		ns.AddrAdd("lo", ghostAddr+"/32", fleetGhostJ+"/32")
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
	for _, cl := range []struct{ name, ghost, hash string }{{"web", ghostAddr, "modulo"}, {"webj", fleetGhostJ, "jhash"}} {
		fmt.Fprintf(&b, "\n[[cluster]]\nname = %q\naddress = %q\ninterface = \"lan0\"\nmode = \"routing\"\nhash = %q\nseed = %d\nbuckets = %d\n",
			cl.name, cl.ghost, cl.hash, fleetSeed, fleetBuckets)
		// A server counts as failing until the appliance has its MAC; fall = 3
		// gives resolution 2 s before the first checks could take one down.
		b.WriteString("  [cluster.health]\n  check = \"icmp\"\n  interval = \"1s\"\n  timeout = \"500ms\"\n  rise = 1\n  fall = 3\n")
		for i := range fleetServers {
			fmt.Fprintf(&b, "  [[cluster.server]]\n  id = %d\n  address = %q\n", i, fleetAddr(i))
		}
	}
	cfg = strings.Replace(cfg, `log_level = "debug"`, `log_level = "info"`, 1) + b.String()
	t0 := time.Now()
	tp.start(cfg)
	var st statusDoc
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
	harness.WaitFor(t, 20*time.Second, "all 1,000 servers up by their health checks in both clusters", func() bool {
		return upCount(tp.statusJSON()) == 2*fleetServers
	})
	t.Logf("all %d servers resolved %v after the appliance started (bound 10 s); all up after %v", fleetServers, resolved.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	if resolved > 10*time.Second {
		t.Errorf("resolution took %v, want within 10 s", resolved)
	}

	clients := make([]netip.Addr, fleetClients)
	for k := range clients {
		clients[k] = fleetClient(k)
	}
	fleetIndex := map[string]int{}
	for i := range fleetServers {
		fleetIndex[fleetMAC(i)] = i
	}
	// send sends one datagram from every client to each ghost and returns,
	// per ghost, the MAC each client's datagram went to on the LAN.
	send := func() map[string]map[netip.Addr]string {
		c := tp.rtr.Capture("br-lan", "udp and dst port 9 and (dst host "+ghostAddr+" or dst host "+fleetGhostJ+")")
		err := tp.cli.Do(func() error {
			for _, g := range []string{ghostAddr, fleetGhostJ} {
				for _, src := range clients {
					conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: net.ParseIP(g), Port: 9})
					if err != nil {
						return err
					}
					_, err = conn.Write([]byte("fleet"))
					conn.Close()
					if err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("send from the clients: %v", err)
		}
		harness.WaitFor(t, 10*time.Second, "every client's datagrams on the LAN", func() bool { return len(c.Packets()) >= 2*len(clients) })
		out := map[string]map[netip.Addr]string{ghostAddr: {}, fleetGhostJ: {}}
		for _, p := range c.Stop() {
			m := out[p.Dst.String()]
			if _, dup := m[p.Src]; dup {
				t.Errorf("client %s: two datagrams to %s on the LAN, want one", p.Src, p.Dst)
			}
			if _, ok := fleetIndex[p.DstMAC.String()]; !ok {
				t.Errorf("client %s to %s sent to %s, no server's MAC", p.Src, p.Dst, p.DstMAC)
			}
			m[p.Src] = p.DstMAC.String()
		}
		for g, m := range out {
			if len(m) != len(clients) {
				t.Errorf("%d of %d clients' datagrams to %s on the LAN", len(m), len(clients), g)
			}
		}
		return out
	}
	// checkModulo compares each client's server with the patent's function.
	checkModulo := func(got map[netip.Addr]string, failed int) {
		for c, mac := range got {
			if want := moduloServer(c, fleetServers, failed); mac != fleetMAC(want) {
				t.Errorf("modulo: client %s sent to %s, want server %d's %s (failed: %d)", c, mac, want, fleetMAC(want), failed)
			}
		}
	}
	// checkBuckets: clients in one jhash bucket (the kernel's hash, written
	// here) go to one server.
	checkBuckets := func(got map[netip.Addr]string) {
		owner := map[uint32]string{}
		shared := 0
		for c, mac := range got {
			bk := kernelBucket(c, fleetSeed, fleetBuckets)
			if o, ok := owner[bk]; ok {
				shared++
				if o != mac {
					t.Errorf("jhash: bucket %d's clients go to %s and %s", bk, o, mac)
				}
			}
			owner[bk] = mac
		}
		if shared == 0 {
			t.Errorf("jhash: no two clients share a bucket: nothing checked")
		}
	}
	t1 := time.Now()
	before := send()
	checkModulo(before[ghostAddr], -1)
	checkBuckets(before[fleetGhostJ])
	for g, m := range before {
		reached := map[string]bool{}
		for _, mac := range m {
			reached[mac] = true
		}
		t.Logf("%s: %d clients reached %d servers", g, len(m), len(reached))
		if g == ghostAddr && len(reached) != fleetServers {
			t.Errorf("modulo: traffic reached %d server MACs, want all %d", len(reached), fleetServers)
		}
	}
	t.Logf("%d clients x 2 ghosts dispatched, each modulo client to its reference server's MAC (%v)", fleetClients, time.Since(t1).Round(time.Millisecond))

	// One server fails: the one the first client's jhash datagram went to,
	// so it has clients in both clusters.
	victim := fleetIndex[before[fleetGhostJ][clients[0]]]
	victimNS := fleet[victim/(fleetServers/fleetNS)]
	failedAt := time.Now()
	victimNS.MustRun("ip", "link", "set", fmt.Sprintf("m%d", victim), "down")
	harness.WaitFor(t, 15*time.Second, fmt.Sprintf("server %d down by its health checks in both clusters", victim), func() bool {
		down := 0
		for _, c := range tp.statusJSON().Clusters {
			for _, s := range c.Servers {
				if s.ID == victim && !s.Up {
					down++
				}
			}
		}
		return down == 2
	})
	detected := time.Since(failedAt)
	if n := upCount(tp.statusJSON()); n != 2*(fleetServers-1) {
		t.Fatalf("%d servers up in the two clusters after one failure, want %d", n, 2*(fleetServers-1))
	}
	after := send()
	checkModulo(after[ghostAddr], victim)
	checkBuckets(after[fleetGhostJ])
	for _, g := range []string{ghostAddr, fleetGhostJ} {
		moved, had := 0, 0
		to := map[string]bool{}
		for c, mac := range after[g] {
			if before[g][c] == fleetMAC(victim) {
				had++
				if mac == fleetMAC(victim) {
					t.Errorf("%s: client %s still sent to the failed server", g, c)
				}
			}
			if mac != before[g][c] {
				moved++
				to[mac] = true
				if before[g][c] != fleetMAC(victim) {
					t.Errorf("%s: client %s moved from %s (a live server) to %s", g, c, before[g][c], mac)
				}
			}
		}
		if moved != had || had == 0 {
			t.Errorf("%s: %d clients moved, the failed server had %d", g, moved, had)
		}
		t.Logf("%s: server %d failed: down after %v; only its %d clients moved, to %d other servers", g, victim, detected.Round(time.Millisecond), moved, len(to))
	}
}

// The jhash cluster of TestThousandServers.
const (
	fleetGhostJ  = "203.0.113.20"
	fleetSeed    = 0x5eed
	fleetBuckets = 4096
)

// kernelBucket is nftables' `jhash ip saddr mod B seed S` for an IPv4
// address, written here from the kernel's include/linux/jhash.h (jhash() of
// a 4-byte key: a = b = c = 0xdeadbeef + 4 + seed; a += the key's bytes
// k[0] | k[1]<<8 | k[2]<<16 | k[3]<<24; __jhash_final) and nft_jhash's
// reciprocal_scale ((hash * B) >> 32): the bucket the appliance's contract
// names for a client.
func kernelBucket(a netip.Addr, seed, buckets uint32) uint32 {
	k := a.As4()
	x := uint32(0xdeadbeef) + 4 + seed
	ha, hb, hc := x, x, x
	ha += uint32(k[3])<<24 | uint32(k[2])<<16 | uint32(k[1])<<8 | uint32(k[0])
	rol := func(v uint32, n uint) uint32 { return v<<n | v>>(32-n) }
	hc ^= hb
	hc -= rol(hb, 14)
	ha ^= hc
	ha -= rol(hc, 11)
	hb ^= ha
	hb -= rol(ha, 25)
	hc ^= hb
	hc -= rol(hb, 16)
	ha ^= hc
	ha -= rol(hc, 4)
	hb ^= ha
	hb -= rol(ha, 14)
	hc ^= hb
	hc -= rol(hb, 24)
	return uint32(uint64(hc) * uint64(buckets) >> 32)
}

func upCount(st statusDoc) int {
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
