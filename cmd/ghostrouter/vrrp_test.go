package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/vrrp"
)

func TestVRRPChanged(t *testing.T) {
	a := []config.VRRP{{Interface: "up0", VRID: 51, Priority: 150, Interval: time.Second, Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.1")}, Line: 10}}
	b := []config.VRRP{a[0]}
	b[0].Line = 20
	if vrrpChanged(a, b) {
		t.Errorf("moved in the file: reported as a change")
	}
	b[0].Priority = 100
	if !vrrpChanged(a, b) {
		t.Errorf("priority changed: not reported")
	}
	if !vrrpChanged(a, nil) {
		t.Errorf("removed: not reported")
	}
}

func TestVRRPReporting(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600e6, time.UTC)
	vs := []vrrp.Status{{
		Name: "up0/51", Interface: "up0", VRID: 51, State: "master", Priority: 150, Interval: 100 * time.Millisecond,
		Group: "edge", Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.1")}, VirtualMAC: "00:00:5e:00:01:33",
		Master: "198.51.100.2", MasterPriority: 150,
		Transitions: []vrrp.Transition{{At: at, From: "backup", To: "master", Reason: "master down"}},
		Counters:    map[string]uint64{"adverts_out": 7},
	}}
	var b bytes.Buffer
	printVRRP(&b, vs)
	for _, want := range []string{"up0/51\tmaster\t150\t100ms\t198.51.100.2\t150\t00:00:5e:00:01:33\t198.51.100.1\tedge",
		"up0/51: 2026-01-02T03:04:05.600Z backup -> master (master down)", "adverts_out=7"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, b.String())
		}
	}
	m := scrape(t, newMetrics(func() Status { return Status{VRRP: vs} }, func() (uint64, uint64, uint64) { return 0, 0, 0 }))
	for _, want := range []string{
		`ghostrouter_vrrp_state{interface="up0",state="master",vrid="51",vrrp="up0/51"} 1`,
		`ghostrouter_vrrp_state{interface="up0",state="backup",vrid="51",vrrp="up0/51"} 0`,
		`ghostrouter_vrrp_master_priority{interface="up0",master="198.51.100.2",vrid="51",vrrp="up0/51"} 150`,
		`ghostrouter_vrrp_adverts_out_total{interface="up0",vrid="51",vrrp="up0/51"} 7`,
		`ghostrouter_vrrp_last_transition_seconds{interface="up0",vrid="51",vrrp="up0/51"} 1.767323045e+09`,
		"# TYPE ghostrouter_vrrp_adverts_out_total counter",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
}

func TestWarnVRRP(t *testing.T) {
	var b bytes.Buffer
	log := config.NewLogger("warn", &b)
	cfg := &config.Config{
		Clusters: []config.Cluster{{Name: "web", Interface: "lan0"}},
		VRRP:     []config.VRRP{{Interface: "up0", VRID: 1}},
	}
	warnVRRP(cfg, log)
	if !strings.Contains(b.String(), "no virtual router") {
		t.Errorf("no warning for a cluster LAN without a virtual router: %q", b.String())
	}
	b.Reset()
	cfg.VRRP = append(cfg.VRRP, config.VRRP{Interface: "lan0", VRID: 2})
	warnVRRP(cfg, log)
	if !strings.Contains(b.String(), "not in one sync group") || strings.Contains(b.String(), "no virtual router") {
		t.Errorf("warnings for two ungrouped links: %q", b.String())
	}
	b.Reset()
	cfg.VRRP[0].Group, cfg.VRRP[1].Group = "edge", "edge"
	warnVRRP(cfg, log)
	if b.Len() != 0 {
		t.Errorf("warnings for a good set-up: %q", b.String())
	}
}
