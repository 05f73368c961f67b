package tap

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/router/hdr"
)

// Segmentation offload over TAP. A TAP opened with IFF_VNET_HDR puts a
// virtio-net header (struct virtio_net_hdr, include/uapi/linux/virtio_net.h)
// in front of every frame, both ways; with TUNSETOFFLOAD the kernel then hands
// over TCP super-frames of up to 64 KiB (gso_type TCPV4/TCPV6, cut into
// gso_size segments by whoever finally needs them cut) and frames whose
// transport checksum is only partial (NEEDS_CSUM: the checksum field holds the
// pseudo-header sum; the sum over csum_start.. goes to csum_start+csum_offset).
// A TAP of the legacy kind, as here, uses the host's byte order.
//
// Such frames may be forwarded whole to another header-carrying link: only the
// Ethernet header, the IPv4 TTL and header checksum (or the IPv6 hop limit)
// change, none of which the partial checksum or the cutting depends on. Where
// a frame must become plain (netstack, a link without the header), segment and
// completeChecksum make it so in software.

// virtio-net header fields.
const (
	vnetHdrLen = 10 // struct virtio_net_hdr; the 12-byte variant adds num_buffers, unused on a TAP

	vnetNeedsCsum = 1 // flags: the transport checksum is partial
	vnetDataValid = 2 // flags: the checksum was verified (receive side only)

	vnetGSONone  = 0
	vnetGSOTCPv4 = 1
	vnetGSOUDP   = 3
	vnetGSOTCPv6 = 4
	vnetGSOUDPL4 = 5
	vnetGSOECN   = 0x80
)

// vnetHdr is a decoded virtio_net_hdr.
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags = b[0]
	h.gsoType = b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:4])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:6])
	h.csumStart = binary.NativeEndian.Uint16(b[6:8])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:10])
}

// encode writes h into b (len(b) is the link's header length: the bytes
// past the first 10 are zeroed).
func (h *vnetHdr) encode(b []byte) {
	b[0] = h.flags
	b[1] = h.gsoType
	binary.NativeEndian.PutUint16(b[2:4], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:6], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:8], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:10], h.csumOffset)
	clear(b[vnetHdrLen:])
}

// gso reports whether the frame is a super-frame to be cut.
func (h *vnetHdr) gso() bool { return h.gsoType&^vnetGSOECN != vnetGSONone }

// plain reports whether the frame needs nothing done before it is used as is.
func (h *vnetHdr) plain() bool { return !h.gso() && h.flags&vnetNeedsCsum == 0 }

// completeChecksum finishes the partial transport checksum of frame as h
// describes it (NEEDS_CSUM), in place, and clears the flag in h. It reports
// false when h points outside the frame.
func completeChecksum(frame []byte, h *vnetHdr) bool {
	start, off := int(h.csumStart), int(h.csumOffset)
	if start < hdr.EthLen || start+off+2 > len(frame) {
		return false
	}
	// The field holds the pseudo-header sum: the sum over the whole
	// transport segment with it in place, inverted, is the checksum. A
	// result of 0 goes out as 0xffff, as Linux's skb_checksum_help does.
	sum := ^checksum.Checksum(frame[start:], 0)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(frame[start+off:], sum)
	h.flags &^= vnetNeedsCsum
	return true
}

// MinGSOSize is the smallest segment size (gso_size) a super-frame may ask
// for: Linux's net.ipv4.tcp_min_snd_mss default, the smallest MSS a Linux
// TCP sender uses. A super-frame asking for less is dropped and counted
// (Stats.GSOTooSmall) as soon as it is read: a gso_size of 1 would turn one
// 64 KiB frame into some 65,000 packets; at 48 it is at most 1,366.
const MinGSOSize = 48

// segmenter cuts a TCP super-frame (Ethernet, IPv4 or IPv6, TCP; as a GSO
// header describes it) into plain frames carrying at most gso_size payload
// bytes each, with complete checksums, as Linux's tcp_gso_segment does: the
// IPv4 ID goes up by one per segment, sequence numbers advance, FIN and PSH
// stay on the last segment only, CWR on the first only.
type segmenter struct {
	frame []byte
	v6    bool
	l3    int // offset of the IP header
	l4    int // offset of the TCP header
	hdr   int // length of all headers
	mss   int
	seq   uint32
	id    uint16
	flags uint8
	off   int // payload bytes already cut
}

