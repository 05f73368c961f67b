package dispatch

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/router/stage"
)

// expected is what the forwarder must do with a frame, worked out from the
// dispatch contract alone (not from the forwarder's code).
type expected struct {
	taken   bool       // the destination is the ghost: the frame is consumed
	send    bool       // exactly one frame, the packet with TTL-1, reaches the LAN
	errSent bool       // an ICMP time exceeded goes back
	client  netip.Addr // the address the server is chosen by
	ipLen   int        // the IP packet's length (without Ethernet padding)
}

// reference computes expected for frame with the cluster's ghost (IPv4 and
// IPv6 clusters share the address family of their ghost) and LAN MTU.
func reference(frame []byte, ghost4, ghost6 netip.Addr, mtu int) expected {
	var e expected
	if len(frame) < 14+20 || frame[0]&1 != 0 {
		return e // too short, or a group address: never the dispatcher's
	}
	et := binary.BigEndian.Uint16(frame[12:14])
	ip := frame[14:]
	switch et {
	case 0x0800:
		if netip.AddrFrom4([4]byte(ip[16:20])) != ghost4 {
			return e
		}
		e.taken = true
		hl := int(ip[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:4]))
		if ip[0]>>4 != 4 || hl < 20 || tot < hl || tot > len(ip) || checksum.Checksum(ip[:hl], 0) != 0xffff {
			return e // malformed: dropped
		}
		if ip[8] <= 1 {
			e.errSent = true
			return e
		}
		e.ipLen, e.client = tot, netip.AddrFrom4([4]byte(ip[12:16]))
		offset := binary.BigEndian.Uint16(ip[6:8]) & 0x1fff
		if ip[9] == 1 && offset == 0 && tot >= hl+8 {
			switch ip[hl] {
			case 3, 11, 12: // errors: by the quoted packet's destination
				q := ip[hl+8 : tot]
				if len(q) < 20 || q[0]>>4 != 4 || int(q[0]&0xf)*4 < 20 || int(q[0]&0xf)*4 > len(q) ||
					netip.AddrFrom4([4]byte(q[12:16])) != ghost4 {
					return e // a bad quote: dropped
				}
				e.client = netip.AddrFrom4([4]byte(q[16:20]))
			}
		}
		e.send = tot <= mtu
		e.errSent = tot > mtu && ip[6]&0x40 != 0 // DF: fragmentation needed
	case 0x86dd:
		if len(ip) < 40 || netip.AddrFrom16([16]byte(ip[24:40])) != ghost6 {
			return e
		}
		e.taken = true
		tot := 40 + int(binary.BigEndian.Uint16(ip[4:6]))
		if ip[0]>>4 != 6 || tot > len(ip) {
			return e
		}
		if ip[7] <= 1 {
			e.errSent = true
			return e
		}
		e.ipLen, e.client = tot, netip.AddrFrom16([16]byte(ip[8:24]))
		if ip[6] == 58 && tot >= 48 && ip[40] >= 1 && ip[40] <= 4 {
			q := ip[48:tot]
			if len(q) < 40 || q[0]>>4 != 6 || netip.AddrFrom16([16]byte(q[8:24])) != ghost6 {
				return e
			}
			e.client = netip.AddrFrom16([16]byte(q[24:40]))
		}
		e.send = tot <= mtu
		e.errSent = tot > mtu // packet too big
	}
	return e
}

