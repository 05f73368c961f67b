package tune

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// tuneRun is one Main call's outcome.
type tuneRun struct {
	code           int
	stdout, stderr string
}

func runMain(t *testing.T, stdin []byte, tty bool, args ...string) tuneRun {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, bytes.NewReader(stdin), &out, &errb, tty)
	return tuneRun{code, out.String(), errb.String()}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// recommended extracts the pasted lines from a report.
func recommended(t *testing.T, out string) string {
	t.Helper()
	_, after, ok := strings.Cut(out, "recommended settings for")
	if !ok {
		t.Fatalf("no recommended settings in:\n%s", out)
	}
	m := regexp.MustCompile(`(?s)hash = "\w+"\n(  seed = 0x[0-9a-f]+\n  buckets = \d+\n)?`).FindString(after)
	if m == "" {
		t.Fatalf("recommended lines not found in:\n%s", after)
	}
	return m
}

func TestMainEndToEnd(t *testing.T) {
	dir := t.TempDir()
	g := generate(genSpec{Lines: 60_000, Population: 8_000, Heavy: []float64{0.04, 0.02}, Seed: 7})
	half := bytes.IndexByte(g.Text[len(g.Text)/2:], '\n') + len(g.Text)/2 + 1
	cfg := writeFile(t, dir, "ghostrouter.toml", []byte(configText(8, "routing", "jhash", defaultSeed, 4096, true)))
	whole := writeFile(t, dir, "access.log", g.Text)
	gz := writeFile(t, dir, "access.log.1.gz", gzipped(t, g.Text[:half]))
	svg := filepath.Join(dir, "tune.svg")

	split := runMain(t, g.Text[half:], false, "-c", cfg, "--cluster", "web", "--seeds", "256", "--buckets", "4096,1024", "--svg", svg, gz, "-")
	if split.code != 0 || split.stderr != "" {
		t.Fatalf("exit %d, stderr %q", split.code, split.stderr)
	}
	for _, want := range []string{
		"60,000 lines: 60,000 parsed",
		"access.log.1.gz, -",
		// The heaviest client's share is its direct count in the generated log.
		g.Heavy[0].String() + " sent " + pct(float64(g.Truth[g.Heavy[0]].Requests)/60_000),
		"modulo", // routing mode tries the patent's hash too
		"  * ",
		"wrote " + svg,
	} {
		if !strings.Contains(split.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, split.stdout)
		}
	}
	// Reading the log as one file (flags after it) gives the same answer.
	one := runMain(t, nil, false, whole, "--seeds", "256", "-c", cfg, "--buckets=4096,1024", "--cluster=web")
	if one.code != 0 {
		t.Fatalf("one file: exit %d, stderr %q", one.code, one.stderr)
	}
	if a, b := recommended(t, split.stdout), recommended(t, one.stdout); a != b {
		t.Errorf("gzip+stdin recommends\n%s\none file recommends\n%s", a, b)
	}

	// The SVG is well-formed XML with a bar per server in each panel.
	data, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	rects := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	if rects != 1+2*8 {
		t.Errorf("SVG has %d rects, want a background and 2x8 bars", rects)
	}
}

