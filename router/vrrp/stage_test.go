package vrrp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/test/kit"
)

// The stage over a real endpoint (a SOCK_SEQPACKET pair standing in for the
// TAP): what it answers and sends is read back from the peer end and decoded
// here by hand.

var (
	ownMAC  = [6]byte{2, 0, 0, 0, 0, 0xa}
	hostMAC = [6]byte{2, 0, 0, 0, 0, 0x99}
	own4    = netip.MustParseAddr("198.51.100.2")
	own6    = netip.MustParseAddr("fe80::2")
	vip4    = netip.MustParseAddr("198.51.100.1")
	vip6    = netip.MustParseAddr("2001:db8::1")
	host4   = netip.MustParseAddr("198.51.100.9")
	host6   = netip.MustParseAddr("fe80::9")
)

type wire struct {
	ep     *tap.Endpoint
	peer   *os.File
	mu     sync.Mutex
	frames [][]byte
}

func newWire(t testing.TB) *wire {
	local, peer := kit.Pair(t, "up0")
	w := &wire{peer: peer}
	var err error
	w.ep, err = tap.NewEndpoint(tap.EndpointConfig{Name: "up0", Files: []*os.File{local}, MAC: net.HardwareAddr(ownMAC[:]), MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			w.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := w.peer.Read(buf)
			if err != nil {
				return
			}
			w.mu.Lock()
			w.frames = append(w.frames, append([]byte(nil), buf[:n]...))
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { w.ep.Close(); w.peer.Close(); <-done })
	return w
}

// take returns and forgets the frames written so far that match f.
func (w *wire) take(f func([]byte) bool) [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out, keep [][]byte
	for _, b := range w.frames {
		if f(b) {
			out = append(out, b)
		} else {
			keep = append(keep, b)
		}
	}
	w.frames = keep
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func newTestSet(t testing.TB, w *wire) *Set {
	t.Helper()
	s, err := New([]config.VRRP{
		{Interface: "up0", VRID: 51, Priority: 150, Interval: 100 * time.Millisecond, Preempt: true, Addresses: []netip.Addr{vip4}, Checksum: config.ChecksumRFC5798},
		{Interface: "up0", VRID: 51, Priority: 150, Interval: 100 * time.Millisecond, Preempt: true, Addresses: []netip.Addr{vip6}, Checksum: config.ChecksumRFC5798},
	}, Deps{Link: func(string) (Link, bool) {
		return Link{EP: w.ep, V4: own4, V6: own6, Broadcasts: []netip.Addr{netip.MustParseAddr("198.51.100.255")}}, true
	}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func frameHdr(dst, src [6]byte, typ uint16) []byte { return kit.Ethernet(dst[:], src[:], typ, nil) }

// ipv4Frame builds an Ethernet frame with an IPv4 header (checksummed with
// the kit's reference sum) around payload.
func ipv4Frame(dstMAC [6]byte, src, dst netip.Addr, proto, ttl uint8, payload []byte) []byte {
	return kit.Ethernet(dstMAC[:], hostMAC[:], kit.TypeIPv4, kit.IPv4(src, dst, ttl, proto, 0, payload))
}

func arpRequest(spa, tpa netip.Addr) []byte {
	return kit.Ethernet(kit.Broadcast, hostMAC[:], kit.TypeARP, kit.ARP(kit.ARPRequest, hostMAC[:], spa, nil, tpa))
}

func advert4(src netip.Addr, prio uint8, ttl uint8) []byte {
	msg, _ := Append(nil, &Message{VRID: 51, Priority: prio, Interval: 10, Addrs: []netip.Addr{vip4}}, src, Group4())
	return ipv4Frame([6]byte{1, 0, 0x5e, 0, 0, 0x12}, src, Group4(), Protocol, ttl, msg)
}

func isARP(b []byte) bool { return binary.BigEndian.Uint16(b[12:14]) == 0x0806 }
func isAdvert4(b []byte) bool {
	return binary.BigEndian.Uint16(b[12:14]) == 0x0800 && b[14+9] == Protocol
}

func TestStage(t *testing.T) {
	w := newWire(t)
	s := newTestSet(t, w)
	vmac := VirtualMAC(51, false)
	vmac6 := VirtualMAC(51, true)
	if vmac != [6]byte{0, 0, 0x5e, 0, 1, 51} || vmac6 != [6]byte{0, 0, 0x5e, 0, 2, 51} {
		t.Fatalf("virtual MACs %x %x", vmac, vmac6)
	}
	// Before it runs (Initialize) and as backup: ARP for the VIP is taken
	// and not answered.
	if v := s.Inbound(w.ep, arpRequest(host4, vip4)); v != stage.Drop(stage.Backup) {
		t.Errorf("ARP request for the VIP while not master: verdict %v, want dropped as backup", v)
	}
	if s.Inbound(w.ep, arpRequest(host4, own4)).Taken() {
		t.Errorf("ARP request for the link's own address taken")
	}
	s.Start()
	defer s.Close()
	// Nobody else: master after 3 x 100ms + skew; advertisement and three
	// gratuitous ARPs, all from the virtual MAC.
	waitFor(t, "master", func() bool { return s.Master("up0") })
	waitFor(t, "three gratuitous ARPs", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		n := 0
		for _, b := range w.frames {
			if isARP(b) {
				n++
			}
		}
		return n >= 3
	})
	for _, g := range w.take(isARP) {
		if [6]byte(g[6:12]) != vmac || [6]byte(g[0:6]) != [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} ||
			binary.BigEndian.Uint16(g[20:22]) != 1 || [6]byte(g[22:28]) != vmac || netip.AddrFrom4([4]byte(g[28:32])) != vip4 || netip.AddrFrom4([4]byte(g[38:42])) != vip4 {
			t.Errorf("gratuitous ARP % x", g)
		}
	}
	ads := w.take(isAdvert4)
	if len(ads) == 0 {
		t.Fatal("no IPv4 advertisement")
	}
	for _, a := range ads {
		ip := a[14:]
		if [6]byte(a[0:6]) != [6]byte{1, 0, 0x5e, 0, 0, 0x12} || [6]byte(a[6:12]) != vmac || ip[8] != 255 ||
			netip.AddrFrom4([4]byte(ip[12:16])) != own4 || netip.AddrFrom4([4]byte(ip[16:20])) != Group4() || refSum(ip[:20]) != 0xffff {
			t.Fatalf("advertisement frame % x", a)
		}
		msg := ip[20:]
		if refSum(refPseudo(own4, Group4(), len(msg)), msg) != 0xffff || msg[0] != 0x31 || msg[1] != 51 || msg[2] != 150 || msg[3] != 1 ||
			binary.BigEndian.Uint16(msg[4:6]) != 10 || netip.AddrFrom4([4]byte(msg[8:12])) != vip4 {
			t.Fatalf("advertisement % x", msg)
		}
	}
	if m := w.ep.AcceptMACs(); len(m) != 2 {
		t.Errorf("the endpoint takes in %x; want both virtual MACs", m)
	}
	// Master: ARP for the VIP answered with the virtual MAC.
	w.take(func([]byte) bool { return true })
	if v := s.Inbound(w.ep, arpRequest(host4, vip4)); v != stage.Consumed {
		t.Errorf("ARP request for the VIP while master: verdict %v, want consumed (answered)", v)
	}
	waitFor(t, "ARP reply", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, b := range w.frames {
			if isARP(b) && binary.BigEndian.Uint16(b[20:22]) == 2 {
				return true
			}
		}
		return false
	})
	for _, r := range w.take(func(b []byte) bool { return isARP(b) && binary.BigEndian.Uint16(b[20:22]) == 2 }) {
		if [6]byte(r[0:6]) != hostMAC || [6]byte(r[22:28]) != vmac || netip.AddrFrom4([4]byte(r[28:32])) != vip4 ||
			[6]byte(r[32:38]) != hostMAC || netip.AddrFrom4([4]byte(r[38:42])) != host4 {
			t.Errorf("ARP reply % x", r)
		}
	}
	// Neighbor solicitation for the IPv6 VIP: a solicited NA with the IPv6
	// virtual MAC.
	s.Inbound(w.ep, neighborSolicit(host6, vip6))
	waitFor(t, "NA", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, b := range w.frames {
			if isNA(b) {
				return true
			}
		}
		return false
	})
	for _, na := range w.take(isNA) {
		ip := na[14:]
		icmp := ip[40:]
		if [6]byte(na[6:12]) != vmac6 || ip[7] != 255 || netip.AddrFrom16([16]byte(ip[24:40])) != host6 ||
			icmp[4]&0x40 == 0 || netip.AddrFrom16([16]byte(icmp[8:24])) != vip6 || icmp[24] != 2 || [6]byte(icmp[26:32]) != vmac6 ||
			refSum(refPseudo6(own6, host6, 58, len(icmp)), icmp) != 0xffff {
			t.Errorf("neighbor advertisement % x", na)
		}
	}
	// Dropped and counted: TTL 254, a bad checksum, an unknown VRID.
	bad := advert4(netip.MustParseAddr("198.51.100.3"), 200, 254)
	s.Inbound(w.ep, bad)
	if s.stats.BadTTL.Load() != 1 {
		t.Errorf("TTL 254 not counted")
	}
	bad = advert4(netip.MustParseAddr("198.51.100.3"), 200, 255)
	bad[len(bad)-1] ^= 1
	s.Inbound(w.ep, bad)
	if s.stats.BadChecksum.Load() != 1 {
		t.Errorf("bad checksum not counted")
	}
	// A unicast packet in a link-layer broadcast is not forwarded; a
	// subnet broadcast is.
	bc := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if v := s.Inbound(w.ep, ipv4Frame(bc, host4, netip.MustParseAddr("203.0.113.10"), 6, 64, make([]byte, 20))); v != stage.Drop(stage.UnicastInGroupFrame) {
		t.Errorf("unicast in a broadcast: verdict %v", v)
	}
	if s.Inbound(w.ep, ipv4Frame(bc, host4, netip.MustParseAddr("198.51.100.255"), 17, 64, make([]byte, 8))).Taken() {
		t.Errorf("subnet broadcast dropped")
	}
	// A higher priority takes over: backup, the virtual MACs released.
	s.Inbound(w.ep, advert4(netip.MustParseAddr("198.51.100.3"), 200, 255))
	waitFor(t, "backup", func() bool { return s.Status()[0].State == "backup" })
	st := s.Status()[0]
	if st.Master != "198.51.100.3" || st.MasterPriority != 200 || len(st.Transitions) != 3 {
		t.Errorf("status %+v", st)
	}
	if m := w.ep.AcceptMACs(); len(m) != 1 || m[0] != vmac6 {
		t.Errorf("after the IPv4 takeover the endpoint takes in %x; want only the IPv6 virtual MAC", m)
	}
	w.take(func([]byte) bool { return true })
	s.Inbound(w.ep, arpRequest(host4, vip4))
	time.Sleep(50 * time.Millisecond)
	if r := w.take(isARP); len(r) != 0 {
		t.Errorf("a backup answered ARP for the VIP: % x", r[0])
	}
}

func neighborSolicit(src, target netip.Addr) []byte {
	b := frameHdr([6]byte{0x33, 0x33, 0xff, 0, 0, 1}, hostMAC, 0x86dd)
	icmp := []byte{135, 0, 0, 0, 0, 0, 0, 0}
	icmp = append(icmp, target.AsSlice()...)
	icmp = append(icmp, 1, 1)
	icmp = append(icmp, hostMAC[:]...)
	dst := netip.MustParseAddr("ff02::1:ff00:1")
	binary.BigEndian.PutUint16(icmp[2:], ^refSum(refPseudo6(src, dst, 58, len(icmp)), icmp))
	ip := []byte{0x60, 0, 0, 0, 0, 0, 58, 255}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
	ip = append(ip, src.AsSlice()...)
	ip = append(ip, dst.AsSlice()...)
	return append(append(b, ip...), icmp...)
}

func refPseudo6(src, dst netip.Addr, proto byte, n int) []byte {
	b := append(src.AsSlice(), dst.AsSlice()...)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return append(b, 0, 0, 0, proto)
}

func isNA(b []byte) bool {
	return binary.BigEndian.Uint16(b[12:14]) == 0x86dd && b[14+6] == 58 && b[14+40] == 136
}

// TestStageShutdownAndAllocs: frames the stage passes cost no allocation;
// a master that stops sends priority 0.
func TestStageShutdownAndAllocs(t *testing.T) {
	w := newWire(t)
	s := newTestSet(t, w)
	plain := ipv4Frame(ownMAC, host4, netip.MustParseAddr("203.0.113.10"), 6, 64, make([]byte, 40))
	notVIP := arpRequest(host4, own4)
	if n := testing.AllocsPerRun(200, func() {
		s.Inbound(w.ep, plain)
		s.Inbound(w.ep, notVIP)
	}); n != 0 {
		t.Errorf("the stage allocates %v times on frames it passes", n)
	}
	s.Start()
	waitFor(t, "master", func() bool { return s.Master("up0") })
	w.take(func([]byte) bool { return true })
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	zero := 0
	for _, a := range w.take(isAdvert4) {
		if a[14+20+2] == 0 {
			zero++
		}
	}
	if zero != 1 {
		t.Errorf("%d priority-0 advertisements on shutdown, want 1", zero)
	}
	if m := w.ep.AcceptMACs(); len(m) != 0 {
		t.Errorf("after Close the endpoint still takes in %x", m)
	}
}

// TestStageChecksumForms: all three checksum forms are taken and counted;
// anything else is dropped as a bad checksum.
func TestStageChecksumForms(t *testing.T) {
	w := newWire(t)
	s := newTestSet(t, w)
	peer := netip.MustParseAddr("198.51.100.3")
	unicast := func(pseudoDst netip.Addr, style Checksum) []byte {
		msg, _ := Append(nil, &Message{VRID: 51, Priority: 100, Interval: 10, Addrs: []netip.Addr{vip4}, Checksum: style}, peer, pseudoDst)
		return ipv4Frame(ownMAC, peer, own4, Protocol, 255, msg)
	}
	in := s.insts[0]
	s.Inbound(w.ep, unicast(own4, PseudoHeader))     // RFC 5798 with the unicast destination
	s.Inbound(w.ep, unicast(own4, MessageOnly))      // RFC 9568's IPv4 variant
	s.Inbound(w.ep, unicast(Group4(), PseudoHeader)) // older keepalived's unicast form
	if n := in.ctr.AdvertsIn.Load(); n != 3 {
		t.Errorf("%d of 3 advertisements taken", n)
	}
	if in.ctr.ChecksumOld.Load() != 1 || in.ctr.ChecksumOldUnicast.Load() != 1 {
		t.Errorf("message-only %d, old unicast %d; want 1 and 1", in.ctr.ChecksumOld.Load(), in.ctr.ChecksumOldUnicast.Load())
	}
	bad := unicast(netip.MustParseAddr("198.51.100.77"), PseudoHeader)
	s.Inbound(w.ep, bad)
	if s.stats.BadChecksum.Load() != 1 || in.ctr.AdvertsIn.Load() != 3 {
		t.Errorf("a pseudo-header naming another address: bad checksum %d, taken %d", s.stats.BadChecksum.Load(), in.ctr.AdvertsIn.Load())
	}
}

// FuzzStage feeds arbitrary frames to a master's stage. Invariants: no
// panic; only IPv4, ARP and IPv6 frames are ever taken; an IPv4 packet
// that is not VRRP and not in a link-layer broadcast is taken only when
// addressed to a virtual address; at most one answer per frame, and only
// for an ARP request or neighbor solicitation naming a virtual address.
func FuzzStage(f *testing.F) {
	f.Add(arpRequest(host4, vip4))
	f.Add(arpRequest(host4, own4))
	f.Add(neighborSolicit(host6, vip6))
	f.Add(advert4(netip.MustParseAddr("198.51.100.3"), 200, 255))
	f.Add(ipv4Frame(ownMAC, host4, vip4, 6, 64, make([]byte, 20)))
	f.Add(ipv4Frame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, host4, netip.MustParseAddr("203.0.113.10"), 17, 64, make([]byte, 8)))
	w := newWire(f)
	s := newTestSet(f, w)
	for _, in := range s.insts {
		in.master.Store(true)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		before := s.insts[0].ctr.ARPReplies.Load() + s.insts[1].ctr.ARPReplies.Load()
		taken := s.Inbound(w.ep, frame).Taken()
		answers := s.insts[0].ctr.ARPReplies.Load() + s.insts[1].ctr.ARPReplies.Load() - before
		if len(frame) < hdr.EthLen {
			if taken || answers != 0 {
				t.Fatalf("runt taken")
			}
			return
		}
		typ := binary.BigEndian.Uint16(frame[12:14])
		if taken && typ != 0x0800 && typ != 0x0806 && typ != 0x86dd {
			t.Fatalf("ethertype %#x taken", typ)
		}
		if taken && typ == 0x0800 && len(frame) >= hdr.EthLen+hdr.IPv4Min && frame[hdr.EthLen+9] != Protocol && !hdr.IsBroadcast(frame) {
			if dst := netip.AddrFrom4([4]byte(frame[hdr.EthLen+16 : hdr.EthLen+20])); dst != vip4 {
				t.Fatalf("IPv4 packet to %s taken", dst)
			}
		}
		if answers > 1 {
			t.Fatalf("%d answers to one frame", answers)
		}
		if answers == 1 {
			switch typ {
			case 0x0806:
				if netip.AddrFrom4([4]byte(frame[hdr.EthLen+24:hdr.EthLen+28])) != vip4 {
					t.Fatalf("ARP answered for another address")
				}
			case 0x86dd:
				if frame[hdr.EthLen+40] != 135 || netip.AddrFrom16([16]byte(frame[hdr.EthLen+48:hdr.EthLen+64])) != vip6 {
					t.Fatalf("NDP answered for something else")
				}
			default:
				t.Fatalf("answered ethertype %#x", typ)
			}
		}
	})
}

