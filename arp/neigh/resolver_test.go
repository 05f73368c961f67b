package neigh

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/test/kit"
)

// The appliance's side of the tests' LAN.
var (
	selfMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	self4   = netip.MustParseAddr("10.0.0.1")
	self6   = netip.MustParseAddr("2001:db8:2::1")
	rogue   = [6]byte{0x02, 0xee, 0, 0, 0, 0x66}
)

// fakePort records the frames a resolver writes.
type fakePort struct {
	mu     sync.Mutex
	frames [][]byte
}

func (p *fakePort) WriteFrame(f []byte) error {
	p.mu.Lock()
	p.frames = append(p.frames, append([]byte(nil), f...))
	p.mu.Unlock()
	return nil
}

func (p *fakePort) MACBytes() [6]byte { return selfMAC }

// take returns and forgets the frames written so far.
func (p *fakePort) take() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.frames
	p.frames = nil
	return f
}

// fakeStatics records netstack's permanent entries.
type fakeStatics struct {
	mu sync.Mutex
	m  map[netip.Addr][6]byte
}

func (s *fakeStatics) SetStatic(_ string, a netip.Addr, mac [6]byte) error {
	s.mu.Lock()
	s.m[a] = mac
	s.mu.Unlock()
	return nil
}

func (s *fakeStatics) RemoveStatic(_ string, a netip.Addr) {
	s.mu.Lock()
	delete(s.m, a)
	s.mu.Unlock()
}

func testParams() Params {
	p := DefaultParams()
	return p
}

func newTest(t testing.TB, p Params, targets []Target) (*Resolver, *fakePort, *fakeStatics) {
	t.Helper()
	port := &fakePort{}
	st := &fakeStatics{m: map[netip.Addr][6]byte{}}
	r := New(Deps{
		Port: func(string) (Port, bool) { return port, true },
		Source: func(_ string, like netip.Addr) (netip.Addr, bool) {
			if like.Is4() {
				return self4, true
			}
			return self6, true
		},
		Statics: st,
	}, p)
	r.SetTargets(targets)
	return r, port, st
}

// serverAddr is the i-th test server's address and MAC.
func serverAddr(i int, v6 bool) (netip.Addr, [6]byte) {
	mac := [6]byte{0x02, 0xaa, 0, byte(v6Bit(v6)), byte(i >> 8), byte(i)}
	if v6 {
		var b [16]byte
		copy(b[:], netip.MustParseAddr("2001:db8:2::").AsSlice())
		binary.BigEndian.PutUint16(b[14:], uint16(0x1000+i))
		return netip.AddrFrom16(b), mac
	}
	return netip.AddrFrom4([4]byte{10, 0, byte(1 + i>>8), byte(i)}), mac
}

func v6Bit(v6 bool) int {
	if v6 {
		return 1
	}
	return 0
}

func targets(n int, v6 bool) []Target {
	out := make([]Target, n)
	for i := range out {
		a, _ := serverAddr(i, v6)
		out[i] = Target{Interface: "lan0", Addr: a, Role: fmt.Sprintf("server %d of cluster web", i)}
	}
	return out
}

// arpFrame builds an ARP frame from the host at (mac, addr): op 1 or 2,
// Ethernet destination dst, target (tha, tpa).
func arpFrame(op uint16, dst, mac [6]byte, addr netip.Addr, tha [6]byte, tpa netip.Addr) []byte {
	f := kit.Ethernet(dst[:], mac[:], kit.TypeARP, kit.ARP(op, mac[:], addr, tha[:], tpa))
	return append(f, make([]byte, 60-len(f))...) // padded to the Ethernet minimum
}

// arpAnswer is the ARP reply of the host (mac, addr) to the appliance.
func arpAnswer(mac [6]byte, addr netip.Addr) []byte {
	return arpFrame(2, selfMAC, mac, addr, selfMAC, self4)
}

