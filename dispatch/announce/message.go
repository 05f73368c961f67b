package announce

import (
	"cmp"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/dispatch/limits"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// Constants of the wire format (see the package documentation).
const (
	// DefaultPort is the UDP port announcements are sent to unless a
	// cluster's announce_port says otherwise.
	DefaultPort = config.DefaultAnnouncePort
	// Magic opens every announcement.
	Magic = "GHRT"
	// FormatVersion is the format this package writes and reads: 3, signed
	// with Ed25519, with the member flag "absent" and the further tables of
	// a transition (1 was authenticated with a shared HMAC key; 2 was
	// either of the two changes alone).
	FormatVersion = 3
	// FormatVersionPins is the format of an announcement that carries pins
	// (Message.Pins): format 3 followed by the pins section. An
	// announcement without pins is written in format 3, byte for byte as
	// before.
	FormatVersionPins = 4
	// MaxPins is the most pins one announcement carries: the
	// configuration's limit.
	MaxPins = config.MaxPins
	// MACSize is the length of the trailing Ed25519 signature.
	MACSize = ed25519.SignatureSize
	// MaxBuckets is the largest bucket count an announcement may carry:
	// the configuration's limit, so that a receiver never builds a larger
	// table than any appliance can be configured with.
	MaxBuckets = config.MaxBuckets
	// MaxName is the longest cluster name, in bytes.
	MaxName = 63
	// MaxMembers is the most servers one announcement carries: the table's
	// limit. An announcement longer than one datagram carries is sent in
	// segments (Segments), so the datagram does not limit it.
	MaxMembers = limits.AnnounceMembers
	// MaxAlso is the most further tables (Message.Also) one announcement
	// carries.
	MaxAlso = 3
	// MaxDatagram is the largest UDP payload over IPv4; no datagram is
	// longer (an announcement longer than SegmentPayload is sent in
	// segments; it is at most MaxBody long).
	MaxDatagram = 65507

	fixedLen  = 45 // magic .. name length, see the layout
	memberLen = 10 // a member without its address
	shareLen  = 5  // a member's weight and flags in a further table
	flagUp    = 0x01
	// flagAbsent: the server is not a member of this table (weight 0, not
	// up); it is listed because another table of the message has it.
	flagAbsent = 0x02
	flagsKnown = flagUp | flagAbsent
)

// Hash kinds on the wire.
const (
	wireJhash  = 1
	wireModulo = 2
)

// Errors of Marshal, Unmarshal, Peek and Open. Unmarshal's and Open's are
// wrapped with what was wrong, so test with errors.Is.
var (
	// ErrMalformed: not an announcement of this format (bad magic, wrong
	// length, a field out of range), or truncated.
	ErrMalformed = errors.New("announce: malformed announcement")
	// ErrVersion: an announcement of another format version.
	ErrVersion = errors.New("announce: unsupported format version")
	// ErrBadMAC: the signature does not verify: forged, corrupted, or
	// signed with another key.
	ErrBadMAC = errors.New("announce: bad signature (forged, corrupted, or another key)")
	// ErrCluster: an authentic-looking announcement of another cluster
	// (Open only; its MAC is not checked, the key is another cluster's).
	ErrCluster = errors.New("announce: announcement of another cluster")
	// ErrKey: not an Ed25519 key of the right size.
	ErrKey = errors.New("announce: not an Ed25519 key")
	// ErrInvalid: Marshal was given a message it cannot encode.
	ErrInvalid = errors.New("announce: invalid message")
)

// Member is one server of the cluster as the table sees it
// (core.Server): a drained server has Weight 0, a failed one !Up.
type Member struct {
	ID     int
	Addr   netip.Addr // the server's primary address
	Weight int
	Up     bool
	// Absent: not a member of the target table (Weight 0, !Up); listed
	// because a table of Also has it.
	Absent bool
}

// Message is one announcement: a cluster's membership and the parameters
// of its table, at a version. The table itself is not sent: every receiver
// computes it with core.NewTable(m.Servers(), m.Buckets), as the
// appliance does (the table contract in package dispatch/core's documentation:
// the table depends only on the membership).
type Message struct {
	Cluster string
	// Epoch names one run of the sending appliance: a random number drawn
	// at start (NewEpoch), not a time, so that no clock can make it look
	// old. Seq is its table version, incremented on every table change.
	// Tables are ordered only within an epoch: see Newer.
	Epoch, Seq uint64
	// Tx numbers every datagram the appliance sends in its epoch, repeats
	// included, so that (Epoch, Tx) tells a fresh datagram from a replayed
	// one even when the table has not changed.
	Tx uint64
	// Interval is how often the appliance repeats the announcement (sent in
	// whole milliseconds; 0 when unknown).
	Interval time.Duration
	Hash     config.Hash
	Seed     uint32
	Buckets  int
	Ghost    netip.Addr // the cluster address
	// Members, in any order for Marshal; Unmarshal returns them by
	// ascending ID. Their Weight, Up and Absent make the target table.
	Members []Member
	// Also lists further tables of the same members (each has one Share
	// per member, in the order of Members sorted by ID), at most MaxAlso.
	// A server owns a bucket only when the target table and every table of
	// Also give it that bucket: while buckets move, the appliance announces
	// the table in force together with the next one, so a moved bucket has
	// no owner until every old owner has released it (see Transitions in
	// the package documentation and Grants).
	Also [][]Share
	// Pins are the cluster's pins ([[cluster.pin]]), by ascending client,
	// each client once, of the ghost's family: a pinned client goes to its
	// server in every table where that server is live (up, with a positive
	// weight), else by the hash. PinGrants says who may accept each.
	Pins []Pin
}

// Pin sends one client to one server (by id).
type Pin struct {
	Client netip.Addr
	ID     int
}

// Share is one member's part in a table of Message.Also.
type Share struct {
	Weight int
	Up     bool
	Absent bool // not a member of this table
}

// Newer reports whether m's table should replace than's, m being a fresh
// datagram (see Receiver): within one epoch a larger Seq; from another
// epoch always, since the appliance that speaks now (restarted, with a new
// random epoch) is the one in charge. Every message is newer than nil.
func (m *Message) Newer(than *Message) bool {
	if than == nil {
		return true
	}
	if m.Epoch != than.Epoch {
		return true
	}
	return m.Seq > than.Seq
}

// Servers is the membership as core.NewTable takes it.
func (m *Message) Servers() []core.Server {
	out := make([]core.Server, 0, len(m.Members))
	for _, s := range m.Members {
		if !s.Absent {
			out = append(out, core.Server{ID: s.ID, Addr: s.Addr, Weight: s.Weight, Up: s.Up})
		}
	}
	return out
}

// Table computes the message's bucket table, exactly as the appliance
// does.
func (m *Message) Table() (*core.Table, error) {
	return core.NewTable(m.Servers(), m.Buckets)
}

// MembersFrom converts the table's view of servers into Members.
func MembersFrom(servers []core.Server) []Member {
	out := make([]Member, len(servers))
	for i, s := range servers {
		out[i] = Member{ID: s.ID, Addr: s.Addr, Weight: s.Weight, Up: s.Up}
	}
	return out
}

func addrLen(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 16
}

func appendAddr(b []byte, a netip.Addr) []byte {
	b = append(b, byte(addrLen(a)))
	if a.Is4() {
		v := a.As4()
		return append(b, v[:]...)
	}
	v := a.As16()
	return append(b, v[:]...)
}

func okAddr(a netip.Addr) bool { return a.IsValid() && a.Zone() == "" }

// Marshal encodes m and appends the Ed25519 signature of everything before
// it under key. Members are written by ascending ID; m is not modified. It
// fails, wrapping ErrInvalid, for a message Unmarshal would reject, and
// with ErrKey for a key that is not an Ed25519 private key.
func (m *Message) Marshal(key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key of %d bytes, want %d", ErrKey, len(key), ed25519.PrivateKeySize)
	}
	bad := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("%w: cluster %q: %s", ErrInvalid, m.Cluster, fmt.Sprintf(format, args...))
	}
	var hash byte
	switch m.Hash {
	case config.HashJhash:
		hash = wireJhash
	case config.HashModulo:
		hash = wireModulo
	default:
		return bad("hash %q: want %q or %q", m.Hash, config.HashJhash, config.HashModulo)
	}
	switch {
	case !config.ValidClusterName(m.Cluster):
		return bad("cluster name: want 1 to %d letters, digits, '_', '.' or '-', starting with a letter or digit", MaxName)
	case m.Buckets < 1 || m.Buckets > MaxBuckets:
		return bad("%d buckets: want 1..%d", m.Buckets, MaxBuckets)
	case m.Interval < 0 || m.Interval/time.Millisecond > math.MaxUint32:
		return bad("interval %v: want 0 to %d ms", m.Interval, uint32(math.MaxUint32))
	case !okAddr(m.Ghost):
		return bad("ghost address %v: want an IPv4 or IPv6 address without zone", m.Ghost)
	case len(m.Members) > MaxMembers:
		return bad("%d members: want at most %d", len(m.Members), MaxMembers)
	case len(m.Also) > MaxAlso:
		return bad("%d further tables: want at most %d", len(m.Also), MaxAlso)
	}
	for i, t := range m.Also {
		if len(t) != len(m.Members) {
			return bad("further table %d has %d shares for %d members", i+1, len(t), len(m.Members))
		}
		for j, sh := range t {
			if sh.Weight < 0 || sh.Weight > core.MaxWeight || sh.Absent && (sh.Weight != 0 || sh.Up) {
				return bad("further table %d: share %d: weight %d up %v absent %v", i+1, j, sh.Weight, sh.Up, sh.Absent)
			}
		}
	}
	if len(m.Pins) > MaxPins {
		return bad("%d pins: want at most %d", len(m.Pins), MaxPins)
	}
	for i, p := range m.Pins {
		switch {
		case !okAddr(p.Client) || p.Client.Is4() != m.Ghost.Is4() || p.Client.Is4In6():
			return bad("pin %d: client %v: want an address of the ghost's family", i+1, p.Client)
		case i > 0 && m.Pins[i-1].Client.Compare(p.Client) >= 0:
			return bad("pin %d: client %v: pins must ascend by client, each once", i+1, p.Client)
		case p.ID < 0 || p.ID > math.MaxUint32:
			return bad("pin %d: server id %d: want 0..%d", i+1, p.ID, uint32(math.MaxUint32))
		}
	}
	members := slices.Clone(m.Members)
	slices.SortFunc(members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	size := m.pinsSize() + fixedLen + len(m.Cluster) + 1 + addrLen(m.Ghost) + 1 + len(m.Also)*len(m.Members)*shareLen + MACSize
	for i, s := range members {
		switch {
		case s.ID < 0 || s.ID > math.MaxUint32:
			return bad("server id %d: want 0..%d", s.ID, uint32(math.MaxUint32))
		case i > 0 && members[i-1].ID == s.ID:
			return bad("server id %d appears twice", s.ID)
		case s.Weight < 0 || s.Weight > core.MaxWeight:
			return bad("server %d: weight %d: want 0..%d", s.ID, s.Weight, core.MaxWeight)
		case !okAddr(s.Addr):
			return bad("server %d: address %v: want an IPv4 or IPv6 address without zone", s.ID, s.Addr)
		case s.Absent && (s.Weight != 0 || s.Up):
			return bad("server %d: absent with weight %d up %v", s.ID, s.Weight, s.Up)
		}
		size += memberLen + addrLen(s.Addr)
	}
	if size > MaxBody {
		return bad("%d bytes: longer than an announcement may be (%d)", size, MaxBody)
	}

	b := make([]byte, 0, size)
	b = append(b, Magic...)
	version := byte(FormatVersion)
	if len(m.Pins) > 0 {
		version = FormatVersionPins
	}
	b = append(b, version, hash)
	b = binary.BigEndian.AppendUint16(b, uint16(len(members)))
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, m.Tx)
	b = binary.BigEndian.AppendUint32(b, m.Seed)
	b = binary.BigEndian.AppendUint32(b, uint32(m.Buckets))
	b = binary.BigEndian.AppendUint32(b, uint32(m.Interval/time.Millisecond))
	b = append(b, byte(len(m.Cluster)))
	b = append(b, m.Cluster...)
	b = appendAddr(b, m.Ghost)
	for _, s := range members {
		b = binary.BigEndian.AppendUint32(b, uint32(s.ID))
		b = binary.BigEndian.AppendUint32(b, uint32(s.Weight))
		b = append(b, shareFlags(s.Up, s.Absent))
		b = appendAddr(b, s.Addr)
	}
	b = appendAlso(b, m.Members, members, m.Also)
	if len(m.Pins) > 0 {
		b = append(b, byte(len(m.Pins)))
		for _, p := range m.Pins {
			b = appendAddr(b, p.Client)
			b = binary.BigEndian.AppendUint32(b, uint32(p.ID))
		}
	}
	return append(b, ed25519.Sign(key, b)...), nil
}

