package config

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
)

// broadcastWith is a broadcast cluster on lan0 whose announce_key_file is
// path (line 15 of the file, after twoArms' 8 lines).
func broadcastWith(path string) string {
	return twoArms + `[[cluster]]
name = "b"
address = "203.0.113.2"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
announce_key_file = "` + path + `"
server = [{ id = 0, address = "10.0.0.11" }]
`
}

// TestAnnounceKeyFile: the key file is read, with its path relative to the
// configuration's directory; a file its group or others can access, a
// public key, a missing file or a directory is a problem at its line.
func TestAnnounceKeyFile(t *testing.T) {
	dir := t.TempDir()
	priv := filepath.Join(dir, "web.key")
	pub, err := keyfile.Generate(priv, keyfile.PublicPath(priv))
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "gr.toml")
	cfg, err := Parse(cfgPath, []byte(broadcastWith("web.key")))
	if err != nil {
		t.Fatalf("relative key file: %v", err)
	}
	c := cfg.Clusters[0]
	if c.AnnounceKeyFile != priv || !bytes.Equal(c.AnnounceKey.Public().(ed25519.PublicKey), pub) {
		t.Errorf("key file %q, key %x; want %q, the generated key", c.AnnounceKeyFile, c.AnnounceKey.Public(), priv)
	}

	loose := filepath.Join(dir, "loose.key")
	data, _ := os.ReadFile(priv)
	os.WriteFile(loose, data, 0o640)
	os.Chmod(loose, 0o640)
	for _, tc := range []struct{ path, want string }{
		{loose, "mode 0640: readable or writable by group or others: chmod 600"},
		{keyfile.PublicPath(priv), "PUBLIC KEY"},
		{filepath.Join(dir, "missing.key"), "no such file"},
		{dir, "not a regular file"},
	} {
		if tc.path == keyfile.PublicPath(priv) {
			os.Chmod(tc.path, 0o600) // only its contents are wrong
		}
		_, err := Parse(cfgPath, []byte(broadcastWith(tc.path)))
		var ps Problems
		if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Line != 15 || !strings.Contains(ps[0].Error(), "announce_key_file") ||
			!strings.Contains(ps[0].Error(), tc.want) {
			t.Errorf("key file %s: %v; want one problem at line 15 about announce_key_file mentioning %q", tc.path, err, tc.want)
		}
	}
}

// TestReloadKeepsUnchangedKey: Reload takes the running configuration's
// key for an unchanged file without reading it (an appliance that dropped
// its privileges can no longer), and reads a changed one.
func TestReloadKeepsUnchangedKey(t *testing.T) {
	dir := t.TempDir()
	priv := filepath.Join(dir, "web.key")
	if _, err := keyfile.Generate(priv, keyfile.PublicPath(priv)); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "gr.toml")
	os.WriteFile(cfgPath, []byte(broadcastWith(priv)), 0o644)
	running, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// The running copy's key is what Reload must hand back: mark it.
	marked := bytes.Clone(running.Clusters[0].AnnounceKey)
	running.Clusters[0].AnnounceKey = marked
	next, err := Reload(cfgPath, running)
	if err != nil {
		t.Fatal(err)
	}
	if &next.Clusters[0].AnnounceKey[0] != &marked[0] {
		t.Error("an unchanged key file was read again")
	}
	os.Remove(priv)
	os.Remove(keyfile.PublicPath(priv))
	pub, err := keyfile.Generate(priv, keyfile.PublicPath(priv))
	if err != nil {
		t.Fatal(err)
	}
	next, err = Reload(cfgPath, running)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(next.Clusters[0].AnnounceKey.Public().(ed25519.PublicKey), pub) {
		t.Error("a replaced key file was not read again")
	}
}

// TestDurationFloors: a duration that would make a loop spin is a problem
// at its line, as is one beyond the ceiling.
func TestDurationFloors(t *testing.T) {
	for _, tc := range []struct{ key, val, want string }{
		{"announce_interval", "1ns", "1ns is out of range: want 100ms to 1h0m0s"},
		{"announce_interval", "2h", "out of range"},
	} {
		text := strings.Replace(broadcastWith("x"), "announce_key_file = \"x\"", tc.key+" = \""+tc.val+"\"", 1)
		_, err := Parse("d.toml", []byte(text))
		var ps Problems
		if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Line != 15 || !strings.Contains(ps[0].Error(), tc.key) || !strings.Contains(ps[0].Error(), tc.want) {
			t.Errorf("%s = %q: %v; want one problem at line 15 mentioning %q", tc.key, tc.val, err, tc.want)
		}
	}
	text := twoArms + webCluster + "[cluster.health]\ncheck = \"icmp\"\ninterval = \"1us\"\ntimeout = \"1us\"\n"
	_, err := Parse("d.toml", []byte(text))
	if err == nil || !strings.Contains(err.Error(), "health.interval: 1µs is out of range") || !strings.Contains(err.Error(), "health.timeout: 1µs is out of range") {
		t.Errorf("health interval and timeout of 1us: %v", err)
	}
}