// naFrame builds a neighbor advertisement for target stating lla (TLLA
// option), from ethSrc/src to ethDst/dst, with flags; the checksum is
// gVisor's, an implementation independent of the one under test.
func naFrame(ethDst, ethSrc [6]byte, src, dst, target netip.Addr, flags byte, lla [6]byte, withOpt bool) []byte {
	n := 24
	if withOpt {
		n += 8
	}
	f := make([]byte, 14+40+n)
	copy(f[0:6], ethDst[:])
	copy(f[6:12], ethSrc[:])
	f[12], f[13] = 0x86, 0xdd
	ip := header.IPv6(f[14:])
	ip.Encode(&header.IPv6Fields{PayloadLength: uint16(n), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 255,
		SrcAddr: tcpip.AddrFrom16(src.As16()), DstAddr: tcpip.AddrFrom16(dst.As16())})
	m := header.ICMPv6(f[14+40:])
	m.SetType(header.ICMPv6NeighborAdvert)
	m[4] = flags
	t := target.As16()
	copy(m[8:24], t[:])
	if withOpt {
		m[24], m[25] = 2, 1
		copy(m[26:32], lla[:])
	}
	m.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}))
	return f
}

// naReply is the solicited advertisement of (mac, addr) to the appliance.
func naReply(mac [6]byte, addr netip.Addr) []byte {
	return naFrame(selfMAC, mac, addr, self6, addr, 0x60, mac, true)
}

func replyFor(mac [6]byte, addr netip.Addr) []byte {
	if addr.Is4() {
		return arpAnswer(mac, addr)
	}
	return naReply(mac, addr)
}

// request is what the tests read back from a frame the resolver sent.
type request struct {
	to     [6]byte // Ethernet destination
	target netip.Addr
	v6     bool
}

// readRequest decodes a request frame with gVisor's header package (ARP) or
// by the RFC 4861 layout, checking the NDP checksum with gVisor's.
func readRequest(t testing.TB, f []byte) request {
	t.Helper()
	eth := header.Ethernet(f)
	q := request{to: [6]byte([]byte(eth.DestinationAddress()))}
	if [6]byte([]byte(eth.SourceAddress())) != selfMAC {
		t.Fatalf("request from %v, want the appliance's MAC", eth.SourceAddress())
	}
	switch eth.Type() {
	case header.ARPProtocolNumber:
		a := header.ARP(f[14:])
		if !a.IsValid() || a.Op() != header.ARPRequest || [6]byte(a.HardwareAddressSender()) != selfMAC ||
			netip.AddrFrom4([4]byte(a.ProtocolAddressSender())) != self4 {
			t.Fatalf("not an ARP request from the appliance: % x", f)
		}
		q.target = netip.AddrFrom4([4]byte(a.ProtocolAddressTarget()))
	case header.IPv6ProtocolNumber:
		ip := header.IPv6(f[14:])
		if ip.HopLimit() != 255 || ip.TransportProtocol() != header.ICMPv6ProtocolNumber || ip.SourceAddress() != tcpip.AddrFrom16(self6.As16()) {
			t.Fatalf("not an NDP frame from the appliance: % x", f)
		}
		m := header.ICMPv6(ip.Payload())
		want := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()})
		if m.Type() != header.ICMPv6NeighborSolicit || m.Checksum() != want {
			t.Fatalf("not a valid neighbor solicitation (checksum %#x, want %#x): % x", m.Checksum(), want, f)
		}
		ns := header.NDPNeighborSolicit(m.MessageBody())
		q.target, q.v6 = netip.AddrFrom16(ns.TargetAddress().As16()), true
		it, err := ns.Options().Iter(true)
		if err != nil {
			t.Fatalf("NS options: %v", err)
		}
		sl := false
		for {
			o, done, err := it.Next()
			if err != nil || done {
				break
			}
			if s, ok := o.(header.NDPSourceLinkLayerAddressOption); ok && [6]byte([]byte(s.EthernetAddress())) == selfMAC {
				sl = true
			}
		}
		if !sl {
			t.Fatalf("NS without the appliance's source link-layer option")
		}
		if q.to[0] == 0x33 {
			tb := q.target.As16()
			if want := [6]byte{0x33, 0x33, 0xff, tb[13], tb[14], tb[15]}; q.to != want {
				t.Fatalf("multicast NS to %x, want the solicited-node group's %x", q.to, want)
			}
			if ip.DestinationAddress() != tcpip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: tb[13], 14: tb[14], 15: tb[15]}) {
				t.Fatalf("multicast NS to %v, want the solicited-node group", ip.DestinationAddress())
			}
		}
	default:
		t.Fatalf("unexpected frame type %#x", eth.Type())
	}
	return q
}

func broadcastTo(q request) bool {
	return q.to == broadcastMAC || q.to[0] == 0x33
}

