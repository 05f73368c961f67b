package config

import (
	"os/user"
	"strconv"
	"strings"
	"testing"
)

// nobodyIDs are the default user's ids, from the password database (the
// oracle is the system's, not this package's, lookup).
func nobodyIDs(t *testing.T) Router {
	t.Helper()
	u, err := user.Lookup(DefaultUser)
	if err != nil {
		t.Skipf("no user %q on this machine: %v", DefaultUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return Router{UID: uid, GID: gid}
}

func TestRunUser(t *testing.T) {
	for _, tc := range []struct {
		text       string
		user       string
		uid, gid   int
		wantErr    string
		wantErrKey string
	}{
		{"[router]\nuser = \"root\"\n", "root", 0, 0, "", ""},
		{"[router]\nuser = \"0\"\n", "0", 0, 0, "", ""},
		{"[router]\nuser = \"no-such-user-here\"\n", "", 0, 0, "no-such-user-here", "test.toml:2: router.user"},
		{"[router]\nuser = \"\"\n", "", 0, 0, "must not be empty", "test.toml:2: router.user"},
	} {
		cfg, err := Parse("test.toml", []byte(tc.text+twoArms))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.wantErrKey) {
				t.Errorf("%q: %v, want %q at %q", tc.text, err, tc.wantErr, tc.wantErrKey)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.text, err)
			continue
		}
		if r := cfg.Router; r.User != tc.user || r.UID != tc.uid || r.GID != tc.gid {
			t.Errorf("%q: user %q %d/%d", tc.text, r.User, r.UID, r.GID)
		}
	}
}

func TestICMPBudgetKeys(t *testing.T) {
	cfg, err := Parse("t.toml", []byte("[router]\nicmp_rate = 200\nicmp_burst = 10\nicmp_ratemask = 0x1818\n"+twoArms))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Router; r.ICMPRate != 200 || r.ICMPBurst != 10 || r.ICMPRateMask != 0x1818 {
		t.Errorf("got %d/s burst %d mask %#x", r.ICMPRate, r.ICMPBurst, r.ICMPRateMask)
	}
	for _, tc := range []struct{ text, want string }{
		{"[router]\nicmp_rate = 0\n", "t.toml:2: router.icmp_rate"},
		{"[router]\nicmp_burst = -1\n", "t.toml:2: router.icmp_burst"},
		{"[router]\nicmp_ratemask = 0x100000000\n", "t.toml:2: router.icmp_ratemask"},
	} {
		if _, err := Parse("t.toml", []byte(tc.text+twoArms)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
}