// pinsSize is the length of the pins section (none without pins).
func (m *Message) pinsSize() int {
	if len(m.Pins) == 0 {
		return 0
	}
	n := 1
	for _, p := range m.Pins {
		n += 1 + addrLen(p.Client) + 4
	}
	return n
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// header checks what precedes the MAC check: the length, the magic, the
// version and the cluster name, which it returns.
func header(b []byte) (string, error) {
	if len(b) < fixedLen {
		return "", malformed("%d bytes, shorter than the %d-byte header", len(b), fixedLen)
	}
	if string(b[:4]) != Magic {
		return "", malformed("magic %q, want %q", b[:4], Magic)
	}
	if b[4] != FormatVersion && b[4] != FormatVersionPins {
		return "", fmt.Errorf("%w: %d (this agent reads %d and %d)", ErrVersion, b[4], FormatVersion, FormatVersionPins)
	}
	n := int(b[fixedLen-1])
	if len(b) < fixedLen+n {
		return "", malformed("truncated cluster name")
	}
	name := string(b[fixedLen : fixedLen+n])
	if !config.ValidClusterName(name) {
		return "", malformed("cluster name %q", name)
	}
	return name, nil
}

// Peek returns the cluster an announcement is about without authenticating
// it, so that a receiver can pick the key (or ignore another cluster's
// announcement) before paying for a signature check. Its errors are
// Unmarshal's, ErrBadMAC excepted.
func Peek(b []byte) (cluster string, err error) { return header(b) }

// Unmarshal authenticates and decodes one announcement. It checks, in this
// order: the header (ErrMalformed, ErrVersion), the length (at most
// MaxBody), the Ed25519 signature under key (ErrBadMAC), then every
// field (ErrMalformed): nothing unauthenticated is decoded past the
// cluster name. The encoding is canonical: for every b it accepts, Marshal
// of the result with the signing key returns b (Ed25519 signatures are
// deterministic). It never panics, whatever b holds.
func Unmarshal(b []byte, key ed25519.PublicKey) (*Message, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key of %d bytes, want %d", ErrKey, len(key), ed25519.PublicKeySize)
	}
	name, err := header(b)
	if err != nil {
		return nil, err
	}
	if len(b) < fixedLen+len(name)+MACSize {
		return nil, malformed("%d bytes: truncated", len(b))
	}
	if len(b) > MaxBody {
		return nil, malformed("%d bytes: longer than an announcement may be (%d)", len(b), MaxBody)
	}
	body, sig := b[:len(b)-MACSize], b[len(b)-MACSize:]
	if !ed25519.Verify(key, body, sig) {
		return nil, ErrBadMAC
	}

	m := &Message{
		Cluster:  name,
		Epoch:    binary.BigEndian.Uint64(b[8:]),
		Seq:      binary.BigEndian.Uint64(b[16:]),
		Tx:       binary.BigEndian.Uint64(b[24:]),
		Seed:     binary.BigEndian.Uint32(b[32:]),
		Buckets:  int(binary.BigEndian.Uint32(b[36:])),
		Interval: time.Duration(binary.BigEndian.Uint32(b[40:])) * time.Millisecond,
	}
	switch b[5] {
	case wireJhash:
		m.Hash = config.HashJhash
	case wireModulo:
		m.Hash = config.HashModulo
	default:
		return nil, malformed("hash kind %d", b[5])
	}
	if m.Buckets < 1 || m.Buckets > MaxBuckets {
		return nil, malformed("%d buckets: want 1..%d", m.Buckets, MaxBuckets)
	}
	count := int(binary.BigEndian.Uint16(b[6:]))
	if count > MaxMembers {
		return nil, malformed("%d members: at most %d", count, MaxMembers)
	}
	r := reader{b: body[fixedLen+len(name):]}
	if m.Ghost, err = r.addr(); err != nil {
		return nil, malformed("ghost address: %v", err)
	}
	m.Members = make([]Member, 0, count)
	for i := range count {
		if r.len() < memberLen {
			return nil, malformed("member %d of %d: truncated", i+1, count)
		}
		s := Member{ID: int(r.u32()), Weight: int(r.u32())}
		flags := r.byte()
		if err := checkFlags(flags, s.Weight); err != nil {
			return nil, malformed("member %d: %v", s.ID, err)
		}
		s.Up, s.Absent = flags&flagUp != 0, flags&flagAbsent != 0
		if s.Weight > core.MaxWeight {
			return nil, malformed("member %d: weight %d: at most %d", s.ID, s.Weight, core.MaxWeight)
		}
		if i > 0 && m.Members[i-1].ID >= s.ID {
			return nil, malformed("member %d after %d: ids must ascend", s.ID, m.Members[i-1].ID)
		}
		if s.Addr, err = r.addr(); err != nil {
			return nil, malformed("member %d: address: %v", s.ID, err)
		}
		m.Members = append(m.Members, s)
	}
	if m.Also, err = r.also(len(m.Members)); err != nil {
		return nil, malformed("%v", err)
	}
	if b[4] == FormatVersionPins {
		if m.Pins, err = r.pins(m.Ghost); err != nil {
			return nil, malformed("%v", err)
		}
	}
	if r.len() != 0 {
		return nil, malformed("%d bytes after the last member", r.len())
	}
	return m, nil
}