// answerAll answers every request in frames from the server's own MAC
// (as macOf says), as a host holding the address does; it returns how many.
func answerAll(t testing.TB, r *Resolver, frames [][]byte, now time.Time, macOf func(netip.Addr) ([6]byte, bool)) int {
	n := 0
	for _, f := range frames {
		q := readRequest(t, f)
		mac, ok := macOf(q.target)
		if !ok || !broadcastTo(q) && q.to != mac {
			continue // nobody holds it, or a unicast probe to a MAC that is gone
		}
		if !r.input("lan0", selfMAC, replyFor(mac, q.target), now).Taken() {
			t.Fatalf("the answer of %v was not consumed", q.target)
		}
		n++
	}
	return n
}

// A thousand and more servers on one link all resolve, paced by the token
// bucket: never more than Burst at once nor Rate per second after that, and
// every one is asked (the scan resumes where the bucket ran dry).
func TestResolveManyPaced(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			const n = 1500
			p := testParams()
			r, port, st := newTest(t, p, targets(n, v6))
			macs := map[netip.Addr][6]byte{}
			for i := range n {
				a, m := serverAddr(i, v6)
				macs[a] = m
			}
			macOf := func(a netip.Addr) ([6]byte, bool) { m, ok := macs[a]; return m, ok }
			t0 := time.Unix(1000, 0)
			now := t0
			r.step(now)
			if got := len(port.frames); got != p.Burst {
				t.Fatalf("first step sent %d requests, want the burst %d", got, p.Burst)
			}
			sent := 0
			var perSecond [4]int
			for now.Sub(t0) < 3*time.Second {
				fs := port.take()
				sent += len(fs)
				perSecond[now.Sub(t0)/time.Second] += len(fs)
				answerAll(t, r, fs, now, macOf)
				now = now.Add(10 * time.Millisecond)
				r.step(now)
			}
			r.publish()
			if perSecond[0] > int(p.Rate)+p.Burst {
				t.Errorf("%d requests in the first second, want at most rate+burst = %d", perSecond[0], int(p.Rate)+p.Burst)
			}
			for i := range n {
				a, m := serverAddr(i, v6)
				got, ok := r.LinkAddress("lan0", a)
				if !ok || got != m {
					t.Fatalf("server %d (%v) resolved to %x %v, want %x", i, a, got, ok, m)
				}
				if st.m[a] != m {
					t.Fatalf("netstack's permanent entry for %v is %x, want %x", a, st.m[a], m)
				}
			}
			if sent != n {
				t.Errorf("%d requests for %d servers each answered at once, want exactly one each", sent, n)
			}
			if r.stats.Learned.Load() != n {
				t.Errorf("learned %d, want %d", r.stats.Learned.Load(), n)
			}
			t.Logf("%d servers resolved; requests per second: %v", n, perSecond)
		})
	}
}

// Resolved MACs are re-verified by unicast probes to the known MAC, spread
// over [0.75, 1.25] x Refresh and never before; a server that answers keeps
// its MAC without a broadcast ever going out again.
func TestRefresh(t *testing.T) {
	const n = 1200
	p := testParams()
	r, port, _ := newTest(t, p, targets(n, false))
	macOf := func(a netip.Addr) ([6]byte, bool) {
		b := a.As4()
		return [6]byte{0x02, 0xaa, 0, 0, byte(int(b[2]) - 1), b[3]}, true
	}
	t0 := time.Unix(1000, 0)
	now := t0
	for now.Sub(t0) < 2*time.Second {
		r.step(now)
		answerAll(t, r, port.take(), now, macOf)
		now = now.Add(10 * time.Millisecond)
	}
	r.publish()
	resolvedBy := now
	probes := map[netip.Addr]time.Duration{}
	byTenth := map[int]int{}
	for now.Sub(t0) < 45*time.Second {
		r.step(now)
		fs := port.take()
		for _, f := range fs {
			q := readRequest(t, f)
			mac, _ := macOf(q.target)
			if q.to != mac {
				t.Fatalf("refresh of %v went to %x, want a unicast probe to its MAC %x", q.target, q.to, mac)
			}
			if _, dup := probes[q.target]; !dup {
				d := now.Sub(t0)
				probes[q.target] = d
				byTenth[int(d/(3*time.Second))]++
			}
		}
		answerAll(t, r, fs, now, macOf)
		now = now.Add(50 * time.Millisecond)
	}
	if len(probes) != n {
		t.Fatalf("%d of %d servers refreshed within 45 s", len(probes), n)
	}
	lo, hi := time.Duration(float64(p.Refresh)*0.75), time.Duration(float64(p.Refresh)*1.25)+resolvedBy.Sub(t0)+time.Second
	for a, d := range probes {
		if d < lo || d > hi {
			t.Errorf("%v refreshed %v after start, want within [%v, %v]", a, d, lo, hi)
		}
	}
	// Spread: no 3-second slice holds more than a third of them.
	for k, c := range byTenth {
		if c > n/3 {
			t.Errorf("%d refreshes in [%ds, %ds): not spread", c, 3*k, 3*k+3)
		}
	}
	for _, e := range r.Entries() {
		if e.Changes != 0 || e.MAC == "" {
			t.Errorf("entry %+v after answered refreshes, want its MAC kept", e)
		}
	}
	t.Logf("refreshes per 3 s: %v", byTenth)
}

