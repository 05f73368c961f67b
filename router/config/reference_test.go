package config

import (
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
)

// The configuration reference (README.md in this directory) is checked
// against the decoder itself, so that it cannot rot:
//
//   - the keys of every table: the decoder is asked, by decoding a file
//     with an unknown key in that table, which keys it knows there (its
//     "known keys" list); they must be exactly the keys documented for the
//     table, and the top-level keys exactly the documented tables, so a key
//     or table added to the decoder and not documented fails here;
//   - the Config structs: every field (walked by reflection) must be a
//     documented key or table, so a decoded setting cannot go undocumented;
//   - every example is decoded and accepted, and every default written as a
//     value is what the decoder fills in when the key is absent.

const probeKey = "zz_probe_key"

// refSection is one documented table: its TOML header and its rows.
type refSection struct {
	header string // "[router]", "[[cluster.server]]"
	rows   []refRow
}

type refRow struct {
	key, typ, def, example string
}

func (s refSection) keys() []string {
	var out []string
	for _, r := range s.rows {
		out = append(out, r.key)
	}
	slices.Sort(out)
	return out
}

// path is the section's dotted name: "router", "cluster.server".
func (s refSection) path() string { return strings.Trim(s.header, "[]") }

var (
	headingRE = regexp.MustCompile("^### (\\[\\[?[a-z_.]+\\]\\]?)\\s*$")
	rowRE     = regexp.MustCompile("^\\| `([a-z_0-9]+)` \\|([^|]*)\\|([^|]*)\\|([^|]*)\\|")
)

func readReference(t *testing.T) []refSection {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []refSection
	for _, l := range strings.Split(string(b), "\n") {
		if m := headingRE.FindStringSubmatch(l); m != nil {
			out = append(out, refSection{header: m[1]})
			continue
		}
		if m := rowRE.FindStringSubmatch(l); m != nil {
			if len(out) == 0 {
				t.Fatalf("README.md: row %q before any table heading", l)
			}
			s := &out[len(out)-1]
			s.rows = append(s.rows, refRow{key: m[1], typ: strings.TrimSpace(m[2]), def: strings.TrimSpace(m[3]), example: strings.TrimSpace(m[4])})
		}
	}
	if len(out) == 0 {
		t.Fatal("README.md: no table sections")
	}
	return out
}

// The files the probes edit: every documented table present, valid as they
// stand. Routing and broadcast differ in what a cluster may hold.
const refBase = `
[router]
log_level = "info"

[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]

[[interface]]
name = "up0"
addresses = ["198.51.100.1/24"]

[[route]]
to = "192.0.2.0/24"
via = "198.51.100.254"
interface = "up0"

[[neighbor]]
address = "10.0.0.254"
mac = "02:00:00:00:00:fe"
interface = "lan0"

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
%s

  [cluster.health]
  check = "http"
  port = 80

  [[cluster.server]]
  id = 0
  address = "10.0.0.11"

[[vrrp]]
interface = "up0"
vrid = 51
addresses = ["198.51.100.2"]

[bgp]
asn = 65010
router_id = "198.51.100.1"

[[bgp.neighbor]]
address = "198.51.100.254"
asn = 65000
`

var refBases = map[string]string{
	"routing":   fmt.Sprintf(refBase, "mode = \"routing\"\n\n  [[cluster.pin]]\n  client = \"192.0.2.7\"\n  server = 0"),
	"broadcast": fmt.Sprintf(refBase, "mode = \"broadcast\"\nbroadcast_address = \"10.0.0.250\""),
}

// edit returns base with, in the section under header, any line setting
// key removed and line (if not "") inserted after the header. A header the
// base lacks is appended with line under it.
func edit(base, header, key, line string) string {
	lines := strings.Split(base, "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.TrimSpace(l) == header })
	if start < 0 {
		return base + "\n" + header + "\n" + line + "\n"
	}
	var out []string
	out = append(out, lines[:start+1]...)
	if line != "" {
		out = append(out, line)
	}
	i := start + 1
	for ; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "["); i++ {
		if key != "" && strings.HasPrefix(strings.TrimSpace(lines[i]), key+" =") {
			continue
		}
		out = append(out, lines[i])
	}
	return strings.Join(append(out, lines[i:]...), "\n")
}

func parseProblems(t *testing.T, text string) (*Config, Problems) {
	t.Helper()
	// The reference is about keys and values, not files: key files named
	// by the examples are not read (as for ghostnode).
	d := newDecoder("ref.toml", []byte(text))
	d.noKeys = true
	cfg, err := d.result()
	if err == nil {
		return cfg, nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse: %v", err)
	}
	return nil, ps
}

