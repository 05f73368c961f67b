package router

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

var (
	bcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcastMAC = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
)

func TestUnicastInGroupFrameNotForwarded(t *testing.T) {
	r, a, b := newTestRouter(t)
	anyIP := isIPv4(func(header.IPv4) bool { return true })
	for i, mac := range []net.HardwareAddr{bcastMAC, mcastMAC} {
		a.send(icmpEcho(macA, mac, ipA, ipB, 64, uint16(10+i)))
		if f := b.next(300*time.Millisecond, anyIP); f != nil {
			t.Fatalf("a unicast packet in a frame to %s was forwarded", mac)
		}
		if n := r.Stats().UnicastInGroupFrame.Load(); n != uint64(i+1) {
			t.Fatalf("UnicastInGroupFrame = %d after %d such frames", n, i+1)
		}
	}
	// The same packet in a unicast frame is forwarded: the drop above is
	// the policy, not a broken path.
	a.send(icmpEcho(macA, macRA, ipA, ipB, 64, 12))
	resolveB(t, b)
	if f := b.next(3*time.Second, anyIP); f == nil {
		t.Fatal("the same packet in a unicast frame was not forwarded")
	}
	// Packets for the router itself in a broadcast frame are unaffected:
	// an echo request to its own address is answered.
	a.send(icmpEcho(macA, bcastMAC, ipA, ipRA, 64, 13))
	if req := a.next(3*time.Second, isARPRequestFor(ipA)); req != nil {
		a.send(arpReply(macA, macRA, ipA, ipRA))
	}
	reply := a.next(3*time.Second, isIPv4(func(ip header.IPv4) bool { return ip.Protocol() == 1 && ip.Payload()[0] == 0 }))
	if reply == nil {
		t.Fatal("an echo request to the router's own address in a broadcast frame was not answered")
	}
	if n := r.Stats().UnicastInGroupFrame.Load(); n != 2 {
		t.Fatalf("UnicastInGroupFrame = %d, want 2 (the router's own packet is not one)", n)
	}
}