// resolveOne returns a resolver with one server (v6 or not) resolved at t0.
func resolveOne(t testing.TB, v6 bool, p Params) (*Resolver, *fakePort, *fakeStatics, netip.Addr, [6]byte) {
	t.Helper()
	r, port, st := newTest(t, p, targets(1, v6))
	a, mac := serverAddr(0, v6)
	t0 := time.Unix(1000, 0)
	r.step(t0)
	if answerAll(t, r, port.take(), t0, func(netip.Addr) ([6]byte, bool) { return mac, true }) != 1 {
		t.Fatal("no request to answer")
	}
	r.publish()
	if got, ok := r.LinkAddress("lan0", a); !ok || got != mac {
		t.Fatalf("not resolved: %x %v", got, ok)
	}
	return r, port, st, a, mac
}

// claims are the frames a rogue LAN host sends to take a server's address.
func claims(a netip.Addr, mac [6]byte) map[string][]byte {
	if a.Is4() {
		return map[string][]byte{
			"request to the appliance": arpFrame(1, broadcastMAC, mac, a, [6]byte{}, self4),
			"reply to the appliance":   arpFrame(2, selfMAC, mac, a, selfMAC, self4),
			"gratuitous request":       arpFrame(1, broadcastMAC, mac, a, [6]byte{}, a),
			"gratuitous reply":         arpFrame(2, broadcastMAC, mac, a, broadcastMAC, a),
		}
	}
	allNodes := netip.MustParseAddr("ff02::1")
	nsf := naFrame(selfMAC, mac, a, self6, self6, 0, mac, true)
	m := nsf[14+40:]
	m[0] = 135 // a neighbor solicitation from a, with the source link-layer option
	m[24] = 1
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m,
		Src: tcpip.AddrFrom16(a.As16()), Dst: tcpip.AddrFrom16(self6.As16())}))
	return map[string][]byte{
		"unsolicited advertisement": naFrame([6]byte{0x33, 0x33, 0, 0, 0, 1}, mac, a, allNodes, a, 0x20, mac, true),
		"solicited advertisement":   naFrame(selfMAC, mac, a, self6, a, 0x60, mac, true),
		"solicitation":              nsf,
	}
}

// A claim of a known server's address with another MAC (the rogue's own,
// broadcast, multicast), whatever the frame, is consumed, recorded with the
// claiming MAC, and not applied while the known MAC answers the probes the
// claim starts.
func TestClaimNotApplied(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, bad := range [][6]byte{rogue, broadcastMAC, {0x01, 0x00, 0x5e, 0, 0, 1}, {0x33, 0x33, 0, 0, 0, 1}} {
			a, _ := serverAddr(0, v6)
			for kind, f := range claims(a, bad) {
				t.Run(fmt.Sprintf("v6=%v/%x/%s", v6, bad, kind), func(t *testing.T) {
					p := testParams()
					r, port, st, a, mac := resolveOne(t, v6, p)
					now := time.Unix(1001, 0)
					for i := range 50 {
						if !r.input("lan0", selfMAC, f, now).Taken() {
							t.Fatalf("claim %d not consumed: netstack would see it", i)
						}
						r.step(now)
						answerAll(t, r, port.take(), now, func(netip.Addr) ([6]byte, bool) { return mac, true })
						now = now.Add(100 * time.Millisecond)
					}
					r.publish()
					if got, _ := r.LinkAddress("lan0", a); got != mac || st.m[a] != mac {
						t.Fatalf("after claims by %x: MAC %x (netstack %x), want %x kept", bad, got, st.m[a], mac)
					}
					cs := r.Conflicts()
					if len(cs) != 1 || cs[0].MAC != macString(bad) || cs[0].Claims != 50 || cs[0].Address != a {
						t.Fatalf("conflicts %+v, want one for %v by %s, 50 claims", cs, a, macString(bad))
					}
					if Unicast(bad) && r.stats.Confirmed.Load() == 0 {
						t.Errorf("a claim started no verification of the known MAC")
					}
				})
			}
		}
	}
}

