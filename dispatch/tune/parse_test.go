package tune

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestParseLine(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name  string
		line  string
		addr  netip.Addr
		bytes uint64
		sized bool
		err   error
	}{
		// Apache's documented examples (httpd.apache.org/docs/current/logs.html).
		{"apache common", `127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326`, a("127.0.0.1"), 2326, true, nil},
		{"apache combined", `127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"`, a("127.0.0.1"), 2326, true, nil},
		{"apache %b dash", `198.51.100.7 - - [26/Nov/2025:08:00:01 +0000] "GET /logo.png HTTP/1.1" 304 -`, a("198.51.100.7"), 0, true, nil},
		{"apache escaped quote", `198.51.100.8 - - [26/Nov/2025:08:00:01 +0000] "GET /a\"b HTTP/1.1" 404 196 "-" "sqlmap \"x\""`, a("198.51.100.8"), 196, true, nil},
		{"apache vhost-less trailing fields", `198.51.100.9 - - [26/Nov/2025:08:00:01 +0000] "GET / HTTP/1.1" 200 10 "-" "ua" 1234 example.com`, a("198.51.100.9"), 10, true, nil},
		// nginx's default "combined" log_format.
		{"nginx combined", `203.0.113.5 - - [26/Nov/2025:08:01:02 +0000] "GET /index.html HTTP/1.1" 200 612 "-" "curl/8.5.0"`, a("203.0.113.5"), 612, true, nil},
		{"nginx user", `203.0.113.6 - alice [26/Nov/2025:08:01:02 +0000] "POST /api/v1/items?x=[1] HTTP/2.0" 201 45 "https://example.com/" "Mozilla/5.0"`, a("203.0.113.6"), 45, true, nil},
		{"nginx \\x22 escape", `203.0.113.7 - - [26/Nov/2025:08:01:02 +0000] "GET /q?s=\x22hi\x22 HTTP/1.1" 200 5 "-" "-"`, a("203.0.113.7"), 5, true, nil},
		{"nginx tls junk request", `203.0.113.8 - - [26/Nov/2025:08:01:02 +0000] "\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03" 400 157 "-" "-"`, a("203.0.113.8"), 157, true, nil},
		{"nginx empty request", `203.0.113.9 - - [26/Nov/2025:08:01:02 +0000] "" 400 0 "-" "-"`, a("203.0.113.9"), 0, true, nil},
		{"nginx 499 no bytes", `203.0.113.10 - - [26/Nov/2025:08:01:02 +0000] "GET /slow HTTP/1.1" 499 0 "-" "-"`, a("203.0.113.10"), 0, true, nil},
		// IPv6 clients.
		{"ipv6 combined", `2001:db8::1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/2.0" 200 10 "-" "UA"`, a("2001:db8::1"), 10, true, nil},
		{"ipv6 full", `2001:0db8:0000:0000:0000:ff00:0042:8329 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 1`, a("2001:db8::ff00:42:8329"), 1, true, nil},
		{"ipv4-mapped unmapped", `::ffff:198.51.100.20 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 3`, a("198.51.100.20"), 3, true, nil},
		{"ipv6 zone dropped", `fe80::1%eth0 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 3`, a("fe80::1"), 3, true, nil},
		// One address per line.
		{"address only", `198.51.100.30`, a("198.51.100.30"), 0, false, nil},
		{"address with spaces and CR", "  198.51.100.31 \t\r", a("198.51.100.31"), 0, false, nil},
		{"ipv6 address only", `2001:db8:1::42`, a("2001:db8:1::42"), 0, false, nil},
		{"bracketed ipv6 only", `[2001:db8:1::43]`, a("2001:db8:1::43"), 0, false, nil},
		{"tab separated", "198.51.100.32\t- - [26/Nov/2025:08:01:02 +0000] \"GET / HTTP/1.1\" 200 3", a("198.51.100.32"), 3, true, nil},
		// Malformed.
		{"hostname (HostnameLookups on)", `crawl-66-249-66-1.googlebot.com - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 3`, netip.Addr{}, 0, false, ErrNoClient},
		{"leading zero octet", `198.051.100.1`, netip.Addr{}, 0, false, ErrNoClient},
		{"octet too big", `198.51.100.256`, netip.Addr{}, 0, false, ErrNoClient},
		{"three octets", `198.51.100`, netip.Addr{}, 0, false, ErrNoClient},
		{"empty address field", ` `, netip.Addr{}, 0, false, ErrNoClient},
		{"xff list", `198.51.100.1, 10.0.0.1`, netip.Addr{}, 0, false, ErrNoClient},
		{"trailing junk", `198.51.100.1 hello`, netip.Addr{}, 0, false, ErrFormat},
		{"truncated request", `198.51.100.1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTT`, netip.Addr{}, 0, false, ErrFormat},
		{"truncated time", `198.51.100.1 - - [26/Nov/2025:08:01`, netip.Addr{}, 0, false, ErrFormat},
		{"no status", `198.51.100.1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1"`, netip.Addr{}, 0, false, ErrFormat},
		{"bad status", `198.51.100.1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" OK 3`, netip.Addr{}, 0, false, ErrStatus},
		{"bad size", `198.51.100.1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 3k`, netip.Addr{}, 0, false, ErrSize},
		{"missing size", `198.51.100.1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200`, netip.Addr{}, 0, false, ErrSize},
		{"size overflow", `198.51.100.1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 99999999999999999999`, netip.Addr{}, 0, false, ErrSize},
	} {
		r, err := ParseLine([]byte(tc.line))
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: ParseLine(%q) error = %v, want %v", tc.name, tc.line, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		want := Record{Addr: tc.addr, Bytes: tc.bytes, HasBytes: tc.sized}
		// The oracle for the time is Go's own time parser on the bracketed field.
		if open, end := strings.IndexByte(tc.line, '['), strings.IndexByte(tc.line, ']'); tc.sized && open >= 0 && end > open {
			when, err := time.Parse("02/Jan/2006:15:04:05 -0700", tc.line[open+1:end])
			if err != nil {
				t.Fatalf("%s: the test's own time %q: %v", tc.name, tc.line[open+1:end], err)
			}
			want.Time, want.HasTime = when.Unix(), true
		}
		if r != want {
			t.Errorf("%s: ParseLine(%q) = %+v, want %+v", tc.name, tc.line, r, want)
		}
	}
}

