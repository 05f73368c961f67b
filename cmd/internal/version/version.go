// Package version owns what the binaries say about their build: the
// version and commit, stamped by the Makefile with -ldflags -X (from git
// describe and git rev-parse), else taken from the Go toolchain's build
// information, else "devel" and "unknown"; and the Go version.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Stamped by the Makefile:
//
//	-ldflags "-X github.com/ghostrouter/ghostrouter/cmd/internal/version.version=V
//	          -X github.com/ghostrouter/ghostrouter/cmd/internal/version.commit=C"
//
// They are strings the linker sets, never changed at run time.
var (
	version string
	commit  string
)

// Info describes a build.
type Info struct {
	Version   string
	Commit    string
	GoVersion string
}

// Get returns the running binary's build information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(version, commit, bi)
}

// resolve prefers the stamped values, then the build information's module
// version and VCS revision.
func resolve(v, c string, bi *debug.BuildInfo) Info {
	in := Info{Version: v, Commit: c, GoVersion: runtime.Version()}
	if bi != nil {
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && c == "" && in.Commit != "" {
			in.Commit += "-dirty"
		}
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	return in
}

// Line is the --version line: "NAME VERSION (commit COMMIT, GOVERSION)".
func (i Info) Line(name string) string {
	return fmt.Sprintf("%s %s (commit %s, %s)", name, i.Version, i.Commit, i.GoVersion)
}
