package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// ICMP errors follow their flow: a client behind a narrower link downloads
// from the ghost with path-MTU discovery. A Linux router (namespace mid)
// sits between the client and the appliance; its client-side link has MTU
// 1280, the client's own interface 1500, so the client advertises an MSS
// that does not fit and the servers' 1500-byte segments (DF set) draw
// fragmentation needed from mid's upstream address, addressed to the ghost.
//
//	pc 192.0.2.x ── c0 (1500) ─── m-c (1280) [mid 192.0.2.1 | 198.51.100.2] m-up ── u-m ─ br-up ── up0 [ghostrouter] lan0 ── br-lan ── srv0, srv1
//
// The same for IPv6 (packet too big, mid at 2001:db8:1::2, the client in
// 2001:db8:3::/64).
//
// The error's outer source (mid) and the client are chosen to hash to
// different servers, so an error dispatched by its outer source would reach
// the wrong one. The evidence: each server's capture (which server's TCP
// answered the client, and where the error arrived), the kernels' own
// state (only the connection's server has learned MTU 1280 for the
// client; in broadcast mode a counting chain behind the ghost filter shows
// which kernels accepted the error), and the download's sha256.

const (
	midUp     = "198.51.100.2"
	midDown   = "192.0.2.1"
	midUp6    = "2001:db8:1::2"
	midDown6  = "2001:db8:3::1"
	ghost6PM  = "2001:db8:ffff::30"
	second6PM = "2001:db8:2::fb"
	narrowMTU = 1280
	pmtuSeed  = 1191
	// acceptedTb is the test's counting table on each server.
	acceptedTb = "grtest"
)

var fragNeededMTU = regexp.MustCompile(`\bmtu (\d+)\b`)

func TestICMPErrorsFollowTheirFlow(t *testing.T) {
	for _, mode := range []string{"routing", "broadcast"} {
		t.Run(mode, func(t *testing.T) { icmpErrorsFollowTheirFlow(t, mode, false) })
	}
}

func TestICMPv6ErrorsFollowTheirFlow(t *testing.T) {
	for _, mode := range []string{"routing", "broadcast"} {
		t.Run(mode, func(t *testing.T) { icmpErrorsFollowTheirFlow(t, mode, true) })
	}
}

// pmtuFamily is what differs between the IPv4 and the IPv6 run.
type pmtuFamily struct {
	v6                          bool
	ghost, midUp, midDown, cand string // cand: the clients' prefix
	nft, icmpType               string // nftables family and the error's name
	ip                          []string
}

