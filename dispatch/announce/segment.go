package announce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Segments: the framing below the signed announcement. An announcement
// (the body Marshal returns) of at most SegmentPayload bytes is sent as one
// datagram, unchanged. A longer one is split into n segments (2 to
// MaxSegments), each its own datagram of at most SegmentDatagram bytes, so
// that none is ever fragmented by IP (it fits the IPv6 minimum MTU): a lost
// fragment, or two datagrams whose fragments share an IP identification,
// cannot spoil the ones that follow in a receiver's reassembly queues.
//
//	offset  size  field
//	     0     4  magic "GHRS"
//	     4     1  segment format version: 1
//	     5     1  reserved, zero
//	     6     2  k, the segment's index (0..n-1)
//	     8     2  n, the number of segments (2..MaxSegments)
//	    10     2  reserved, zero
//	    12     8  epoch of the announcement (its bytes 8..15)
//	    20     8  tx of the announcement (its bytes 24..31): with the epoch
//	              the announcement's identity
//	    28     4  total, the body's length (SegmentPayload+1..MaxBody)
//	    32     .  the body's bytes [k*total/n, (k+1)*total/n)
//
// The split is fixed by (total, n), so a receiver knows every segment's
// exact length and place from its header alone. Nothing in a segment is
// trusted: the receiver (Reassembler) bounds what it holds and hands on
// only a complete body, whose signature is then checked over the whole of
// it as for a single datagram.
const (
	// SegmentMagic opens every segment.
	SegmentMagic = "GHRS"
	// SegmentVersion is the segment format this package writes and reads.
	SegmentVersion = 1
	// SegmentHeaderLen is the length of a segment's header.
	SegmentHeaderLen = 32
	// SegmentDatagram is the longest segment: the IPv6 minimum MTU (1280)
	// less the IPv6 and UDP headers, so no segment is fragmented on any
	// link.
	SegmentDatagram = 1280 - 40 - 8
	// SegmentPayload is the most body bytes one datagram carries: a body up
	// to this long is sent whole, a longer one in segments of at most this
	// much.
	SegmentPayload = SegmentDatagram - SegmentHeaderLen
	// MaxSegments is the most segments of one announcement.
	MaxSegments = 1024
	// MaxBody is the longest announcement: MaxSegments full segments
	// (1.2 MB; MaxMembers IPv6 members with every further table and the
	// longest name take about 168 KB).
	MaxBody = MaxSegments * SegmentPayload
	// DefaultReassemblyTimeout is how long a Reassembler waits for the
	// rest of an announcement: the appliance sends its segments back to
	// back, so anything missing after this was lost.
	DefaultReassemblyTimeout = 2 * time.Second
	// DefaultReassemblies is how many senders' announcements a Reassembler
	// assembles at once (one each).
	DefaultReassemblies = 4
)

// ErrSegment: a segment that cannot be read (Reassembler counts these as
// malformed).
var ErrSegment = errors.New("announce: malformed segment")

// IsSegment reports whether b is a segment (starts with SegmentMagic) rather
// than a whole announcement.
func IsSegment(b []byte) bool { return len(b) >= 4 && string(b[:4]) == SegmentMagic }

// Segments frames body (an announcement as Marshal returns it) as
// datagrams: body itself when it is at most SegmentPayload bytes, otherwise
// its segments. body is not copied into the single-datagram result.
func Segments(body []byte) ([][]byte, error) {
	if len(body) <= SegmentPayload {
		return [][]byte{body}, nil
	}
	if len(body) > MaxBody {
		return nil, fmt.Errorf("%w: %d bytes: more than %d segments of %d", ErrInvalid, len(body), MaxSegments, SegmentPayload)
	}
	if len(body) < 32 || string(body[:4]) != Magic {
		return nil, fmt.Errorf("%w: not an announcement", ErrInvalid)
	}
	n := (len(body) + SegmentPayload - 1) / SegmentPayload
	out := make([][]byte, n)
	for k := range n {
		lo, hi := segmentBounds(k, n, len(body))
		s := make([]byte, 0, SegmentHeaderLen+hi-lo)
		s = append(s, SegmentMagic...)
		s = append(s, SegmentVersion, 0)
		s = binary.BigEndian.AppendUint16(s, uint16(k))
		s = binary.BigEndian.AppendUint16(s, uint16(n))
		s = append(s, 0, 0)
		s = append(s, body[8:16]...)  // epoch
		s = append(s, body[24:32]...) // tx
		s = binary.BigEndian.AppendUint32(s, uint32(len(body)))
		out[k] = append(s, body[lo:hi]...)
	}
	return out, nil
}