// TestSyncGroup: two virtual routers in one group change state together,
// whichever of them has the reason to.
func TestSyncGroup(t *testing.T) {
	w := newWire(t)
	vipB := netip.MustParseAddr("198.51.100.5")
	s, err := New([]config.VRRP{
		{Interface: "up0", VRID: 51, Priority: 150, Interval: 100 * time.Millisecond, Preempt: true, Addresses: []netip.Addr{vip4}, Group: "g"},
		{Interface: "up0", VRID: 52, Priority: 150, Interval: 100 * time.Millisecond, Preempt: true, Addresses: []netip.Addr{vipB}, Group: "g"},
	}, Deps{Link: func(string) (Link, bool) { return Link{EP: w.ep, V4: own4}, true }})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	states := func() (string, string) { st := s.Status(); return st[0].State, st[1].State }
	waitFor(t, "both master", func() bool { a, b := states(); return a == "master" && b == "master" })
	peer := netip.MustParseAddr("198.51.100.3")
	s.Inbound(w.ep, advert4(peer, 200, 255)) // VRID 51 only
	waitFor(t, "both backup", func() bool { a, b := states(); return a == "backup" && b == "backup" })
	st := s.Status()[1]
	last := st.Transitions[len(st.Transitions)-1]
	if last.To != "backup" || !strings.Contains(last.Reason, `sync group "g"`) {
		t.Errorf("VRID 52's last transition: %+v", last)
	}
	// Priority 0 for VRID 52 alone: it takes over after its skew time and
	// takes 51 along.
	msg, _ := Append(nil, &Message{VRID: 52, Priority: 0, Interval: 10, Addrs: []netip.Addr{vipB}}, peer, Group4())
	s.Inbound(w.ep, ipv4Frame([6]byte{1, 0, 0x5e, 0, 0, 0x12}, peer, Group4(), Protocol, 255, msg))
	waitFor(t, "both master again", func() bool { a, b := states(); return a == "master" && b == "master" })
	if m := w.ep.AcceptMACs(); len(m) != 2 {
		t.Errorf("accepted MACs %x", m)
	}
}

// BenchmarkStage is the stage's cost on the frames it passes (the forwarded
// traffic of a link with virtual routers), next to a baseline hook that
// only reads the EtherType, measured in the same run:
// go test ./router/vrrp -bench Stage -run XXX
func BenchmarkStage(b *testing.B) {
	w := newWire(b)
	s := newTestSet(b, w)
	for _, in := range s.insts {
		in.master.Store(true)
	}
	plain := ipv4Frame(ownMAC, host4, netip.MustParseAddr("203.0.113.10"), 6, 64, make([]byte, 1400))
	var sink uint16
	b.Run("baseline", func(b *testing.B) {
		for range b.N {
			sink += binary.BigEndian.Uint16(plain[12:14])
		}
	})
	b.Run("vrrp", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if s.Inbound(w.ep, plain).Taken() {
				b.Fatal("taken")
			}
		}
	})
	_ = sink
}
