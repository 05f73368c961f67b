package tune

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
)

// Sentinel errors returned by ParseLine; Population counts lines that fail
// with them as malformed and keeps the first few line numbers.
var (
	ErrNoClient = errors.New("first field is not an IP address")
	ErrFormat   = errors.New("not a common or combined log line")
	ErrStatus   = errors.New("bad status field")
	ErrSize     = errors.New("bad size field")
	ErrTooLong  = errors.New("line too long")
	ErrTime     = errors.New("bad time stamp")
)

// MaxLineLength is the longest log line read; longer lines are malformed.
const MaxLineLength = 64 << 10

// MaxExamples is how many malformed lines a Population remembers by number.
const MaxExamples = 5

// Record is one parsed log line: one request from Addr.
type Record struct {
	Addr netip.Addr
	// Bytes is the response size from the size field ("-" is 0).
	Bytes uint64
	// HasBytes reports whether the line had a size field (a common or
	// combined line); an address-only line has none.
	HasBytes bool
	// Time is when the request was logged, in seconds since the Unix
	// epoch, and HasTime whether the line had a time stamp (an
	// address-only line has none). A stamp without a zone (HAProxy's) is
	// read as UTC: only differences between lines of one log matter.
	Time    int64
	HasTime bool
}

// ParseLine parses one access log line (without its line ending) in one of
// the formats web servers write by default:
//
//	Apache/nginx common:   ADDR IDENT USER [TIME] "REQUEST" STATUS SIZE
//	Apache/nginx combined: the same, then "REFERER" "USER-AGENT" (and anything after)
//	HAProxy HTTP or TCP:   [SYSLOG HEADER haproxy[PID]: ]ADDR:PORT [TIME] ... (see parseHAProxy)
//	one address per line:  ADDR
//
// ADDR is an IPv4 or IPv6 address (optionally in brackets; an IPv6 zone is
// dropped and an IPv4-mapped IPv6 address is unmapped, since that is the
// address the dispatcher sees on the wire). SIZE is a decimal byte count or
// "-" (Apache's %b for zero). Quotes inside REQUEST escaped as \" (Apache) or
// \x22 (nginx) are handled. TIME is read into Record.Time. Errors are the
// package's Err sentinels.
// ParseLine does not allocate for IPv4 clients.
func ParseLine(line []byte) (Record, error) {
	line = trimSpace(line)
	if len(line) > MaxLineLength {
		return Record{}, ErrTooLong
	}
	field, rest := firstField(line)
	addr, ok := parseAddr(field)
	// HAProxy writes ADDR:PORT, and its time follows at once; a common log
	// line has IDENT and USER in between. An IPv6 ADDR:PORT parses as an
	// address, hence the second test.
	if !ok || (len(rest) > 0 && rest[0] == '[') {
		if r, isHAProxy, err := parseHAProxy(line); isHAProxy {
			return r, err
		}
	}
	if !ok {
		return Record{}, ErrNoClient
	}
	if len(rest) == 0 {
		return Record{Addr: addr}, nil
	}
	// IDENT USER [TIME]: the time is the first bracketed field.
	open := bytes.IndexByte(rest, '[')
	if open < 0 {
		return Record{}, ErrFormat
	}
	rest = rest[open+1:]
	closeAt := bytes.IndexByte(rest, ']')
	if closeAt < 0 {
		return Record{}, ErrFormat
	}
	when, ok := parseLogTime(rest[:closeAt])
	if !ok {
		return Record{}, ErrTime
	}
	rest = rest[closeAt+1:]
	if len(rest) < 2 || rest[0] != ' ' || rest[1] != '"' {
		return Record{}, ErrFormat
	}
	rest = rest[2:]
	q := closingQuote(rest)
	if q < 0 {
		return Record{}, ErrFormat
	}
	rest = rest[q+1:]
	if len(rest) == 0 || rest[0] != ' ' {
		return Record{}, ErrFormat
	}
	rest = rest[1:]
	status, rest := nextField(rest)
	if !validStatus(status) {
		return Record{}, ErrStatus
	}
	size, _ := nextField(rest)
	n, ok := parseSize(size)
	if !ok {
		return Record{}, ErrSize
	}
	return Record{Addr: addr, Bytes: n, HasBytes: true, Time: when, HasTime: true}, nil
}

