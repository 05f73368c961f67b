package router

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/test/kit"
)

// The tier-2 tests: the real router over real file descriptors (SOCK_SEQPACKET
// socket pairs standing in for TAP queues), no root needed.
//
//	host A 192.0.2.10 ── a ┌ router ┐ b ── host B 198.51.100.10
//	                        192.0.2.1  198.51.100.1

var (
	macA   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	macRA  = net.HardwareAddr{0x02, 0, 0, 0, 1, 0x0a}
	macRB  = net.HardwareAddr{0x02, 0, 0, 0, 1, 0x0b}
	ipA    = netip.MustParseAddr("192.0.2.10")
	ipB    = netip.MustParseAddr("198.51.100.10")
	ipRA   = netip.MustParseAddr("192.0.2.1")
	ipNone = netip.MustParseAddr("203.0.113.5")
)

// wire is the test's end of one link.
type wire struct {
	t *testing.T
	f *os.File
}

func socketPair(t *testing.T, name string) (*os.File, *wire) {
	t.Helper()
	local, peer := kit.Pair(t, name)
	return local, &wire{t: t, f: peer}
}

func (w *wire) send(frame []byte) {
	w.t.Helper()
	if _, err := w.f.Write(frame); err != nil {
		w.t.Fatalf("write frame: %v", err)
	}
}

// next returns the next frame for which keep is true, or nil after timeout.
func (w *wire) next(timeout time.Duration, keep func([]byte) bool) []byte {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, tap.MaxFrame)
	for {
		w.f.SetReadDeadline(deadline)
		n, err := w.f.Read(buf)
		if err != nil {
			return nil
		}
		if keep(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

func newTestRouter(t *testing.T) (*Router, *wire, *wire) {
	t.Helper()
	cfg := &config.Config{
		File: "test",
		Interfaces: []config.Interface{
			{Name: "a", Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}, MAC: config.MAC(macRA), MTU: 1500, Queues: 1},
			{Name: "b", Addresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}, MAC: config.MAC(macRB), MTU: 1500, Queues: 1},
		},
	}
	eps := map[string]*tap.Endpoint{}
	wires := map[string]*wire{}
	for _, ic := range cfg.Interfaces {
		f, w := socketPair(t, ic.Name)
		ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: ic.Name, Files: []*os.File{f}, MAC: ic.MAC.HardwareAddr(), MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		eps[ic.Name] = ep
		wires[ic.Name] = w
	}
	r, err := New(cfg, Options{Endpoints: eps})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r, wires["a"], wires["b"]
}

// icmpEcho builds an Ethernet frame with an ICMP echo request.
func icmpEcho(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, ttl uint8, id uint16) []byte {
	return ipFrame(srcMAC, dstMAC, src, dst, ttl, 1, kit.ICMPEcho(8, id, 1, []byte("ghostrouter-test")))
}

func ipFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, ttl, proto uint8, payload []byte) []byte {
	return kit.Ethernet(dstMAC, srcMAC, kit.TypeIPv4, kit.IPv4(src, dst, ttl, proto, 0x1234, payload))
}

func arpReply(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr) []byte {
	return kit.Ethernet(dstMAC, srcMAC, kit.TypeARP, kit.ARP(kit.ARPReply, srcMAC, src, dstMAC, dst))
}

func isARPRequestFor(ip netip.Addr) func([]byte) bool {
	return func(f []byte) bool {
		if len(f) < header.EthernetMinimumSize+header.ARPSize || f[12] != 0x08 || f[13] != 0x06 {
			return false
		}
		a := header.ARP(f[header.EthernetMinimumSize:])
		want := ip.As4()
		return a.Op() == header.ARPRequest && [4]byte(a.ProtocolAddressTarget()) == want
	}
}

func isIPv4(pred func(ip header.IPv4) bool) func([]byte) bool {
	return func(f []byte) bool {
		if len(f) < header.EthernetMinimumSize+header.IPv4MinimumSize || f[12] != 0x08 || f[13] != 0x00 {
			return false
		}
		return pred(header.IPv4(f[header.EthernetMinimumSize:]))
	}
}

func addr(a []byte) netip.Addr { return netip.AddrFrom4([4]byte(a)) }

// resolveB answers the router's ARP request for host B.
func resolveB(t *testing.T, b *wire) {
	t.Helper()
	if req := b.next(3*time.Second, isARPRequestFor(ipB)); req == nil {
		t.Fatal("router sent no ARP request for host B")
	}
	b.send(arpReply(macB, macRB, ipB, netip.MustParseAddr("198.51.100.1")))
}

func TestForwardDecrementsTTLOnly(t *testing.T) {
	_, a, b := newTestRouter(t)
	a.send(icmpEcho(macA, macRA, ipA, ipB, 64, 1))
	resolveB(t, b)
	got := b.next(3*time.Second, isIPv4(func(ip header.IPv4) bool { return ip.Protocol() == 1 }))
	if got == nil {
		t.Fatal("echo request was not forwarded to host B")
	}
	ip := header.IPv4(got[header.EthernetMinimumSize:])
	if ip.TTL() != 63 || addr(ip.SourceAddressSlice()) != ipA || addr(ip.DestinationAddressSlice()) != ipB {
		t.Fatalf("forwarded packet: ttl %d src %s dst %s; want ttl 63 src %s dst %s",
			ip.TTL(), addr(ip.SourceAddressSlice()), addr(ip.DestinationAddressSlice()), ipA, ipB)
	}
	if !ip.IsChecksumValid() {
		t.Fatal("forwarded packet has a bad header checksum")
	}
	if net.HardwareAddr(got[0:6]).String() != macB.String() || net.HardwareAddr(got[6:12]).String() != macRB.String() {
		t.Fatalf("forwarded frame %s -> %s, want %s -> %s", net.HardwareAddr(got[6:12]), net.HardwareAddr(got[0:6]), macRB, macB)
	}
}

