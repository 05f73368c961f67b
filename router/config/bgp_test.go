package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseBGP(t *testing.T) {
	text := twoArms + webCluster + `
[bgp]
asn = 4200000010
router_id = "198.51.100.1"
hold_time = "9s"

  [[bgp.neighbor]]
  address = "198.51.100.254"
  asn = 65000

  [[bgp.neighbor]]
  address = "198.51.100.253"
  asn = 4200000010
  port = 1179
`
	cfg := mustParse(t, text)
	b := cfg.BGP
	if b == nil {
		t.Fatal("no BGP")
	}
	want := BGP{ASN: 4200000010, RouterID: netip.MustParseAddr("198.51.100.1"), HoldTime: 9 * time.Second, Line: b.Line,
		Neighbors: []BGPNeighbor{
			{Address: netip.MustParseAddr("198.51.100.254"), ASN: 65000, Port: 179, Interface: "up0", Line: b.Neighbors[0].Line},
			{Address: netip.MustParseAddr("198.51.100.253"), ASN: 4200000010, Port: 1179, Interface: "up0", Line: b.Neighbors[1].Line},
		}}
	if b.ASN != want.ASN || b.RouterID != want.RouterID || b.HoldTime != want.HoldTime || len(b.Neighbors) != 2 ||
		b.Neighbors[0] != want.Neighbors[0] || b.Neighbors[1] != want.Neighbors[1] {
		t.Errorf("BGP = %+v\nwant %+v", *b, want)
	}
	lineOf := func(s string, nth int) int {
		at := -1
		for range nth {
			at += 1 + strings.Index(text[at+1:], s)
		}
		return 1 + strings.Count(text[:at], "\n")
	}
	if b.Line != lineOf("[bgp]", 1) || b.Neighbors[1].Line != lineOf("[[bgp.neighbor]]", 2) {
		t.Errorf("lines %d, %d; want %d, %d", b.Line, b.Neighbors[1].Line, lineOf("[bgp]", 1), lineOf("[[bgp.neighbor]]", 2))
	}
	if cfg := mustParse(t, twoArms+webCluster); cfg.BGP != nil {
		t.Errorf("no [bgp]: BGP = %+v, want nil", cfg.BGP)
	}
	zero := mustParse(t, twoArms+"[bgp]\nasn = 1\nrouter_id = \"192.0.2.1\"\nhold_time = \"0s\"\n[[bgp.neighbor]]\naddress = \"10.0.0.9\"\nasn = 2\n")
	if zero.BGP.HoldTime != 0 || zero.BGP.Neighbors[0].Interface != "lan0" {
		t.Errorf("hold_time 0s: %+v", zero.BGP)
	}
}

func TestParseBGPErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int
		key, msg   string
	}{
		{"no asn", "[bgp]\nrouter_id = \"198.51.100.1\"\n[[bgp.neighbor]]\naddress = \"198.51.100.254\"\nasn = 1\n", 9, "bgp.asn", "missing"},
		{"as_trans", "[bgp]\nasn = 23456\nrouter_id = \"198.51.100.1\"\n[[bgp.neighbor]]\naddress = \"198.51.100.254\"\nasn = 1\n", 10, "bgp.asn", "AS_TRANS"},
		{"asn too big", "[bgp]\nasn = 4294967296\nrouter_id = \"198.51.100.1\"\n[[bgp.neighbor]]\naddress = \"198.51.100.254\"\nasn = 1\n", 10, "bgp.asn", "not an AS number"},
		{"v6 router id", "[bgp]\nasn = 1\nrouter_id = \"2001:db8::1\"\n[[bgp.neighbor]]\naddress = \"198.51.100.254\"\nasn = 1\n", 11, "bgp.router_id", "IPv4"},
		{"hold 2s", "[bgp]\nasn = 1\nrouter_id = \"198.51.100.1\"\nhold_time = \"2s\"\n[[bgp.neighbor]]\naddress = \"198.51.100.254\"\nasn = 1\n", 12, "bgp.hold_time", "RFC 4271"},
		{"hold fraction", "[bgp]\nasn = 1\nrouter_id = \"198.51.100.1\"\nhold_time = \"3500ms\"\n[[bgp.neighbor]]\naddress = \"198.51.100.254\"\nasn = 1\n", 12, "bgp.hold_time", "whole seconds"},
		{"no neighbor", "[bgp]\nasn = 1\nrouter_id = \"198.51.100.1\"\n", 9, "bgp.neighbor", "at least one"},
		{"not connected", "[bgp]\nasn = 1\nrouter_id = \"198.51.100.1\"\n[[bgp.neighbor]]\naddress = \"192.0.2.1\"\nasn = 1\n", 13, `bgp neighbor "192.0.2.1": address`, "directly connected"},
		{"own address", "[bgp]\nasn = 1\nrouter_id = \"198.51.100.1\"\n[[bgp.neighbor]]\naddress = \"198.51.100.1\"\nasn = 1\n", 13, `bgp neighbor "198.51.100.1": address`, "own address"},
		{"duplicate", "[bgp]\nasn = 1\nrouter_id = \"198.51.100.1\"\n[[bgp.neighbor]]\naddress = \"198.51.100.9\"\nasn = 1\n[[bgp.neighbor]]\naddress = \"198.51.100.9\"\nasn = 2\n", 16, `bgp neighbor "198.51.100.9": address`, "already a neighbor (line 12)"},
		{"unknown key", "[bgp]\nasn = 1\nrouter_id = \"198.51.100.1\"\n[[bgp.neighbor]]\naddress = \"198.51.100.9\"\nasn = 1\npasword = \"x\"\n", 15, `bgp neighbor "198.51.100.9": pasword`, "unknown key"},
	} {
		_, err := Parse("test.toml", []byte(twoArms+tc.text))
		var ps Problems
		if !errors.As(err, &ps) {
			t.Errorf("%s: error %v, want problems", tc.name, err)
			continue
		}
		found := false
		for _, p := range ps {
			if p.Line == tc.line && p.Key == tc.key && strings.Contains(p.Msg, tc.msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: problems\n%v\nwant line %d key %q with %q\n%s", tc.name, err, tc.line, tc.key, tc.msg, numbered(twoArms+tc.text))
		}
	}
}