// A known MAC that stops answering is replaced by the MAC that answers the
// appliance's broadcast request, no earlier than Probes x Probe after the
// claim that started the verification; an unsolicited claim alone never is.
func TestMACChangeAccepted(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			p := testParams()
			r, port, _, a, old := resolveOne(t, v6, p)
			newMAC := [6]byte{0x02, 0xbb, 0, 0, 0, 0x99}
			holder := func(netip.Addr) ([6]byte, bool) { return newMAC, true } // the new NIC; the old is gone
			claim := time.Unix(1001, 0)
			var gratuitous []byte
			for _, f := range claims(a, newMAC) {
				gratuitous = f
				break
			}
			r.input("lan0", selfMAC, gratuitous, claim)
			var accepted time.Time
			unicast := 0
			for now := claim; now.Sub(claim) < 5*time.Second && accepted.IsZero(); now = now.Add(10 * time.Millisecond) {
				r.step(now)
				fs := port.take()
				for _, f := range fs {
					if q := readRequest(t, f); q.to == old {
						unicast++
					}
				}
				answerAll(t, r, fs, now, holder)
				r.publish()
				if got, _ := r.LinkAddress("lan0", a); got == newMAC {
					accepted = now
				}
			}
			if accepted.IsZero() {
				t.Fatal("the new MAC was never accepted")
			}
			bound := time.Duration(p.Probes) * p.Probe
			if d := accepted.Sub(claim); d < bound || d > bound+100*time.Millisecond {
				t.Errorf("accepted %v after the claim, want at %v (Probes x Probe) plus at most a step", d, bound)
			}
			if unicast != p.Probes {
				t.Errorf("%d unicast probes to the old MAC, want %d", unicast, p.Probes)
			}
			if e := r.Entries()[0]; e.Changes != 1 || e.State != StateReachable {
				t.Errorf("entry %+v, want one change, reachable", e)
			}
			if len(r.Conflicts()) != 0 {
				t.Errorf("the server's own announcement still listed as a conflict: %+v", r.Conflicts())
			}
		})
	}
}

// Answers to no outstanding request teach nothing, and neither do
// requests, gratuitous ARP or unsolicited advertisements.
func TestUnsolicitedNotLearned(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		p := testParams()
		r, port, _ := newTest(t, p, targets(1, v6))
		a, mac := serverAddr(0, v6)
		now := time.Unix(1000, 0)
		// Before any request.
		if v := r.input("lan0", selfMAC, replyFor(rogue, a), now); v != stage.Drop(stage.Unsolicited) {
			t.Errorf("v6=%v: an answer nobody asked for: verdict %v", v6, v)
		}
		for _, f := range claims(a, rogue) {
			r.input("lan0", selfMAC, f, now)
		}
		r.step(now)
		port.take()
		// After the request's window.
		late := now.Add(p.Retry + time.Millisecond)
		r.input("lan0", selfMAC, replyFor(mac, a), late)
		r.publish()
		if got, ok := r.LinkAddress("lan0", a); ok {
			t.Fatalf("v6=%v: learned %x from unsolicited frames", v6, got)
		}
		// An answer within the window.
		r.step(late)
		port.take()
		if v := r.input("lan0", selfMAC, replyFor(mac, a), late.Add(time.Millisecond)); v != stage.Consumed {
			t.Errorf("v6=%v: the answer to the request: verdict %v", v6, v)
		}
		r.publish()
		if got, ok := r.LinkAddress("lan0", a); !ok || got != mac {
			t.Fatalf("v6=%v: the answer to the request was not learned: %x", v6, got)
		}
	}
}