// firstField splits line at its first space or tab.
func firstField(line []byte) (field, rest []byte) {
	for i, c := range line {
		if c == ' ' || c == '\t' {
			return line[:i], line[i+1:]
		}
	}
	return line, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	return b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// nextField splits b at the first space.
func nextField(b []byte) (field, rest []byte) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// closingQuote returns the index of the first '"' in b not escaped by a
// backslash, or -1.
func closingQuote(b []byte) int {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func validStatus(b []byte) bool {
	if len(b) != 3 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func parseSize(b []byte) (uint64, bool) {
	if len(b) == 1 && b[0] == '-' {
		return 0, true
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// parseAddr parses a client address field; IPv4 without allocating.
func parseAddr(b []byte) (netip.Addr, bool) {
	if a, ok := parseIPv4(b); ok {
		return a, true
	}
	if len(b) >= 2 && b[0] == '[' && b[len(b)-1] == ']' {
		b = b[1 : len(b)-1]
	}
	if bytes.IndexByte(b, ':') < 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}

// parseIPv4 accepts exactly what netip.ParseAddr accepts for IPv4: four
// decimal octets, no leading zeros.
func parseIPv4(b []byte) (netip.Addr, bool) {
	var ip [4]byte
	part, digits, val := 0, 0, 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9':
			if digits > 0 && val == 0 {
				return netip.Addr{}, false // leading zero
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return netip.Addr{}, false
			}
		case c == '.':
			if digits == 0 || part == 3 {
				return netip.Addr{}, false
			}
			ip[part] = byte(val)
			part++
			digits, val = 0, 0
		default:
			return netip.Addr{}, false
		}
	}
	if part != 3 || digits == 0 {
		return netip.Addr{}, false
	}
	ip[3] = byte(val)
	return netip.AddrFrom4(ip), true
}

// Counts is what one client sent: requests, and response bytes.
type Counts struct {
	Requests uint64
	Bytes    uint64
}

// Malformed names one unparsable line.
type Malformed struct {
	File string
	Line int64
	Err  error
}

func (m Malformed) String() string { return fmt.Sprintf("%s:%d: %v", m.File, m.Line, m.Err) }

// Population is the per-client aggregate of one or more access logs. Its
// memory is bounded by the number of distinct clients. The zero value is not
// usable; call NewPopulation. A Population is not safe for concurrent use.
type Population struct {
	// Clients maps each client address to its counts.
	Clients map[netip.Addr]Counts
	// Requests and Bytes are the totals over all clients.
	Requests, Bytes uint64
	// Lines counts lines read, Blank the empty and '#' comment lines among
	// them, Sized the parsed lines that had a size field, Malformed the
	// lines that did not parse.
	Lines, Blank, Sized, Malformed int64
	// Examples holds the first MaxExamples malformed lines.
	Examples []Malformed
	// Timeline keeps the same counts per time slot, for held-out
	// evaluation (see Windows).
	Timeline Timeline
}

// NewPopulation returns an empty Population.
func NewPopulation() *Population {
	return &Population{Clients: make(map[netip.Addr]Counts)}
}

// Add counts one request.
func (p *Population) Add(r Record) {
	p.Timeline.add(r)
	p.addCounts(r)
}

// addCounts counts r in the totals only.
func (p *Population) addCounts(r Record) {
	c := p.Clients[r.Addr]
	c.Requests++
	c.Bytes += r.Bytes
	p.Clients[r.Addr] = c
	p.Requests++
	p.Bytes += r.Bytes
	if r.HasBytes {
		p.Sized++
	}
}

func (p *Population) malformed(file string, line int64, err error) {
	p.Malformed++
	if len(p.Examples) < MaxExamples {
		p.Examples = append(p.Examples, Malformed{File: file, Line: line, Err: err})
	}
}

// ProgressFunc is told how far reading has got: the file name and the lines
// read from it so far. It is called from the reading goroutine.
type ProgressFunc func(file string, lines int64)

// progressEvery is how many lines pass between progress checks.
const progressEvery = 1 << 16

// ReadLog reads one access log from r, plain or gzip (detected by its magic
// bytes; concatenated gzip members, as logrotate writes, are read in turn),
// and adds every parsed line to p. Unparsable lines are counted, not errors.
// name is used in malformed-line examples. progress, if not nil, is called
// about every 64k lines and at the end.
func (p *Population) ReadLog(name string, r io.Reader, progress ProgressFunc) error {
	br := bufio.NewReaderSize(r, 256<<10)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("tune: %s: %w", name, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 256<<10)
	}
	var n int64
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// Longer than the buffer: skip the rest of it.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			n++
			p.Lines++
			p.malformed(name, n, ErrTooLong)
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("tune: %s: line %d: %w", name, n+1, err)
			}
			continue
		}
		if len(line) > 0 {
			n++
			p.Lines++
			p.addLine(name, n, line)
			if progress != nil && n%progressEvery == 0 {
				progress(name, n)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("tune: %s: line %d: %w", name, n+1, err)
		}
	}
	if progress != nil {
		progress(name, n)
	}
	return nil
}

