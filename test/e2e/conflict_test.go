package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// conflictRows maps each address in the status's conflicts table to its row.
func conflictRows(status string) map[string]string {
	rows := map[string]string{}
	for _, line := range strings.Split(statusSection(status, "address conflicts"), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(line, " of ") && !strings.HasSuffix(f[0], ":") {
			rows[f[0]] = line
		}
	}
	return rows
}

// Duplicate-address detection. Two misconfigured LAN hosts: server 0 holds the
// second ghost (broadcast_address must be a free address) and server 1 holds
// the ghost without arp_ignore, so it answers ARP for it (the patent's
// failure: that server would pull the cluster's traffic). The appliance's
// RFC 5227 probes at start draw their answers; `status` names each conflict
// with the claiming MAC, the log warns, the claims are dropped, and the
// permanent broadcast entry is unchanged.
func TestAddressConflictsDetected(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 2})
	impostor, leaky := tp.servers[0], tp.servers[1]
	impostor.ns.AddrAdd("e0", secondGhost+"/24")
	leaky.ns.AddrAdd("lo", ghostAddr+"/32")
	leaky.ns.Sysctl("net.ipv4.conf.all.arp_ignore", "0")
	leaky.ns.Sysctl("net.ipv4.conf.e0.arp_ignore", "0")

	capLAN := tp.rtr.Capture("br-lan", "arp")
	tp.start(tp.baseConfig() + tp.clusterConfig("broadcast", "jhash", broadcastExtra("")))
	var st string
	var rows map[string]string
	harness.WaitFor(t, 10*time.Second, "both conflicts in the appliance's status", func() bool {
		st = tp.status()
		rows = conflictRows(st)
		return rows[secondGhost] != "" && rows[ghostAddr] != ""
	})
	arps := capLAN.Stop()
	for addr, mac := range map[string]string{secondGhost: impostor.mac.String(), ghostAddr: leaky.mac.String()} {
		if !strings.Contains(rows[addr], mac) || !strings.Contains(rows[addr], "lan0") {
			t.Errorf("conflict row for %s: %q, want it claimed by %s on lan0\n%s", addr, rows[addr], mac, st)
		}
	}
	if !strings.Contains(st, "broadcast_address must be a free LAN address") || !strings.Contains(st, "arp_ignore=1") {
		t.Errorf("status gives no hint for the conflicts:\n%s", st)
	}
	requirePermanentBroadcast(t, tp.statusJSON(), "lan0", netip.MustParseAddr(secondGhost))
	log := tp.app.Log()
	for _, addr := range []string{secondGhost, ghostAddr} {
		if !strings.Contains(log, "address conflict") || !strings.Contains(log, "address="+addr) {
			t.Errorf("no conflict warning for %s in the log:\n%s", addr, log)
		}
	}
	// The probes on the wire: requests from 0.0.0.0 for the protected addresses.
	probed := map[string]bool{}
	for _, p := range arps {
		if p.ARPOp == 1 && p.ARPSenderIP.String() == "0.0.0.0" {
			probed[p.ARPTargetIP.String()] = true
		}
	}
	for _, a := range []string{lanAddr, ghostAddr, secondGhost} {
		if !probed[a] {
			t.Errorf("no ARP probe for %s on the LAN (probes seen: %v)", a, probed)
		}
	}
}