// A pinned server is never asked about and never changes.
func TestPinned(t *testing.T) {
	a, mac := serverAddr(0, false)
	r, port, st := newTest(t, testParams(), []Target{{Interface: "lan0", Addr: a, Pin: mac}})
	now := time.Unix(1000, 0)
	r.step(now)
	r.input("lan0", selfMAC, replyFor(rogue, a), now)
	for _, f := range claims(a, rogue) {
		r.input("lan0", selfMAC, f, now)
	}
	r.step(now.Add(time.Hour))
	r.publish()
	if len(port.frames) != 0 {
		t.Errorf("%d requests for a pinned server", len(port.frames))
	}
	if got, _ := r.LinkAddress("lan0", a); got != mac || st.m[a] != mac {
		t.Errorf("pinned MAC %x (netstack %x), want %x", got, st.m[a], mac)
	}
}

// A server's own request stating its known MAC goes on to netstack (which
// answers it); frames for addresses that are no server's pass untouched.
func TestPassThrough(t *testing.T) {
	r, _, _, a, mac := resolveOne(t, false, testParams())
	now := time.Unix(1001, 0)
	if r.input("lan0", selfMAC, arpFrame(1, broadcastMAC, mac, a, [6]byte{}, self4), now).Taken() {
		t.Error("the server's own ARP request for the appliance was consumed")
	}
	other := netip.MustParseAddr("10.0.0.200")
	for _, f := range claims(other, rogue) {
		if r.input("lan0", selfMAC, f, now).Taken() {
			t.Error("a frame about a non-server address was consumed")
		}
	}
	if r.input("lan1", selfMAC, arpAnswer(rogue, a), now).Taken() {
		t.Error("a frame on another link was consumed")
	}
}

// Targets removed by a reload leave netstack's table; kept ones keep their MAC.
func TestSetTargetsKeeps(t *testing.T) {
	r, _, st, a, mac := resolveOne(t, false, testParams())
	b, _ := serverAddr(1, false)
	r.SetTargets([]Target{{Interface: "lan0", Addr: a}, {Interface: "lan0", Addr: b}})
	r.publish()
	if got, _ := r.LinkAddress("lan0", a); got != mac {
		t.Errorf("kept server lost its MAC: %x", got)
	}
	r.SetTargets([]Target{{Interface: "lan0", Addr: b}})
	r.publish()
	if _, ok := st.m[a]; ok {
		t.Errorf("removed server still has netstack's permanent entry")
	}
	if _, ok := r.LinkAddress("lan0", a); ok {
		t.Errorf("removed server still resolved")
	}
}

func TestLinkAddressNoAlloc(t *testing.T) {
	r, _, _, a, _ := resolveOne(t, false, testParams())
	other := arpFrame(1, broadcastMAC, rogue, netip.MustParseAddr("10.0.0.200"), [6]byte{}, self4)
	ip := make([]byte, 60)
	ip[12] = 0x08
	ip6 := make([]byte, 14+40+24)
	ip6[12], ip6[13], ip6[14+6], ip6[14+40] = 0x86, 0xdd, 6, 0x80 // TCP, or an echo request: not NDP
	if n := testing.AllocsPerRun(100, func() {
		if r.Inbound(nil, ip).Taken() || r.Inbound(nil, ip6).Taken() { // data frames leave before the link is looked at
			t.Fatal("a data frame was consumed")
		}
		r.LinkAddress("lan0", a)
		r.input("lan0", selfMAC, other, time.Time{})
		r.input("lan0", selfMAC, ip, time.Time{})
		Parse(other, selfMAC)
	}); n != 0 {
		t.Errorf("%v allocations per lookup/frame, want 0", n)
	}
}

func TestAppendRequestFamilies(t *testing.T) {
	var buf [FrameSize]byte
	if AppendRequest(buf[:0], selfMAC, self4, self6, [6]byte{}) != nil {
		t.Error("a request across families was built")
	}
	for _, to := range [][6]byte{{}, {0x02, 0xaa, 0, 0, 0, 1}} {
		for _, target := range []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("2001:db8:2::11")} {
			src := self4
			if target.Is6() {
				src = self6
			}
			q := readRequest(t, AppendRequest(buf[:0], selfMAC, src, target, to))
			if q.target != target || to != ([6]byte{}) && q.to != to || to == ([6]byte{}) && !broadcastTo(q) {
				t.Errorf("request for %v to %x read back as %+v", target, to, q)
			}
		}
	}
}