func (p *Population) addLine(name string, n int64, line []byte) {
	t := trimSpace(line)
	if len(t) == 0 || t[0] == '#' {
		p.Blank++
		return
	}
	r, err := ParseLine(t)
	if err != nil {
		p.malformed(name, n, err)
		return
	}
	p.Add(r)
}

// Client is one client address with its counts.
type Client struct {
	Addr netip.Addr
	Counts
}

// Metric is what balance is judged on.
type Metric int

const (
	// ByRequests weighs each client by its number of requests.
	ByRequests Metric = iota
	// ByBytes weighs each client by the response bytes it was sent.
	ByBytes
)

func (m Metric) String() string {
	if m == ByBytes {
		return "bytes"
	}
	return "requests"
}

// ParseMetric parses "requests" or "bytes".
func ParseMetric(s string) (Metric, error) {
	switch s {
	case "requests":
		return ByRequests, nil
	case "bytes":
		return ByBytes, nil
	}
	return 0, fmt.Errorf("tune: unknown metric %q (want requests or bytes)", s)
}

// other is the metric m is not.
func (m Metric) other() Metric {
	if m == ByBytes {
		return ByRequests
	}
	return ByBytes
}

// Of returns c's weight under m.
func (m Metric) Of(c Counts) uint64 {
	if m == ByBytes {
		return c.Bytes
	}
	return c.Requests
}

// Total returns p's total under m.
func (m Metric) Total(p *Population) uint64 {
	if m == ByBytes {
		return p.Bytes
	}
	return p.Requests
}

// Sorted returns p's clients heaviest first under m (then heaviest under the
// other metric, then by address), a deterministic order.
func (p *Population) Sorted(m Metric) []Client {
	cs := make([]Client, 0, len(p.Clients))
	for a, c := range p.Clients {
		cs = append(cs, Client{Addr: a, Counts: c})
	}
	other := m.other()
	slices.SortFunc(cs, func(x, y Client) int {
		if a, b := m.Of(x.Counts), m.Of(y.Counts); a != b {
			if a > b {
				return -1
			}
			return 1
		}
		if a, b := other.Of(x.Counts), other.Of(y.Counts); a != b {
			if a > b {
				return -1
			}
			return 1
		}
		return x.Addr.Compare(y.Addr)
	})
	return cs
}
