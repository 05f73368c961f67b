package config

import (
	"bytes"
	"sort"
	"strconv"
	"strings"
)

// BurntSushi/toml keeps one position per key path without array indices
// ("cluster.server.address" is the last server's), and keeps it private. The
// locator below recovers the line of every key with its indices
// ("cluster[1].server[3].address") from the text itself.
//
// It runs only on text that BurntSushi/toml has already accepted, so it
// does not validate anything; on text it does not understand it gives up on
// the construct, never panics, and always makes progress. Paths it misses
// fall back to the enclosing table's line (see table.lineOf).
//
// Path syntax: keys joined by ".", each key bare if it is a valid bare key
// and strconv-quoted otherwise, array elements as "[i]". pathKey and
// pathIndex build the same strings for the decoder.
//
// Its time and memory are linear in the text: a path longer than maxPath
// becomes tooDeep, which is never recorded and never grows (so a file of
// 10,000 dotted keys or nested arrays does not build 10,000 ever longer
// strings), and values nested deeper than maxNest are skipped by a flat
// scan rather than by recursion. No real configuration comes near either
// bound; what lies beyond them falls back to the enclosing table's line.
const (
	maxPath = 256
	maxNest = 32
	// tooDeep stands for every path beyond maxPath.
	tooDeep = "\x00"
)

// pathKey returns the path of key inside the table at path.
func pathKey(path, key string) string {
	if path == tooDeep || len(path)+len(key) > maxPath {
		return tooDeep
	}
	k := key
	if !isBareKey(key) {
		k = strconv.Quote(key)
	}
	if path == "" {
		return k
	}
	if len(path)+1+len(k) > maxPath {
		return tooDeep
	}
	return path + "." + k
}

// pathIndex returns the path of element i of the array at path.
func pathIndex(path string, i int) string {
	if path == tooDeep || len(path) > maxPath-12 {
		return tooDeep
	}
	return path + "[" + strconv.Itoa(i) + "]"
}

func isBareKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isBareByte(k[i]) {
			return false
		}
	}
	return true
}

func isBareByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// locate maps every key path in src, and every array element, to its 1-based
// line. Tables map to the line of their header (or of the first dotted key
// that creates them).
func locate(src []byte) map[string]int {
	l := &locator{
		src:    src,
		lines:  make(map[string]int),
		arrays: make(map[string]int),
		starts: []int{0},
	}
	for i, c := range src {
		if c == '\n' {
			l.starts = append(l.starts, i+1)
		}
	}
	if bytes.HasPrefix(src, []byte("\ufeff")) {
		l.pos = 3
	}
	l.document()
	return l.lines
}

type locator struct {
	src    []byte
	pos    int
	starts []int          // byte offset of each line's start
	lines  map[string]int // path → line
	arrays map[string]int // array-of-tables path → elements seen so far
	table  string         // path of the current table
	depth  int            // nesting of the value being read (arrays, inline tables)
}

func (l *locator) eof() bool { return l.pos >= len(l.src) }

// peek returns the byte i ahead of pos, or 0 past the end.
func (l *locator) peek(i int) byte {
	if l.pos+i < len(l.src) {
		return l.src[l.pos+i]
	}
	return 0
}

func (l *locator) hasPrefix(s string) bool {
	return bytes.HasPrefix(l.src[min(l.pos, len(l.src)):], []byte(s))
}

// lineAt returns the 1-based line holding byte offset off.
func (l *locator) lineAt(off int) int {
	return sort.Search(len(l.starts), func(i int) bool { return l.starts[i] > off })
}

// set records the line of path at offset off; the first record wins.
func (l *locator) set(path string, off int) {
	if path == tooDeep {
		return
	}
	if _, ok := l.lines[path]; !ok {
		l.lines[path] = l.lineAt(off)
	}
}

// skipBlank skips spaces and tabs.
func (l *locator) skipBlank() {
	for !l.eof() && (l.src[l.pos] == ' ' || l.src[l.pos] == '\t') {
		l.pos++
	}
}

// skipSpace skips whitespace, newlines and comments: what may separate
// elements of arrays and (TOML 1.1) inline tables.
func (l *locator) skipSpace() {
	for !l.eof() {
		switch l.src[l.pos] {
		case ' ', '\t', '\r', '\n':
			l.pos++
		case '#':
			l.skipLine()
		default:
			return
		}
	}
}

// skipLine moves past the next newline.
func (l *locator) skipLine() {
	for !l.eof() {
		c := l.src[l.pos]
		l.pos++
		if c == '\n' {
			return
		}
	}
}

// document walks the top level: headers, key/value pairs, comments.
func (l *locator) document() {
	for {
		l.skipSpace()
		if l.eof() {
			return
		}
		start := l.pos
		if l.src[l.pos] == '[' {
			l.header()
		} else {
			l.keyValue(l.table)
		}
		// Only blanks and a comment may follow on the line.
		l.skipLine()
		if l.pos <= start {
			l.pos = start + 1
		}
	}
}

// header handles [table] and [[array]] and makes it the current table.
func (l *locator) header() {
	start := l.pos
	array := l.peek(1) == '['
	if array {
		l.pos += 2
	} else {
		l.pos++
	}
	keys := l.key()
	if len(keys) == 0 {
		return
	}
	// Every key but an array header's last one names a table that exists
	// already; if it is an array of tables, the header means its last element.
	path := ""
	for i, k := range keys {
		path = pathKey(path, k)
		l.set(path, start) // tables implied by the header begin here
		if array && i == len(keys)-1 {
			break
		}
		if n := l.arrays[path]; n > 0 {
			path = pathIndex(path, n-1)
		}
	}
	if array {
		n := l.arrays[path]
		l.arrays[path] = n + 1
		path = pathIndex(path, n)
	}
	l.set(path, start)
	l.table = path
}

