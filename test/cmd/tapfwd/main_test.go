package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ghostrouter/ghostrouter/test/kit"
)

var (
	clientMAC = []byte{0x02, 0, 0, 0, 0, 0xc1}
	serverMAC = [][]byte{{0x02, 0, 0, 0, 0, 0xa0}, {0x02, 0, 0, 0, 0, 0xa1}, {0x02, 0, 0, 0, 0, 0xa2}}
	client    = netip.MustParseAddr("198.51.100.7")
	ghost     = netip.MustParseAddr("203.0.113.10")
)

// rig is a forwarder whose two links are socket pairs: wire[i] is the far end of link i.
func rig(t *testing.T) (*fwd, [2]*os.File) {
	t.Helper()
	var srv []string
	for i, m := range serverMAC {
		srv = append(srv, fmt.Sprintf("10.0.0.%d=%s", 2+i, net.HardwareAddr(m)))
	}
	f, err := parse([]string{"up0=198.51.100.1/24@br-up", "lan0=10.0.0.1/24@br-lan"}, srv, ghost.String(), 0x5eed)
	if err != nil {
		t.Fatal(err)
	}
	var wire [2]*os.File
	for i, l := range f.links {
		local, peer := kit.Pair(t, l.name)
		l.fd, wire[i] = int(local.Fd()), peer
	}
	return f, wire
}

