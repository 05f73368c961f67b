package tune

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// ErrClusterNotFound is returned by RewriteConfig when no [[cluster]] has the
// name asked for.
var ErrClusterNotFound = errors.New("cluster not found")

// Change is one line RewriteConfig changed or added.
type Change struct {
	Key      string
	Old, New string // Old is "" for an added line
	Line     int    // 1-based line in the new text
}

// RewriteConfig returns src with the hash, seed and buckets keys of the
// [[cluster]] called name set to c, and what it changed. Every other byte is
// kept: comments (including one after a changed value), blank lines,
// indentation, key order, line endings. A key the cluster does not have is
// added after its last key. For hash = "modulo" only the hash line changes
// (seed and buckets mean nothing to it). A seed written in hex stays hex.
//
// It works on the text, not on a decoded form, so the caller should check
// the result with config.Parse before writing it.
func RewriteConfig(src []byte, name string, c Candidate) ([]byte, []Change, error) {
	text := string(src)
	eol := "\n"
	if strings.Contains(text, "\r\n") {
		eol = "\r\n"
	}
	lines := strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	sec, err := findCluster(lines, name)
	if err != nil {
		return nil, nil, err
	}
	want := []struct{ key, val string }{{"hash", strconv.Quote(c.Hash)}}
	if c.Hash != HashModulo {
		seed := strconv.FormatUint(uint64(c.Seed), 10)
		if kv, ok := sec.keys["seed"]; ok && isHex(kv.value(lines)) {
			seed = fmt.Sprintf("%#x", c.Seed)
		} else if !ok {
			seed = fmt.Sprintf("%#x", c.Seed)
		}
		want = append(want,
			struct{ key, val string }{"seed", seed},
			struct{ key, val string }{"buckets", strconv.Itoa(c.Buckets)})
	}
	var changes []Change
	var added []string
	for _, w := range want {
		kv, ok := sec.keys[w.key]
		if !ok {
			added = append(added, w.key+" = "+w.val)
			changes = append(changes, Change{Key: w.key, New: w.val})
			continue
		}
		old := kv.value(lines)
		if old == w.val {
			continue
		}
		l := lines[kv.line]
		lines[kv.line] = l[:kv.start] + w.val + l[kv.end:]
		changes = append(changes, Change{Key: w.key, Old: old, New: w.val, Line: kv.line + 1})
	}
	if len(added) > 0 {
		at := sec.lastKeyEnd + 1
		indent := leadingSpace(lines[sec.lastKey])
		if !strings.HasSuffix(lines[at-1], "\n") {
			lines[at-1] += eol
		}
		ins := make([]string, len(added))
		for i, a := range added {
			ins[i] = indent + a + eol
		}
		lines = append(lines[:at], append(ins, lines[at:]...)...)
		n := 0
		for i := range changes {
			if changes[i].Old == "" {
				changes[i].Line = at + n + 1
				n++
			}
		}
	}
	return []byte(strings.Join(lines, "")), changes, nil
}

func isHex(v string) bool {
	return strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X")
}

func leadingSpace(s string) string {
	return s[:len(s)-len(strings.TrimLeft(s, " \t"))]
}

// keyLine locates one key's scalar value: lines[line][start:end].
type keyLine struct {
	line, start, end int
}

func (k keyLine) value(lines []string) string { return lines[k.line][k.start:k.end] }

// section is one [[cluster]]'s own keys (those before its first sub-table).
type section struct {
	keys       map[string]keyLine
	lastKey    int // first line of the section's last key/value
	lastKeyEnd int // last line of it (values can span lines)
	nameValue  string
}