// segmentBounds is where segment k of n holds a body of total bytes.
func segmentBounds(k, n, total int) (lo, hi int) {
	return k * total / n, (k + 1) * total / n
}

// segment is a parsed segment header with its payload.
type segment struct {
	k, n      int
	epoch, tx uint64
	total     int
	part      []byte
}

// parseSegment checks a segment's header and length against the bounds.
func parseSegment(b []byte) (segment, error) {
	if len(b) < SegmentHeaderLen {
		return segment{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrSegment, len(b), SegmentHeaderLen)
	}
	if string(b[:4]) != SegmentMagic {
		return segment{}, fmt.Errorf("%w: magic %q", ErrSegment, b[:4])
	}
	if b[4] != SegmentVersion {
		return segment{}, fmt.Errorf("%w: version %d (this agent reads %d)", ErrSegment, b[4], SegmentVersion)
	}
	s := segment{k: int(binary.BigEndian.Uint16(b[6:])), n: int(binary.BigEndian.Uint16(b[8:])),
		epoch: binary.BigEndian.Uint64(b[12:]), tx: binary.BigEndian.Uint64(b[20:]),
		total: int(binary.BigEndian.Uint32(b[28:])), part: b[SegmentHeaderLen:]}
	switch {
	case b[5] != 0 || b[10] != 0 || b[11] != 0:
		return segment{}, fmt.Errorf("%w: reserved bytes % x", ErrSegment, []byte{b[5], b[10], b[11]})
	case s.n < 2 || s.n > MaxSegments:
		return segment{}, fmt.Errorf("%w: %d segments, want 2..%d", ErrSegment, s.n, MaxSegments)
	case s.k >= s.n:
		return segment{}, fmt.Errorf("%w: segment %d of %d", ErrSegment, s.k, s.n)
	case s.total <= SegmentPayload || s.total > MaxBody:
		return segment{}, fmt.Errorf("%w: total %d bytes, want %d..%d", ErrSegment, s.total, SegmentPayload+1, MaxBody)
	}
	lo, hi := segmentBounds(s.k, s.n, s.total)
	if len(s.part) != hi-lo || hi-lo > SegmentPayload {
		return segment{}, fmt.Errorf("%w: segment %d of %d carries %d bytes, want %d (at most %d)", ErrSegment, s.k, s.n, len(s.part), hi-lo, SegmentPayload)
	}
	return s, nil
}

// ReassemblyCounters count a Reassembler's segments. Every segment given to
// Add counts once in Segments and once in exactly one of Held, Completed,
// Duplicates, Malformed, Conflicts and Late; Superseded, Expired and
// Evicted count incomplete announcements dropped.
type ReassemblyCounters struct {
	Segments   uint64 `json:"segments"`
	Held       uint64 `json:"held"`       // taken; the announcement is not complete yet
	Completed  uint64 `json:"completed"`  // completed an announcement, handed on
	Duplicates uint64 `json:"duplicates"` // a copy of a segment already held
	Malformed  uint64 `json:"malformed"`  // unreadable or out of bounds
	// Conflicts: a segment that contradicts the announcement it belongs to
	// (another count, length or content for a segment held): the
	// announcement is dropped.
	Conflicts uint64 `json:"conflicts"`
	// Late: a segment of an older announcement of the epoch being
	// assembled from that sender.
	Late       uint64 `json:"late"`
	Superseded uint64 `json:"superseded"` // incomplete, replaced by a newer one from the same sender
	Expired    uint64 `json:"expired"`    // incomplete after the timeout
	Evicted    uint64 `json:"evicted"`    // incomplete, dropped for another sender's (too many senders)
}

