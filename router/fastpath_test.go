package router

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/test/kit"
)

// The fast path's tests run the real router over socket pairs (as
// router_test.go), host A on link a, host B on link b:
//
//	host A 192.0.2.10 ── a ┌ router ┐ b ── host B 198.51.100.10
//	host A2 192.0.2.20 ─┘   192.0.2.1  198.51.100.1
//
// The first packets to a destination take netstack (which resolves B's MAC);
// the refresher then caches the next hop and the fast path takes over.

var (
	macA2 = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x2a}
	ipA2  = netip.MustParseAddr("192.0.2.20")
)

// fastRig is a test router with its two links' far ends.
type fastRig struct {
	r    *Router
	cfg  *config.Config
	a, b *os.File
}

func newFastRig(tb testing.TB) *fastRig {
	tb.Helper()
	cfg := &config.Config{
		File: "test",
		Interfaces: []config.Interface{
			{Name: "a", Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}, MAC: config.MAC(macRA), MTU: 1500, Queues: 1},
			{Name: "b", Addresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}, MAC: config.MAC(macRB), MTU: 1500, Queues: 1},
		},
	}
	rig := &fastRig{cfg: cfg}
	eps := map[string]*tap.Endpoint{}
	for _, ic := range cfg.Interfaces {
		local, peer := kit.Pair(tb, ic.Name)
		ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: ic.Name, Files: []*os.File{local}, MAC: ic.MAC.HardwareAddr(), MTU: 1500})
		if err != nil {
			tb.Fatal(err)
		}
		eps[ic.Name] = ep
		if ic.Name == "a" {
			rig.a = peer
		} else {
			rig.b = peer
		}
	}
	r, err := New(cfg, Options{Endpoints: eps})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { r.Close() })
	rig.r = r
	return rig
}

func (rig *fastRig) send(tb testing.TB, f *os.File, frame []byte) {
	tb.Helper()
	if _, err := f.Write(frame); err != nil {
		tb.Fatalf("write frame: %v", err)
	}
}