// next is the frame waiting on w, nil if none.
func next(t *testing.T, w *os.File) []byte {
	t.Helper()
	b := make([]byte, 1<<17)
	n, err := unix.Read(int(w.Fd()), b)
	if err == unix.EAGAIN {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

func tcpFrame(dst, src []byte, from, to netip.Addr, ttl uint8) []byte {
	return kit.Ethernet(dst, src, kit.TypeIPv4, kit.IPv4(from, to, ttl, 6, 1, make([]byte, 20)))
}

// checkForwarded: out is in with new MACs, TTL one less and a checksum updated with it (the
// header's RFC 1071 sum, by kit's own code, is what it was: right if it was right);
// nothing else changed.
func checkForwarded(t *testing.T, in, out []byte, dst, src []byte) {
	t.Helper()
	if len(out) != len(in) || !bytes.Equal(out[0:6], dst) || !bytes.Equal(out[6:12], src) {
		t.Fatalf("forwarded %d bytes to % x from % x, want %d bytes to % x from % x", len(out), out[:min(len(out), 6)], out[min(len(out), 6):min(len(out), 12)], len(in), dst, src)
	}
	ip := out[14:34]
	if got, was := kit.Sum(ip, 0)%0xffff, kit.Sum(in[14:34], 0)%0xffff; ip[8] != in[14+8]-1 || got != was {
		t.Errorf("TTL %d (was %d), header sum %#x (was %#x)", ip[8], in[14+8], got, was)
	}
	if !bytes.Equal(out[12:22], in[12:22]) || !bytes.Equal(out[23:24], in[23:24]) || !bytes.Equal(out[26:], in[26:]) {
		t.Errorf("bytes other than the MACs, TTL and checksum changed:\n in % x\nout % x", in, out)
	}
}

func TestForwardsBothWays(t *testing.T) {
	f, wire := rig(t)
	up, lan := f.links[0], f.links[1]
	// Many clients: each ghost frame goes to a server, the same one for the same client,
	// more than one server in all; the answer goes back to the MAC the client sent from.
	seen := map[int]bool{}
	for i := range 64 {
		c := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		cmac := slices.Clone(clientMAC)
		cmac[4] = byte(i)
		in := tcpFrame(up.mac[:], cmac, c, ghost, 64)
		var first int = -1
		for range 2 {
			f.frame(up, lan, slices.Clone(in))
			out := next(t, wire[1])
			idx := slices.IndexFunc(serverMAC, func(m []byte) bool { return bytes.Equal(out[0:6], m) })
			if idx < 0 || first >= 0 && idx != first {
				t.Fatalf("client %s: to % x (first %d)", c, out[0:6], first)
			}
			first = idx
			checkForwarded(t, in, out, serverMAC[idx], lan.mac[:])
		}
		seen[first] = true
		back := tcpFrame(lan.mac[:], serverMAC[first], ghost, c, 64)
		f.frame(lan, up, slices.Clone(back))
		checkForwarded(t, back, next(t, wire[0]), cmac, up.mac[:])
	}
	if len(seen) < 2 {
		t.Errorf("64 clients all went to servers %v", seen)
	}
	if d := f.dropped.Load(); d != 0 {
		t.Errorf("dropped %d", d)
	}
}

func TestDropsWhatItCannotForward(t *testing.T) {
	f, wire := rig(t)
	up, lan := f.links[0], f.links[1]
	good := tcpFrame(up.mac[:], clientMAC, client, ghost, 64)
	for name, b := range map[string][]byte{
		"runt":                 good[:10],
		"IPv6":                 kit.Ethernet(up.mac[:], clientMAC, kit.TypeIPv6, make([]byte, 40)),
		"short IP":             good[:14+19],
		"TTL 1":                tcpFrame(up.mac[:], clientMAC, client, ghost, 1),
		"options":              append(append(good[:14:14], 0x46), good[15:]...),
		"total length too big": append(good[:14+2:14+2], append([]byte{0xff, 0xff}, good[14+4:]...)...),
		"unknown neighbour":    tcpFrame(up.mac[:], clientMAC, client, netip.MustParseAddr("10.0.0.9"), 64),
		"off every link":       tcpFrame(up.mac[:], clientMAC, client, netip.MustParseAddr("192.0.2.1"), 64),
	} {
		before := f.dropped.Load()
		f.frame(up, lan, slices.Clone(b))
		if f.dropped.Load() != before+1 {
			t.Errorf("%s: dropped %d, want %d", name, f.dropped.Load(), before+1)
		}
		if out := next(t, wire[1]); out != nil {
			t.Errorf("%s: forwarded % x", name, out)
		}
	}
	// The ghost's frames are dispatched from the clients' side only.
	before := f.dropped.Load()
	f.frame(lan, up, tcpFrame(lan.mac[:], serverMAC[0], netip.MustParseAddr("10.0.0.2"), ghost, 64))
	if f.dropped.Load() != before+1 || next(t, wire[0]) != nil {
		t.Errorf("a ghost frame from the servers' side was forwarded")
	}
}

func TestAnswersARPForItsAddressOnly(t *testing.T) {
	f, wire := rig(t)
	up, lan := f.links[0], f.links[1]
	req := kit.Ethernet(kit.Broadcast, clientMAC, kit.TypeARP, kit.ARP(1, clientMAC, client, nil, up.addr.Addr()))
	f.frame(up, lan, req)
	r := next(t, wire[0])
	want := kit.Ethernet(clientMAC, up.mac[:], kit.TypeARP, kit.ARP(2, up.mac[:], up.addr.Addr(), clientMAC, client))
	if !bytes.Equal(r, want) {
		t.Errorf("ARP reply\n % x, want\n % x", r, want)
	}
	// A request for another address: learnt from, not answered, not forwarded.
	other := kit.Ethernet(kit.Broadcast, clientMAC, kit.TypeARP, kit.ARP(1, clientMAC, client, nil, netip.MustParseAddr("198.51.100.2")))
	f.frame(up, lan, other)
	if r := next(t, wire[0]); r != nil {
		t.Errorf("answered a request for another address: % x", r)
	}
	if r := next(t, wire[1]); r != nil {
		t.Errorf("forwarded an ARP request: % x", r)
	}
	if v := up.neigh[client.As4()[3]].Load(); v>>48 != 1 || uint64(binary.BigEndian.Uint16(clientMAC[4:])) != v&0xffff {
		t.Errorf("the requester's MAC was not learnt: %#x", v)
	}
}

// FuzzFrame: any frame on any link is forwarded at most once, or answered (ARP), or
// dropped and counted, or learnt from (an ARP frame that asks nothing of us); what is
// forwarded is a valid IPv4 header with its TTL one less.
func FuzzFrame(f *testing.F) {
	f.Add(tcpFrame([]byte{2, 0x7a, 0x70, 0, 0, 1}, clientMAC, client, ghost, 64), false)
	f.Add(kit.Ethernet(kit.Broadcast, clientMAC, kit.TypeARP, kit.ARP(1, clientMAC, client, nil, netip.MustParseAddr("198.51.100.1"))), false)
	f.Add(tcpFrame(clientMAC, clientMAC, ghost, client, 9), true)
	f.Fuzz(func(t *testing.T, b []byte, fromLAN bool) {
		fw, wire := rig(t)
		fw.links[0].learn(client.As4(), [6]byte(clientMAC))
		in, out, wi := fw.links[0], fw.links[1], 1
		if fromLAN {
			in, out, wi = out, in, 0
		}
		orig := slices.Clone(b)
		fw.frame(in, out, b)
		fwd, back := next(t, wire[wi]), next(t, wire[1-wi])
		dropped := fw.dropped.Load()
		isARP := len(orig) >= 14 && binary.BigEndian.Uint16(orig[12:]) == kit.TypeARP
		switch {
		case fwd != nil && (back != nil || dropped != 0 || isARP):
			t.Fatalf("forwarded and also answered %v or dropped %d", back != nil, dropped)
		case fwd != nil:
			if next(t, wire[wi]) != nil {
				t.Fatal("forwarded twice")
			}
			checkForwarded(t, orig, fwd, fwd[0:6], out.mac[:])
		case back != nil && !isARP:
			t.Fatalf("answered a frame that is not ARP: % x", orig)
		case back == nil && dropped == 0 && !isARP:
			t.Fatalf("neither forwarded nor dropped: % x", orig)
		case dropped > 1:
			t.Fatalf("dropped %d times", dropped)
		}
	})
}
