package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestVRRPDecode(t *testing.T) {
	cfg := mustParse(t, twoArmsVRRP+`
[[vrrp]]
interface = "up0"
vrid = 51
priority = 150
interval = "100ms"
addresses = ["198.51.100.1"]
group = "edge"
checksum = "rfc9568"
unicast_peers = ["198.51.100.3"]

[[vrrp]]
interface = "lan0"
vrid = 52
addresses = ["10.0.0.1", "10.0.0.5"]
preempt = false
`)
	if len(cfg.VRRP) != 2 {
		t.Fatalf("%d virtual routers", len(cfg.VRRP))
	}
	v := cfg.VRRP[0]
	if v.Interface != "up0" || v.VRID != 51 || v.Priority != 150 || v.Interval != 100*time.Millisecond ||
		v.Group != "edge" || v.Checksum != ChecksumRFC9568 || !v.Preempt || v.Name() != "up0/51" ||
		len(v.UnicastPeers) != 1 || v.UnicastPeers[0] != netip.MustParseAddr("198.51.100.3") || v.IPv6() {
		t.Errorf("first: %+v", v)
	}
	w := cfg.VRRP[1]
	if w.Priority != DefaultVRRPPriority || w.Interval != DefaultVRRPInterval || w.Preempt || w.Checksum != ChecksumRFC5798 || len(w.Addresses) != 2 {
		t.Errorf("defaults: %+v", w)
	}
	// The owner holds the address itself; IPv6 beside IPv4 with the same VRID.
	cfg = mustParse(t, `
[[interface]]
name = "up0"
addresses = ["198.51.100.1/24", "2001:db8::1/64", "fe80::1/64"]

[[vrrp]]
interface = "up0"
vrid = 51
priority = 255
addresses = ["198.51.100.1"]

[[vrrp]]
interface = "up0"
vrid = 51
addresses = ["fe80::100", "2001:db8::100"]
interval = "40.95s"
`)
	if !cfg.VRRP[1].IPv6() || cfg.VRRP[0].Priority != 255 {
		t.Errorf("owner / IPv6: %+v", cfg.VRRP)
	}
}

// The interfaces the VRRP problems are written against: up0 198.51.100.2,
// lan0 10.0.0.2.
const twoArmsVRRP = `
[[interface]]
name = "up0"
addresses = ["198.51.100.2/24"]

[[interface]]
name = "lan0"
addresses = ["10.0.0.2/24"]
`

func TestVRRPProblems(t *testing.T) {
	base := strings.Count(twoArmsVRRP, "\n")
	for _, c := range []struct {
		body string
		line int // of the problem, counted within body (1 = the [[vrrp]] header)
		want string
	}{
		{"vrid = 0\naddresses = [\"198.51.100.1\"]", 2, `vrrp[0]: vrid: must be between 1 and 255, not 0`},
		{"vrid = 256\naddresses = [\"198.51.100.1\"]", 2, `vrid: must be between 1 and 255, not 256`},
		{"addresses = [\"198.51.100.1\"]", 1, `vrid: missing`},
		{"vrid = 1\npriority = 0\naddresses = [\"198.51.100.1\"]", 3, `vrrp "up0/1": priority: must be between 1 and 255, not 0`},
		{"vrid = 1\ninterval = \"5ms\"\naddresses = [\"198.51.100.1\"]", 3, `interval: must be between 0.01s and 40.95s`},
		{"vrid = 1\ninterval = \"41s\"\naddresses = [\"198.51.100.1\"]", 3, `interval: must be between 0.01s and 40.95s`},
		{"vrid = 1\ninterval = \"15ms\"\naddresses = [\"198.51.100.1\"]", 3, `not a whole number of centiseconds`},
		{"vrid = 1\naddresses = [\n  \"198.51.100.1\",\n  \"2001:db8::1\",\n]", 5, `one virtual router carries one address family`},
		{"vrid = 1\naddresses = [\"192.0.2.1\"]", 3, `192.0.2.1 is not on a subnet of interface "up0"`},
		{"vrid = 1\naddresses = [\"198.51.100.2\"]", 3, `198.51.100.2 is this router's own address`},
		{"vrid = 1\npriority = 255\naddresses = [\"198.51.100.1\"]", 4, `priority 255 means this router owns the address`},
		{"vrid = 1\naddresses = []", 3, `needs at least one address`},
		{"vrid = 1\naddresses = [\"198.51.100.1\"]\nchecksum = \"v2\"", 4, `checksum:`},
		{"vrid = 1\naddresses = [\"198.51.100.1\"]\nprempt = true", 4, `unknown key (did you mean "preempt"?)`},
		{"vrid = 1\naddresses = [\"198.51.100.1\"]\ngroup = \"a b\"", 4, `group: "a b"`},
		{"vrid = 1\naddresses = [\"198.51.100.1\"]\nunicast_peers = [\"2001:db8::3\"]", 4, `is not of the virtual router's family`},
		{"vrid = 1\naddresses = [\"2001:db8::1\"]", 3, `interface "up0" has no IPv6 link-local address`},
		{"vrid = 1\naddresses = [\"198.51.100.1\"]\n\n[[vrrp]]\ninterface = \"up0\"\nvrid = 1\naddresses = [\"198.51.100.7\"]", 7, `VRID 1 is already used on interface "up0"`},
		{"vrid = 1\naddresses = [\"198.51.100.1\"]\n\n[[vrrp]]\ninterface = \"up0\"\nvrid = 2\naddresses = [\"198.51.100.1\"]", 8, `198.51.100.1 is already a virtual address of vrrp "up0/1"`},
	} {
		text := twoArmsVRRP + "\n[[vrrp]]\ninterface = \"up0\"\n" + c.body + "\n"
		_, err := Parse("edge.toml", []byte(text))
		var ps Problems
		if !errors.As(err, &ps) {
			t.Errorf("%q: no problems (err %v)", c.body, err)
			continue
		}
		// The [[vrrp]] header is on line base+2; body line 1 is "interface".
		wantLine := base + 2 + c.line
		if c.line == 1 {
			wantLine = base + 2
		}
		found := false
		for _, p := range ps {
			if strings.Contains(p.Error(), c.want) && p.File == "edge.toml" && p.Line == wantLine {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: want %q at edge.toml:%d, got:\n%v", c.body, c.want, wantLine, err)
		}
	}
}