// next returns the next frame on f for which keep is true, or nil.
func next(f *os.File, timeout time.Duration, keep func([]byte) bool) []byte {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, tap.MaxFrame)
	for {
		f.SetReadDeadline(deadline)
		n, err := f.Read(buf)
		if err != nil {
			return nil
		}
		if keep(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// answerARP answers the router's ARP request on f for ip with mac.
func answerARP(tb testing.TB, f *os.File, ip netip.Addr, mac, routerMAC net.HardwareAddr, routerIP netip.Addr) {
	tb.Helper()
	if req := next(f, 3*time.Second, isARPRequestFor(ip)); req == nil {
		tb.Fatalf("router sent no ARP request for %s", ip)
	}
	if _, err := f.Write(arpReply(mac, routerMAC, ip, routerIP)); err != nil {
		tb.Fatal(err)
	}
}

func isEcho(id uint16) func([]byte) bool {
	return isIPv4(func(ip header.IPv4) bool {
		p := ip.Payload()
		return ip.Protocol() == 1 && len(p) >= 8 && p[0] == 8 && binary.BigEndian.Uint16(p[4:]) == id
	})
}

// warm sends echo requests A -> B until the fast path forwards one, and
// returns it (as host B received it).
func (rig *fastRig) warm(tb testing.TB) []byte {
	tb.Helper()
	st := rig.r.FastPathStats()
	deadline := time.Now().Add(5 * time.Second)
	for id := uint16(1000); time.Now().Before(deadline); id++ {
		before := st.Forwarded.Load()
		rig.send(tb, rig.a, icmpEcho(macA, macRA, ipA, ipB, 64, id))
		got := next(rig.b, 2*time.Second, isEcho(id))
		if got == nil {
			tb.Fatalf("echo %d was not forwarded at all", id)
		}
		if st.Forwarded.Load() > before {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatal("the fast path never took A -> B traffic")
	return nil
}

func TestFastPathMatchesNetstack(t *testing.T) {
	rig := newFastRig(t)
	// The first packet: netstack forwards it (and resolves B).
	sent := icmpEcho(macA, macRA, ipA, ipB, 64, 7)
	rig.send(t, rig.a, sent)
	answerARP(t, rig.b, ipB, macB, macRB, netip.MustParseAddr("198.51.100.1"))
	slow := next(rig.b, 3*time.Second, isEcho(7))
	if slow == nil {
		t.Fatal("netstack did not forward the first packet")
	}
	if rig.r.FastPathStats().Forwarded.Load() != 0 {
		t.Fatal("the fast path forwarded a packet before its next hop was resolved")
	}
	rig.warm(t)
	// The same packet again, now on the fast path: byte for byte what
	// netstack sent.
	before := rig.r.FastPathStats().Forwarded.Load()
	rig.send(t, rig.a, sent)
	fast := next(rig.b, 3*time.Second, isEcho(7))
	if rig.r.FastPathStats().Forwarded.Load() != before+1 {
		t.Fatal("the repeated packet did not take the fast path")
	}
	if !bytes.Equal(fast, slow) {
		t.Fatalf("fast path and netstack differ:\nfast %x\nslow %x", fast, slow)
	}
	ip := header.IPv4(fast[header.EthernetMinimumSize:])
	if ip.TTL() != 63 || !ip.IsChecksumValid() || !bytes.Equal(fast[0:6], macB) || !bytes.Equal(fast[6:12], macRB) {
		t.Fatalf("forwarded: ttl %d checksum ok %v, %v -> %v", ip.TTL(), ip.IsChecksumValid(), net.HardwareAddr(fast[6:12]), net.HardwareAddr(fast[0:6]))
	}
}

func TestFastPathLeavesTheUnusualToNetstack(t *testing.T) {
	rig := newFastRig(t)
	rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipB, 64, 1))
	answerARP(t, rig.b, ipB, macB, macRB, netip.MustParseAddr("198.51.100.1"))
	rig.warm(t)

	withOptions := func(id uint16) []byte {
		f := icmpEcho(macA, macRA, ipA, ipB, 64, id)
		// Insert a 4-byte options field (NOP NOP NOP EOL) after the header.
		ip := append([]byte(nil), f[header.EthernetMinimumSize:]...)
		out := append(append(append([]byte(nil), f[:header.EthernetMinimumSize]...), ip[:20]...), 1, 1, 1, 0)
		out = append(out, ip[20:]...)
		h := header.IPv4(out[header.EthernetMinimumSize:])
		h[0] = 0x46
		h.SetTotalLength(uint16(len(out) - header.EthernetMinimumSize))
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		return out
	}
	badChecksum := func(id uint16) []byte {
		f := icmpEcho(macA, macRA, ipA, ipB, 64, id)
		f[header.EthernetMinimumSize+10] ^= 0xff
		return f
	}
	big := func(id uint16) []byte {
		payload := make([]byte, 1400)
		payload[0] = 8
		binary.BigEndian.PutUint16(payload[4:], id)
		return ipFrame(macA, macRA, ipA, ipB, 64, 1, payload)
	}
	for _, tc := range []struct {
		name      string
		frame     []byte
		id        uint16
		forwarded bool // netstack forwards it (so B sees it)
		setup     func()
	}{
		{"IP options", withOptions(21), 21, true, nil},
		{"bad header checksum", badChecksum(22), 22, false, nil},
		{"TTL 1", icmpEcho(macA, macRA, ipA, ipB, 1, 23), 23, false, nil},
		{"to the router", icmpEcho(macA, macRA, ipA, netip.MustParseAddr("198.51.100.1"), 64, 24), 24, false, nil},
		{"from a multicast source", icmpEcho(macA, macRA, netip.MustParseAddr("224.0.0.5"), ipB, 64, 25), 25, false, nil},
		{"larger than the egress MTU", big(26), 26, false, func() {
			l, _ := rig.r.Link("b")
			l.EP.SetMTU(1280)
		}},
	} {
		if tc.setup != nil {
			tc.setup()
		}
		before := rig.r.FastPathStats().Forwarded.Load()
		rig.send(t, rig.a, tc.frame)
		got := next(rig.b, 300*time.Millisecond, isEcho(tc.id))
		if n := rig.r.FastPathStats().Forwarded.Load(); n != before {
			t.Errorf("%s: the fast path took it", tc.name)
		}
		if tc.forwarded && got == nil {
			t.Errorf("%s: netstack did not forward it", tc.name)
		}
	}
}

func TestFastPathFollowsRouteChanges(t *testing.T) {
	rig := newFastRig(t)
	rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipB, 64, 1))
	answerARP(t, rig.b, ipB, macB, macRB, netip.MustParseAddr("198.51.100.1"))
	rig.warm(t)

	// B is now reached through A2 on link a: the cached next hop is stale
	// from the moment the routes change.
	cfg := *rig.cfg
	cfg.Routes = []config.Route{{To: netip.PrefixFrom(ipB, 32), Via: ipA2, Interface: "a"}}
	if err := rig.r.Reconfigure(&cfg); err != nil {
		t.Fatalf("Reconfigure: %v", err)
	}
	before := rig.r.FastPathStats().Forwarded.Load()
	rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipB, 64, 31))
	if next(rig.b, 300*time.Millisecond, isEcho(31)) != nil {
		t.Fatal("after the route change a packet still went to B's old next hop")
	}
	if rig.r.FastPathStats().Forwarded.Load() != before {
		t.Fatal("the fast path used a snapshot of the old routes")
	}
	answerARP(t, rig.a, ipA2, macA2, macRA, ipRA)
	// Once the refresher has caught up, the fast path sends B's packets to A2.
	deadline := time.Now().Add(5 * time.Second)
	for id := uint16(40); ; id++ {
		before := rig.r.FastPathStats().Forwarded.Load()
		rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipB, 64, id))
		got := next(rig.a, time.Second, isEcho(id))
		if got != nil && bytes.Equal(got[0:6], macA2) && rig.r.FastPathStats().Forwarded.Load() > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fast path never took the new route")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFastPathRedirectCaseGoesToNetstack(t *testing.T) {
	rig := newFastRig(t)
	// A -> A2 hairpins on link a. With redirects off the fast path takes it.
	rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipA2, 64, 1))
	answerARP(t, rig.a, ipA2, macA2, macRA, ipRA)
	deadline := time.Now().Add(5 * time.Second)
	for id := uint16(100); rig.r.FastPathStats().Forwarded.Load() == 0; id++ {
		if time.Now().After(deadline) {
			t.Fatal("the fast path never took the hairpin")
		}
		rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipA2, 64, id))
		next(rig.a, time.Second, isEcho(id))
		time.Sleep(5 * time.Millisecond)
	}
	rig.r.sendRedirects.Store(true)
	before := rig.r.FastPathStats().Forwarded.Load()
	rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipA2, 64, 50))
	redirect := next(rig.a, 2*time.Second, isIPv4(func(ip header.IPv4) bool {
		return ip.Protocol() == 1 && ip.Payload()[0] == 5
	}))
	if redirect == nil {
		t.Fatal("no redirect with send_redirects on")
	}
	if rig.r.FastPathStats().Forwarded.Load() != before {
		t.Fatal("the fast path took a packet a redirect is due for")
	}
}

