package announce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// The acknowledgement: a server agent's answer to an announcement, unicast
// UDP to the address and port the announcement came from.
//
//	offset  size  field
//	     0     4  magic "GHAK"
//	     4     1  format version: 2 (1 carried an HMAC under a shared key)
//	     5     1  flags: zero
//	     6     4  the server's id
//	    10     8  epoch of the table applied
//	    18     8  seq of the table applied
//	    26     1  L, the length of the cluster name (1..63)
//	    27     L  cluster name
//
// It is not signed: servers hold only the appliance's public key. The
// appliance takes an acknowledgement only from the server's own address and
// for the epoch in force (see the package documentation).
//
// It says: this server's filter holds the buckets that table (epoch, seq)
// grants it, and no other. A server only ever moves to newer tables, so
// the statement stays true of every later moment until it acknowledges a
// newer one; a replayed acknowledgement tells the appliance nothing false.
const (
	// AckMagic opens every acknowledgement.
	AckMagic = "GHAK"
	// AckVersion is the acknowledgement format this package writes and
	// reads.
	AckVersion = 2

	ackFixed = 27 // magic .. name length
	// MaxAck is the longest acknowledgement.
	MaxAck = ackFixed + MaxName
)

// ErrAck wraps every reason an acknowledgement is refused by UnmarshalAck.
var ErrAck = errors.New("announce: bad acknowledgement")

// Ack is one acknowledgement.
type Ack struct {
	Cluster    string
	Server     int
	Epoch, Seq uint64
}

// Marshal encodes a.
func (a *Ack) Marshal() ([]byte, error) {
	switch {
	case !config.ValidClusterName(a.Cluster):
		return nil, fmt.Errorf("%w: cluster name %q", ErrInvalid, a.Cluster)
	case a.Server < 0 || a.Server > math.MaxUint32:
		return nil, fmt.Errorf("%w: server id %d", ErrInvalid, a.Server)
	}
	b := make([]byte, 0, ackFixed+len(a.Cluster))
	b = append(b, AckMagic...)
	b = append(b, AckVersion, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(a.Server))
	b = binary.BigEndian.AppendUint64(b, a.Epoch)
	b = binary.BigEndian.AppendUint64(b, a.Seq)
	b = append(b, byte(len(a.Cluster)))
	b = append(b, a.Cluster...)
	return b, nil
}

// PeekAck returns the cluster an acknowledgement is about.
func PeekAck(b []byte) (string, error) {
	if len(b) < ackFixed || string(b[:4]) != AckMagic {
		return "", fmt.Errorf("%w: not an acknowledgement (%d bytes)", ErrAck, len(b))
	}
	if b[4] != AckVersion || b[5] != 0 {
		return "", fmt.Errorf("%w: version %d flags %#x", ErrAck, b[4], b[5])
	}
	n := int(b[ackFixed-1])
	if len(b) != ackFixed+n {
		return "", fmt.Errorf("%w: %d bytes for a %d-byte name", ErrAck, len(b), n)
	}
	name := string(b[ackFixed : ackFixed+n])
	if !config.ValidClusterName(name) {
		return "", fmt.Errorf("%w: cluster name %q", ErrAck, name)
	}
	return name, nil
}

// UnmarshalAck checks an acknowledgement's form and decodes it (ErrAck).
// It never panics.
func UnmarshalAck(b []byte) (*Ack, error) {
	name, err := PeekAck(b)
	if err != nil {
		return nil, err
	}
	return &Ack{
		Cluster: name,
		Server:  int(binary.BigEndian.Uint32(b[6:])),
		Epoch:   binary.BigEndian.Uint64(b[10:]),
		Seq:     binary.BigEndian.Uint64(b[18:]),
	}, nil
}
