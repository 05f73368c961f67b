package main

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/node"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// untouchable is a Host that fails the test on any use: commands refused by
// flag checks or for lack of root must not look at the host.
type untouchable struct{ t *testing.T }

var _ node.Host = untouchable{}

func (u untouchable) touched(what string) error {
	u.t.Errorf("the host was used: %s", what)
	return errors.New("untouchable")
}
func (u untouchable) Need(tool string) error              { return u.touched("Need " + tool) }
func (u untouchable) ReadSysctl(k string) (string, error) { return "", u.touched("ReadSysctl " + k) }
func (u untouchable) WriteSysctl(k, v string) error       { return u.touched("WriteSysctl " + k) }
func (u untouchable) Links(context.Context) ([]node.Link, error) {
	return nil, u.touched("Links")
}
func (u untouchable) AddAddr(_ context.Context, d string, p netip.Prefix) error {
	return u.touched("AddAddr")
}
func (u untouchable) DelAddr(_ context.Context, d string, p netip.Prefix) error {
	return u.touched("DelAddr")
}
func (u untouchable) NFT(context.Context, string) error { return u.touched("NFT") }
func (u untouchable) ListTable(context.Context, string, string) ([]byte, error) {
	return nil, u.touched("ListTable")
}

// runCLI runs ghostnode with args against an untouchable host.
func runCLI(t *testing.T, root bool, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = runEnv(context.Background(), env{host: untouchable{t}, stdout: &o, stderr: &e, root: root}, args)
	return code, o.String(), e.String()
}

// TestRulesetCommand: `ghostnode ruleset` prints exactly the golden ruleset
// of package filter for the same flags, and from a configuration file the
// same buckets as the flags naming them.
func TestRulesetCommand(t *testing.T) {
	code, out, errs := runCLI(t, false, "ruleset", "--cluster", "web", "--ghost", "203.0.113.10", "--buckets", "16", "--seed", "7", "--owned", "1,2,5-9")
	want, err := os.ReadFile("internal/filter/testdata/web-flags.nft")
	if err != nil {
		t.Fatal(err)
	}
	// The golden file has unowned buckets 3, 4 and 15; the command has no
	// flag for them (only announcements make buckets unowned).
	want = []byte(strings.Replace(string(want), "\t\tflags interval\n\t\telements = {\n\t\t\t3-4, 15\n\t\t}\n", "\t\tflags interval\n", 1))
	if code != 0 || out != string(want) {
		t.Errorf("ruleset exit %d, stderr %q, printed\n%s\nwant\n%s", code, errs, out, want)
	}

	cfgPath, err := filepath.Abs("../../configs/broadcast.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadWithoutKeys(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := node.FromConfig(cfg, "web", 1, map[int]bool{2: true})
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCLI(t, false, "ruleset", "-c", cfgPath, "--cluster", "web", "--id", "1", "--down", "2")
	if code != 0 || out != spec.Filter.Ruleset() {
		t.Errorf("ruleset -c: exit %d, stderr %q, printed\n%s\nwant\n%s", code, errs, out, spec.Filter.Ruleset())
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[router]\nlog_level = \"loud\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: ghostnode"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"setup"}, 2, "--cluster NAME is required"},
		{[]string{"setup", "--cluster", "web"}, 2, "give -c FILE --id N, or --ghost ADDR"},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10"}, 2, "give --lan IFACE or --address ADDR"},
		{[]string{"setup", "--cluster", "web", "--ghost", "nonsense", "--lan", "eth0"}, 2, `--ghost "nonsense"`},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0", "--mode", "anycast"}, 2, `--mode "anycast"`},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0", "--mode", "routing", "--owned", "1"}, 2, "--owned: routing mode has no filter"},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0", "--buckets", "16", "--owned", "1"}, 2, "missing --seed"},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0", "--buckets", "16", "--seed", "0x1g", "--owned", "1"}, 2, `--seed "0x1g"`},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0", "--buckets", "0", "--seed", "1", "--owned", "1"}, 2, `--buckets "0"`},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0", "--buckets", "16", "--seed", "1", "--owned", "1,16"}, 2, "bucket 16 is out of range"},
		{[]string{"setup", "-c", bad, "--cluster", "web", "--id", "1", "--lan", "eth0"}, 1, bad + ":2: router.log_level"},
		{[]string{"setup", "-c", bad, "--cluster", "web", "--lan", "eth0"}, 2, "-c needs --id N"},
		{[]string{"setup", "-c", bad, "--cluster", "web", "--id", "1", "--seed", "1"}, 2, "--seed: with -c the cluster's parameters come from the file"},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--down", "1"}, 2, "--down needs -c FILE"},
		{[]string{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"setup", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"update", "--cluster", "web"}, 2, "give -c FILE --id N, or --owned LIST"},
		{[]string{"update", "--cluster", "web", "--owned", "1", "--seed", "3"}, 2, "--seed: update --owned takes"},
		{[]string{"update", "--cluster", "web", "--owned", "3-1"}, 2, "range ends before it starts"},
		{[]string{"teardown"}, 2, "--cluster NAME is required"},
		{[]string{"ruleset", "--cluster", "web", "--ghost", "203.0.113.10", "--mode", "routing"}, 1, "routing mode: it has no filter"},
	} {
		code, _, errs := runCLI(t, true, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("ghostnode %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
}

func TestNotRoot(t *testing.T) {
	for _, args := range [][]string{
		{"setup", "--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0"},
		{"update", "--cluster", "web", "--owned", "1"},
		{"teardown", "--cluster", "web"},
	} {
		code, _, errs := runCLI(t, false, args...)
		if code != 1 || !strings.Contains(errs, "ghostnode "+args[0]+": must run as root") {
			t.Errorf("ghostnode %s as non-root: exit %d, stderr %q", strings.Join(args, " "), code, errs)
		}
	}
}

func TestStatusEmpty(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := runCLI(t, false, "status", "--state-dir", dir)
	if code != 0 || out != "no cluster is set up (no state in "+dir+")\n" {
		t.Errorf("status: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, _ = runCLI(t, false, "status", "--json", "--state-dir", dir)
	if code != 0 || out != "[]\n" {
		t.Errorf("status --json: exit %d, stdout %q", code, out)
	}
	code, _, errs = runCLI(t, false, "status", "--cluster", "web", "--state-dir", dir)
	if code != 1 || !strings.Contains(errs, "cluster web: not set up") {
		t.Errorf("status --cluster web: exit %d, stderr %q", code, errs)
	}
}
