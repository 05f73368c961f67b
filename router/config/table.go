package config

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The decoder walks the generic tree BurntSushi/toml produces
// (map[string]any, []map[string]any, []any, string, int64, float64, bool,
// time.Time) rather than letting it fill structs: struct decoding stops at
// the first wrong type, and this way every unknown key and every wrong type
// is reported with its own line, together with everything else.

// table is one TOML table (a [header] table, an element of an array of
// tables, or an inline table) as the decoder sees it.
type table struct {
	d    *decoder
	m    map[string]any
	path string // locator path, e.g. "cluster[0].server[2]"
	line int    // the table's own line; 0 for the document root
	// label and prefix make a Problem's Key: label names the entry
	// (`cluster "web" server 2`), prefix the keys' place inside it
	// ("health."). For singletons label is empty and prefix is the dotted
	// path ("router.").
	label  string
	prefix string
}

// keyName is how key k of this table is named in a Problem.
func (t *table) keyName(k string) string {
	if !isBareKey(k) {
		k = strconv.Quote(k)
	}
	k = t.prefix + k
	if t.label == "" {
		return k
	}
	return t.label + ": " + k
}

// lineOf returns the line of key k, or the table's line when k is absent.
func (t *table) lineOf(k string) int {
	if n, ok := t.d.lines[pathKey(t.path, k)]; ok {
		return n
	}
	return t.line
}

// elemLine returns the line of element i of the array at key k.
func (t *table) elemLine(k string, i int) int {
	if n, ok := t.d.lines[pathIndex(pathKey(t.path, k), i)]; ok {
		return n
	}
	return t.lineOf(k)
}

// errorf reports a problem with key k at k's line.
func (t *table) errorf(k, format string, args ...any) {
	t.errorAt(t.lineOf(k), k, format, args...)
}

// errorAt reports a problem with key k at the given line.
func (t *table) errorAt(line int, k, format string, args ...any) {
	t.d.problems = append(t.d.problems, Problem{
		File: t.d.file,
		Line: line,
		Key:  t.keyName(k),
		Msg:  fmt.Sprintf(format, args...),
	})
}

// missing reports that the required key k is absent.
func (t *table) missing(k, why string) {
	msg := "missing"
	if why != "" {
		msg += ": " + why
	}
	t.errorAt(t.line, k, "%s", msg)
}

