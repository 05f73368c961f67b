package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func pin(client string, server any) string {
	return fmt.Sprintf("\n  [[cluster.pin]]\n  client = %q\n  server = %v\n", client, server)
}

// Pins decode in file order, IPv4 and IPv6.
func TestPins(t *testing.T) {
	cfg := mustParse(t, twoArms+webCluster+pin("192.0.2.7", 1)+pin("198.51.100.9", 0))
	got := cfg.Clusters[0].Pins
	want := []Pin{{Client: netip.MustParseAddr("192.0.2.7"), Server: 1, Line: 24}, {Client: netip.MustParseAddr("198.51.100.9"), Server: 0, Line: 28}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("pins = %+v, want %+v", got, want)
	}
	v6 := strings.NewReplacer(`"203.0.113.10"`, `"2001:db8:10::10"`, `"10.0.0.11"`, `"fd00::11"`, `"10.0.0.12"`, `"fd00::12"`).Replace(webCluster)
	arms6 := strings.Replace(twoArms, `"10.0.0.1/24"`, `"fd00::1/64"`, 1)
	cfg = mustParse(t, arms6+v6+pin("2001:db8:77::7", 0))
	if p := cfg.Clusters[0].Pins; len(p) != 1 || p[0].Client != netip.MustParseAddr("2001:db8:77::7") || p[0].Server != 0 {
		t.Errorf("IPv6 pins = %+v", p)
	}
	if p := mustParse(t, twoArms+webCluster).Clusters[0].Pins; p != nil {
		t.Errorf("no [[cluster.pin]]: pins = %+v, want none", p)
	}
}

// Bad pins are reported with their line and key, all at once.
func TestPinProblems(t *testing.T) {
	var many strings.Builder
	for i := range MaxPins + 1 {
		many.WriteString(pin(fmt.Sprintf("192.0.2.%d", i+1), 0))
	}
	for _, tc := range []struct{ name, text string }{
		{"unknown server", twoArms + webCluster + "\n  [[cluster.pin]]\n  client = \"192.0.2.7\"\n  server = 7 #! cluster \"web\" pin 192.0.2.7: server ~ 7 is not the id of a server of this cluster\n"},
		{"duplicate client", twoArms + webCluster + pin("192.0.2.7", 0) + "\n  [[cluster.pin]]\n  client = \"192.0.2.7\" #! cluster \"web\" pin 192.0.2.7: client ~ already pinned (line 25)\n  server = 1\n"},
		{"other family", twoArms + webCluster + "\n  [[cluster.pin]]\n  client = \"2001:db8::7\" #! cluster \"web\" pin 2001:db8::7: client ~ different IP families\n  server = 1\n"},
		{"not unicast", twoArms + webCluster + "\n  [[cluster.pin]]\n  client = \"224.0.0.1\" #! cluster \"web\" pin[0]: client ~ multicast\n  server = 1\n"},
		{"not an address", twoArms + webCluster + "\n  [[cluster.pin]]\n  client = \"crawler\" #! cluster \"web\" pin[0]: client\n  server = 1\n"},
		{"missing keys", twoArms + webCluster + "\n  [[cluster.pin]] #! cluster \"web\" pin[0]: client ~ the client address to pin #! cluster \"web\" pin[0]: server ~ the id of the server\n  serve = 1 #! cluster \"web\" pin[0]: serve ~ did you mean \"server\"\n"},
		{"too many", twoArms + webCluster + strings.Replace(many.String(), "[[cluster.pin]]", "[[cluster.pin]] #! cluster \"web\": pin ~ at most 64", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) { checkProblems(t, tc.text) })
	}
}

// Broadcast mode: pins go into the servers' filters, from this file
// (ghostnode setup) or from the announcements.
func TestPinsBroadcast(t *testing.T) {
	bcast := strings.Replace(webCluster, `mode = "routing"`, "mode = \"broadcast\"\nbroadcast_address = \"10.0.0.250\"", 1)
	cfg := mustParse(t, twoArms+bcast+pin("192.0.2.7", 1))
	if p := cfg.Clusters[0].Pins; len(p) != 1 || p[0].Server != 1 {
		t.Errorf("broadcast pins = %+v", p)
	}
	d := newDecoder("ok.toml", []byte(broadcastWith("web.key")+pin("192.0.2.7", 0)))
	d.noKeys = true
	if _, err := d.result(); err != nil {
		t.Errorf("pins with announce_key_file: %v", err)
	}
}
