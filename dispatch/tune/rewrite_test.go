package tune

import (
	"errors"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// diffLines returns the lines of b that differ from a, assuming the same
// line count.
func diffLines(t *testing.T, a, b string) map[int]string {
	t.Helper()
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	if len(al) != len(bl) {
		t.Fatalf("line count changed from %d to %d:\n%s", len(al), len(bl), b)
	}
	d := map[int]string{}
	for i := range al {
		if al[i] != bl[i] {
			d[i+1] = bl[i]
		}
	}
	return d
}

func lineOf(text, prefix string, after int) int {
	for i, l := range strings.Split(text, "\n") {
		if i+1 > after && strings.HasPrefix(l, prefix) {
			return i + 1
		}
	}
	return 0
}

func TestRewriteConfigKeepsEverythingElse(t *testing.T) {
	src := configText(4, "routing", "jhash", 0x5eed, 4096, true)
	want := Candidate{Hash: HashJHash, Seed: 0x1f3, Buckets: 1024}
	out, changes, err := RewriteConfig([]byte(src), "web", want)
	if err != nil {
		t.Fatal(err)
	}
	web := lineOf(src, `name = "web"`, 0)
	seedLine, bucketsLine := lineOf(src, "seed =", web), lineOf(src, "buckets =", web)
	d := diffLines(t, src, string(out))
	if len(d) != 2 ||
		d[seedLine] != "seed = 0x1f3     # chosen by hand in 2024" ||
		d[bucketsLine] != "buckets = 1024" {
		t.Errorf("changed lines %v; want only line %d (seed, comment kept) and %d (buckets)", d, seedLine, bucketsLine)
	}
	if len(changes) != 2 || changes[0] != (Change{Key: "seed", Old: "0x5eed", New: "0x1f3", Line: seedLine}) {
		t.Errorf("changes = %+v", changes)
	}
	// It still parses, says what was asked, and the other cluster is as it was.
	cfg, err := config.Parse("x.toml", out)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := cfg.Cluster("web"); c.Hash.String() != "jhash" || c.Seed != 0x1f3 || c.Buckets != 1024 {
		t.Errorf("web reads back as %s %#x %d", c.Hash, c.Seed, c.Buckets)
	}
	if c, _ := cfg.Cluster("api"); c.Seed != 7 || c.Buckets != 256 {
		t.Errorf("api changed: seed %d buckets %d", c.Seed, c.Buckets)
	}
}

func TestRewriteConfigAddsMissingKeys(t *testing.T) {
	src := "[[cluster]]\r\n" +
		"  name = 'web'\r\n" +
		"  address = \"203.0.113.10\"\r\n" +
		"  notes = \"\"\"\r\n" + // a multi-line string whose lines look like keys and headers
		"seed = 1\r\n" +
		"[[cluster]]\r\n" +
		"\"\"\"\r\n" +
		"\r\n" +
		"  # servers follow\r\n" +
		"  [[cluster.server]]\r\n" +
		"  id = 0\r\n" +
		"  seed = 5\r\n"
	out, changes, err := RewriteConfig([]byte(src), "web", Candidate{Hash: HashJHash, Seed: 42, Buckets: 512})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(src, "\"\"\"\r\n\r\n", "\"\"\"\r\n  hash = \"jhash\"\r\n  seed = 0x2a\r\n  buckets = 512\r\n\r\n", 1)
	if string(out) != want {
		t.Errorf("got\n%q\nwant\n%q", out, want)
	}
	if len(changes) != 3 || changes[0].Line != 8 || changes[2].Line != 10 || changes[0].Old != "" {
		t.Errorf("changes = %+v, want three additions on lines 8-10", changes)
	}
}

func TestRewriteConfigModuloAndDecimal(t *testing.T) {
	src := "[[cluster]]\nname = \"web\"\nhash = \"jhash\" # was\nseed = 24301\nbuckets = 4096\n"
	out, _, err := RewriteConfig([]byte(src), "web", Candidate{Hash: HashModulo})
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(src, `"jhash" # was`, `"modulo" # was`, 1); string(out) != want {
		t.Errorf("modulo: got %q, want %q", out, want)
	}
	out, _, err = RewriteConfig([]byte(src), "web", Candidate{Hash: HashJHash, Seed: 3, Buckets: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(src, "24301", "3", 1); string(out) != want {
		t.Errorf("decimal seed stays decimal: got %q, want %q", out, want)
	}
	// No newline at the end of the file, keys to add.
	out, _, err = RewriteConfig([]byte("[[cluster]]\nname = \"web\""), "web", Candidate{Hash: HashJHash, Seed: 1, Buckets: 8})
	if err != nil {
		t.Fatal(err)
	}
	if want := "[[cluster]]\nname = \"web\"\nhash = \"jhash\"\nseed = 0x1\nbuckets = 8\n"; string(out) != want {
		t.Errorf("no final newline: got %q, want %q", out, want)
	}
}

func TestRewriteConfigNotFound(t *testing.T) {
	src := configText(2, "routing", "jhash", 1, 64, false)
	if _, _, err := RewriteConfig([]byte(src), "nope", Candidate{Hash: HashJHash}); !errors.Is(err, ErrClusterNotFound) {
		t.Errorf("error = %v, want ErrClusterNotFound", err)
	}
}