func TestParseHAProxy(t *testing.T) {
	a := netip.MustParseAddr
	utc := func(s string) int64 {
		w, err := time.Parse("02/Jan/2006:15:04:05.000", s)
		if err != nil {
			t.Fatal(err)
		}
		return w.Unix()
	}
	for _, tc := range []struct {
		name string
		line string
		want Record
		err  error
	}{
		// The examples of HAProxy's configuration manual (section 8.2).
		{"http, syslog header", `Feb  6 12:14:14 localhost haproxy[14389]: 10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {1wt.eu} {} "GET /index.html HTTP/1.1"`,
			Record{Addr: a("10.0.1.2"), Bytes: 2750, HasBytes: true, Time: utc("06/Feb/2009:12:14:14.655"), HasTime: true}, nil},
		{"tcp, syslog header", `Feb  6 12:12:51 localhost haproxy[14387]: 10.0.1.2:33313 [06/Feb/2009:12:12:51.443] fnt bck/srv1 0/0/5007 212 -- 0/0/0/0/3 0/0`,
			Record{Addr: a("10.0.1.2"), Bytes: 212, HasBytes: true, Time: utc("06/Feb/2009:12:12:51.443"), HasTime: true}, nil},
		{"http, raw (log stdout format raw)", `192.0.2.7:41000 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 502 +2750 - - ---- 1/1/1/1/0 0/0 "GET / HTTP/1.1"`,
			Record{Addr: a("192.0.2.7"), Bytes: 2750, HasBytes: true, Time: utc("06/Feb/2009:12:14:14.655"), HasTime: true}, nil},
		{"http, ipv6 client", `Feb  6 12:14:14 lb haproxy[1]: 2001:db8::7:443 [06/Feb/2009:12:14:14.655] fe be/s1 0/0/1/2/3 200 10 - - ---- 1/1/1/1/0 0/0 "GET / HTTP/1.1"`,
			Record{Addr: a("2001:db8::7"), Bytes: 10, HasBytes: true, Time: utc("06/Feb/2009:12:14:14.655"), HasTime: true}, nil},
		{"aborted request, status -1", `10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/<NOSRV> -1/-1/-1/-1/3 -1 0 - - CR-- 1/1/1/1/0 0/0 "<BADREQ>"`,
			Record{Addr: a("10.0.1.2"), Bytes: 0, HasBytes: true, Time: utc("06/Feb/2009:12:14:14.655"), HasTime: true}, nil},
		{"bad time", `10.0.1.2:33317 [06/Fob/2009:12:14:14.655] http-in s/s 1/2/3/4/5 200 1`, Record{}, ErrTime},
		{"bad timers", `10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in s/s 1/2 200 1`, Record{}, ErrFormat},
		{"not haproxy", `Feb  6 12:14:14 localhost sshd[1]: Accepted publickey`, Record{}, ErrNoClient},
	} {
		r, err := ParseLine([]byte(tc.line))
		if !errors.Is(err, tc.err) || r != tc.want {
			t.Errorf("%s: ParseLine(%q) = %+v, %v; want %+v, %v", tc.name, tc.line, r, err, tc.want, tc.err)
		}
	}
}

