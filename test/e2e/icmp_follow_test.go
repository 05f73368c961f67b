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
// The error's outer source (mid) and the client are chosen to hash to
// different servers, so an error dispatched by its outer source would reach
// the wrong one. The evidence: each server's capture (which server's TCP
// answered the client, and where the error arrived), the kernels' own
// state (only the connection's server has learned MTU 1280 for the
// client; in broadcast mode a counting chain behind the ghost filter shows
// which kernels accepted the error), and the download's sha256.

const (
	midUp      = "198.51.100.2"
	midDown    = "192.0.2.1"
	narrowMTU  = 1280
	pmtuSeed   = 1191
	acceptedTb = "grtest"
)

var fragNeededMTU = regexp.MustCompile(`\bmtu (\d+)\b`)

func TestICMPErrorsFollowTheirFlow(t *testing.T) {
	for _, mode := range []string{"routing", "broadcast"} {
		t.Run(mode, func(t *testing.T) { icmpErrorsFollowTheirFlow(t, mode) })
	}
}

func icmpErrorsFollowTheirFlow(t *testing.T, mode string) {
	tp := newTopo(t, topoOptions{servers: 2})
	h := tp.h
	mid, pc := h.NS("mid"), h.NS("pc")
	h.Veth(mid, "m-up", tp.rtr, "u-m")
	tp.rtr.MustRun("ip", "link", "set", "u-m", "master", "br-up")
	h.Veth(pc, "c0", mid, "m-c")
	mid.MustRun("ip", "link", "set", "m-c", "mtu", strconv.Itoa(narrowMTU))
	mid.AddrAdd("m-up", midUp+"/24")
	mid.AddrAdd("m-c", midDown+"/24")
	mid.MustRun("ip", "route", "add", "default", "via", upAddr)
	mid.Sysctl("net.ipv4.ip_forward", "1")

	extra := ""
	if mode == "broadcast" {
		extra = broadcastExtra("")
	}
	route := fmt.Sprintf("\n[[route]]\nto = \"192.0.2.0/24\"\nvia = %q\ninterface = \"up0\"\n", midUp)
	tp.start(tp.baseConfig() + route + tp.clusterConfig(mode, "jhash", extra))
	tp.setupNodes()

	// A client address that hashes away from mid's (lookup only picks the
	// set-up; the checks below read the servers, not lookup).
	var cands []string
	for i := 10; i < 40; i++ {
		cands = append(cands, fmt.Sprintf("192.0.2.%d", i))
	}
	m := tp.lookup(append([]string{midUp}, cands...))
	client := ""
	for _, c := range cands {
		if m[c] != m[midUp] {
			client = c
			break
		}
	}
	if client == "" {
		t.Fatalf("every candidate client hashes with mid's address %s to server %d", midUp, m[midUp])
	}
	pc.AddrAdd("c0", client+"/24")
	pc.MustRun("ip", "route", "add", "default", "via", midDown)
	t.Logf("client %s (behind mid, %s, whose address hashes to server %d)", client, midUp, m[midUp])

	ghost := netip.MustParseAddr(ghostAddr)
	for _, s := range tp.servers {
		transferServer(t, s.ns)
		if mode == "broadcast" {
			// A chain after the ghost filter (priority mangle) sees only
			// what that filter accepted: it counts the ICMP errors.
			nftScript(t, s.ns, fmt.Sprintf(`table ip %s {
	chain pre {
		type filter hook prerouting priority 0; policy accept;
		ip daddr %s icmp type destination-unreachable counter
	}
}
`, acceptedTb, ghostAddr))
		}
	}

	var caps []*harness.Capture
	for _, s := range tp.servers {
		caps = append(caps, s.ns.Capture("e0", "icmp or (tcp port 9200 and tcp[tcpflags] & tcp-syn != 0)"))
	}
	caps = append(caps, mid.Capture("m-up", "icmp"))
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

	// mid sent fragmentation needed to the ghost: path-MTU discovery ran.
	isFragNeeded := func(p harness.Packet) bool {
		if p.Proto != harness.ProtoICMP || p.ICMPType != 3 || p.ICMPCode != 4 || p.Src.String() != midUp || p.Dst != ghost {
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
		t.Fatalf("mid sent no fragmentation needed (MTU %d) to the ghost: path-MTU discovery never ran, the test proves nothing", narrowMTU)
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
				t.Errorf("server %d: fragmentation needed to %s, want %s", i, p.DstMAC, wantMAC)
			}
		}
		switch {
		case i == holder && got == 0:
			t.Errorf("server %d holds the connection but no fragmentation needed reached it (%d sent by mid)", i, sent)
		case i != holder && mode == "routing" && got != 0:
			t.Errorf("server %d does not hold the connection but %d fragmentation needed reached it", i, got)
		}
		// The kernel's own word: the route cache for the client.
		rt := s.ns.MustRun("ip", "route", "get", client, "from", ghostAddr)
		learned := fragNeededMTU.FindStringSubmatch(rt)
		if i == holder && (learned == nil || learned[1] != strconv.Itoa(narrowMTU)) {
			t.Errorf("server %d (the connection's) has not learned MTU %d for %s:\n%s", i, narrowMTU, client, rt)
		}
		if i != holder && learned != nil {
			t.Errorf("server %d (not the connection's) learned a path MTU for %s:\n%s", i, client, rt)
		}
		if mode == "broadcast" {
			n := acceptedICMP(t, s.ns)
			if i == holder && n == 0 {
				t.Errorf("server %d: its ghost filter accepted none of the errors about its connection", i)
			}
			if i != holder && n != 0 {
				t.Errorf("server %d: its ghost filter accepted %d errors about another server's connection", i, n)
			}
			t.Logf("server %d: fragmentation needed seen %d, accepted by the ghost filter %d", i, got, n)
		} else {
			t.Logf("server %d: fragmentation needed received %d", i, got)
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
	t.Logf("%s mode: server %d holds the connection; mid sent %d fragmentation needed", mode, holder, sent)
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
func acceptedICMP(t *testing.T, ns *harness.NS) int {
	t.Helper()
	out := ns.MustRun("nft", "list", "table", "ip", acceptedTb)
	m := nftCounter.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