// reset prepares s for frame. It reports false for a frame it cannot cut
// (not TCP over IPv4/IPv6, inconsistent offsets, a segment size below
// MinGSOSize).
func (s *segmenter) reset(frame []byte, h *vnetHdr) bool {
	*s = segmenter{frame: frame, l3: hdr.EthLen, mss: int(h.gsoSize)}
	if s.mss < MinGSOSize || len(frame) < hdr.EthLen+hdr.IPv4Min {
		return false
	}
	switch h.gsoType &^ vnetGSOECN {
	case vnetGSOTCPv4:
		if !hdr.IsIPv4(frame) {
			return false
		}
		ip := hdr.IP4(frame[hdr.EthLen:])
		if ip.Version() != 4 || ip.Protocol() != hdr.ProtoTCP {
			return false
		}
		s.l4 = hdr.EthLen + ip.HeaderLen()
		s.id = binary.BigEndian.Uint16(ip[4:]) // the identification
		if s.l4 < hdr.EthLen+hdr.IPv4Min {
			return false
		}
	case vnetGSOTCPv6:
		if !hdr.IsIPv6(frame) || hdr.IP6(frame[hdr.EthLen:]).Version() != 6 {
			return false
		}
		s.v6 = true
		// Extension headers may sit between the IPv6 header and TCP: the
		// kernel's csum_start says where TCP begins.
		s.l4 = hdr.EthLen + hdr.IPv6Len
		if h.flags&vnetNeedsCsum != 0 {
			s.l4 = int(h.csumStart)
		}
		if s.l4 < hdr.EthLen+hdr.IPv6Len || (s.l4 == hdr.EthLen+hdr.IPv6Len && hdr.IP6(frame[hdr.EthLen:]).NextHeader() != hdr.ProtoTCP) {
			return false
		}
	default:
		return false
	}
	if s.l4+hdr.TCPMin > len(frame) {
		return false
	}
	s.hdr = s.l4 + int(frame[s.l4+12]>>4)*4
	if s.hdr < s.l4+hdr.TCPMin || s.hdr > len(frame) || len(frame) > MaxFrame {
		return false
	}
	s.seq = binary.BigEndian.Uint32(frame[s.l4+4:])
	s.flags = frame[s.l4+13]
	return true
}

// next builds the next segment in dst (at least MaxFrame bytes) and returns
// it, or nil when the whole payload has been cut.
func (s *segmenter) next(dst []byte) []byte {
	payload := len(s.frame) - s.hdr
	if s.off >= payload && !(payload == 0 && s.off == 0) {
		return nil
	}
	n := min(s.mss, payload-s.off)
	first, last := s.off == 0, s.off+n >= payload
	out := dst[:s.hdr+n]
	copy(out, s.frame[:s.hdr])
	copy(out[s.hdr:], s.frame[s.hdr+s.off:s.hdr+s.off+n])
	seg := len(out) - s.l4 // TCP header and payload
	ip := out[s.l3:]
	var pseudo uint16
	if s.v6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(len(out)-s.l3-hdr.IPv6Len))
		pseudo = checksum.Checksum(ip[8:40], 0)
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(len(out)-s.l3))
		binary.BigEndian.PutUint16(ip[4:], s.id+uint16(s.off/max(s.mss, 1)))
		ihl := int(ip[0]&0x0f) * 4
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip[:ihl], 0))
		pseudo = checksum.Checksum(ip[12:20], 0)
	}
	pseudo = checksum.Combine(pseudo, 6)
	pseudo = checksum.Combine(pseudo, uint16(seg))
	tcp := out[s.l4:]
	binary.BigEndian.PutUint32(tcp[4:], s.seq+uint32(s.off))
	f := s.flags
	if !last {
		f &^= hdr.TCPFin | hdr.TCPPsh
	}
	if !first {
		f &^= hdr.TCPCwr
	}
	tcp[13] = f
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], ^checksum.Checksum(tcp, pseudo))
	s.off += n
	if n == 0 {
		s.off = 1 // a super-frame without payload yields one segment
	}
	return out
}
