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

// serverMACs maps each server address in st to its MAC ("" unresolved).
func (st statusDoc) serverMACs() map[string]string {
	m := map[string]string{}
	for _, e := range st.ServerNeighbors {
		m[e.Address] = e.MAC
	}
	return m
}

// rawSocket opens an AF_PACKET socket on ifname inside ns, for sending
// hand-built frames; it is closed at the test's end.
func rawSocket(t *testing.T, ns *harness.NS, ifname string) int {
	t.Helper()
	fd := -1
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(s, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			unix.Close(s)
			return err
		}
		fd = s
		return nil
	})
	if err != nil {
		t.Fatalf("raw socket on %s in %s: %v", ifname, ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// The frames of a rogue host, built here from RFC 826 and RFC 4861 (not by
// the code under test).

func rogueARP(op uint16, ethDst, ethSrc, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	f := make([]byte, 60)
	copy(f[0:], ethDst)
	copy(f[6:], ethSrc)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	p := f[14:]
	binary.BigEndian.PutUint16(p[0:], 1)
	binary.BigEndian.PutUint16(p[2:], 0x0800)
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], op)
	copy(p[8:], sha)
	copy(p[14:], spa.AsSlice())
	copy(p[18:], tha)
	copy(p[24:], tpa.AsSlice())
	return f
}

// rogueNDP builds an NS (typ 135, option 1) or NA (136, option 2) with the
// link-layer option lla; target is the NS/NA target.
func rogueNDP(typ, flags byte, ethDst, ethSrc net.HardwareAddr, src, dst, target netip.Addr, lla net.HardwareAddr) []byte {
	f := make([]byte, 14+40+32)
	copy(f[0:], ethDst)
	copy(f[6:], ethSrc)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 32)
	ip[6], ip[7] = 58, 255
	copy(ip[8:], src.AsSlice())
	copy(ip[24:], dst.AsSlice())
	m := ip[40:]
	m[0], m[4] = typ, flags
	copy(m[8:], target.AsSlice())
	m[24], m[25] = 1, 1
	if typ == 136 {
		m[24] = 2
	}
	copy(m[26:], lla)
	// Checksum over the pseudo-header (src, dst, length, next header 58).
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	add(ip[8:40])
	sum += 32 + 58
	add(m)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(m[2:], ^uint16(sum))
	return f
}

func solicitedNode(a netip.Addr) (netip.Addr, net.HardwareAddr) {
	b := a.As16()
	g := [16]byte{0: 0xff, 1: 0x02, 11: 1, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]}
	return netip.AddrFrom16(g), net.HardwareAddr{0x33, 0x33, 0xff, b[13], b[14], b[15]}
}

// rogueClaims are every way a LAN host can state that server address s is
// at claimed: ARP request, reply to the appliance and gratuitous ARP for
// IPv4; unsolicited and solicited advertisements and a solicitation for
// IPv6. The Ethernet source is always the rogue's own MAC (a bridge drops a
// multicast source).
func rogueClaims(rogueMAC, claimed, app net.HardwareAddr, s, app4, app6 netip.Addr) [][]byte {
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	zero := make(net.HardwareAddr, 6)
	if s.Is4() {
		return [][]byte{
			rogueARP(1, bcast, rogueMAC, claimed, s, zero, app4),
			rogueARP(2, app, rogueMAC, claimed, s, app, app4),
			rogueARP(1, bcast, rogueMAC, claimed, s, zero, s),
			rogueARP(2, bcast, rogueMAC, claimed, s, bcast, s),
		}
	}
	grp, grpMAC := solicitedNode(app6)
	return [][]byte{
		rogueNDP(136, 0x20, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, rogueMAC, s, netip.MustParseAddr("ff02::1"), s, claimed),
		rogueNDP(136, 0x60, app, rogueMAC, s, app6, s, claimed),
		rogueNDP(135, 0, grpMAC, rogueMAC, s, grp, app6, claimed),
	}
}

