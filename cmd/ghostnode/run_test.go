package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFiles writes name → content into a temporary directory and returns
// the paths by name.
func writeFiles(t *testing.T, files map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	paths := map[string]string{}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	return paths
}

// TestPlanRun: where run takes the key, the port and the initial filter
// from, with -c and with flags.
func TestPlanRun(t *testing.T) {
	withKey := strings.Replace(strings.ReplaceAll(broadcastConfig, "MODE", "broadcast"), "buckets = 4096\n",
		"buckets = 4096\nannounce_key = \"0123456789abcdef-cfg\"\nannounce_port = 9999\n", 1)
	v6only := strings.NewReplacer(`addresses = ["10.0.0.1/24"]`, `addresses = ["2001:db8:2::1/64"]`,
		`"203.0.113.10"`, `"2001:db8:ffff::10"`, `"10.0.0.250"`, `"2001:db8:2::fa"`,
		`"10.0.0.11"`, `"2001:db8:2::11"`, `"10.0.0.12"`, `"2001:db8:2::12"`, `"10.0.0.13"`, `"2001:db8:2::13"`).Replace(withKey)
	p := writeFiles(t, map[string]string{"cfg.toml": withKey, "v6.toml": v6only, "key": "0123456789abcdef-file\n"})
	for _, tc := range []struct {
		args            []string
		key, addr, mode string
		filter          bool // an initial filter is planned
	}{
		{[]string{"-c", p["cfg.toml"], "--cluster", "web", "--id", "1"}, "0123456789abcdef-cfg", "0.0.0.0:9999", "broadcast", true},
		// An IPv6-only LAN: the appliance announces to ff02::1.
		{[]string{"-c", p["v6.toml"], "--cluster", "web", "--id", "1"}, "0123456789abcdef-cfg", "[::]:9999", "broadcast", true},
		{[]string{"-c", p["cfg.toml"], "--cluster", "web", "--id", "1", "--key-file", p["key"], "--listen", "10.0.0.12:7000"}, "0123456789abcdef-file", "10.0.0.12:7000", "broadcast", true},
		{[]string{"--cluster", "web", "--ghost", "203.0.113.10", "--id", "1", "--key-file", p["key"], "--lan", "eth0"}, "0123456789abcdef-file", "0.0.0.0:9470", "broadcast", false},
		{[]string{"--cluster", "web", "--ghost", "203.0.113.10", "--id", "1", "--key-file", p["key"], "--lan", "eth0", "--buckets", "64", "--seed", "7", "--listen", ":9471"}, "0123456789abcdef-file", "0.0.0.0:9471", "broadcast", true},
		{[]string{"--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0"}, "", "", "routing", false},
	} {
		f, err := parseFlags("run", tc.args, os.Stderr)
		if err != nil {
			t.Fatalf("run %s: %v", strings.Join(tc.args, " "), err)
		}
		plan, err := planRun(f)
		if err != nil {
			t.Errorf("run %s: %v", strings.Join(tc.args, " "), err)
			continue
		}
		if string(plan.key) != tc.key || plan.addr != tc.addr || plan.spec.Mode != tc.mode || (plan.spec.Filter != nil) != tc.filter {
			t.Errorf("run %s: key %q, listen %q, mode %s, filter %+v; want %q, %q, %s, filter %v",
				strings.Join(tc.args, " "), plan.key, plan.addr, plan.spec.Mode, plan.spec.Filter, tc.key, tc.addr, tc.mode, tc.filter)
		}
		if plan.spec.Filter != nil && tc.mode == "broadcast" && !f.set["config"] && len(plan.spec.Filter.Owned) != 0 {
			t.Errorf("run %s: owns %v before any announcement, want none", strings.Join(tc.args, " "), plan.spec.Filter.Owned)
		}
	}
}

func TestRunUsage(t *testing.T) {
	noKey := strings.ReplaceAll(broadcastConfig, "MODE", "broadcast")
	p := writeFiles(t, map[string]string{"nokey.toml": noKey, "short": "short\n", "key": "0123456789abcdef"})
	g := []string{"--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0"}
	with := func(extra ...string) []string { return append(append([]string{"run"}, g...), extra...) }
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"run"}, 2, "--cluster NAME is required"},
		{[]string{"run", "--cluster", "web", "--lan", "eth0"}, 2, "give -c FILE --id N, or --ghost ADDR"},
		{[]string{"run", "--cluster", "web", "--ghost", "203.0.113.10"}, 2, "give --lan IFACE or --address ADDR"},
		{with("--key-file", p["key"]), 2, "broadcast mode needs --id N"},
		{with("--mode", "broadcast", "--id", "1"), 2, "broadcast mode needs --key-file FILE"},
		{with("--mode", "routing", "--key-file", p["key"]), 2, "--key-file: routing mode has no filter and no announcements"},
		{with("--owned", "1"), 2, "--owned: run takes the owned buckets from the appliance's announcements"},
		{with("--id", "1", "--key-file", p["key"], "--buckets", "16"), 2, "give both --buckets and --seed, or neither"},
		{with("--id", "1", "--key-file", p["key"], "--buckets", "0", "--seed", "1"), 2, `--buckets "0"`},
		{with("--id", "1", "--key-file", p["key"], "--listen", "nonsense"), 2, `--listen "nonsense"`},
		{with("--id", "1", "--key-file", p["key"], "--listen", "host.example:9470"), 2, `--listen "host.example:9470"`},
		{with("--log-level", "loud"), 2, `--log-level "loud"`},
		{with("--id", "1", "--key-file", p["short"]), 1, "the announce key is 5 bytes; a shared key needs at least 16"},
		{with("--id", "1", "--key-file", p["key"]+".missing"), 1, "--key-file: open"},
		{[]string{"run", "-c", p["nokey.toml"], "--cluster", "web", "--id", "1"}, 2, "cluster web has no announce_key in " + p["nokey.toml"] + ": give --key-file FILE"},
		{[]string{"run", "-c", p["nokey.toml"], "--cluster", "web", "--id", "1", "--seed", "1"}, 2, "--seed: with -c the cluster's parameters come from the file"},
		{[]string{"run", "-c", p["nokey.toml"], "--cluster", "web"}, 2, "-c needs --id N"},
	} {
		code, _, errs := runCLI(t, true, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("ghostnode %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	// Not root: refused before the host is looked at.
	code, _, errs := runCLI(t, false, with("--id", "1", "--key-file", p["key"])...)
	if code != 1 || !strings.Contains(errs, "ghostnode run: must run as root") {
		t.Errorf("run as non-root: exit %d, stderr %q", code, errs)
	}
}