// findCluster scans the TOML text line by line, following multi-line
// strings and arrays so that their contents are never taken for headers or
// keys, and returns the [[cluster]] section whose name is name.
func findCluster(lines []string, name string) (section, error) {
	var lx lexer
	var cur *section
	inCluster := false
	for i := 0; i < len(lines); i++ {
		body := strings.TrimRight(lines[i], "\r\n")
		trimmed := strings.TrimLeft(body, " \t")
		switch {
		case trimmed == "" || trimmed[0] == '#':
			continue
		case trimmed[0] == '[':
			if cur != nil && cur.name() == name {
				return *cur, nil
			}
			cur = nil
			inCluster = headerName(trimmed) == "[[cluster]]"
			if inCluster {
				cur = &section{keys: make(map[string]keyLine)}
			}
			continue
		}
		eq := keyEnd(trimmed)
		if eq < 0 {
			return section{}, fmt.Errorf("line %d: not a key = value line", i+1)
		}
		key := unquoteKey(strings.TrimSpace(trimmed[:eq]))
		off := len(body) - len(trimmed) + eq + 1
		first := i
		lx = lexer{}
		valEnd := lx.scan(body, off)
		for lx.open() && i+1 < len(lines) {
			i++
			lx.scan(strings.TrimRight(lines[i], "\r\n"), 0)
		}
		if cur == nil {
			continue
		}
		cur.lastKey, cur.lastKeyEnd = first, i
		if first == i {
			v := body[off:valEnd]
			start := off + len(v) - len(strings.TrimLeft(v, " \t"))
			end := off + len(strings.TrimRight(v, " \t"))
			cur.keys[key] = keyLine{line: first, start: start, end: end}
			if key == "name" {
				cur.nameValue, _ = unquoteString(body[start:end])
			}
		}
	}
	if cur != nil && cur.name() == name {
		return *cur, nil
	}
	return section{}, fmt.Errorf("%w: %q", ErrClusterNotFound, name)
}

// name is the section's cluster name; "" if it has none.
func (s *section) name() string { return s.nameValue }

// headerName normalises a table header line: "[[ cluster ]] # x" -> "[[cluster]]".
func headerName(h string) string {
	if i := strings.IndexByte(h, '#'); i >= 0 {
		h = h[:i]
	}
	h = strings.TrimSpace(h)
	double := strings.HasPrefix(h, "[[") && strings.HasSuffix(h, "]]")
	h = strings.Trim(h, "[]")
	h = strings.ReplaceAll(strings.TrimSpace(h), " ", "")
	if double {
		return "[[" + h + "]]"
	}
	return "[" + h + "]"
}

// keyEnd returns the index of the '=' that ends the key in a key/value line,
// skipping quoted keys, or -1.
func keyEnd(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '=':
			return i
		case '"', '\'':
			j := strings.IndexByte(s[i+1:], s[i])
			if j < 0 {
				return -1
			}
			i += j + 1
		}
	}
	return -1
}

func unquoteKey(k string) string {
	if len(k) >= 2 && (k[0] == '"' || k[0] == '\'') && k[len(k)-1] == k[0] {
		return k[1 : len(k)-1]
	}
	return k
}

// unquoteString decodes a TOML basic ("...") or literal ('...') string.
func unquoteString(v string) (string, bool) {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1], true
	}
	s, err := strconv.Unquote(v)
	return s, err == nil && strings.HasPrefix(v, `"`)
}

// lexer follows TOML values across lines: open brackets and multi-line
// strings.
type lexer struct {
	depth int  // open [ and {
	ml    byte // '"' or '\'' inside a multi-line string, else 0
}

func (l *lexer) open() bool { return l.depth > 0 || l.ml != 0 }

// scan reads s from off and returns where the value part of the line ends:
// the start of a comment outside strings, or len(s).
func (l *lexer) scan(s string, off int) int {
	for i := off; i < len(s); i++ {
		c := s[i]
		if l.ml != 0 {
			q := strings.Repeat(string(l.ml), 3)
			if l.ml == '"' && c == '\\' {
				i++
				continue
			}
			if strings.HasPrefix(s[i:], q) {
				l.ml = 0
				i += 2
			}
			continue
		}
		switch c {
		case '#':
			return i
		case '[', '{':
			l.depth++
		case ']', '}':
			l.depth--
		case '"', '\'':
			q := strings.Repeat(string(c), 3)
			if strings.HasPrefix(s[i:], q) {
				end := strings.Index(s[i+3:], q)
				if end < 0 {
					l.ml = c
					return len(s)
				}
				i += 3 + end + 2
				continue
			}
			for i++; i < len(s) && s[i] != c; i++ {
				if c == '"' && s[i] == '\\' {
					i++
				}
			}
		}
	}
	return len(s)
}

