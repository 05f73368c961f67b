package config

import (
	"runtime"
	"strings"
	"testing"
)

// locateAlloc is how many bytes locate allocates for src.
func locateAlloc(src []byte) uint64 {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	locate(src)
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// locateBudget is the most locate may allocate for n bytes of text: linear.
func locateBudget(n int) uint64 { return 64<<10 + 64*uint64(n) }

// TestLocateLinear: the shapes that made the locator quadratic (20 KB of
// nested '[' took 151 MB) stay within a linear budget, at two sizes.
func TestLocateLinear(t *testing.T) {
	for _, shape := range []struct {
		name string
		make func(n int) string
	}{
		{"nested arrays", func(n int) string { return "a = " + strings.Repeat("[", n) }},
		{"nested arrays with elements", func(n int) string { return "a = " + strings.Repeat("[1,", n/3) }},
		{"nested inline tables", func(n int) string { return "a = " + strings.Repeat("{b=", n/3) }},
		{"dotted key", func(n int) string { return strings.Repeat("a.", n/2) + "a = 1" }},
		{"dotted header", func(n int) string { return "[" + strings.Repeat("a.", n/2) + "a]" }},
		{"array of tables headers", func(n int) string { return strings.Repeat("[[a]]\n", n/6) }},
	} {
		for _, n := range []int{20_000, 200_000} {
			src := []byte(shape.make(n))
			if got, max := locateAlloc(src), locateBudget(len(src)); got > max {
				t.Errorf("%s, %d bytes: %d bytes allocated, more than %d", shape.name, len(src), got, max)
			}
		}
	}
	// What is within the bounds is still located.
	lines := locate([]byte("a = [[1, 2], [3, {b = 4}]]\n[x.y]\nz = 1\n"))
	for path, want := range map[string]int{"a[1][1].b": 1, "x.y": 2, "x.y.z": 3} {
		if lines[path] != want {
			t.Errorf("line of %s = %d, want %d (%v)", path, lines[path], want, lines)
		}
	}
}

// FuzzLocate: the locator never panics and never allocates more than
// locateBudget, whatever the text.
func FuzzLocate(f *testing.F) {
	f.Add([]byte("a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]"))
	f.Add([]byte("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z = 1\n[[x.y]]\n[[x.y]]\n"))
	f.Add([]byte("a = {b = [{c = '''\n]'''}, \"]\"], d = 1}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		if got, max := locateAlloc(src), locateBudget(len(src)); got > max {
			t.Fatalf("%d bytes of text: %d bytes allocated, more than %d", len(src), got, max)
		}
	})
}
