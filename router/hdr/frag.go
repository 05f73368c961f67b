package hdr

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// MaxFragEnd is the largest end, in bytes from the datagram's start, of an
// IPv4 fragment's data: with its minimal header, no datagram is longer than
// 65535 bytes.
const MaxFragEnd = 0xffff - 20

// Fragment cuts the IPv4 packet ip (header length hl, exactly its total
// length, checksum valid) into pieces of at most mtu bytes, as RFC 791
// cuts them: every piece but the last carries a multiple of 8 data bytes,
// the first keeps all options and later ones only those with the copied
// flag, and a packet that was itself a fragment keeps its offset (the
// pieces' offsets count from it) and its MF flag on the last piece. Each
// piece is built in buf (at least mtu bytes) and handed to emit before the
// next is built. It reports false, emitting nothing, when the packet cannot
// be cut: mtu too small for the header and 8 data bytes, or data ending
// past the largest datagram (its offsets would overflow into the flags).
// It allocates nothing.
func Fragment(ip []byte, hl, mtu int, buf []byte, emit func(piece []byte)) bool {
	fw := binary.BigEndian.Uint16(ip[6:8])
	base := int(fw&0x1fff) * 8
	payload := ip[hl:]
	if mtu < hl+8 || base+len(payload) > MaxFragEnd || len(buf) < mtu {
		return false
	}
	var later [40]byte
	nl := CopiedOptions(later[:], ip[20:hl])
	for off := 0; off < len(payload); {
		opts := ip[20:hl]
		if off > 0 {
			opts = later[:nl]
		}
		h := 20 + len(opts)
		n := len(payload) - off
		if h+n > mtu {
			n = (mtu - h) &^ 7
		}
		last := off+n == len(payload)
		p := buf[:h+n]
		copy(p, ip[:20])
		copy(p[20:], opts)
		p[0] = 0x40 | byte(h/4)
		binary.BigEndian.PutUint16(p[2:4], uint16(h+n))
		flags := fw & 0xe000 &^ 0x2000
		if !last || fw&0x2000 != 0 {
			flags |= 0x2000
		}
		binary.BigEndian.PutUint16(p[6:8], flags|uint16((base+off)/8))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:12], ^checksum.Checksum(p[:h], 0))
		copy(p[h:], payload[off:off+n])
		emit(p)
		off += n
	}
	return true
}

// CopiedOptions writes into dst the IPv4 options of opts that are copied
// into every fragment (the copied flag, 0x80 of the type), padded with
// end-of-options to a multiple of 4 bytes, and returns their length. A
// malformed option list ends the copy there.
func CopiedOptions(dst, opts []byte) int {
	n := 0
	for i := 0; i < len(opts); {
		t := opts[i]
		if t == 0 { // end of options
			break
		}
		if t == 1 { // no-operation
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			break
		}
		l := int(opts[i+1])
		if t&0x80 != 0 {
			n += copy(dst[n:], opts[i:i+l])
		}
		i += l
	}
	for n%4 != 0 {
		dst[n] = 0
		n++
	}
	return n
}