func TestUnicastInGroupFramePolicy(t *testing.T) {
	r, _, _ := newTestRouter(t)
	v4 := func(mac net.HardwareAddr, dst string) []byte {
		return icmpEcho(macA, mac, ipA, netip.MustParseAddr(dst), 64, 1)
	}
	v6 := func(mac net.HardwareAddr, dst string) []byte {
		f := make([]byte, 14+40)
		copy(f[0:6], mac)
		f[12], f[13] = 0x86, 0xdd
		f[14] = 0x60
		d := netip.MustParseAddr(dst).As16()
		copy(f[14+24:], d[:])
		return f
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		drop  bool
	}{
		{"unicast MAC", v4(macRA, "198.51.100.10"), false},
		{"broadcast MAC, transit", v4(bcastMAC, "198.51.100.10"), true},
		{"multicast MAC, transit", v4(mcastMAC, "198.51.100.10"), true},
		{"broadcast MAC, own address", v4(bcastMAC, "192.0.2.1"), false},
		{"broadcast MAC, directed broadcast", v4(bcastMAC, "192.0.2.255"), false},
		{"broadcast MAC, limited broadcast", v4(bcastMAC, "255.255.255.255"), false},
		{"multicast MAC, multicast group", v4(mcastMAC, "224.0.0.18"), false},
		{"IPv6 multicast MAC, transit", v6(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, "2001:db8::10"), true},
		{"IPv6 multicast MAC, group", v6(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, "ff02::1"), false},
		{"IPv6 multicast MAC, link-local", v6(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, "fe80::1"), false},
		{"ARP", arpReply(macA, bcastMAC, ipA, ipRA), false},
	} {
		before := r.Stats().UnicastInGroupFrame.Load()
		if got := r.unicastInGroupFrame(tc.frame); got != tc.drop {
			t.Errorf("%s: dropped %v, want %v", tc.name, got, tc.drop)
		}
		if d := r.Stats().UnicastInGroupFrame.Load() - before; d != uint64(btoi(tc.drop)) {
			t.Errorf("%s: counted %d", tc.name, d)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestNoRedirectForBroadcastCluster: a client on a broadcast cluster's LAN
// sends ghost traffic to the router with send_redirects on. The ghost is
// routed via the second ghost, on the same LAN, but no redirect may name it;
// ordinary traffic between two LAN hosts through the router still draws one
// (so the test can tell).
//
//	host B 198.51.100.10 ── b ┌ router 198.51.100.1 ┐ (LAN: ghost 203.0.113.10 via second ghost 198.51.100.250)
func TestNoRedirectForBroadcastCluster(t *testing.T) {
	ghost := netip.MustParseAddr("203.0.113.10")
	cfg := &config.Config{
		File:   "test",
		Router: config.Router{SendRedirects: true},
		Interfaces: []config.Interface{
			{Name: "a", Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}, MAC: config.MAC(macRA), MTU: 1500, Queues: 1},
			{Name: "b", Addresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}, MAC: config.MAC(macRB), MTU: 1500, Queues: 1},
		},
		Clusters: []config.Cluster{{
			Name: "web", Address: ghost, Interface: "b", Mode: config.ModeBroadcast,
			BroadcastAddress: netip.MustParseAddr("198.51.100.250"),
		}},
	}
	eps := map[string]*tap.Endpoint{}
	wires := map[string]*wire{}
	for _, ic := range cfg.Interfaces {
		f, w := socketPair(t, ic.Name)
		ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: ic.Name, Files: []*os.File{f}, MAC: ic.MAC.HardwareAddr(), MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		eps[ic.Name], wires[ic.Name] = ep, w
	}
	r, err := New(cfg, Options{Endpoints: eps})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	b := wires["b"]
	redirect := isIPv4(func(ip header.IPv4) bool { return ip.Protocol() == 1 && ip.Payload()[0] == 5 })

	// Redirects are written straight back to the sender's MAC: no ARP first.
	redirectOrGhost := func(f []byte) bool {
		return redirect(f) || isIPv4(func(ip header.IPv4) bool { return addr(ip.DestinationAddressSlice()) == ghost })(f)
	}
	b.send(icmpEcho(macB, macRB, ipB, ghost, 64, 1))
	fwd := b.next(3*time.Second, redirectOrGhost)
	if fwd == nil || redirect(fwd) || net.HardwareAddr(fwd[0:6]).String() != bcastMAC.String() {
		t.Fatalf("ghost traffic not broadcast on the LAN (a redirect first?): %x", fwd)
	}
	if f := b.next(500*time.Millisecond, redirect); f != nil {
		ip := header.IPv4(f[14:])
		t.Fatalf("an ICMP redirect for cluster traffic, naming %s", addr(ip.Payload()[4:8]))
	}
	if n := r.Stats().RedirectsSent.Load(); n != 0 {
		t.Fatalf("RedirectsSent = %d for cluster traffic", n)
	}

	// Ordinary traffic to another host on the LAN still draws one.
	other := netip.MustParseAddr("198.51.100.20")
	b.send(icmpEcho(macB, macRB, ipB, other, 64, 3))
	f := b.next(3*time.Second, redirect)
	if f == nil {
		t.Fatal("no redirect for ordinary traffic that leaves by the link it came in on (send_redirects = true)")
	}
	if gw := addr(header.IPv4(f[14:]).Payload()[4:8]); gw != other {
		t.Fatalf("redirect names %s, want %s", gw, other)
	}
}

func TestUnicastInGroupFrameAllocatesNothing(t *testing.T) {
	r, _, _ := newTestRouter(t)
	v4 := icmpEcho(macA, bcastMAC, ipA, ipB, 64, 1)
	v6 := make([]byte, 14+40)
	copy(v6, []byte{0x33, 0x33, 0, 0, 0, 1})
	v6[12], v6[13], v6[14] = 0x86, 0xdd, 0x60
	v6[14+24] = 0x20
	if a := testing.AllocsPerRun(1000, func() { r.unicastInGroupFrame(v4); r.unicastInGroupFrame(v6) }); a != 0 {
		t.Fatalf("%v allocations per frame", a)
	}
}

// FuzzUnicastInGroupFrame: whatever the frame, the policy drops only frames
// to a group MAC carrying an IPv4 or IPv6 header, never one to a unicast
// MAC, never one for the router's own addresses or a group address, and
// counts exactly what it drops.
func FuzzUnicastInGroupFrame(f *testing.F) {
	f.Add(icmpEcho(macA, bcastMAC, ipA, ipB, 64, 1))
	f.Add(icmpEcho(macA, bcastMAC, ipA, ipRA, 64, 1))
	f.Add(icmpEcho(macA, macRA, ipA, ipB, 64, 1))
	f.Add(arpReply(macA, bcastMAC, ipA, ipRA))
	// Only the router's address sets matter here: a router without links.
	r := &Router{local: map[[4]byte]struct{}{}}
	for _, a := range []string{"192.0.2.1", "192.0.2.255", "198.51.100.1", "198.51.100.255"} {
		r.local[netip.MustParseAddr(a).As4()] = struct{}{}
	}
	r.setPolicy(&config.Config{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		before := r.Stats().UnicastInGroupFrame.Load()
		drop := r.unicastInGroupFrame(frame)
		if d := r.Stats().UnicastInGroupFrame.Load() - before; d != uint64(btoi(drop)) {
			t.Fatalf("dropped %v, counted %d", drop, d)
		}
		if !drop {
			return
		}
		if frame[0]&1 == 0 {
			t.Fatal("a frame to a unicast MAC dropped")
		}
		switch {
		case len(frame) >= 34 && frame[12] == 0x08 && frame[13] == 0x00:
			d := netip.AddrFrom4([4]byte(frame[30:34]))
			if d.IsMulticast() || d == netip.MustParseAddr("255.255.255.255") || d == ipRA || d == netip.MustParseAddr("198.51.100.1") ||
				d == netip.MustParseAddr("192.0.2.255") || d == netip.MustParseAddr("198.51.100.255") {
				t.Fatalf("a packet for the router itself or a group (%s) dropped", d)
			}
		case len(frame) >= 54 && frame[12] == 0x86 && frame[13] == 0xdd:
			d := netip.AddrFrom16([16]byte(frame[38:54]))
			if d.IsMulticast() || d.IsLinkLocalUnicast() {
				t.Fatalf("a packet to %s dropped", d)
			}
		default:
			t.Fatalf("a frame that is not IP (type %x, %d bytes) dropped", frame[12:14], len(frame))
		}
	})
}