func TestMainWrite(t *testing.T) {
	dir := t.TempDir()
	g := generate(genSpec{Lines: 30_000, Population: 5_000, Heavy: []float64{0.05}, Seed: 3})
	src := configText(6, "routing", "jhash", defaultSeed, 4096, true)
	cfg := writeFile(t, dir, "g.toml", []byte(src))
	if err := os.Chmod(cfg, 0o640); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.toml")
	if err := os.Symlink(cfg, link); err != nil {
		t.Fatal(err)
	}
	log := writeFile(t, dir, "a.log", g.Text)
	r := runMain(t, nil, false, "-c", link, "--cluster", "web", "--seeds", "300", "--buckets", "4096", "--write", log)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	rec := recommended(t, r.stdout)
	if !strings.Contains(r.stdout, "wrote "+link) {
		t.Errorf("no 'wrote' line:\n%s", r.stdout)
	}
	got, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi.Mode(), err)
	}
	if fi, _ := os.Stat(cfg); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", fi.Mode().Perm())
	}
	// Only the seed line changed (buckets and hash were already right),
	// its comment kept, and the file reads back with the recommendation.
	d := diffLines(t, src, string(got))
	for n, l := range d {
		if !strings.HasPrefix(l, "seed = 0x") || !strings.HasSuffix(l, "# chosen by hand in 2024") {
			t.Errorf("line %d changed to %q", n, l)
		}
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	web, _ := c.Cluster("web")
	m := regexp.MustCompile(`seed = (0x[0-9a-f]+)\n  buckets = (\d+)`).FindStringSubmatch(rec)
	if m == nil {
		t.Fatalf("recommended %q is not jhash", rec)
	}
	seed, _ := strconv.ParseUint(m[1], 0, 32)
	buckets, _ := strconv.Atoi(m[2])
	if web.Seed != uint32(seed) || web.Buckets != buckets || web.Hash.String() != "jhash" {
		t.Errorf("config reads back %s %#x %d, recommended %#x %d", web.Hash, web.Seed, web.Buckets, seed, buckets)
	}
	// Again: nothing to change.
	r = runMain(t, nil, false, "-c", cfg, "--cluster", "web", "--seeds", "300", "--buckets", "4096", "--write", log)
	if r.code != 0 || !strings.Contains(r.stdout, "already the best found") || !strings.Contains(r.stdout, "not rewritten") {
		t.Errorf("second run: exit %d\n%s", r.code, r.stdout)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestMainBroadcastHasNoModulo(t *testing.T) {
	dir := t.TempDir()
	g := generate(genSpec{Lines: 5_000, Population: 1_000, Seed: 4})
	cfg := writeFile(t, dir, "b.toml", []byte(configText(4, "broadcast", "", defaultSeed, 4096, false)))
	log := writeFile(t, dir, "a.log", g.Text)
	r := runMain(t, nil, false, "-c", cfg, "--seeds", "64", log) // one cluster: --cluster optional
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if strings.Contains(r.stdout, "modulo") {
		t.Errorf("broadcast mode report mentions modulo:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "broadcast mode") {
		t.Errorf("report does not say broadcast mode:\n%s", r.stdout)
	}
}

func TestMainErrors(t *testing.T) {
	dir := t.TempDir()
	two := writeFile(t, dir, "two.toml", []byte(configText(2, "routing", "jhash", 1, 64, true)))
	addrOnly := writeFile(t, dir, "addr.log", []byte("198.51.100.1\n198.51.100.2\n"))
	junk := writeFile(t, dir, "junk.log", []byte("hello\nworld\n"))
	for _, tc := range []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{addrOnly}, 2, "-c FILE is required"},
		{[]string{"-c", two}, 2, "no access logs"},
		{[]string{"-c", two, "--by", "packets", addrOnly}, 2, `unknown metric "packets"`},
		{[]string{"-c", two, "--seeds", "0", addrOnly}, 2, "--seeds 0"},
		{[]string{"-c", two, "--buckets", "4096,x", addrOnly}, 2, `"x" is not a bucket count`},
		{[]string{"-c", two, "--buckets", "70000", addrOnly}, 2, "is not a bucket count (1..65536)"},
		{[]string{"-c", two, "--frobnicate", addrOnly}, 2, "flag provided but not defined"},
		{[]string{"-c", two, addrOnly}, 1, "has 2 clusters (api, web): choose one with --cluster"},
		{[]string{"-c", two, "--cluster", "db", addrOnly}, 1, `no cluster "db"`},
		{[]string{"-c", two, "--cluster", "web", "--by", "bytes", addrOnly}, 1, "--by bytes: no line had a size field"},
		{[]string{"-c", two, "--cluster", "web", junk}, 1, "no client addresses in 2 lines"},
		{[]string{"-c", two, "--cluster", "web", filepath.Join(dir, "missing.log")}, 1, "missing.log"},
		{[]string{"-c", filepath.Join(dir, "missing.toml"), addrOnly}, 1, "missing.toml"},
	} {
		r := runMain(t, nil, false, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("tune %q: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

func TestMainHelp(t *testing.T) {
	r := runMain(t, nil, false, "-h")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("-h: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"usage: ghostrouter tune", "heavy single client", "cannot be balanced", "--by", "--write", "--svg", "broadcast mode can only use jhash"} {
		if !strings.Contains(strings.ReplaceAll(r.stdout, "\n", " "), want) {
			t.Errorf("help lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestMainProgressOnlyOnTerminal(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.toml", []byte(configText(3, "routing", "jhash", 1, 64, false)))
	log := writeFile(t, dir, "a.log", []byte(strings.Repeat("198.51.100.1\n198.51.100.2\n", 70_000)))
	quiet := runMain(t, nil, false, "-c", cfg, "--seeds", "32", log)
	if quiet.code != 0 || quiet.stderr != "" {
		t.Errorf("not a terminal: exit %d, stderr %q; want nothing", quiet.code, quiet.stderr)
	}
	tty := runMain(t, nil, true, "-c", cfg, "--seeds", "32", log)
	if tty.code != 0 || !strings.Contains(tty.stderr, "reading "+log) || !strings.HasSuffix(tty.stderr, "\r\x1b[K") {
		t.Errorf("terminal: exit %d, stderr %q; want a progress line, cleared", tty.code, tty.stderr)
	}
	if tty.stdout != quiet.stdout {
		t.Errorf("progress changed the report")
	}
}
