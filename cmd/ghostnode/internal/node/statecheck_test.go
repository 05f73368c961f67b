package node

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// goodState is what setup records for an IPv4 broadcast cluster.
func goodState() *State {
	return &State{
		Version: StateVersion, Cluster: "web", Mode: ModeBroadcast, Ghost: netip.MustParseAddr("203.0.113.10"), Dev: "lo", LAN: "eth0",
		Address: &AddressRecord{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Dev: "lo", Added: true},
		Sysctls: []SysctlRecord{
			{Key: "net/ipv4/conf/all/arp_ignore", Old: "0", Set: "1", Changed: true},
			{Key: "net/ipv4/conf/eth0/rp_filter", Old: "1", Set: "2", Changed: true},
			{Key: "net/ipv4/conf/lo/rp_filter", Old: "0", Set: "2"},
			{Key: "net/netfilter/nf_conntrack_tcp_loose", Old: "1", Set: "0", Changed: true},
		},
		Table: &TableRecord{Family: "ip", Name: "ghost_web", Buckets: 4096, Seed: 7, Server: 1, Added: true},
	}
}

// TestStateCheck: a state file whose names or keys setup could not have
// written is refused before teardown hands them to nft or /proc/sys.
func TestStateCheck(t *testing.T) {
	if err := goodState().check(); err != nil {
		t.Fatalf("a state setup writes: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*State)
		want string
	}{
		{"sysctl path traversal", func(s *State) { s.Sysctls[0].Key = "net/ipv4/conf/../../../kernel/core_pattern" }, "not one setup changes"},
		{"sysctl of another interface", func(s *State) { s.Sysctls[1].Key = "net/ipv4/conf/eth1/rp_filter" }, "not one setup changes"},
		{"sysctl value not a number", func(s *State) { s.Sysctls[1].Old = "|/bin/sh" }, "small integer"},
		{"sysctl set value", func(s *State) { s.Sysctls[1].Set = "1" }, "setup writes"},
		{"sysctl twice", func(s *State) { s.Sysctls[1] = s.Sysctls[0] }, "twice"},
		{"table name injection", func(s *State) { s.Table.Name = "ghost_web; flush ruleset" }, "table name"},
		{"table family", func(s *State) { s.Table.Family = "inet" }, "table family"},
		{"table buckets", func(s *State) { s.Table.Buckets = 1 << 20 }, "table buckets"},
		{"table server", func(s *State) { s.Table.Server = -7 }, "table server"},
		{"table in routing mode", func(s *State) { s.Mode = ModeRouting }, "routing mode"},
		{"mode", func(s *State) { s.Mode = config.Mode(9) }, "mode"},
		{"cluster name", func(s *State) { s.Cluster = "../web" }, "cluster name"},
		{"dev with a slash", func(s *State) { s.Dev = "../lo" }, "not an interface name"},
		{"lan too long", func(s *State) { s.LAN = strings.Repeat("e", 16) }, "not an interface name"},
		{"lan with a space", func(s *State) { s.LAN = "eth0 up" }, "not an interface name"},
		{"address not the ghost", func(s *State) { s.Address.Prefix = netip.MustParsePrefix("10.0.0.1/32") }, "want the ghost"},
		{"address on another dev", func(s *State) { s.Address.Dev = "eth0" }, "want the ghost"},
		{"ghost multicast", func(s *State) { s.Ghost = netip.MustParseAddr("224.0.0.1") }, "ghost"},
	} {
		s := goodState()
		tc.edit(s)
		if err := s.check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}

// An independent description of what may reach nft and /proc/sys.
var (
	sysctlKeyRE = regexp.MustCompile(`^net/(ipv4/conf/[^/\s:]{1,15}/(arp_ignore|arp_announce|rp_filter)|netfilter/nf_conntrack_tcp_loose)$`)
	tableRE     = regexp.MustCompile(`^ghost_[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	numberRE    = regexp.MustCompile(`^-?[0-9]{1,10}$`)
)

// FuzzDecodeState: whatever decodeState accepts has only sysctl keys under
// net/ipv4/conf/IFACE/ (no "..") or the conntrack key, numeric values, a
// table named ghost_NAME, interface names without '/', and survives a
// round trip unchanged.
func FuzzDecodeState(f *testing.F) {
	good, _ := json.Marshal(goodState())
	f.Add(good)
	f.Add([]byte(strings.Replace(string(good), `"ghost_web"`, `"ghost_web; flush ruleset"`, 1)))
	f.Add([]byte(strings.Replace(string(good), `conf/all/`, `conf/../`, 1)))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		for _, s := range st.Sysctls {
			if !sysctlKeyRE.MatchString(s.Key) || strings.Contains(s.Key, "/../") || strings.Contains(s.Key, "/./") ||
				!numberRE.MatchString(s.Old) || !numberRE.MatchString(s.Set) {
				t.Fatalf("accepted sysctl %+v", s)
			}
		}
		if st.Table != nil && !tableRE.MatchString(st.Table.Name) {
			t.Fatalf("accepted table name %q", st.Table.Name)
		}
		for _, n := range []string{st.Dev, st.LAN} {
			if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/ \t\n\x00") {
				t.Fatalf("accepted interface name %q", n)
			}
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := decodeState(again)
		if err != nil {
			t.Fatalf("re-encoded state refused: %v", err)
		}
		if again2, _ := json.Marshal(st2); string(again2) != string(again) {
			t.Fatalf("round trip changed the state:\n%s\n%s", again, again2)
		}
	})
}

// The state file keeps the configuration's word for the mode, and a word
// that is not a mode is refused when the file is read.
func TestStateModeWord(t *testing.T) {
	data, err := json.Marshal(goodState())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"mode":"broadcast"`) {
		t.Fatalf("state file %s does not say \"mode\":\"broadcast\"", data)
	}
	st, err := decodeState(data)
	if err != nil || st.Mode != ModeBroadcast {
		t.Fatalf("decodeState(%s) = %+v, %v", data, st, err)
	}
	for _, word := range []string{"both", "", "Broadcast"} {
		bad := strings.Replace(string(data), `"mode":"broadcast"`, `"mode":"`+word+`"`, 1)
		if _, err := decodeState([]byte(bad)); err == nil || !strings.Contains(err.Error(), "mode") {
			t.Errorf("mode %q: decodeState = %v, want an error naming the mode", word, err)
		}
	}
}
