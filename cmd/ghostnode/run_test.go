package main

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
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

// keyPair writes a key pair into dir as NAME.key and NAME.pub and
// returns the public key.
func keyPair(t *testing.T, dir, name string) ed25519.PublicKey {
	t.Helper()
	priv := filepath.Join(dir, name+".key")
	pub, err := keyfile.Generate(priv, keyfile.PublicPath(priv))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestPlanRun: where run takes the public key, the sources, the port and
// the initial filter from, with -c and with flags. With -c the private key
// file is named but never read: the server holds only the public one.
func TestPlanRun(t *testing.T) {
	withKey := strings.Replace(strings.ReplaceAll(broadcastConfig, "MODE", "broadcast"), "buckets = 4096\n",
		"buckets = 4096\nannounce_key_file = \"cfg.key\"\nannounce_port = 9999\n", 1)
	v6only := strings.NewReplacer(`addresses = ["10.0.0.1/24"]`, `addresses = ["2001:db8:2::1/64"]`,
		`"203.0.113.10"`, `"2001:db8:ffff::10"`, `"10.0.0.250"`, `"2001:db8:2::fa"`,
		`"10.0.0.11"`, `"2001:db8:2::11"`, `"10.0.0.12"`, `"2001:db8:2::12"`, `"10.0.0.13"`, `"2001:db8:2::13"`).Replace(withKey)
	p := writeFiles(t, map[string]string{"cfg.toml": withKey, "v6.toml": v6only})
	dir := filepath.Dir(p["cfg.toml"])
	cfgKey, fileKey := keyPair(t, dir, "cfg"), keyPair(t, dir, "file")
	os.Remove(filepath.Join(dir, "cfg.key")) // the server never has it
	p["key"] = filepath.Join(dir, "file.pub")
	for _, tc := range []struct {
		args       []string
		key        ed25519.PublicKey
		addr, mode string
		from       string
		filter     bool // an initial filter is planned
	}{
		{[]string{"-c", p["cfg.toml"], "--cluster", "web", "--id", "1"}, cfgKey, "0.0.0.0:9999", "broadcast", "[10.0.0.1]", true},
		// An IPv6-only LAN: the appliance announces to ff02::1.
		{[]string{"-c", p["v6.toml"], "--cluster", "web", "--id", "1"}, cfgKey, "[::]:9999", "broadcast", "[2001:db8:2::1]", true},
		{[]string{"-c", p["cfg.toml"], "--cluster", "web", "--id", "1", "--key-file", p["key"], "--listen", "10.0.0.12:7000", "--appliance", "10.0.0.2"}, fileKey, "10.0.0.12:7000", "broadcast", "[10.0.0.2]", true},
		{[]string{"--cluster", "web", "--ghost", "203.0.113.10", "--id", "1", "--key-file", p["key"], "--lan", "eth0", "--appliance", "10.0.0.1,2001:db8::1"}, fileKey, "0.0.0.0:9470", "broadcast", "[10.0.0.1 2001:db8::1]", false},
		{[]string{"--cluster", "web", "--ghost", "203.0.113.10", "--id", "1", "--key-file", p["key"], "--lan", "eth0", "--buckets", "64", "--seed", "7", "--listen", ":9471", "--appliance", "10.0.0.1"}, fileKey, "0.0.0.0:9471", "broadcast", "[10.0.0.1]", true},
		{[]string{"--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0"}, nil, "", "routing", "[]", false},
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
		if !bytes.Equal(plan.key, tc.key) || plan.addr != tc.addr || plan.spec.Mode.String() != tc.mode || (plan.spec.Filter != nil) != tc.filter ||
			fmt.Sprint(plan.from) != tc.from {
			t.Errorf("run %s: key %x, listen %q, mode %s, from %v, filter %+v; want %x, %q, %s, %s, filter %v",
				strings.Join(tc.args, " "), plan.key, plan.addr, plan.spec.Mode, plan.from, plan.spec.Filter, tc.key, tc.addr, tc.mode, tc.from, tc.filter)
		}
		if plan.spec.Filter != nil && tc.mode == "broadcast" && !f.set["config"] && len(plan.spec.Filter.Owned) != 0 {
			t.Errorf("run %s: owns %v before any announcement, want none", strings.Join(tc.args, " "), plan.spec.Filter.Owned)
		}
	}
}

func TestRunUsage(t *testing.T) {
	noKey := strings.ReplaceAll(broadcastConfig, "MODE", "broadcast")
	p := writeFiles(t, map[string]string{"nokey.toml": noKey, "short": "short\n", "shared": "0123456789abcdef"})
	dir := filepath.Dir(p["nokey.toml"])
	keyPair(t, dir, "web")
	p["key"], p["private"] = filepath.Join(dir, "web.pub"), filepath.Join(dir, "web.key")
	g := []string{"--cluster", "web", "--ghost", "203.0.113.10", "--lan", "eth0"}
	with := func(extra ...string) []string { return append(append([]string{"run"}, g...), extra...) }
	app := []string{"--appliance", "10.0.0.1"}
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
		{with("--mode", "routing", "--appliance", "10.0.0.1"), 2, "--appliance: routing mode has no filter and no announcements"},
		{with("--owned", "1"), 2, "--owned: run takes the owned buckets from the appliance's announcements"},
		{with(append(app, "--id", "1", "--key-file", p["key"], "--buckets", "16")...), 2, "give both --buckets and --seed, or neither"},
		{with(append(app, "--id", "1", "--key-file", p["key"], "--buckets", "0", "--seed", "1")...), 2, `--buckets "0"`},
		{with(append(app, "--id", "1", "--key-file", p["key"], "--listen", "nonsense")...), 2, `--listen "nonsense"`},
		{with(append(app, "--id", "1", "--key-file", p["key"], "--listen", "host.example:9470")...), 2, `--listen "host.example:9470"`},
		{with("--log-level", "loud"), 2, `--log-level "loud"`},
		{with(append(app, "--id", "1", "--key-file", p["short"])...), 1, "not an Ed25519 key in PEM"},
		{with(append(app, "--id", "1", "--key-file", p["shared"])...), 1, "not an Ed25519 key in PEM"},
		{with(append(app, "--id", "1", "--key-file", p["private"])...), 1, "this is a private key; give the public one"},
		{with(append(app, "--id", "1", "--key-file", p["key"]+".missing")...), 1, "--key-file: open"},
		{with("--id", "1", "--key-file", p["key"]), 2, "broadcast mode needs --appliance ADDRS"},
		{with("--id", "1", "--key-file", p["key"], "--appliance", "10.0.0.1,example.com"), 2, `--appliance "10.0.0.1,example.com"`},
		{with("--id", "1", "--key-file", p["key"], "--appliance", "255.255.255.255"), 2, `--appliance "255.255.255.255"`},
		{[]string{"run", "-c", p["nokey.toml"], "--cluster", "web", "--id", "1"}, 2, "cluster web has no announce_key_file in " + p["nokey.toml"] + ": give --key-file FILE"},
		{[]string{"run", "-c", p["nokey.toml"], "--cluster", "web", "--id", "1", "--seed", "1"}, 2, "--seed: with -c the cluster's parameters come from the file"},
		{[]string{"run", "-c", p["nokey.toml"], "--cluster", "web"}, 2, "-c needs --id N"},
	} {
		code, _, errs := runCLI(t, true, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("ghostnode %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	// Not root: refused before the host is looked at.
	code, _, errs := runCLI(t, false, with(append(app, "--id", "1", "--key-file", p["key"])...)...)
	if code != 1 || !strings.Contains(errs, "ghostnode run: must run as root") {
		t.Errorf("run as non-root: exit %d, stderr %q", code, errs)
	}
}
