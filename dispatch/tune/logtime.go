package tune

import "bytes"

// parseLogTime parses the bracketed time of a common/combined log line,
// "10/Oct/2000:13:55:36 -0700", or HAProxy's "06/Feb/2009:12:14:14.655"
// (milliseconds, no zone, read as UTC), into seconds since the Unix epoch.
// It does not allocate.
func parseLogTime(b []byte) (int64, bool) {
	// dd/Mon/yyyy:HH:MM:SS is 20 bytes.
	if len(b) < 20 || b[2] != '/' || b[6] != '/' || b[11] != ':' || b[14] != ':' || b[17] != ':' {
		return 0, false
	}
	day, ok1 := digits(b[0:2])
	year, ok2 := digits(b[7:11])
	hour, ok3 := digits(b[12:14])
	minute, ok4 := digits(b[15:17])
	sec, ok5 := digits(b[18:20])
	month := monthOf(b[3:6])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || month == 0 ||
		day < 1 || day > daysIn(year, month) || hour > 23 || minute > 59 || sec > 60 {
		return 0, false
	}
	rest := b[20:]
	if len(rest) > 0 && rest[0] == '.' { // HAProxy's milliseconds
		i := 1
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 1 || i > 10 {
			return 0, false
		}
		rest = rest[i:]
	}
	var offset int64
	if len(rest) > 0 {
		// " +hhmm" or " -hhmm".
		if len(rest) != 6 || rest[0] != ' ' || (rest[1] != '+' && rest[1] != '-') {
			return 0, false
		}
		hh, ok1 := digits(rest[2:4])
		mm, ok2 := digits(rest[4:6])
		if !ok1 || !ok2 || hh > 23 || mm > 59 {
			return 0, false
		}
		offset = int64(hh*3600 + mm*60)
		if rest[1] == '-' {
			offset = -offset
		}
	}
	t := daysFromCivil(year, month, day)*86400 + int64(hour*3600+minute*60+sec)
	return t - offset, true
}

// digits parses b as an unsigned decimal number of at most 4 digits.
func digits(b []byte) (int, bool) { return decimal(b, 4) }

// decimal parses b as an unsigned decimal number of at most max digits.
func decimal(b []byte, max int) (int, bool) {
	if len(b) == 0 || len(b) > max {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

var monthNames = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func monthOf(b []byte) int {
	for i, m := range monthNames {
		if string(b) == m {
			return i + 1
		}
	}
	return 0
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil is the number of days from 1970-01-01 to the given date in
// the proleptic Gregorian calendar (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

// parseHAProxy parses HAProxy's default HTTP log ("option httplog") and TCP
// log ("option tcplog") lines, with or without the syslog header:
//
//	[SYSLOG HEADER haproxy[PID]: ]ADDR:PORT [TIME] FRONTEND BACKEND/SERVER TIMERS [STATUS] BYTES ...
//
// TIMERS has five fields in the HTTP format (Tq/Tw/Tc/Tr/Ta, a status
// follows) and three in the TCP format (Tw/Tc/Tt, the byte count follows).
// BYTES may carry a '+' (option logasap). isHAProxy is false when the line
// does not have the shape at all; then the caller reports its own error.
func parseHAProxy(line []byte) (r Record, isHAProxy bool, err error) {
	if i := bytes.Index(line, []byte("]: ")); i >= 0 {
		line = line[i+3:]
	}
	field, rest := firstField(line)
	colon := bytes.LastIndexByte(field, ':')
	if colon <= 0 || colon == len(field)-1 {
		return Record{}, false, nil
	}
	if port, ok := decimal(field[colon+1:], 5); !ok || port > 65535 {
		return Record{}, false, nil
	}
	addr, ok := parseAddr(field[:colon])
	if !ok || len(rest) == 0 || rest[0] != '[' {
		return Record{}, false, nil
	}
	closeAt := bytes.IndexByte(rest, ']')
	if closeAt < 0 {
		return Record{}, true, ErrFormat
	}
	when, ok := parseLogTime(rest[1:closeAt])
	if !ok {
		return Record{}, true, ErrTime
	}
	rest = rest[closeAt+1:]
	if len(rest) == 0 || rest[0] != ' ' {
		return Record{}, true, ErrFormat
	}
	_, rest = nextField(rest[1:]) // frontend
	backend, rest := nextField(rest)
	timers, rest := nextField(rest)
	if bytes.IndexByte(backend, '/') < 0 {
		return Record{}, true, ErrFormat
	}
	switch bytes.Count(timers, []byte("/")) {
	case 4: // HTTP: the status comes first
		var status []byte
		status, rest = nextField(rest)
		if !validStatus(status) && string(status) != "-1" {
			return Record{}, true, ErrStatus
		}
	case 2: // TCP
	default:
		return Record{}, true, ErrFormat
	}
	size, _ := nextField(rest)
	if len(size) > 0 && size[0] == '+' {
		size = size[1:]
	}
	n, ok := parseSize(size)
	if !ok || (len(size) == 1 && size[0] == '-') {
		return Record{}, true, ErrSize
	}
	return Record{Addr: addr, Bytes: n, HasBytes: true, Time: when, HasTime: true}, true, nil
}