// RewritePins returns src with the [[cluster.pin]] tables of the [[cluster]]
// called name replaced by pins, and what it changed (Key "pin", Old and New
// "CLIENT -> server ID"). Every other byte is kept: an old pin table goes
// from its header to its last key (comments and blank lines after it
// stay); the new ones follow the cluster's last other table, indented like
// its first sub-table. When the file already pins exactly these clients to
// these servers nothing changes.
//
// Like RewriteConfig it works on the text; check the result with
// config.Parse before writing it.
func RewritePins(src []byte, name string, pins []PinChoice) ([]byte, []Change, error) {
	text := string(src)
	eol := "\n"
	if strings.Contains(text, "\r\n") {
		eol = "\r\n"
	}
	lines := strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	blocks, err := scanBlocks(lines)
	if err != nil {
		return nil, nil, err
	}
	k := slices.IndexFunc(blocks, func(b block) bool { return b.header == "[[cluster]]" && b.name == name })
	if k < 0 {
		return nil, nil, fmt.Errorf("%w: %q", ErrClusterNotFound, name)
	}
	last := k // the cluster's last block that is not a pin
	var old []block
	for j := k + 1; j < len(blocks) && (strings.HasPrefix(blocks[j].header, "[[cluster.") || strings.HasPrefix(blocks[j].header, "[cluster.")); j++ {
		if blocks[j].header == "[[cluster.pin]]" {
			old = append(old, blocks[j])
		} else {
			last = j
		}
	}
	pinText := func(client string, id string) string { return client + " -> server " + id }
	oldSet := map[string]bool{}
	for _, b := range old {
		c, _ := unquoteString(b.keys["client"])
		oldSet[pinText(c, b.keys["server"])] = true
	}
	newSet := map[string]bool{}
	for _, p := range pins {
		newSet[pinText(p.Client.Addr.String(), strconv.Itoa(p.ID))] = true
	}
	if maps.Equal(oldSet, newSet) {
		return src, nil, nil
	}

	indent := ""
	if k+1 < len(blocks) && blocks[k+1].start >= 0 && (last > k || len(old) > 0) {
		indent = leadingSpace(lines[blocks[k+1].start])
	}
	removed := map[int]bool{}
	var changes []Change
	for _, b := range old {
		for i := b.start; i <= b.end; i++ {
			removed[i] = true
		}
		// A blank line before a removed table goes with it.
		if b.start > 0 && strings.TrimSpace(lines[b.start-1]) == "" {
			removed[b.start-1] = true
		}
		c, _ := unquoteString(b.keys["client"])
		if t := pinText(c, b.keys["server"]); !newSet[t] {
			changes = append(changes, Change{Key: "pin", Old: t})
		}
	}
	at := blocks[last].end
	var out []string
	for i, l := range lines {
		if !removed[i] {
			out = append(out, l)
		}
		if i == at {
			if !strings.HasSuffix(out[len(out)-1], "\n") {
				out[len(out)-1] += eol
			}
			for _, p := range pins {
				t := pinText(p.Client.Addr.String(), strconv.Itoa(p.ID))
				out = append(out, eol, indent+"[[cluster.pin]]"+eol,
					indent+"client = "+strconv.Quote(p.Client.Addr.String())+eol,
					indent+"server = "+strconv.Itoa(p.ID)+eol)
				if !oldSet[t] {
					changes = append(changes, Change{Key: "pin", New: t, Line: len(out) - 2})
				}
			}
		}
	}
	return []byte(strings.Join(out, "")), changes, nil
}

// block is one table of a TOML text: its header (normalised; "" for the
// root), lines[start..end] from the header to its last key/value line, its
// single-line keys' values, and for a [[cluster]] its name.
type block struct {
	header     string
	start, end int
	keys       map[string]string
	name       string
}

// scanBlocks splits lines into tables, following multi-line values as
// findCluster does.
func scanBlocks(lines []string) ([]block, error) {
	var lx lexer
	blocks := []block{}
	cur := block{start: -1, end: -1, keys: map[string]string{}}
	for i := 0; i < len(lines); i++ {
		body := strings.TrimRight(lines[i], "\r\n")
		trimmed := strings.TrimLeft(body, " \t")
		switch {
		case trimmed == "" || trimmed[0] == '#':
			continue
		case trimmed[0] == '[':
			blocks = append(blocks, cur)
			cur = block{header: headerName(trimmed), start: i, end: i, keys: map[string]string{}}
			continue
		}
		eq := keyEnd(trimmed)
		if eq < 0 {
			return nil, fmt.Errorf("line %d: not a key = value line", i+1)
		}
		key := unquoteKey(strings.TrimSpace(trimmed[:eq]))
		off := len(body) - len(trimmed) + eq + 1
		first := i
		lx = lexer{}
		valEnd := lx.scan(body, off)
		for lx.open() && i+1 < len(lines) {
			i++
			lx.scan(strings.TrimRight(lines[i], "\r\n"), 0)
		}
		cur.end = i
		if first == i {
			v := strings.TrimSpace(body[off:valEnd])
			cur.keys[key] = v
			if key == "name" && cur.header == "[[cluster]]" {
				cur.name, _ = unquoteString(v)
			}
		}
	}
	return append(blocks, cur), nil
}
