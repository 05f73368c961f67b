package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeygenAndCheck: keygen writes the pair (0600/0644) and never over
// an existing key; check accepts a configuration naming the private key,
// and refuses it, at the key's line, once group or others can read it.
func TestKeygenAndCheck(t *testing.T) {
	dir := t.TempDir()
	priv := filepath.Join(dir, "web.key")
	var out, errs bytes.Buffer
	if code := run([]string{"keygen", "--private", priv}, &out, &errs); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errs.String())
	}
	if !strings.Contains(out.String(), filepath.Join(dir, "web.pub")) || !strings.Contains(out.String(), "fingerprint SHA256:") {
		t.Errorf("keygen said:\n%s", out.String())
	}
	for name, want := range map[string]os.FileMode{"web.key": 0o600, "web.pub": 0o644} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v; want %v", name, err, fi.Mode().Perm(), want)
		}
	}
	errs.Reset()
	if code := run([]string{"keygen", "--private", priv}, &out, &errs); code != 1 || !strings.Contains(errs.String(), "exists") {
		t.Errorf("keygen over an existing key: exit %d, %q", code, errs.String())
	}

	cfg := filepath.Join(dir, "gr.toml")
	text := `[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
announce_key_file = "web.key"
server = [{ id = 0, address = "10.0.0.11" }]
`
	os.WriteFile(cfg, []byte(text), 0o644)
	errs.Reset()
	if code := run([]string{"check", "-c", cfg}, &out, &errs); code != 0 {
		t.Fatalf("check with a 0600 key: exit %d: %s", code, errs.String())
	}
	os.Chmod(priv, 0o644)
	errs.Reset()
	code := run([]string{"check", "-c", cfg}, &out, &errs)
	want := fmt.Sprintf("%s:11: cluster \"web\": announce_key_file: %s: mode 0644: readable or writable by group or others: chmod 600 it", cfg, priv)
	if code != 1 || !strings.Contains(errs.String(), want) {
		t.Errorf("check with a 0644 key: exit %d, stderr:\n%s\nwant a line\n%s", code, errs.String(), want)
	}
}
