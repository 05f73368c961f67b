package config

import (
	"encoding/json"
	"testing"
)

func TestMAC(t *testing.T) {
	want := MAC{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01}
	for _, s := range []string{"02:00:5e:00:00:01", "02-00-5E-00-00-01", "0200.5e00.0001"} {
		m, err := ParseMAC(s)
		if err != nil || m != want {
			t.Errorf("ParseMAC(%q) = %v, %v; want %v", s, m, err, want)
		}
	}
	if s := want.String(); s != "02:00:5e:00:00:01" {
		t.Errorf("String() = %q", s)
	}
	for _, bad := range []string{"", "02:00:5e:00:00", "02:00:5e:00:00:01:02:03", "server-one", "00:00:5e:00:01:02:03:04"} {
		if m, err := ParseMAC(bad); err == nil {
			t.Errorf("ParseMAC(%q) = %v, want an error", bad, m)
		}
	}
	// A value: a map key, compared with ==, and not shared with a slice
	// made from it.
	seen := map[MAC]int{want: 1}
	again, _ := ParseMAC("02:00:5e:00:00:01")
	if seen[again] != 1 {
		t.Error("a MAC parsed twice is not the same map key")
	}
	hw := want.HardwareAddr()
	hw[0] = 0xff
	if want[0] != 0x02 {
		t.Error("HardwareAddr shares the MAC's bytes")
	}
	if !(MAC{}).IsZero() || want.IsZero() {
		t.Error("IsZero")
	}
	bc := MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if !bc.IsBroadcast() || !bc.IsMulticast() || want.IsMulticast() || !(MAC{0x01, 0, 0x5e, 0, 0, 1}).IsMulticast() {
		t.Error("IsBroadcast or IsMulticast")
	}
	b, err := json.Marshal(map[string]MAC{"m": want})
	if err != nil || string(b) != `{"m":"02:00:5e:00:00:01"}` {
		t.Errorf("json = %s, %v", b, err)
	}
	var back map[string]MAC
	if err := json.Unmarshal(b, &back); err != nil || back["m"] != want {
		t.Errorf("json reads back as %v, %v", back, err)
	}
}