// TestServerMACGuard: a rogue host on the servers' LAN claims server 0's
// IPv4 and IPv6 addresses, by ARP and NDP, with its own MAC and with the
// broadcast MAC, again and again, while clients use both ghosts. Not one
// ghost frame reaches the rogue or leaves as a broadcast or multicast (the
// captures on the rogue and on the LAN bridge); every ghost frame goes to a
// server's own MAC; `status` lists the conflict with the rogue's MAC; netstack's
// entries for the server stay permanent with its MAC. Then server 1's NIC
// MAC is changed (the old one gone; the kernel announces the new one with
// arp_notify and ndisc_notify): the appliance accepts it within the
// documented bound (3 unanswered unicast probes 500 ms apart: 1.5 s) and
// dispatches to it. Server 2's IPv4 address is pinned by mac = and shows so.
//
//	cli ── br-up ── up0 [ghostrouter] lan0 ── br-lan ─┬─ srv0 10.0.0.11 2001:db8:2::11
//	                                                 ├─ srv1 10.0.0.12 2001:db8:2::12
//	                                                 ├─ srv2 10.0.0.13 2001:db8:2::13
//	                                                 └─ rogue 10.0.0.66
func TestServerMACGuard(t *testing.T) {
	const ghost6 = "2001:db8:ffff::10"
	tp := newTopo(t, topoOptions{servers: 3, clientAddrs: 16})
	rg := tp.h.NS("rogue")
	tp.h.Veth(tp.rtr, "l-rg", rg, "e0")
	tp.rtr.MustRun("ip", "link", "set", "l-rg", "master", "br-lan")
	rg.AddrAdd("e0", "10.0.0.66/24")
	rogueMAC := rg.MAC("e0")
	clients6 := tp.enableIPv6(16, 0x100)
	tp.startServers()

	cfg := strings.Replace(tp.baseConfig(), `addresses = ["`+upAddr+`/24"]`, `addresses = ["`+upAddr+`/24", "2001:db8:1::1/64"]`, 1)
	cfg = strings.Replace(cfg, `addresses = ["`+lanAddr+`/24"]`, `addresses = ["`+lanAddr+`/24", "2001:db8:2::1/64"]`, 1)
	// Server 2's IPv4 address is pinned to its MAC by configuration.
	cfg += strings.Replace(tp.clusterConfig("routing", "jhash", ""), `address = "10.0.0.13"`, `address = "10.0.0.13"
  mac = "`+tp.servers[2].mac.String()+`"`, 1)
	cfg += fmt.Sprintf("\n[[cluster]]\nname = \"web6\"\naddress = %q\ninterface = \"lan0\"\nmode = \"routing\"\nseed = 0x5eed\n", ghost6)
	for i := range tp.servers {
		cfg += fmt.Sprintf("\n  [[cluster.server]]\n  id = %d\n  address = \"2001:db8:2::%x\"\n", i, 0x11+i)
	}
	tp.start(cfg)
	tp.setupNodes()
	for i, s := range tp.servers {
		s.ns.MustRun(tp.node, "setup", "-c", tp.cfgPath, "--cluster", "web6", "--id", fmt.Sprint(i), "--state-dir", tp.h.ArtifactDir()+"/node6-"+s.name)
	}
	v4 := func(i int) string { return tp.servers[i].addr.String() }
	v6 := func(i int) string { return fmt.Sprintf("2001:db8:2::%x", 0x11+i) }
	var st statusDoc
	harness.WaitFor(t, 10*time.Second, "every server address resolved by the appliance", func() bool {
		st = tp.statusJSON()
		macs := st.serverMACs()
		for i, s := range tp.servers {
			if macs[v4(i)] != s.mac.String() || macs[v6(i)] != s.mac.String() {
				return false
			}
		}
		return len(macs) == 2*len(tp.servers)
	})
	resolvedAt := time.Now() // every MAC was learned before this
	for _, e := range st.ServerNeighbors {
		if (e.Address == v4(2)) != (e.State == "pinned") {
			t.Errorf("entry %+v: only server 2's IPv4 address is pinned", e)
		}
	}
	var appMAC net.HardwareAddr
	for _, l := range st.Links {
		if l.Name == "lan0" {
			appMAC, _ = net.ParseMAC(l.MAC)
		}
	}
	if appMAC == nil {
		t.Fatalf("no lan0 MAC in the status")
	}

	// The rogue's claims, under traffic.
	s0, s06 := tp.servers[0].addr, netip.MustParseAddr(v6(0))
	app4, app6 := netip.MustParseAddr(lanAddr), netip.MustParseAddr("2001:db8:2::1")
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	var storm, own [][]byte
	for _, claimed := range []net.HardwareAddr{bcast, rogueMAC} {
		for _, s := range []netip.Addr{s0, s06} {
			fs := rogueClaims(rogueMAC, claimed, appMAC, s, app4, app6)
			storm = append(storm, fs...)
			if claimed.String() == rogueMAC.String() {
				own = append(own, fs...)
			}
		}
	}
	fd := rawSocket(t, rg, "e0")
	ghostFilter := "ip dst " + ghostAddr + " or ip6 dst " + ghost6
	capRogue := rg.Capture("e0", ghostFilter)
	capLAN := tp.rtr.Capture("br-lan", ghostFilter)
	done := make(chan int)
	go func() {
		sent := 0
		for round := 0; round < 400; round++ {
			select {
			case <-done:
				done <- sent
				return
			default:
			}
			for _, f := range storm {
				if unix.Send(fd, f, 0) == nil {
					sent++
				}
			}
			time.Sleep(10 * time.Millisecond) // pacing of the rogue's own loop, bounded by the round count
		}
		<-done
		done <- sent
	}()
	clients4 := tp.clientSources(16)
	for range 8 {
		res := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://"+ghostAddr+"/", "-src", strings.Join(clients4, ","), "-parallel", "8"))
		res6 := peerResults(tp.cli.MustRun(tp.peer, "http", "-url", "http://["+ghost6+"]/", "-src", strings.Join(clients6, ","), "-parallel", "8"))
		for c, r := range res {
			if !strings.HasPrefix(r, "s") {
				t.Errorf("HTTP to the ghost from %s during the claims: %q", c, r)
			}
		}
		for c, r := range res6 {
			if !strings.HasPrefix(r, "s") {
				t.Errorf("HTTP to the IPv6 ghost from %s during the claims: %q", c, r)
			}
		}
	}
	done <- 0
	sent := <-done
	// A last round with the rogue's own MAC, so the table shows it.
	for _, f := range own {
		if err := unix.Send(fd, f, 0); err != nil {
			t.Fatalf("rogue send: %v", err)
		}
	}
	caps := harness.StopAll(capRogue, capLAN)
	if len(caps[0]) != 0 {
		t.Errorf("%d ghost frames reached the rogue, first %v", len(caps[0]), caps[0][0])
	}
	serverMAC := map[string]int{}
	for i, s := range tp.servers {
		serverMAC[s.mac.String()] = i
	}
	perServer := map[int]int{}
	for _, p := range caps[1] {
		i, ok := serverMAC[p.DstMAC.String()]
		if !ok {
			t.Errorf("ghost frame to %s, not a server's MAC: %v", p.DstMAC, p)
			continue
		}
		perServer[i]++
	}
	if sent < 100 {
		t.Errorf("the rogue sent only %d claims", sent)
	}
	if len(caps[1]) < 2*8*32 || perServer[0] == 0 {
		t.Errorf("only %d ghost frames on the LAN (per server %v): too little traffic to judge", len(caps[1]), perServer)
	}
	t.Logf("rogue sent %d claims; %d ghost frames on the LAN, per server %v, none to the rogue", sent, len(caps[1]), perServer)

	harness.WaitFor(t, 5*time.Second, "the rogue's MAC in the conflict table", func() bool {
		st = tp.statusJSON()
		n := 0
		for _, c := range st.Conflicts {
			if (c.Address == s0.String() || c.Address == s06.String()) && c.MAC == rogueMAC.String() && c.Claims > 1 {
				n++
			}
		}
		return n == 2
	})
	macs := st.serverMACs()
	if macs[v4(0)] != tp.servers[0].mac.String() || macs[v6(0)] != tp.servers[0].mac.String() {
		t.Errorf("server 0's MACs after the claims: %s, %s; want %s", macs[v4(0)], macs[v6(0)], tp.servers[0].mac)
	}
	perm := 0
	for _, n := range st.Neighbors {
		if a := n.Addr.String(); a == v4(0) || a == v6(0) {
			if !n.Permanent || n.MAC != tp.servers[0].mac.String() {
				t.Errorf("netstack's entry for %s: %s permanent=%v, want %s permanent", n.Addr, n.MAC, n.Permanent, tp.servers[0].mac)
			}
			perm++
		}
	}
	if perm != 2 {
		t.Errorf("netstack has %d entries for server 0's addresses, want 2", perm)
	}
	text := tp.status()
	rows := conflictRows(text)
	for _, a := range []string{v4(0), v6(0)} {
		if !strings.Contains(rows[a], rogueMAC.String()) || !strings.Contains(rows[a], "server 0 of cluster") {
			t.Errorf("conflict row for %s: %q, want server 0 claimed by %s\n%s", a, rows[a], rogueMAC, text)
		}
	}

	// A genuine change: server 1's NIC gets a new MAC; the old one is gone.
	srv1 := tp.servers[1]
	srv1.ns.Sysctl("net.ipv4.conf.e0.arp_notify", "1")
	srv1.ns.Sysctl("net.ipv6.conf.e0.ndisc_notify", "1")
	newMAC := "02:00:5e:10:00:01"
	changed := time.Now()
	srv1.ns.MustRun("ip", "link", "set", "e0", "address", newMAC)
	harness.WaitFor(t, 10*time.Second, "server 1's new MAC accepted", func() bool {
		m := tp.statusJSON().serverMACs()
		return m[v4(1)] == newMAC && m[v6(1)] == newMAC
	})
	took := time.Since(changed)
	t.Logf("server 1's new MAC accepted %v after the change (documented bound: 1.5 s after its announcement)", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("the new MAC took %v to show in status, want within the documented 1.5 s bound (plus the status poll)", took)
	}
	// The bound, from the appliance's log: each address's change is
	// accepted Probes x Probe = 1.5 s after the first claim of the new MAC
	// (the kernel's announcement), plus a round trip.
	log := tp.app.Log()
	for _, a := range []string{v4(1), v6(1)} {
		claimed := logTimes(log, "address conflict", "address="+a+" ", "mac="+newMAC)
		accepted := logTimes(log, "server MAC changed", "address="+a+" ", "new="+newMAC)
		if len(claimed) == 0 || len(accepted) != 1 {
			t.Errorf("%s: %d conflict lines naming the new MAC, %d change lines, want at least 1 and 1", a, len(claimed), len(accepted))
			continue
		}
		d := accepted[0].Sub(claimed[0])
		t.Logf("%s: new MAC accepted %v after its first announcement", a, d.Round(time.Millisecond))
		if d < 1500*time.Millisecond || d > 2*time.Second {
			t.Errorf("%s: accepted %v after the first claim, want the documented 1.5 s (at most 2 s)", a, d)
		}
	}
	// The ages in status: server 0's MAC is as old as its resolution,
	// server 1's is younger than the change, which it counts.
	minAge0 := time.Since(resolvedAt)
	st = tp.statusJSON()
	maxAge1 := time.Since(changed)
	for _, e := range st.ServerNeighbors {
		switch e.Address {
		case v4(0), v6(0):
			if time.Duration(e.AgeMS)*time.Millisecond < minAge0-time.Millisecond || e.Changes != 0 || e.State != "reachable" {
				t.Errorf("server 0's entry %+v: want reachable, no change, age at least %v", e, minAge0)
			}
		case v4(1), v6(1):
			if time.Duration(e.AgeMS)*time.Millisecond > maxAge1 || e.Changes != 1 {
				t.Errorf("server 1's entry %+v: want one change, age at most %v", e, maxAge1)
			}
		}
	}
	// And the dispatcher follows: server 1's clients reach it at its new MAC.
	capLAN = tp.rtr.Capture("br-lan", "ip dst "+ghostAddr)
	want := tp.lookup(clients4)
	tp.askAll(clients4, want)
	n1 := 0
	for _, p := range capLAN.Stop() {
		if want[p.Src.String()] == 1 {
			n1++
			if p.DstMAC.String() != newMAC {
				t.Errorf("server 1's client %s sent to %s, want the new MAC %s", p.Src, p.DstMAC, newMAC)
			}
		}
	}
	if n1 == 0 {
		t.Errorf("no traffic of server 1's clients after the change")
	}
}

// logTimes returns the times of the appliance's log lines (slog text)
// containing every one of subs.
func logTimes(log string, subs ...string) []time.Time {
	var out []time.Time
lines:
	for _, line := range strings.Split(log, "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue lines
			}
		}
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "time=") {
			continue
		}
		if ts, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time=")); err == nil {
			out = append(out, ts)
		}
	}
	return out
}
