package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The service units in configs/ pass `systemd-analyze verify` (every
// directive known and well-formed, the commands executable, the
// dependencies resolvable) and systemd's own exposure rating calls their
// hardening OK. Neither needs systemd as PID 1: the units are checked in a
// scratch root holding the system's unit files, the commands they run and
// the units themselves (--root, no generators, no man page lookups).
func TestSystemdUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not installed (Debian package systemd)")
		}
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "bin", "lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", "/lib/systemd/system", filepath.Join(root, "lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy the system's units: %v\n%s", err, out)
	}
	self, err := os.Executable() // any executable stands in for the binaries
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"usr/local/bin/ghostrouter", "usr/local/bin/ghostnode", "bin/kill"} {
		copyFile(t, self, filepath.Join(root, f), 0o755)
	}
	units := []string{"ghostrouter.service", "ghostnode.service"}
	for _, u := range units {
		copyFile(t, filepath.Join("..", "..", "configs", u), filepath.Join(root, "etc/systemd/system", u), 0o644)
	}
	args := append([]string{"verify", "--man=no", "--generators=no", "--root=" + root}, units...)
	out, err := exec.Command("systemd-analyze", args...).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		// verify exits 0 on directives it ignores; a clean unit prints nothing.
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	exposure := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+)`)
	for _, u := range units {
		out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+root, "--no-pager", u).CombinedOutput()
		m := exposure.FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s: %v\n%s", u, err, out)
		}
		level, _ := strconv.ParseFloat(string(m[2]), 64)
		// systemd rates 0-2 "SAFE", to 4.9 "OK", then "MEDIUM", "EXPOSED", "UNSAFE".
		if level >= 3 {
			t.Errorf("%s: exposure %.1f, want under 3 (a daemon with one capability)\n%s", u, level, out)
		}
		t.Logf("%s: systemd exposure level %.1f", u, level)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