// Reassembler puts segmented announcements back together: at most one per
// sender address, at most maxSenders senders, each dropped if incomplete
// after the timeout. It holds at most maxSenders*MaxBody bytes. It does not
// authenticate: the body it returns is checked by Receiver like any
// datagram. Not safe for concurrent use.
type Reassembler struct {
	timeout    time.Duration
	maxSenders int
	pending    map[netip.Addr]*reassembly
	stats      ReassemblyCounters
}

type reassembly struct {
	epoch, tx uint64
	n, total  int
	body      []byte
	have      [MaxSegments]bool
	got       int
	started   time.Time
}

// NewReassembler returns a Reassembler that drops an incomplete
// announcement after timeout and assembles for at most maxSenders senders
// at once (at least 1).
func NewReassembler(timeout time.Duration, maxSenders int) *Reassembler {
	return &Reassembler{timeout: timeout, maxSenders: max(1, maxSenders), pending: map[netip.Addr]*reassembly{}}
}

// Add takes segment b from sender from at time now. When it completes an
// announcement it returns the body (a fresh slice the caller owns) and true.
// b is not retained.
func (r *Reassembler) Add(from netip.Addr, b []byte, now time.Time) ([]byte, bool) {
	r.stats.Segments++
	r.Expire(now)
	s, err := parseSegment(b)
	if err != nil {
		r.stats.Malformed++
		return nil, false
	}
	from = from.Unmap().WithZone("")
	a := r.pending[from]
	if a != nil && (a.epoch != s.epoch || a.tx != s.tx) {
		if a.epoch == s.epoch && s.tx < a.tx {
			r.stats.Late++
			return nil, false
		}
		r.stats.Superseded++
		delete(r.pending, from)
		a = nil
	}
	if a == nil {
		if len(r.pending) >= r.maxSenders {
			r.evictOldest()
		}
		a = &reassembly{epoch: s.epoch, tx: s.tx, n: s.n, total: s.total, body: make([]byte, s.total), started: now}
		r.pending[from] = a
	}
	if s.n != a.n || s.total != a.total {
		r.stats.Conflicts++
		delete(r.pending, from)
		return nil, false
	}
	lo, hi := segmentBounds(s.k, s.n, s.total)
	if a.have[s.k] {
		if bytes.Equal(a.body[lo:hi], s.part) {
			r.stats.Duplicates++
			return nil, false
		}
		r.stats.Conflicts++
		delete(r.pending, from)
		return nil, false
	}
	copy(a.body[lo:hi], s.part)
	a.have[s.k] = true
	a.got++
	if a.got < a.n {
		r.stats.Held++
		return nil, false
	}
	delete(r.pending, from)
	r.stats.Completed++
	return a.body, true
}

// evictOldest drops the incomplete announcement started first.
func (r *Reassembler) evictOldest() {
	var oldest netip.Addr
	var at time.Time
	found := false
	for from, a := range r.pending {
		if !found || a.started.Before(at) || a.started.Equal(at) && from.Less(oldest) {
			oldest, at, found = from, a.started, true
		}
	}
	if found {
		delete(r.pending, oldest)
		r.stats.Evicted++
	}
}

// Expire drops the incomplete announcements started more than the timeout
// before now.
func (r *Reassembler) Expire(now time.Time) {
	for from, a := range r.pending {
		if now.Sub(a.started) > r.timeout {
			delete(r.pending, from)
			r.stats.Expired++
		}
	}
}

// Pending is the number of incomplete announcements held.
func (r *Reassembler) Pending() int { return len(r.pending) }

// Held is the number of body bytes the incomplete announcements hold.
func (r *Reassembler) Held() int {
	n := 0
	for _, a := range r.pending {
		n += len(a.body)
	}
	return n
}

// Stats returns the counters.
func (r *Reassembler) Stats() ReassemblyCounters { return r.stats }