// drainFile reads and discards what arrives on f until the test ends.
func drainFile(tb testing.TB, f *os.File) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, tap.MaxFrame)
		for {
			f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := f.Read(buf); err != nil {
				select {
				case <-done:
					return
				default:
				}
			}
		}
	}()
	tb.Cleanup(func() { close(done); wg.Wait() })
}

func TestFastPathAllocatesNothing(t *testing.T) {
	rig := newFastRig(t)
	rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipB, 64, 1))
	answerARP(t, rig.b, ipB, macB, macRB, netip.MustParseAddr("198.51.100.1"))
	rig.warm(t)
	drainFile(t, rig.b)
	la, _ := rig.r.Link("a")
	frame := icmpEcho(macA, macRA, ipA, ipB, 64, 9)
	work := make([]byte, len(frame))
	before := rig.r.FastPathStats().Forwarded.Load()
	allocs := testing.AllocsPerRun(1000, func() {
		copy(work, frame)
		if rig.r.fast.forward(la, work) != stage.Consumed {
			t.Fatal("the fast path declined a warm destination")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per forwarded packet, want 0", allocs)
	}
	if rig.r.FastPathStats().Forwarded.Load() < before+1000 {
		t.Fatal("not every packet was forwarded")
	}
}

func BenchmarkFastPathForward(b *testing.B) {
	rig := newFastRig(b)
	rig.send(b, rig.a, icmpEcho(macA, macRA, ipA, ipB, 64, 1))
	answerARP(b, rig.b, ipB, macB, macRB, netip.MustParseAddr("198.51.100.1"))
	rig.warm(b)
	drainFile(b, rig.b)
	la, _ := rig.r.Link("a")
	frame := icmpEcho(macA, macRA, ipA, ipB, 64, 9)
	work := make([]byte, len(frame))
	b.ReportAllocs()
	for b.Loop() {
		copy(work, frame)
		rig.r.fast.forward(la, work)
	}
}

func TestFastPathRemembersDestinationsWithoutRoute(t *testing.T) {
	rig := newFastRig(t)
	dst := ipNone.As4() // no route: netstack answers net unreachable
	for id := uint16(1); id <= 3; id++ {
		rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipNone, 64, id))
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		tb := rig.r.fast.table.Load()
		if _, ok := tb.known[dst]; ok {
			if tb.hops[dst] != nil {
				t.Fatal("a destination without a route was cached")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the refresher never noted the destination without a route")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Further misses for it are counted but noted for nothing: the miss
	// ring (whose every entry comes with a wake-up of the refresher) is
	// not written. The ring's position only moves on the packet path, so
	// unlike the wake-up channel, which the refresher drains concurrently,
	// it shows a note that was made whenever it was made.
	deadline = time.Now().Add(3 * time.Second)
	for rig.r.FastPathStats().Missed.Load() < 3 { // the first three packets all seen
		if time.Now().After(deadline) {
			t.Fatal("the first misses were not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := rig.r.FastPathStats().Missed.Load()
	pos := rig.r.fast.missPos.Load()
	rig.send(t, rig.a, icmpEcho(macA, macRA, ipA, ipNone, 64, 4))
	deadline = time.Now().Add(3 * time.Second)
	for rig.r.FastPathStats().Missed.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("the miss was not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := rig.r.fast.missPos.Load(); got != pos {
		t.Fatalf("a miss for a known destination was noted for the refresher (ring position %d -> %d), which wakes it", pos, got)
	}
}

// BenchmarkChainFastPath: one transit frame through the whole chain of a
// link (L2 policy, TTL guard, refragment, fast path), as the link endpoint
// hands it over: the per-frame cost of the router's own stages.
func BenchmarkChainFastPath(b *testing.B) {
	rig := newFastRig(b)
	rig.send(b, rig.a, icmpEcho(macA, macRA, ipA, ipB, 64, 1))
	answerARP(b, rig.b, ipB, macB, macRB, netip.MustParseAddr("198.51.100.1"))
	rig.warm(b)
	drainFile(b, rig.b)
	la, _ := rig.r.Link("a")
	c := &linkChain{pos: rig.r.chain, own: rig.r.ownStages(la)}
	frame := icmpEcho(macA, macRA, ipA, ipB, 64, 9)
	work := make([]byte, len(frame))
	b.ReportAllocs()
	for b.Loop() {
		copy(work, frame)
		if !c.Inbound(la.EP, work) {
			b.Fatal("not forwarded")
		}
	}
}

// BenchmarkChainPass: one frame for the router itself through the whole
// chain of a link, every stage passing it on: the cost of the walk and of
// each stage's checks, without a write.
func BenchmarkChainPass(b *testing.B) {
	rig := newFastRig(b)
	la, _ := rig.r.Link("a")
	c := &linkChain{pos: rig.r.chain, own: rig.r.ownStages(la)}
	frame := icmpEcho(macA, macRA, ipA, ipRA, 64, 9)
	b.ReportAllocs()
	for b.Loop() {
		if c.Inbound(la.EP, frame) {
			b.Fatal("taken")
		}
	}
}