// known reports every key of the table not in keys.
func (t *table) known(keys ...string) {
	var unknown []string
	for k := range t.m {
		if !slices.Contains(keys, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		if s := suggest(k, keys); s != "" {
			t.errorf(k, "unknown key (did you mean %q?)", s)
		} else {
			t.errorf(k, "unknown key (known keys: %s)", strings.Join(keys, ", "))
		}
	}
}

func (t *table) has(k string) bool {
	_, ok := t.m[k]
	return ok
}

func (t *table) wrongType(k string, v any, want string) {
	t.errorf(k, "must be %s, not %s", want, typeName(v))
}

// str returns the string at k; ok is false when k is absent or not a string
// (which is reported).
func (t *table) str(k string) (s string, ok bool) {
	v, present := t.m[k]
	if !present {
		return "", false
	}
	if s, ok = v.(string); !ok {
		t.wrongType(k, v, "a string")
	}
	return s, ok
}

func (t *table) integer(k string) (n int64, ok bool) {
	v, present := t.m[k]
	if !present {
		return 0, false
	}
	if n, ok = v.(int64); !ok {
		t.wrongType(k, v, "an integer")
	}
	return n, ok
}

func (t *table) boolean(k string) (b bool, ok bool) {
	v, present := t.m[k]
	if !present {
		return false, false
	}
	if b, ok = v.(bool); !ok {
		t.wrongType(k, v, "a boolean (true or false)")
	}
	return b, ok
}

// intRange returns the integer at k, def when k is absent, and reports a
// value outside lo..hi.
func (t *table) intRange(k string, def, lo, hi int64) int {
	n, ok := t.integer(k)
	if !ok {
		return int(def)
	}
	switch {
	case (n < lo || n > hi) && hi == math.MaxInt32:
		t.errorf(k, "must be at least %d, not %d", lo, n)
	case n < lo || n > hi:
		t.errorf(k, "must be between %d and %d, not %d", lo, hi, n)
	}
	return int(max(min(n, math.MaxInt32), math.MinInt32))
}

// oneOf returns the string at k, def when k is absent, and reports a value
// not in values (returning "").
func (t *table) oneOf(k, def string, values ...string) string {
	s, ok := t.str(k)
	if !ok {
		if t.has(k) {
			return ""
		}
		return def
	}
	if !slices.Contains(values, s) {
		t.errorf(k, "must be one of %s, not %q", strings.Join(values, ", "), s)
		return ""
	}
	return s
}

// duration returns the Go duration string at k, def when k is absent, and
// reports one that does not parse or is not positive.
func (t *table) duration(k string, def time.Duration) (time.Duration, bool) {
	v, present := t.m[k]
	if !present {
		return def, true
	}
	s, ok := v.(string)
	if !ok {
		t.errorf(k, "must be a duration string such as \"500ms\", not %s", typeName(v))
		return 0, false
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		t.errorf(k, "%q is not a duration such as \"500ms\" or \"2s\"", s)
		return 0, false
	}
	if dur <= 0 {
		t.errorf(k, "must be more than 0, not %q", s)
		return 0, false
	}
	return dur, true
}

// durationRange is duration with bounds: a value below lo (a loop that
// would spin) or above hi is reported.
func (t *table) durationRange(k string, def, lo, hi time.Duration) (time.Duration, bool) {
	dur, ok := t.duration(k, def)
	if !ok || !t.has(k) {
		return dur, ok
	}
	if dur < lo || dur > hi {
		t.errorf(k, "%v is out of range: want %v to %v", dur, lo, hi)
		return 0, false
	}
	return dur, true
}

// addr returns the IP address at k; ok is false when k is absent or bad
// (which is reported).
func (t *table) addr(k string) (netip.Addr, bool) {
	s, ok := t.str(k)
	if !ok {
		return netip.Addr{}, false
	}
	a, msg := parseAddr(s)
	if msg != "" {
		t.errorf(k, "%s", msg)
		return netip.Addr{}, false
	}
	return a, true
}

// unicast is addr for an address that must be a unicast host address.
func (t *table) unicast(k string) (netip.Addr, bool) {
	a, ok := t.addr(k)
	if ok {
		if msg := notUnicast(a); msg != "" {
			t.errorf(k, "%s", msg)
			return netip.Addr{}, false
		}
	}
	return a, ok
}

// mac returns the MAC address at k; ok is false when k is absent or bad
// (which is reported).
func (t *table) mac(k string) (MAC, bool) {
	s, ok := t.str(k)
	if !ok {
		return MAC{}, false
	}
	m, err := ParseMAC(s)
	if err != nil {
		t.errorf(k, "%q is not a MAC address such as \"02:00:5e:00:00:01\"", s)
		return MAC{}, false
	}
	if m.IsZero() {
		t.errorf(k, "%s is the zero MAC address", m)
		return MAC{}, false
	}
	return m, true
}

// elem is one string element of an array.
type elem struct {
	s    string
	line int
}

// strings returns the strings of the array at k; elements of other types are
// reported and left out. ok is false when k is absent or not an array.
func (t *table) strings(k string) (elems []elem, ok bool) {
	v, present := t.m[k]
	if !present {
		return nil, false
	}
	arr, ok := v.([]any)
	if !ok {
		t.wrongType(k, v, "an array of strings")
		return nil, false
	}
	for i, e := range arr {
		line := t.elemLine(k, i)
		s, isStr := e.(string)
		if !isStr {
			t.errorAt(line, k, "element %d must be a string, not %s", i+1, typeName(e))
			continue
		}
		elems = append(elems, elem{s: s, line: line})
	}
	return elems, true
}

// sub returns the table at k; ok is false when k is absent or not a table
// (which is reported).
func (t *table) sub(k, label, prefix string) (*table, bool) {
	v, present := t.m[k]
	if !present {
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.wrongType(k, v, fmt.Sprintf("a table ([%s])", t.prefix+k))
		return nil, false
	}
	return &table{d: t.d, m: m, path: pathKey(t.path, k), line: t.lineOf(k), label: label, prefix: prefix}, true
}

// tables returns the elements of the array of tables at k, labelled
// "<kind>[i]" until the caller knows better. Both [[k]] and
// k = [{...}, ...] are accepted.
func (t *table) tables(k, kind string) []*table {
	v, present := t.m[k]
	if !present {
		return nil
	}
	var elems []any
	switch v := v.(type) {
	case []map[string]any:
		for _, m := range v {
			elems = append(elems, m)
		}
	case []any:
		elems = v
	default:
		t.wrongType(k, v, fmt.Sprintf("an array of tables ([[%s]])", t.prefix+k))
		return nil
	}
	base := pathKey(t.path, k)
	var out []*table
	for i, e := range elems {
		m, ok := e.(map[string]any)
		if !ok {
			t.errorAt(t.elemLine(k, i), k, "element %d must be a table, not %s", i+1, typeName(e))
			continue
		}
		path := pathIndex(base, i)
		line, ok := t.d.lines[path]
		if !ok {
			line = t.lineOf(k)
		}
		out = append(out, &table{d: t.d, m: m, path: path, line: line, label: fmt.Sprintf("%s[%d]", kind, i)})
	}
	return out
}

// typeName names a decoded TOML value's type for messages.
func typeName(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("a string (%q)", v)
	case int64:
		return fmt.Sprintf("an integer (%d)", v)
	case float64:
		f := strconv.FormatFloat(v, 'g', -1, 64)
		if !strings.ContainsAny(f, ".eIN") {
			f += ".0"
		}
		return fmt.Sprintf("a float (%s)", f)
	case bool:
		return fmt.Sprintf("a boolean (%v)", v)
	case time.Time:
		return "a date-time"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

// suggest returns the key in keys that k is probably a misspelling of.
func suggest(k string, keys []string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	best, bestDist := "", 3
	for _, c := range keys {
		if norm(c) == norm(k) {
			return c
		}
		if d := editDistance(k, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// parseAddr parses an IP address as the configuration accepts it, returning
// a message when it does not.
func parseAddr(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Sprintf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Sprintf("%q: zones are not allowed; the interface is given separately", s)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Sprintf("%q is an IPv4-mapped IPv6 address: write %s", s, a.Unmap())
	}
	return a, ""
}

// parsePrefix parses an address/length, returning a message when it does
// not. Host bits are kept.
func parsePrefix(s string) (netip.Prefix, string) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if _, msg := parseAddr(s); msg == "" {
			return netip.Prefix{}, fmt.Sprintf("%q has no prefix length: write it as \"%s/24\" or similar", s, s)
		}
		return netip.Prefix{}, fmt.Sprintf("%q is not an address with a prefix length such as \"10.0.0.1/24\"", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Sprintf("%q is an IPv4-mapped IPv6 prefix: write it in IPv4", s)
	}
	return p, ""
}

// notUnicast returns why a cannot be a host's unicast address, or "".
func notUnicast(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return fmt.Sprintf("%s is the unspecified address", a)
	case a.IsMulticast():
		return fmt.Sprintf("%s is a multicast address", a)
	case a.IsLoopback():
		return fmt.Sprintf("%s is a loopback address", a)
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Sprintf("%s is the limited broadcast address", a)
	case a.Is4() && a.As4()[0] == 0:
		return fmt.Sprintf("%s is in 0.0.0.0/8, which means \"this network\" (RFC 1122)", a)
	}
	return ""
}

// notHost returns why a, which p contains, cannot be a host on the subnet p:
// it is the network or the broadcast address of an IPv4 subnet with room for
// them (RFC 3021 /31 subnets have neither).
func notHost(p netip.Prefix, a netip.Addr) string {
	if !a.Is4() || p.Bits() > 30 || !p.Contains(a) {
		return ""
	}
	network := p.Masked()
	if a == network.Addr() {
		return fmt.Sprintf("%s is the network address of %s", a, network)
	}
	b := a.As4()
	n := network.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	last := (uint32(n[0])<<24 | uint32(n[1])<<16 | uint32(n[2])<<8 | uint32(n[3])) | host
	if uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]) == last {
		return fmt.Sprintf("%s is the broadcast address of %s", a, network)
	}
	return ""
}

// validIfname returns why name cannot be a Linux interface name, or "". The
// kernel's dev_valid_name: 1..15 bytes, not "." or "..", no '/', ':' or
// whitespace.
func validIfname(name string) string {
	switch {
	case name == "":
		return "must not be empty"
	case len(name) > 15:
		return fmt.Sprintf("%q is longer than 15 bytes (IFNAMSIZ)", name)
	case name == "." || name == "..":
		return fmt.Sprintf("%q is not a valid interface name", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r\x00"):
		return fmt.Sprintf("%q: interface names cannot contain '/', ':' or whitespace", name)
	}
	return ""
}
