package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNoNetstackInTheAgent keeps the server agent free of the appliance's
// network stack: it computes its buckets with the dispatcher's pure core
// (package dispatch/core) and must not link gVisor or the packages of the
// appliance's datapath. The dependency list comes from the go tool, not
// from this package's own view of its imports.
func TestNoNetstackInTheAgent(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		goTool = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const module = "github.com/ghostrouter/ghostrouter/"
	for _, pkg := range []string{module + "cmd/ghostnode", module + "dispatch/core", module + "dispatch/announce"} {
		out, err := exec.CommandContext(ctx, goTool, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, module+"dispatch/core") {
			t.Fatalf("go list -deps %s lists no dispatch/core among its %d packages: the list is not the dependency list", pkg, len(deps))
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "gvisor.dev/") ||
				d == module+"dispatch" || strings.HasPrefix(d, module+"router/tap") ||
				strings.HasPrefix(d, module+"router/hdr") || d == module+"icmp" {
				t.Errorf("%s depends on %s: the agent and the dispatch core must not link the network stack", pkg, d)
			}
		}
	}
}