func icmpErrorsFollowTheirFlow(t *testing.T, mode string, v6 bool) {
	fam := pmtuFamily{ghost: ghostAddr, midUp: midUp, midDown: midDown, cand: "192.0.2.", nft: "ip",
		icmpType: "icmp type destination-unreachable", ip: []string{"ip"}}
	if v6 {
		fam = pmtuFamily{v6: true, ghost: ghost6PM, midUp: midUp6, midDown: midDown6, cand: "2001:db8:3::", nft: "ip6",
			icmpType: "icmpv6 type packet-too-big", ip: []string{"ip", "-6"}}
	}
	ipc := func(args ...string) []string { return append(append([]string(nil), fam.ip...), args...) }
	tp := newTopo(t, topoOptions{servers: 2})
	h := tp.h
	mid, pc := h.NS("mid"), h.NS("pc")
	h.Veth(mid, "m-up", tp.rtr, "u-m")
	tp.rtr.MustRun("ip", "link", "set", "u-m", "master", "br-up")
	h.Veth(pc, "c0", mid, "m-c")
	mid.MustRun("ip", "link", "set", "m-c", "mtu", strconv.Itoa(narrowMTU))
	var cfg string
	extra := ""
	if !v6 {
		mid.AddrAdd("m-up", midUp+"/24")
		mid.AddrAdd("m-c", midDown+"/24")
		mid.MustRun("ip", "route", "add", "default", "via", upAddr)
		mid.Sysctl("net.ipv4.ip_forward", "1")
		if mode == "broadcast" {
			extra = broadcastExtra("")
		}
		cfg = tp.baseConfig() + fmt.Sprintf("\n[[route]]\nto = \"192.0.2.0/24\"\nvia = %q\ninterface = \"up0\"\n", midUp) +
			tp.clusterConfig(mode, "jhash", extra)
	} else {
		for _, ns := range []*harness.NS{mid, pc} {
			ns.Sysctl("net.ipv6.conf.all.disable_ipv6", "0")
		}
		tp.enableIPv6(0, 0)
		mid.AddrAdd("m-up", midUp6+"/64")
		mid.AddrAdd("m-c", midDown6+"/64")
		mid.MustRun("ip", "-6", "route", "add", "default", "via", "2001:db8:1::1")
		mid.Sysctl("net.ipv6.conf.all.forwarding", "1")
		more := "mode = \"routing\"\n"
		if mode == "broadcast" {
			more = fmt.Sprintf("mode = \"broadcast\"\nbroadcast_address = %q\n", second6PM)
		}
		cfg = tp.ipv6Config(`"`+lanAddr+`/24", "2001:db8:2::1/64"`, ghost6PM, more) +
			fmt.Sprintf("\n[[route]]\nto = \"2001:db8:3::/64\"\nvia = %q\ninterface = \"up0\"\n", midUp6)
	}
	tp.start(cfg)
	tp.setupNodes()

	// A client address that hashes away from mid's (lookup only picks the
	// set-up; the checks below read the servers, not lookup).
	var cands []string
	for i := 10; i < 40; i++ {
		cands = append(cands, fmt.Sprintf("%s%d", fam.cand, i))
	}
	m := tp.lookup(append([]string{fam.midUp}, cands...))
	client := ""
	for _, c := range cands {
		if m[c] != m[fam.midUp] {
			client = c
			break
		}
	}
	if client == "" {
		t.Fatalf("every candidate client hashes with mid's address %s to server %d", fam.midUp, m[fam.midUp])
	}
	bits := "/24"
	if v6 {
		bits = "/64"
	}
	pc.AddrAdd("c0", client+bits)
	pc.MustRun(ipc("route", "add", "default", "via", fam.midDown)...)
	if v6 {
		for _, ns := range []*harness.NS{mid, pc} {
			harness.WaitFor(t, 10*time.Second, "IPv6 duplicate address detection in "+ns.Name, func() bool {
				out, err := ns.Run("ip", "-6", "addr", "show", "tentative")
				return err == nil && strings.TrimSpace(out) == ""
			})
		}
	}
	t.Logf("client %s (behind mid, %s, whose address hashes to server %d)", client, fam.midUp, m[fam.midUp])

	ghost := netip.MustParseAddr(fam.ghost)
	for _, s := range tp.servers {
		transferServer(t, s.ns)
		if mode == "broadcast" {
			// A chain after the ghost filter (priority mangle) sees only
			// what that filter accepted: it counts the ICMP errors.
			nftScript(t, s.ns, fmt.Sprintf(`table %s %s {
	chain pre {
		type filter hook prerouting priority 0; policy accept;
		%s daddr %s %s counter
	}
}
`, fam.nft, acceptedTb, fam.nft, fam.ghost, fam.icmpType))
		}
	}

	filter := "icmp or (tcp port 9200 and tcp[tcpflags] & tcp-syn != 0)"
	if v6 {
		filter = "icmp6 or (ip6 and tcp port 9200 and ip6[53] & 0x02 != 0)"
	}
	var caps []*harness.Capture
	for _, s := range tp.servers {
		caps = append(caps, s.ns.Capture("e0", filter))
	}
	midFilter := "icmp"
	if v6 {
		midFilter = "icmp6"
	}
	caps = append(caps, mid.Capture("m-up", midFilter))
	transfer(t, pc, ghost, false, pmtuSeed)
	all := harness.StopAll(caps...)

	// The server whose TCP answered the client holds the connection.
	holder := -1
	for i := range tp.servers {
		for _, p := range all[i] {
			if p.Src == ghost && p.Dst.String() == client && p.TCPFlags&(harness.TCPFlagSYN|harness.TCPFlagACK) == harness.TCPFlagSYN|harness.TCPFlagACK {
				if holder >= 0 && holder != i {
					t.Fatalf("servers %d and %d both answered the client's SYN", holder, i)
				}
				holder = i
			}
		}
	}
	if holder < 0 {
		t.Fatal("no server's capture shows a SYN-ACK to the client")
	}

	// mid sent fragmentation needed (packet too big) to the ghost, quoting
	// a packet from the ghost to the client: path-MTU discovery ran.
	isFragNeeded := func(p harness.Packet) bool {
		if p.Src.String() != fam.midUp || p.Dst != ghost {
			return false
		}
		if v6 {
			if p.Proto != harness.ProtoICMPv6 || p.ICMPType != 2 || len(p.Network) < 48+40 {
				return false
			}
			q := p.Network[48:]
			return binary.BigEndian.Uint32(p.Network[44:48]) == narrowMTU &&
				netip.AddrFrom16([16]byte(q[8:24])) == ghost && netip.AddrFrom16([16]byte(q[24:40])).String() == client
		}
		if p.Proto != harness.ProtoICMP || p.ICMPType != 3 || p.ICMPCode != 4 {
			return false
		}
		hl := int(p.Network[0]&0x0f) * 4
		q := p.Network[hl+8:]
		return len(q) >= 20 && binary.BigEndian.Uint16(p.Network[hl+6:hl+8]) == narrowMTU &&
			netip.AddrFrom4([4]byte(q[12:16])) == ghost && netip.AddrFrom4([4]byte(q[16:20])).String() == client
	}
	sent := 0
	for _, p := range all[len(tp.servers)] {
		if isFragNeeded(p) {
			sent++
		}
	}
	if sent == 0 {
		t.Fatalf("mid sent no ICMP error with MTU %d to the ghost: path-MTU discovery never ran, the test proves nothing", narrowMTU)
	}
	for i, s := range tp.servers {
		got := 0
		for _, p := range all[i] {
			if !isFragNeeded(p) {
				continue
			}
			got++
			wantMAC := s.mac.String()
			if mode == "broadcast" {
				wantMAC = "ff:ff:ff:ff:ff:ff"
			}
			if p.DstMAC.String() != wantMAC {
				t.Errorf("server %d: the ICMP error went to %s, want %s", i, p.DstMAC, wantMAC)
			}
		}
		switch {
		case i == holder && got == 0:
			t.Errorf("server %d holds the connection but no ICMP error reached it (%d sent by mid)", i, sent)
		case i != holder && mode == "routing" && got != 0:
			t.Errorf("server %d does not hold the connection but %d ICMP errors reached it", i, got)
		}
		// The kernel's own word: the route cache for the client.
		rt := s.ns.MustRun(ipc("route", "get", client, "from", fam.ghost)...)
		learned := fragNeededMTU.FindStringSubmatch(rt)
		if i == holder && (learned == nil || learned[1] != strconv.Itoa(narrowMTU)) {
			t.Errorf("server %d (the connection's) has not learned MTU %d for %s:\n%s", i, narrowMTU, client, rt)
		}
		if i != holder && learned != nil {
			t.Errorf("server %d (not the connection's) learned a path MTU for %s:\n%s", i, client, rt)
		}
		if mode == "broadcast" {
			n := acceptedICMP(t, s.ns, fam.nft)
			if i == holder && n == 0 {
				t.Errorf("server %d: its ghost filter accepted none of the errors about its connection", i)
			}
			if i != holder && n != 0 {
				t.Errorf("server %d: its ghost filter accepted %d errors about another server's connection", i, n)
			}
			t.Logf("server %d: ICMP errors seen %d, accepted by the ghost filter %d", i, got, n)
		} else {
			t.Logf("server %d: ICMP errors received %d", i, got)
		}
	}
	if mode == "routing" {
		d := tp.statusJSON()
		if n := d.clusterCounter(t, "web", "icmp_errors"); n == 0 {
			t.Error("the cluster counted no ICMP error dispatched by its quoted client")
		}
		if n := d.clusterCounter(t, "web", "drop_icmp_malformed"); n != 0 {
			t.Errorf("drop_icmp_malformed = %d, want 0", n)
		}
	}
	t.Logf("%s mode: server %d holds the connection; mid sent %d ICMP errors", mode, holder, sent)
}

// nftScript loads an nft script in ns.
func nftScript(t *testing.T, ns *harness.NS, script string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s\n%s", ns.Name, err, out, script)
	}
}

var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes`)

// acceptedICMP reads the counting chain's packets.
func acceptedICMP(t *testing.T, ns *harness.NS, family string) int {
	t.Helper()
	out := ns.MustRun("nft", "list", "table", family, acceptedTb)
	m := nftCounter.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
