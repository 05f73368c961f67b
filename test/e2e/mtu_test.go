package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// The LAN's MTU smaller than the clients' (lan0 and the servers at 1400, the
// client side at 1500). Ghost traffic larger than the LAN MTU is handled as a
// router must: without DF it is fragmented, every fragment to the client's
// one server (the hash is on the source, so fragments stay together); with
// DF the client gets ICMP fragmentation needed with the LAN's MTU and path
// MTU discovery carries on, TCP super-frames included.
//
//	cli ── c0 (1500) ─ br-up ─ up0 [ghostrouter] lan0 (mtu 1400) ─ br-lan ─ e0 (1400) ── srv0, srv1
const lanMTU = 1400

// counter reads one cluster counter from `status`.
func counter(t *testing.T, status, name string) int {
	t.Helper()
	m := regexp.MustCompile(`\b` + name + `=(\d+)`).FindStringSubmatch(status)
	if m == nil {
		t.Fatalf("status has no counter %s:\n%s", name, status)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestGhostLargerThanLANMTU(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 2})
	for i, s := range tp.servers {
		s.ns.MustRun("ip", "link", "set", "e0", "mtu", strconv.Itoa(lanMTU))
		tp.rtr.MustRun("ip", "link", "set", fmt.Sprintf("l-s%d", i), "mtu", strconv.Itoa(lanMTU))
	}
	base := strings.Replace(tp.baseConfig(), "name = \"lan0\"\n", fmt.Sprintf("name = \"lan0\"\nmtu = %d\n", lanMTU), 1)
	tp.start(base + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	want := tp.lookup([]string{clientAddr})[clientAddr]
	srv := tp.servers[want]
	t.Logf("client %s maps to server %d (%s)", clientAddr, want, srv.mac)

	// 1. No DF: a 1500-byte echo request leaves the appliance as fragments,
	// all to the one server, none over the LAN MTU; the reply comes back.
	capLAN := tp.rtr.Capture("lan0", "icmp")
	out, err := tp.cli.Run("ping", "-c", "1", "-W", "3", "-M", "dont", "-s", "1472", ghostAddr)
	lan := capLAN.Stop()
	if err != nil {
		t.Fatalf("ping without DF through a smaller LAN MTU: %v\n%s\nappliance log:\n%s", err, out, tp.app.Log())
	}
	frags, data := 0, 0
	for _, p := range lan {
		if p.Dst.String() != ghostAddr {
			continue
		}
		if !p.Fragment {
			t.Fatalf("an unfragmented %d-byte echo request on the LAN", p.Len)
		}
		if p.DstMAC.String() != srv.mac.String() {
			t.Fatalf("a fragment went to %s, the client's server is %s", p.DstMAC, srv.mac)
		}
		if len(p.Network) > lanMTU {
			t.Fatalf("a %d-byte fragment on a LAN of MTU %d", len(p.Network), lanMTU)
		}
		if p.TTL != 63 {
			t.Fatalf("fragment TTL %d, want 63", p.TTL)
		}
		frags++
		data += len(p.Network) - int(p.Network[0]&0x0f)*4
	}
	if frags < 2 || data != 1480 {
		t.Fatalf("%d fragments carrying %d bytes on the LAN, want 2 or more carrying the 1480 bytes of the echo request", frags, data)
	}
	if n := counter(t, tp.status(), "fragmented"); n != 1 {
		t.Fatalf("fragmented=%d, want 1", n)
	}

	// 2. DF: fragmentation needed, with the LAN's MTU, from the appliance's
	// client-side address; nothing reaches the LAN.
	capCli := tp.cli.Capture("c0", "icmp")
	capLAN = tp.rtr.Capture("lan0", "icmp")
	out, err = tp.cli.Run("ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1472", ghostAddr)
	all := harness.StopAll(capCli, capLAN)
	if err == nil {
		t.Fatalf("ping with DF over the LAN MTU was answered:\n%s", out)
	}
	found := false
	for _, p := range all[0] {
		if p.ICMPType == 3 && p.ICMPCode == 4 {
			hl := int(p.Network[0]&0x0f) * 4
			mtu := binary.BigEndian.Uint16(p.Network[hl+6 : hl+8])
			if p.Src.String() != upAddr || mtu != lanMTU {
				t.Fatalf("fragmentation needed from %s with MTU %d, want from %s with %d", p.Src, mtu, upAddr, lanMTU)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no ICMP fragmentation needed reached the client; ping said:\n%s", out)
	}
	for _, p := range all[1] {
		if p.Dst.String() == ghostAddr {
			t.Fatalf("a %d-byte echo request with DF crossed to the LAN", p.Len)
		}
	}

	// 3. TCP with DF and super-frames: the server advertises an MSS too big
	// for the LAN (advmss 1460 on a 1400 link), so the client's segments are
	// too big until the appliance's fragmentation needed lowers its path MTU;
	// the upload must still arrive byte for byte. The client first forgets
	// the path MTU step 2 taught it.
	tp.cli.MustRun("ip", "route", "flush", "cache")
	if route := tp.cli.MustRun("ip", "route", "get", ghostAddr); strings.Contains(route, "mtu") {
		t.Fatalf("the client still holds a path MTU for the ghost:\n%s", route)
	}
	srv.ns.MustRun("ip", "route", "replace", "default", "via", lanAddr, "dev", "e0", "advmss", "1460")
	transferServer(t, srv.ns)
	before := counter(t, tp.status(), "drop_too_big")
	transfer(t, tp.cli, netip.MustParseAddr(ghostAddr), true, 42)
	if after := counter(t, tp.status(), "drop_too_big"); after <= before {
		t.Fatalf("drop_too_big %d -> %d: the TCP upload never drew fragmentation needed (the test proves nothing)", before, after)
	}
	if route := tp.cli.MustRun("ip", "route", "get", ghostAddr); !strings.Contains(route, fmt.Sprintf("mtu %d", lanMTU)) {
		t.Fatalf("the client's route to the ghost has not learned MTU %d:\n%s", lanMTU, route)
	}
}