// FuzzParseLogTime checks the time parser against Go's.
func FuzzParseLogTime(f *testing.F) {
	for _, s := range []string{"10/Oct/2000:13:55:36 -0700", "29/Feb/2024:00:00:00 +0000", "29/Feb/2023:00:00:00 +0000", "06/Feb/2009:12:14:14.655", "31/Dec/1969:23:59:59 +1400", "00/Jan/2000:00:00:00 +0000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseLogTime([]byte(s))
		layout := "02/Jan/2006:15:04:05 -0700"
		if !strings.Contains(s, " ") {
			layout = "02/Jan/2006:15:04:05"
		}
		want, err := time.Parse(layout, s)
		// Go is more lenient (any case for the month, one-digit hours, a
		// fraction in any layout); every time written in the canonical form
		// web servers write must be read, and read as Go reads it.
		_, zone := want.Zone()
		if err == nil && !ok && want.Format(layout) == s && zone > -86400 && zone < 86400 {
			t.Errorf("parseLogTime(%q) rejected; Go reads %v", s, want)
		}
		if ok && err == nil && got != want.Unix() {
			t.Errorf("parseLogTime(%q) = %d, Go reads %d", s, got, want.Unix())
		}
		if ok && err != nil && !strings.Contains(s, ":60") {
			t.Errorf("parseLogTime(%q) = %d, Go rejects it: %v", s, got, err)
		}
	})
}

func TestParseLineAllocs(t *testing.T) {
	line := []byte(`203.0.113.5 - - [26/Nov/2025:08:01:02 +0000] "GET /index.html HTTP/1.1" 200 612 "-" "curl/8.5.0"`)
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseLine(line) }); n != 0 {
		t.Errorf("ParseLine(IPv4 combined) allocates %v times, want 0", n)
	}
}

// mixedLog has every kind of line ReadLog sees; malformedAt lists the line
// numbers of the bad ones.
const mixedLog = `# a comment a tool left at the top
127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326
2001:db8::1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/2.0" 200 10 "-" "UA"
this is not a log line
198.51.100.30

127.0.0.1 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 - "-" "-"
127.0.0.1 - - [26/Nov/2025:08:01:02 +0000] "GET / HT
10.1.2.3 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 xx
198.51.100.30
2001:db8::1
bad2
bad3
bad4
198.51.100.31`

var mixedMalformed = []int64{4, 8, 9, 12, 13}

func checkMixed(t *testing.T, p *Population, name string) {
	t.Helper()
	a := netip.MustParseAddr
	want := map[netip.Addr]Counts{
		a("127.0.0.1"):     {Requests: 2, Bytes: 2326},
		a("2001:db8::1"):   {Requests: 2, Bytes: 10},
		a("198.51.100.30"): {Requests: 2},
		a("198.51.100.31"): {Requests: 1},
	}
	if len(p.Clients) != len(want) {
		t.Errorf("%s: %d clients %v, want %d", name, len(p.Clients), p.Clients, len(want))
	}
	for k, v := range want {
		if p.Clients[k] != v {
			t.Errorf("%s: client %v = %+v, want %+v", name, k, p.Clients[k], v)
		}
	}
	if p.Lines != 15 || p.Blank != 2 || p.Malformed != 6 || p.Requests != 7 || p.Bytes != 2336 || p.Sized != 3 {
		t.Errorf("%s: lines %d blank %d malformed %d requests %d bytes %d sized %d, want 15 2 6 7 2336 3",
			name, p.Lines, p.Blank, p.Malformed, p.Requests, p.Bytes, p.Sized)
	}
	if len(p.Examples) != MaxExamples {
		t.Fatalf("%s: %d examples, want the first %d", name, len(p.Examples), MaxExamples)
	}
	for i, m := range p.Examples {
		if m.Line != mixedMalformed[i] || m.File != name {
			t.Errorf("%s: example %d is %s, want %s:%d", name, i, m, name, mixedMalformed[i])
		}
	}
	if !errors.Is(p.Examples[1].Err, ErrFormat) || !errors.Is(p.Examples[2].Err, ErrSize) {
		t.Errorf("%s: examples %v, want line 8 ErrFormat and line 9 ErrSize", name, p.Examples)
	}
}

