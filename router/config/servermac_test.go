package config

import (
	"strings"
	"testing"
)

// A server's mac pins its MAC in routing mode; it must be a unicast MAC.
func TestServerMAC(t *testing.T) {
	cfg := mustParse(t, twoArms+strings.Replace(webCluster, "address = \"10.0.0.12\"", "address = \"10.0.0.12\"\n  mac = \"02:00:00:00:00:12\"", 1))
	s0, _ := cfg.Clusters[0].Server(0)
	s1, _ := cfg.Clusters[0].Server(1)
	if !s0.MAC.IsZero() {
		t.Errorf("server 0 without mac: MAC = %v, want none (resolved by the appliance)", s0.MAC)
	}
	if s1.MAC.String() != "02:00:00:00:00:12" {
		t.Errorf("server 1 mac = %v, want 02:00:00:00:00:12", s1.MAC)
	}
}

func TestServerMACProblems(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"broadcast", twoArms + webCluster + "  mac = \"ff:ff:ff:ff:ff:ff\" #! cluster \"web\" server 1: mac ~ broadcast or multicast\n"},
		{"multicast", twoArms + webCluster + "  mac = \"01:00:5e:00:00:01\" #! cluster \"web\" server 1: mac ~ a server's MAC is unicast\n"},
		{"zero", twoArms + webCluster + "  mac = \"00:00:00:00:00:00\" #! cluster \"web\" server 1: mac ~ zero MAC\n"},
		{"not a MAC", twoArms + webCluster + "  mac = \"server-one\" #! cluster \"web\" server 1: mac ~ is not a MAC address\n"},
		{"broadcast mode", twoArms + strings.Replace(webCluster, `mode = "routing"`, "mode = \"broadcast\"\nbroadcast_address = \"10.0.0.250\"", 1) +
			"  mac = \"02:00:00:00:00:12\" #! cluster \"web\" server 1: mac ~ only for mode = \"routing\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) { checkProblems(t, tc.text) })
	}
}
