package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `make build` stamps the binaries with git's idea of the commit; both
// print it, with the Go version the toolchain reports, on --version.
func TestVersionStampedByMake(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	for _, tool := range []string{"make", "git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	root := filepath.Join("..", "..")
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): the Makefile falls back to unknown", err)
	}
	gover, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if out, err := exec.Command("make", "-C", root, "-s", "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	for _, name := range []string{"ghostrouter", "ghostnode"} {
		out, err := exec.Command(filepath.Join(bin, name), "--version").Output()
		if err != nil {
			t.Fatalf("%s --version: %v", name, err)
		}
		line := strings.TrimSpace(string(out))
		if !strings.HasPrefix(line, name+" ") || !strings.Contains(line, "commit "+strings.TrimSpace(string(head))) ||
			!strings.Contains(line, strings.TrimSpace(string(gover))) {
			t.Errorf("%s --version = %q; want its name, commit %s and %s", name, line, strings.TrimSpace(string(head)), strings.TrimSpace(string(gover)))
		}
	}
}
