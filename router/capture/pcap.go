package capture

import (
	"encoding/binary"
	"time"
)

// The classic pcap file format (tcpdump's, libpcap's savefile): a 24-byte
// file header, then per frame a 16-byte record header and the captured
// bytes. Microsecond timestamps, host byte order written as little-endian
// with the standard magic, link type Ethernet.

// LinkTypeEthernet is LINKTYPE_ETHERNET.
const LinkTypeEthernet = 1

// FileHeaderLen and RecordHeaderLen are the sizes of the two headers.
const (
	FileHeaderLen   = 24
	RecordHeaderLen = 16
)

// FileHeader returns a pcap file header for Ethernet frames cut at snapLen.
func FileHeader(snapLen int) []byte {
	b := make([]byte, FileHeaderLen)
	binary.LittleEndian.PutUint32(b[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(b[4:], 2) // version 2.4
	binary.LittleEndian.PutUint16(b[6:], 4)
	// thiszone and sigfigs: 0
	binary.LittleEndian.PutUint32(b[16:], uint32(snapLen))
	binary.LittleEndian.PutUint32(b[20:], LinkTypeEthernet)
	return b
}

// AppendRecord appends r as a pcap record (header and data) to b.
func AppendRecord(b []byte, r Record) []byte {
	var h [RecordHeaderLen]byte
	PutRecordHeader(h[:], r.Time, len(r.Data), r.OrigLen)
	b = append(b, h[:]...)
	return append(b, r.Data...)
}

// PutRecordHeader writes a record header for a frame of origLen bytes of
// which capLen were kept, captured at t.
func PutRecordHeader(h []byte, t time.Time, capLen, origLen int) {
	us := t.UnixMicro()
	binary.LittleEndian.PutUint32(h[0:], uint32(us/1e6))
	binary.LittleEndian.PutUint32(h[4:], uint32(us%1e6))
	binary.LittleEndian.PutUint32(h[8:], uint32(capLen))
	binary.LittleEndian.PutUint32(h[12:], uint32(origLen))
}