// keyValue handles key = value inside the table at table.
func (l *locator) keyValue(table string) {
	start := l.pos
	keys := l.key()
	if len(keys) == 0 {
		return
	}
	l.skipBlank()
	if l.peek(0) != '=' {
		return
	}
	l.pos++
	l.skipBlank()
	path := table
	for _, k := range keys {
		path = pathKey(path, k)
		l.set(path, start) // dotted keys create their tables here
	}
	l.value(path)
}

// key reads a possibly dotted key and returns its parts, unquoted.
func (l *locator) key() []string {
	var keys []string
	for {
		l.skipBlank()
		var k string
		switch l.peek(0) {
		case '"':
			k = l.basicString()
		case '\'':
			k = l.literalString()
		default:
			start := l.pos
			for !l.eof() && (isBareByte(l.src[l.pos]) || l.src[l.pos] >= 0x80) {
				l.pos++
			}
			if l.pos == start {
				return keys
			}
			k = string(l.src[start:l.pos])
		}
		keys = append(keys, k)
		l.skipBlank()
		if l.peek(0) != '.' {
			return keys
		}
		l.pos++
	}
}

// value skips one value, recording the lines of array elements and
// inline-table keys under path.
func (l *locator) value(path string) {
	switch c := l.peek(0); {
	case l.eof():
	case l.hasPrefix(`"""`):
		l.multiLineString('"')
	case l.hasPrefix(`'''`):
		l.multiLineString('\'')
	case c == '"':
		l.basicString()
	case c == '\'':
		l.literalString()
	case (c == '[' || c == '{') && l.depth >= maxNest:
		l.skipNested()
	case c == '[':
		l.depth++
		l.array(path)
		l.depth--
	case c == '{':
		l.depth++
		l.inlineTable(path)
		l.depth--
	default:
		l.scalar()
	}
}

func (l *locator) array(path string) {
	l.pos++ // [
	for i := 0; ; {
		l.skipSpace()
		if l.eof() {
			return
		}
		switch l.src[l.pos] {
		case ']':
			l.pos++
			return
		case ',':
			l.pos++
			continue
		}
		start := l.pos
		elem := pathIndex(path, i)
		l.set(elem, start)
		l.value(elem)
		i++
		if l.pos == start {
			return // not a value: give up on this array
		}
	}
}

func (l *locator) inlineTable(path string) {
	l.pos++ // {
	for {
		l.skipSpace()
		if l.eof() {
			return
		}
		switch l.src[l.pos] {
		case '}':
			l.pos++
			return
		case ',':
			l.pos++
			continue
		}
		start := l.pos
		l.keyValue(path)
		if l.pos == start {
			return
		}
	}
}

// skipNested skips an array or inline table without recording anything
// and without recursion: brackets and braces are counted (strings and
// comments are skipped) until they balance, or the text ends.
func (l *locator) skipNested() {
	depth := 0
	for !l.eof() {
		switch c := l.src[l.pos]; {
		case l.hasPrefix(`"""`):
			l.multiLineString('"')
			continue
		case l.hasPrefix(`'''`):
			l.multiLineString('\'')
			continue
		case c == '"':
			l.basicString()
			continue
		case c == '\'':
			l.literalString()
			continue
		case c == '#':
			l.skipLine()
			continue
		case c == '[' || c == '{':
			depth++
		case c == ']' || c == '}':
			depth--
		}
		l.pos++
		if depth <= 0 {
			return
		}
	}
}

// scalar skips a number, boolean or date-time.
func (l *locator) scalar() {
	start := l.pos
	for !l.eof() && !strings.ContainsRune(" \t\r\n,]}#", rune(l.src[l.pos])) {
		l.pos++
		// A local date followed by a space and a time is one value.
		if l.pos-start == 10 && l.src[start+4] == '-' && l.src[start+7] == '-' &&
			l.peek(0) == ' ' && l.peek(1) >= '0' && l.peek(1) <= '9' {
			l.pos++
		}
	}
}

// basicString reads a one-line "..." string and returns its content,
// unescaped where Go's rules agree with TOML's.
func (l *locator) basicString() string {
	l.pos++ // "
	start := l.pos
	for !l.eof() {
		switch l.src[l.pos] {
		case '\\':
			l.pos += 2
			continue
		case '"':
			raw := string(l.src[start:l.pos])
			l.pos++
			if s, err := strconv.Unquote(`"` + raw + `"`); err == nil {
				return s
			}
			return raw
		case '\n':
			return string(l.src[start:l.pos])
		}
		l.pos++
	}
	return string(l.src[start:min(l.pos, len(l.src))])
}

// literalString reads a one-line '...' string.
func (l *locator) literalString() string {
	l.pos++ // '
	start := l.pos
	for !l.eof() {
		switch l.src[l.pos] {
		case '\'':
			s := string(l.src[start:l.pos])
			l.pos++
			return s
		case '\n':
			return string(l.src[start:l.pos])
		}
		l.pos++
	}
	return string(l.src[start:])
}

// multiLineString skips a """...""" or ”'...”' string. Up to two more
// quotes may follow the closing delimiter as part of the content.
func (l *locator) multiLineString(q byte) {
	l.pos += 3
	delim := strings.Repeat(string(q), 3)
	for !l.eof() {
		if q == '"' && l.src[l.pos] == '\\' {
			l.pos += 2
			continue
		}
		if l.hasPrefix(delim) {
			l.pos += 3
			for n := 0; n < 2 && l.peek(0) == q; n++ {
				l.pos++
			}
			return
		}
		l.pos++
	}
}
