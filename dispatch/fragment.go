package dispatch

import "github.com/ghostrouter/ghostrouter/router/hdr"

// maxFragEnd is the largest end, in bytes, of an IPv4 fragment's data: the
// datagram it belongs to can be no longer than 65535 bytes with its
// minimal header (RFC 791: total length is 16 bits, offsets count 8-byte
// units in 13 bits).
const maxFragEnd = hdr.MaxFragEnd

// fragmentFits reports whether a packet whose fragment offset is off (in
// 8-byte units) and whose data is n bytes long lies within the largest IP
// datagram. One that does not cannot be cut further without its offsets
// overflowing the 13-bit field into the flags (the MF bit); it is
// malformed, since no reassembly could ever use it.
func fragmentFits(off, n int) bool {
	return off*8+n <= maxFragEnd
}
