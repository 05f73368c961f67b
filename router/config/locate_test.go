package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestLocate(t *testing.T) {
	const text = `# [[fake]] in a comment
s = """
[[not_a_table]]
x = \"\"\" # still the string
"""
t = '''it's
'''
[ a . "b.c" ]   # spaces and a quoted key
k = 1
[[arr]]
v = [ [1, 2], {x = 1}, # comment
  "]", ']' ]
inl = { p = { q = 1 } }
[[arr]]
[arr.sub]
z = 2
[[arr.list]]
w = 3
[[ arr.list ]]
w = 4
d = 1979-05-27 07:32:00Z
after = "#"
"key with spaces" = 1
dotted.deep.key = 2
`
	var m map[string]any
	if _, err := toml.Decode(text, &m); err != nil {
		t.Fatalf("test text is not valid TOML: %v", err)
	}
	lines := locate([]byte(text))
	for path, want := range map[string]int{
		"s":                                2,
		"t":                                6,
		"a":                                8,
		`a."b.c"`:                          8,
		`a."b.c".k`:                        9,
		"arr":                              10,
		"arr[0]":                           10,
		"arr[0].v":                         11,
		"arr[0].v[0]":                      11,
		"arr[0].v[0][1]":                   11,
		"arr[0].v[1].x":                    11,
		"arr[0].v[2]":                      12,
		"arr[0].v[3]":                      12,
		"arr[0].inl.p.q":                   13,
		"arr[1]":                           14,
		"arr[1].sub":                       15,
		"arr[1].sub.z":                     16,
		"arr[1].list[0]":                   17,
		"arr[1].list[0].w":                 18,
		"arr[1].list[1]":                   19,
		"arr[1].list[1].w":                 20,
		"arr[1].list[1].d":                 21,
		"arr[1].list[1].after":             22,
		`arr[1].list[1]."key with spaces"`: 23,
		"arr[1].list[1].dotted":            24,
		"arr[1].list[1].dotted.deep.key":   24,
	} {
		if got, ok := lines[path]; !ok || got != want {
			t.Errorf("locate: line of %s = %d (found %v), want %d", path, got, ok, want)
		}
	}
	for _, path := range []string{"fake", "not_a_table", "x", "arr[2]", "arr[0].v[4]"} {
		if got, ok := lines[path]; ok {
			t.Errorf("locate: found %s on line %d; it is not a key", path, got)
		}
	}
}

// TestLocateGarbage feeds the locator text that is not TOML: it must not
// panic or loop, whatever it returns.
func TestLocateGarbage(t *testing.T) {
	for _, text := range []string{
		"", "[", "[[", "a =", `a = "`, `a = """`, "a = '''", "a = [", "a = {", "a = [{", `"`, "=", "...",
		"[a.]\n", "a = 1979-05-27 ", "\ufeff", "a = [1,,,]", "a = {=}", "[[a]]\n[a]\n[[a.b]]\n",
	} {
		locate([]byte(text))
	}
}

// TestLocateExamples checks the locator against the example files: every key
// it places must be written on the line it gives.
func TestLocateExamples(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example files: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Split(string(data), "\n")
		for path, line := range locate(data) {
			if strings.HasSuffix(path, "]") {
				continue // an array element: no key to look for
			}
			key := path[strings.LastIndexAny(path, ".]")+1:]
			if line < 1 || line > len(text) || !strings.Contains(text[line-1], key) {
				t.Errorf("%s: locate put %s on line %d, which does not mention %q", file, path, line, key)
			}
		}
	}
}