// An unresolved server's own request is passed on and asks for its MAC at
// once, within the rate, instead of at the next retry.
func TestRequestStartsResolution(t *testing.T) {
	p := testParams()
	p.Retries = 1 // after one unanswered request, the next is Backoff (5 s) later
	r, port, _ := newTest(t, p, targets(1, false))
	a, mac := serverAddr(0, false)
	now := time.Unix(1000, 0)
	r.step(now)
	port.take() // the first request, unanswered
	later := now.Add(p.Retry + 10*time.Millisecond)
	if r.step(later); len(port.take()) != 0 {
		t.Fatal("a request before the backoff was over")
	}
	if r.input("lan0", selfMAC, arpFrame(1, broadcastMAC, mac, a, [6]byte{}, self4), later).Taken() {
		t.Fatal("the server's request was consumed")
	}
	r.step(later)
	fs := port.take()
	if len(fs) != 1 || readRequest(t, fs[0]).target != a {
		t.Fatalf("%d requests after the server spoke, want one for it", len(fs))
	}
}

// A server that gets a [[neighbor]] entry keeps the router's permanent
// entry: the resolver does not remove what it no longer owns.
func TestExternalNotRemoved(t *testing.T) {
	r, _, st, a, mac := resolveOne(t, false, testParams())
	r.SetTargets([]Target{{Interface: "lan0", Addr: a, Pin: mac, External: true}})
	r.publish()
	if st.m[a] != mac {
		t.Errorf("the entry became a [[neighbor]] and was removed from netstack")
	}
}

// A late answer (a host swamped by broadcasts) still counts until the next
// request is due; Unresolved tells which servers have no MAC.
func TestLateAnswerAndUnresolved(t *testing.T) {
	p := testParams()
	p.Retries = 1 // the next request is Backoff (5 s) after the first
	r, port, _ := newTest(t, p, targets(2, false))
	a, mac := serverAddr(0, false)
	b, _ := serverAddr(1, false)
	if !r.Unresolved(a) {
		t.Fatal("a target is not Unresolved before the first publication")
	}
	now := time.Unix(1000, 0)
	r.step(now)
	port.take()
	r.publish()
	if !r.Unresolved(a) || !r.Unresolved(b) || r.Unresolved(self4) {
		t.Fatalf("before answers: Unresolved(%v)=%v (%v)=%v, appliance=%v", a, r.Unresolved(a), b, r.Unresolved(b), r.Unresolved(self4))
	}
	r.input("lan0", selfMAC, arpAnswer(mac, a), now.Add(p.Backoff-time.Millisecond))
	r.publish()
	if got, ok := r.LinkAddress("lan0", a); !ok || got != mac {
		t.Fatalf("an answer %v after the request, before the next, was not learned", p.Backoff-time.Millisecond)
	}
	if r.Unresolved(a) || !r.Unresolved(b) {
		t.Errorf("after one answer: Unresolved(%v)=%v, (%v)=%v", a, r.Unresolved(a), b, r.Unresolved(b))
	}
}

// Resync puts back what the router removed from netstack's table.
func TestResync(t *testing.T) {
	r, _, st, a, mac := resolveOne(t, false, testParams())
	st.RemoveStatic("lan0", a) // the router dropped its [[neighbor]] for the address
	r.Resync()
	r.publish()
	if st.m[a] != mac {
		t.Errorf("after Resync netstack has %x for %v, want %x", st.m[a], a, mac)
	}
}

// The goroutine: requests go out on their own, an answer is published and
// announced through OnChange, and Close stops it.
func TestLoop(t *testing.T) {
	port := &fakePort{}
	changed := make(chan struct{}, 16)
	r := New(Deps{
		Port:     func(string) (Port, bool) { return port, true },
		Source:   func(string, netip.Addr) (netip.Addr, bool) { return self4, true },
		OnChange: func() { changed <- struct{}{} },
	}, DefaultParams())
	a, mac := serverAddr(0, false)
	r.SetTargets([]Target{{Interface: "lan0", Addr: a}})
	r.Start()
	defer r.Close()
	deadline := time.Now().Add(5 * time.Second)
	var fs [][]byte
	for len(fs) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		fs = port.take()
	}
	if len(fs) == 0 {
		t.Fatal("no request from the running resolver")
	}
	answerAll(t, r, fs, time.Now(), func(netip.Addr) ([6]byte, bool) { return mac, true })
	for {
		select {
		case <-changed:
			if got, ok := r.LinkAddress("lan0", a); ok && got == mac {
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the answer was never published")
		}
	}
}