func TestReadLogPlainGzipCRLF(t *testing.T) {
	crlf := strings.ReplaceAll(mixedLog, "\n", "\r\n")
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"plain", []byte(mixedLog)},
		{"plain-newline-at-end", []byte(mixedLog + "\n")},
		{"crlf", []byte(crlf)},
		{"gzip", gzipped(t, []byte(mixedLog))},
		// logrotate's delaycompress + cat: two gzip members back to back.
		{"gzip-multistream", append(gzipped(t, []byte(mixedLog[:strings.Index(mixedLog, "this")])), gzipped(t, []byte(mixedLog[strings.Index(mixedLog, "this"):]))...)},
	} {
		p := NewPopulation()
		// One byte at a time: the reader must not depend on read sizes.
		if err := p.ReadLog(tc.name, iotest.OneByteReader(bytes.NewReader(tc.data)), nil); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		checkMixed(t, p, tc.name)
	}
}

func TestReadLogTruncatedGzip(t *testing.T) {
	z := gzipped(t, []byte(strings.Repeat(mixedLog+"\n", 50)))
	p := NewPopulation()
	err := p.ReadLog("cut.gz", bytes.NewReader(z[:len(z)-10]), nil)
	if err == nil || !strings.Contains(err.Error(), "cut.gz") {
		t.Errorf("truncated gzip: error = %v, want one naming cut.gz", err)
	}
}

func TestReadLogLongLine(t *testing.T) {
	long := "198.51.100.1 - - [x] \"GET /" + strings.Repeat("a", 600<<10) + " HTTP/1.1\" 200 1"
	in := "198.51.100.2\n" + long + "\n198.51.100.3\n"
	p := NewPopulation()
	if err := p.ReadLog("long.log", strings.NewReader(in), nil); err != nil {
		t.Fatal(err)
	}
	if p.Lines != 3 || p.Requests != 2 || p.Malformed != 1 || p.Examples[0].Line != 2 || !errors.Is(p.Examples[0].Err, ErrTooLong) {
		t.Errorf("lines %d requests %d malformed %d examples %v; want 3, 2, 1, [long.log:2 too long]", p.Lines, p.Requests, p.Malformed, p.Examples)
	}
}

func TestReadLogProgress(t *testing.T) {
	var calls []int64
	p := NewPopulation()
	in := strings.Repeat("198.51.100.1\n", progressEvery*2+5)
	if err := p.ReadLog("p.log", strings.NewReader(in), func(_ string, n int64) { calls = append(calls, n) }); err != nil {
		t.Fatal(err)
	}
	if want := []int64{progressEvery, 2 * progressEvery, 2*progressEvery + 5}; !equalInts(calls, want) {
		t.Errorf("progress calls %v, want %v", calls, want)
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadLogReadError(t *testing.T) {
	p := NewPopulation()
	err := p.ReadLog("broken", io.MultiReader(strings.NewReader("198.51.100.1\n"), iotest.ErrReader(errors.New("disk on fire"))), nil)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "broken") {
		t.Errorf("error = %v, want the read error with the file name", err)
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		`127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326`,  // Apache common
		`203.0.113.5 - - [26/Nov/2025:08:01:02 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0"`, // nginx combined
		`2001:db8::1 - - [26/Nov/2025:08:01:02 +0000] "GET /\"x\" HTTP/2.0" 304 - "-" "UA"`,      // IPv6, escaped quote, %b dash
		`::ffff:198.51.100.20`,   // mapped IPv6, address only
		`[fe80::1%eth0]`,         // bracketed with a zone
		`198.51.100.256`,         // octet out of range
		`01.2.3.4`,               // leading zero
		`1.2.3.4 - - [ "" 200 1`, // unclosed time
		`1.2.3.4 - - [] "\`,      // backslash at the end of the request
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseLine(line)
		if err != nil {
			if r != (Record{}) {
				t.Errorf("ParseLine(%q) = %+v with error %v; want the zero Record", line, r, err)
			}
			return
		}
		if !r.Addr.IsValid() || r.Addr.Zone() != "" || r.Addr.Is4In6() {
			t.Errorf("ParseLine(%q) address %v: want a valid, zone-less, unmapped address", line, r.Addr)
		}
		if !r.HasBytes && r.Bytes != 0 {
			t.Errorf("ParseLine(%q) = %+v: bytes without a size field", line, r)
		}
		// The IPv4 fast path accepts exactly what netip does.
		field, _ := firstField(trimSpace(line))
		a4, ok4 := parseIPv4(field)
		na, nerr := netip.ParseAddr(string(field))
		if ok4 != (nerr == nil && na.Is4()) || (ok4 && a4 != na) {
			t.Errorf("parseIPv4(%q) = %v, %v; netip.ParseAddr = %v, %v", field, a4, ok4, na, nerr)
		}
	})
}