// problemKey is the key a problem is about, without its entry or table.
func problemKey(k string) string {
	if i := strings.LastIndexAny(k, " .:"); i >= 0 {
		return k[i+1:]
	}
	return k
}

var knownRE = regexp.MustCompile(`unknown key \(known keys: ([^)]*)\)`)

// decoderKeys asks the decoder which keys it knows in text's table holding
// the probe key.
func decoderKeys(t *testing.T, text, where string) []string {
	t.Helper()
	_, ps := parseProblems(t, text)
	for _, p := range ps {
		if problemKey(p.Key) != probeKey {
			continue
		}
		m := knownRE.FindStringSubmatch(p.Msg)
		if m == nil {
			t.Fatalf("%s: the decoder's answer to an unknown key does not list the known ones: %q", where, p.Msg)
		}
		keys := strings.Split(m[1], ", ")
		slices.Sort(keys)
		return keys
	}
	t.Fatalf("%s: the decoder did not report the unknown key %s (problems: %v)", where, probeKey, ps)
	return nil
}

func TestReferenceKeysMatchDecoder(t *testing.T) {
	ref := readReference(t)
	base := refBases["routing"]
	if _, ps := parseProblems(t, base); ps != nil {
		t.Fatalf("the probe file is not valid: %v", ps)
	}
	documented := map[string]refSection{}
	for _, s := range ref {
		documented[s.path()] = s
	}

	// The top level: exactly the documented tables that are not inside
	// another.
	var tops []string
	for p := range documented {
		if !strings.Contains(p, ".") {
			tops = append(tops, p)
		}
	}
	slices.Sort(tops)
	if got := decoderKeys(t, probeKey+" = 1\n"+base, "top level"); !slices.Equal(got, tops) {
		t.Errorf("top-level tables: the decoder knows %v, the reference documents %v", got, tops)
	}

	for _, s := range ref {
		got := decoderKeys(t, edit(base, s.header, "", probeKey+" = 1"), s.header)
		if !slices.Equal(got, s.keys()) {
			t.Errorf("%s: the decoder knows %v, the reference documents %v\n(missing from the reference: %v; documented but unknown: %v)",
				s.header, got, s.keys(), minus(got, s.keys()), minus(s.keys(), got))
		}
		// A key that is itself a table is documented as a section.
		for _, r := range s.rows {
			if strings.Contains(r.typ, "table") {
				if _, ok := documented[s.path()+"."+r.key]; !ok {
					t.Errorf("%s: %s is a %s, but the reference has no section for [%s.%s]", s.header, r.key, r.typ, s.path(), r.key)
				}
			}
		}
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// literal returns the TOML value in a cell written `...`, or "".
func literal(cell string) string {
	if len(cell) >= 2 && cell[0] == '`' && cell[len(cell)-1] == '`' && strings.Count(cell, "`") == 2 {
		return cell[1 : len(cell)-1]
	}
	return ""
}

func TestReferenceExamplesDecode(t *testing.T) {
	for _, s := range readReference(t) {
		for _, r := range s.rows {
			if r.typ == "removed" {
				continue // rejected with a message naming its replacement
			}
			ex := literal(r.example)
			if ex == "" {
				if !strings.Contains(r.typ, "table") {
					t.Errorf("%s %s: the example %q is not a TOML value in backquotes", s.header, r.key, r.example)
				}
				continue
			}
			// Accepted in at least one mode (some keys are for one mode).
			var why []string
			for _, mode := range []string{"routing", "broadcast"} {
				_, ps := parseProblems(t, edit(refBases[mode], s.header, r.key, r.key+" = "+ex))
				var bad []string
				for _, p := range ps {
					if problemKey(p.Key) == r.key || p.Line == 0 {
						bad = append(bad, p.Error())
					}
				}
				if len(bad) == 0 {
					why = nil
					break
				}
				why = append(why, mode+": "+strings.Join(bad, "; "))
			}
			if why != nil {
				t.Errorf("%s %s = %s: the decoder rejects the documented example: %v", s.header, r.key, ex, why)
			}
		}
	}
}

// refValue is where the decoded value of a table's keys lives, for the
// tables the probe file has.
func refValue(cfg *Config, header string) (reflect.Value, bool) {
	switch header {
	case "[router]":
		return reflect.ValueOf(cfg.Router), true
	case "[[interface]]":
		return reflect.ValueOf(cfg.Interfaces[0]), true
	case "[[route]]":
		return reflect.ValueOf(cfg.Routes[0]), true
	case "[[neighbor]]":
		return reflect.ValueOf(cfg.Neighbors[0]), true
	case "[[cluster]]":
		return reflect.ValueOf(cfg.Clusters[0]), true
	case "[[cluster.server]]":
		return reflect.ValueOf(cfg.Clusters[0].Servers[0]), true
	case "[cluster.health]":
		return reflect.ValueOf(cfg.Clusters[0].Health), true
	case "[[cluster.pin]]":
		return reflect.ValueOf(cfg.Clusters[0].Pins[0]), true
	case "[[vrrp]]":
		return reflect.ValueOf(cfg.VRRP[0]), true
	case "[bgp]":
		return reflect.ValueOf(*cfg.BGP), true
	case "[[bgp.neighbor]]":
		return reflect.ValueOf(cfg.BGP.Neighbors[0]), true
	}
	return reflect.Value{}, false
}

func TestReferenceDefaultsAreTheDecoders(t *testing.T) {
	checked := 0
	for _, s := range readReference(t) {
		for _, r := range s.rows {
			def := literal(r.def)
			if def == "" || r.typ == "removed" {
				continue
			}
			var want map[string]any
			if _, err := toml.Decode("v = "+def, &want); err != nil {
				t.Errorf("%s %s: default %s is not a TOML value: %v", s.header, r.key, def, err)
				continue
			}
			cfg, ps := parseProblems(t, edit(refBases["routing"], s.header, r.key, ""))
			if ps != nil {
				t.Errorf("%s %s: the file without the key does not decode: %v", s.header, r.key, ps)
				continue
			}
			v, ok := refValue(cfg, s.header)
			if !ok {
				continue // a table this test does not place; its keys are still checked above
			}
			f := fieldFor(v.Type(), r.key)
			if f == nil {
				t.Errorf("%s %s: no field of %s is called that", s.header, r.key, v.Type())
				continue
			}
			got := v.FieldByIndex(f.Index).Interface()
			if !sameValue(got, want["v"]) {
				t.Errorf("%s %s: documented default %s, the decoder fills in %v", s.header, r.key, def, got)
			}
			checked++
		}
	}
	if checked < 15 {
		t.Errorf("only %d defaults checked", checked)
	}
}

// sameValue compares a decoded field with a TOML value.
func sameValue(field, lit any) bool {
	switch f := field.(type) {
	case time.Duration:
		s, ok := lit.(string)
		d, err := time.ParseDuration(s)
		return ok && err == nil && d == f
	case string:
		return lit == f
	case bool:
		return lit == f
	case int:
		return lit == int64(f)
	case uint32:
		return lit == int64(f)
	case uint8:
		return lit == int64(f)
	case encoding.TextMarshaler: // the enumerations (mode, hash, check), MACs
		b, err := f.MarshalText()
		return err == nil && lit == string(b)
	}
	return false
}

// snake is a Go field name as a key: BroadcastAddress → broadcast_address,
// MAC → mac, ExpectStatus → expect_status.
func snake(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// fieldFor finds the field of struct type t that holds key.
func fieldFor(t reflect.Type, key string) *reflect.StructField {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if s := snake(f.Name); s == key || strings.TrimSuffix(s, "s") == key || strings.TrimSuffix(s, "es") == key ||
			strings.ReplaceAll(s, "_", "") == strings.ReplaceAll(key, "_", "") {
			return &f
		}
	}
	return nil
}

// notKeys are Config fields that the decoder derives rather than reads.
var notKeys = map[string]bool{"File": true, "Line": true,
	"UID": true, "GID": true, // resolved from user
	"AnnounceKey": true, "AnnounceKeyStat": true, // read from announce_key_file
	"ICMPRateMask": true, // icmp_ratemask
}

func TestConfigFieldsDocumented(t *testing.T) {
	names := map[string]bool{}
	for _, s := range readReference(t) {
		for _, p := range strings.Split(s.path(), ".") {
			names[p] = true
		}
		for _, r := range s.rows {
			names[r.key] = true
		}
	}
	seen := map[reflect.Type]bool{}
	var missing []string
	var walk func(t reflect.Type, where string)
	walk = func(t reflect.Type, where string) {
		if seen[t] {
			return
		}
		seen[t] = true
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() || notKeys[f.Name] {
				continue
			}
			s := snake(f.Name)
			if !names[s] && !names[strings.TrimSuffix(s, "s")] {
				missing = append(missing, fmt.Sprintf("%s.%s (key %q)", where, f.Name, s))
			}
			ft := f.Type
			for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() == reflect.TypeOf(Config{}).PkgPath() {
				walk(ft, where+"."+f.Name)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "Config")
	if len(missing) > 0 {
		t.Errorf("Config fields with no documented key or table (document them in README.md, or list derived fields in notKeys): %v", missing)
	}
}