// FuzzForwarderInbound feeds the forwarder arbitrary frames and checks each
// outcome against the reference: consumed exactly when the destination is
// a ghost; a dispatched frame goes to the chosen server's MAC from the
// LAN's MAC, with the IP packet unchanged but for TTL-1 (hop limit - 1) and,
// for IPv4, a header checksum that is still valid; TTL <= 1 draws time
// exceeded and sends nothing; malformed packets send nothing; a packet over
// the LAN MTU draws fragmentation needed (DF) or packet too big (IPv6), or
// is fragmented (IPv4 without DF: FuzzFragment checks the pieces).
func FuzzForwarderInbound(f *testing.F) {
	f.Add(udpFrame(netip.MustParseAddr("198.51.100.10"), hookGhost, 64)) // a good packet
	f.Add(udpFrame(netip.MustParseAddr("198.51.100.10"), hookGhost, 1))  // TTL 1
	f.Add(udpFrame(netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.1"), 64))
	f.Add([]byte{0x02, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd}) // IPv6 with no header
	f.Add(icmpErrorFrame(netip.MustParseAddr("192.0.2.254"), 3, 4, serverToClient(hookGhost, netip.MustParseAddr("198.51.100.7"))))
	f.Add(icmpErrorFrame(netip.MustParseAddr("192.0.2.254"), 11, 0, []byte{0x45, 0}))
	ghost6 := netip.MustParseAddr("2001:db8:ffff::10")
	f.Add(icmp6ErrorFrame(netip.MustParseAddr("2001:db8:9::1"), ghost6, ghost6, netip.MustParseAddr("2001:db8:1::7"), 2))
	lan, peer := lanPair(f)
	errs := &recordedError{}
	fw, c4, v := testForwarder(f, lan, errs)
	c6 := NewCluster("web6", ghost6, lan)
	c6.Publish(v)
	fw.SetClusters([]*Cluster{c4, c6})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > 4000 {
			return
		}
		for readNow(t, peer) != nil {
			// what an earlier failing input left (the fuzzer re-runs those)
		}
		in := append([]byte(nil), frame...)
		want := reference(in, hookGhost, ghost6, int(lan.MTU()))
		nerr := errs.n + errs.n6
		verdict := fw.Inbound(nil, in)
		taken := verdict.Taken()
		if taken != want.taken {
			t.Fatalf("consumed %v, want %v (the destination is a ghost: %v)", taken, want.taken, want.taken)
		}
		if answered := verdict.Kind() == stage.KindAnswered; answered != want.errSent {
			t.Fatalf("verdict %v; an ICMP error is due: %v", verdict, want.errSent)
		}
		if want.send && verdict != stage.Consumed {
			t.Fatalf("verdict %v for a dispatched packet", verdict)
		}
		if verdict.Kind() == stage.KindDropped && verdict.Reason() == stage.None {
			t.Fatal("a drop without a reason")
		}
		if !want.send && !bytes.Equal(in, frame) {
			t.Fatal("a frame that was not dispatched was changed")
		}
		if got := errs.n + errs.n6 - nerr; got != btoi(want.errSent) {
			t.Fatalf("%d ICMP errors sent, want %d", got, btoi(want.errSent))
		}
		out := readNow(t, peer)
		if !want.send {
			for out != nil && want.taken && want.ipLen > int(lan.MTU()) {
				out = readNow(t, peer) // fragments of a packet over the MTU: not this test's
			}
			if out != nil {
				t.Fatalf("a %d-byte frame reached the LAN; want none", len(out))
			}
			return
		}
		if out == nil {
			t.Fatal("nothing reached the LAN")
		}
		if extra := readNow(t, peer); extra != nil {
			t.Fatal("more than one frame for one packet")
		}
		idx, _, ok := v.Selector.Select(want.client)
		if !ok || [6]byte(out[0:6]) != v.MACs[idx] || !bytes.Equal(out[6:12], hookLANMAC) {
			t.Fatalf("to %x from %x; want the server of %s (%x) from %x", out[0:6], out[6:12], want.client, v.MACs[idx], []byte(hookLANMAC))
		}
		if len(out) != 14+want.ipLen {
			t.Fatalf("%d bytes on the LAN, want %d (padding trimmed)", len(out), 14+want.ipLen)
		}
		ip, orig := out[14:], frame[14:14+want.ipLen]
		ttl := 8
		if out[12] == 0x86 {
			ttl = 7
		}
		if ip[ttl] != orig[ttl]-1 {
			t.Fatalf("TTL %d, arrived with %d", ip[ttl], orig[ttl])
		}
		diff := 0
		for i := range ip {
			if ip[i] != orig[i] && i != ttl && !(ttl == 8 && (i == 10 || i == 11)) {
				diff++
			}
		}
		if diff != 0 {
			t.Fatalf("%d bytes of the packet changed besides the TTL and checksum", diff)
		}
		if ttl == 8 && checksum.Checksum(ip[:int(ip[0]&0xf)*4], 0) != 0xffff {
			t.Fatal("the header checksum is wrong after the TTL decrement")
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
