package config

import (
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string
	// Line is the 1-based line the problem is about: the key's line, the
	// element's line in a multi-line array, or, for a missing key, the line
	// of the table that should hold it. 0 means the file as a whole.
	Line int
	// Key names what is wrong so that an engineer can find it: a dotted path
	// for singletons ("router.log_level"), and for entries of arrays the entry
	// then the key, e.g. `interface "lan0": addresses` or
	// `cluster "web" server 2: address`. Empty for TOML syntax errors that
	// are not about a key.
	Key string
	Msg string
}

// Error formats the problem as "FILE:LINE: KEY: MSG", dropping ":LINE" when
// Line is 0 and "KEY: " when Key is empty.
func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem [Parse] found in one file, sorted by line. It is
// the error Parse and Load return for a bad file; use errors.As to get at it.
type Problems []Problem

// Error is one Problem per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// sort orders problems by line, keeping the order they were found in within
// a line.
func (ps Problems) sort() {
	slices.SortStableFunc(ps, func(a, b Problem) int { return a.Line - b.Line })
}
