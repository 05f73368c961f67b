package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"},
	}}
	for _, tc := range []struct {
		v, c string
		bi   *debug.BuildInfo
		want Info
	}{
		{"v1.2.3", "feed", bi, Info{"v1.2.3", "feed", runtime.Version()}},
		{"", "", bi, Info{"devel", "0123abcd-dirty", runtime.Version()}},
		{"", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, Info{"v0.4.0", "unknown", runtime.Version()}},
		{"", "", nil, Info{"devel", "unknown", runtime.Version()}},
	} {
		if got := resolve(tc.v, tc.c, tc.bi); got != tc.want {
			t.Errorf("resolve(%q, %q) = %+v, want %+v", tc.v, tc.c, got, tc.want)
		}
	}
	if l := (Info{"v1", "c", "go1.26"}).Line("ghostrouter"); l != "ghostrouter v1 (commit c, go1.26)" {
		t.Errorf("Line = %q", l)
	}
	if !strings.HasPrefix(Get().GoVersion, "go") {
		t.Error("no Go version")
	}
}