func TestTTLOneDrawsTimeExceeded(t *testing.T) {
	r, a, b := newTestRouter(t)
	sent := icmpEcho(macA, macRA, ipA, ipB, 1, 2)
	a.send(sent)
	got := a.next(3*time.Second, isIPv4(func(ip header.IPv4) bool {
		return ip.Protocol() == 1 && ip.Payload()[0] == 11
	}))
	if got == nil {
		t.Fatal("no ICMP time exceeded for a TTL 1 packet")
	}
	ip := header.IPv4(got[header.EthernetMinimumSize:])
	if addr(ip.SourceAddressSlice()) != ipRA || addr(ip.DestinationAddressSlice()) != ipA {
		t.Fatalf("time exceeded from %s to %s, want %s to %s", addr(ip.SourceAddressSlice()), addr(ip.DestinationAddressSlice()), ipRA, ipA)
	}
	ic := ip.Payload()
	if checksum.Checksum(ic, 0) != 0xffff {
		t.Fatal("time exceeded has a bad ICMP checksum")
	}
	quoted := header.IPv4(ic[8:])
	if quoted.TTL() != 1 || addr(quoted.DestinationAddressSlice()) != ipB {
		t.Fatalf("quoted header ttl %d dst %s, want the original (ttl 1, dst %s)", quoted.TTL(), addr(quoted.DestinationAddressSlice()), ipB)
	}
	if f := b.next(300*time.Millisecond, isIPv4(func(header.IPv4) bool { return true })); f != nil {
		t.Fatal("a TTL 1 packet crossed the router")
	}
	if n := r.Stats().TTLExceeded.Load(); n != 1 {
		t.Fatalf("TTLExceeded = %d, want 1", n)
	}
	if got := r.StageCounts(); len(got) != 1 || got[0] != (stage.Count{Stage: "ttl-guard", Kind: "answered", Reason: "ttl_exceeded", N: 1}) {
		t.Fatalf("verdict counters %v, want the TTL guard's one answer", got)
	}
}

func TestNoRouteDrawsUnreachable(t *testing.T) {
	_, a, _ := newTestRouter(t)
	a.send(icmpEcho(macA, macRA, ipA, ipNone, 64, 3))
	if req := a.next(3*time.Second, isARPRequestFor(ipA)); req != nil {
		a.send(arpReply(macA, macRA, ipA, ipRA))
	}
	got := a.next(3*time.Second, isIPv4(func(ip header.IPv4) bool {
		return ip.Protocol() == 1 && ip.Payload()[0] == 3
	}))
	if got == nil {
		t.Fatal("no ICMP destination unreachable for a packet without a route")
	}
}

func TestEchoReplyForOwnAddress(t *testing.T) {
	_, a, _ := newTestRouter(t)
	a.send(icmpEcho(macA, macRA, ipA, ipRA, 64, 4))
	if req := a.next(3*time.Second, isARPRequestFor(ipA)); req != nil {
		a.send(arpReply(macA, macRA, ipA, ipRA))
	}
	got := a.next(3*time.Second, isIPv4(func(ip header.IPv4) bool {
		return ip.Protocol() == 1 && ip.Payload()[0] == 0
	}))
	if got == nil {
		t.Fatal("no echo reply from the router's own address")
	}
}

func TestForeignUnicastDoesNotStopTheLink(t *testing.T) {
	r, a, b := newTestRouter(t)
	foreign := icmpEcho(macA, net.HardwareAddr{0x02, 9, 9, 9, 9, 9}, ipA, ipB, 64, 5)
	for i := 0; i < 3; i++ {
		a.send(foreign)
	}
	a.send([]byte{1, 2, 3}) // a runt
	a.send(icmpEcho(macA, macRA, ipA, ipB, 64, 6))
	resolveB(t, b)
	if got := b.next(3*time.Second, isIPv4(func(ip header.IPv4) bool { return ip.Protocol() == 1 })); got == nil {
		t.Fatal("traffic stopped after frames for a foreign MAC")
	}
	l, _ := r.Link("a")
	if n := l.EP.Stats().RxForeign.Load(); n != 3 {
		t.Fatalf("RxForeign = %d, want 3", n)
	}
	if n := l.EP.Stats().RxRunt.Load(); n != 1 {
		t.Fatalf("RxRunt = %d, want 1", n)
	}
}

func TestWriteErrorsAreCountedNotFatal(t *testing.T) {
	r, a, b := newTestRouter(t)
	b.f.Close() // the peer of link b is gone: every write on b fails
	for i := 0; i < 5; i++ {
		a.send(icmpEcho(macA, macRA, ipA, ipB, 64, uint16(10+i)))
	}
	l, _ := r.Link("b")
	deadline := time.Now().Add(3 * time.Second)
	for l.EP.Stats().TxErrors.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l.EP.Stats().TxErrors.Load() == 0 {
		t.Fatal("no write error counted on a link whose peer is closed")
	}
	// The router still answers on link a.
	a.send(icmpEcho(macA, macRA, ipA, ipRA, 64, 20))
	if req := a.next(time.Second, isARPRequestFor(ipA)); req != nil {
		a.send(arpReply(macA, macRA, ipA, ipRA))
	}
	if a.next(3*time.Second, isIPv4(func(ip header.IPv4) bool { return ip.Protocol() == 1 && ip.Payload()[0] == 0 })) == nil {
		t.Fatal("router stopped answering after write errors")
	}
}
