package node

import (
	"fmt"
	"strings"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// check validates a state file as strictly as setup's own inputs: a state
// file is input too, and teardown hands its names to nft and its keys to
// /proc/sys. The cluster name, the interface names, the ghost, every
// sysctl key (only those setup writes for this ghost, LAN and Dev) and
// value, and the table's family, name and parameters must be what setup
// could have recorded.
func (st *State) check() error {
	switch {
	case !config.ValidClusterName(st.Cluster):
		return fmt.Errorf("cluster name %q", st.Cluster)
	case st.Mode != ModeRouting && st.Mode != ModeBroadcast:
		return fmt.Errorf("mode %q", st.Mode)
	case !st.Ghost.IsValid() || st.Ghost.Zone() != "" || st.Ghost.Is4In6() || !st.Ghost.IsGlobalUnicast():
		return fmt.Errorf("ghost %v: want a unicast address without zone", st.Ghost)
	}
	for _, d := range []struct{ what, name string }{{"dev", st.Dev}, {"lan", st.LAN}} {
		if !validIfName(d.name) {
			return fmt.Errorf("%s %q: not an interface name", d.what, d.name)
		}
	}
	if a := st.Address; a != nil {
		if a.Prefix.Addr() != st.Ghost || a.Prefix.Bits() != st.Ghost.BitLen() || a.Dev != st.Dev {
			return fmt.Errorf("address %v on %q: want the ghost %v/%d on %q", a.Prefix, a.Dev, st.Ghost, st.Ghost.BitLen(), st.Dev)
		}
	}
	wants := map[string]string{tcpLoose.key: tcpLoose.set}
	for _, w := range hostSysctls(&Spec{Ghost: st.Ghost, LAN: st.LAN, Dev: st.Dev}) {
		wants[w.key] = w.set
	}
	seen := map[string]bool{}
	for _, s := range st.Sysctls {
		set, ok := wants[s.Key]
		switch {
		case !ok:
			return fmt.Errorf("sysctl %q: not one setup changes for this ghost and these interfaces", s.Key)
		case seen[s.Key]:
			return fmt.Errorf("sysctl %q recorded twice", s.Key)
		case s.Set != set:
			return fmt.Errorf("sysctl %s: set %q, setup writes %q", s.Key, s.Set, set)
		case !sysctlNumber(s.Old):
			return fmt.Errorf("sysctl %s: old value %q: want a small integer", s.Key, s.Old)
		}
		seen[s.Key] = true
	}
	if t := st.Table; t != nil {
		switch {
		case st.Mode != ModeBroadcast:
			return fmt.Errorf("a filter table in %s mode", st.Mode)
		case t.Family != filter.FamilyOf(st.Ghost):
			return fmt.Errorf("table family %q, want %q for ghost %v", t.Family, filter.FamilyOf(st.Ghost), st.Ghost)
		case t.Name != filter.TableName(st.Cluster):
			return fmt.Errorf("table name %q, want %q", t.Name, filter.TableName(st.Cluster))
		case t.Buckets < 1 || t.Buckets > filter.MaxBuckets:
			return fmt.Errorf("table buckets %d: want 1..%d", t.Buckets, filter.MaxBuckets)
		case t.Server < -1 || t.Server > config.MaxServerID:
			return fmt.Errorf("table server %d: want -1..%d", t.Server, config.MaxServerID)
		}
	}
	return nil
}

// validIfName reports whether s can name a Linux network interface: 1 to
// 15 bytes, not "." or "..", without '/', ':' or white space or control
// characters (dev_valid_name, plus ':' which aliases use).
func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' || c == ':' {
			return false
		}
	}
	return true
}

// sysctlNumber reports whether s is a value of the integer sysctls setup
// touches: an optional minus sign and 1 to 10 digits.
func sysctlNumber(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" || len(s) > 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