// Open is Peek, then Unmarshal: ErrCluster when the announcement is about
// another cluster than cluster (its signature is not checked: the key is
// another's), else Unmarshal's result.
func Open(b []byte, cluster string, key ed25519.PublicKey) (*Message, error) {
	name, err := header(b)
	if err != nil {
		return nil, err
	}
	if name != cluster {
		return nil, fmt.Errorf("%w: %q, not %q", ErrCluster, name, cluster)
	}
	return Unmarshal(b, key)
}

// reader reads fields off an authenticated body. Its callers check the
// remaining length first, except addr, which checks its own.
type reader struct{ b []byte }

func (r *reader) len() int { return len(r.b) }

func (r *reader) byte() byte {
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u32() uint32 {
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) addr() (netip.Addr, error) {
	if len(r.b) < 1 {
		return netip.Addr{}, errors.New("truncated")
	}
	n := int(r.b[0])
	if n != 4 && n != 16 {
		return netip.Addr{}, fmt.Errorf("length %d, want 4 or 16", n)
	}
	if len(r.b) < 1+n {
		return netip.Addr{}, errors.New("truncated")
	}
	a, _ := netip.AddrFromSlice(r.b[1 : 1+n])
	r.b = r.b[1+n:]
	return a, nil
}

// pins reads the pins section: at least one pin (an announcement without
// pins is written in format 3), at most MaxPins, by ascending client, of
// ghost's family.
func (r *reader) pins(ghost netip.Addr) ([]Pin, error) {
	if r.len() < 1 {
		return nil, errors.New("pins: truncated")
	}
	n := int(r.byte())
	if n < 1 || n > MaxPins {
		return nil, fmt.Errorf("%d pins: want 1..%d", n, MaxPins)
	}
	out := make([]Pin, 0, n)
	for i := range n {
		a, err := r.addr()
		if err != nil {
			return nil, fmt.Errorf("pin %d: client: %v", i+1, err)
		}
		if a.Is4() != ghost.Is4() {
			return nil, fmt.Errorf("pin %d: client %v is not of the ghost's family", i+1, a)
		}
		if i > 0 && out[i-1].Client.Compare(a) >= 0 {
			return nil, fmt.Errorf("pin %d: client %v: pins must ascend by client", i+1, a)
		}
		if r.len() < 4 {
			return nil, fmt.Errorf("pin %d: truncated", i+1)
		}
		out = append(out, Pin{Client: a, ID: int(r.u32())})
	}
	return out, nil
}
