package tap

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/test/kit"
)

// seg is a TCP segment in an Ethernet frame, built with test/kit and gVisor's TCP
// header (not with the code under test): from client port sport to port 80, IPv4 or IPv6.
type seg struct {
	v6      bool
	sport   uint16
	flags   header.TCPFlags
	payload []byte
	id      uint16 // IPv4 ID, and the first payload byte when there is payload
	frag    uint16 // IPv4 flags and fragment offset word
}

func (s seg) frame() []byte {
	tcp := make(header.TCP, header.TCPMinimumSize+len(s.payload))
	tcp.Encode(&header.TCPFields{SrcPort: s.sport, DstPort: 80, SeqNum: 1000, AckNum: 2000,
		DataOffset: header.TCPMinimumSize, Flags: s.flags, WindowSize: 512})
	copy(tcp[header.TCPMinimumSize:], s.payload)
	if s.v6 {
		ip := kit.IPv6(netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8:1::10"), 64, uint8(header.TCPProtocolNumber), tcp)
		return kit.Ethernet(macA, macB, kit.TypeIPv6, ip)
	}
	ip := kit.IPv4(netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("203.0.113.10"), 64, uint8(header.TCPProtocolNumber), s.id, tcp)
	binary.BigEndian.PutUint16(ip[6:], s.frag) // the header checksum is not looked at
	return kit.Ethernet(macA, macB, kit.TypeIPv4, ip)
}

// refDataOnly is tcpDataOnly's contract read with gVisor's parsers: an IPv4 (not a
// fragment) or IPv6 TCP segment whose lengths fit the frame, with data, without FIN/RST.
func refDataOnly(f []byte) bool {
	if len(f) < header.EthernetMinimumSize {
		return false
	}
	var tcp header.TCP
	switch header.Ethernet(f).Type() {
	case header.IPv4ProtocolNumber:
		ip := header.IPv4(f[header.EthernetMinimumSize:])
		if len(ip) < header.IPv4MinimumSize || ip.TransportProtocol() != header.TCPProtocolNumber || ip.More() || ip.FragmentOffset() != 0 {
			return false
		}
		hl, tot := int(ip.HeaderLength()), int(ip.TotalLength())
		if hl < header.IPv4MinimumSize || tot < hl || tot > len(ip) {
			return false
		}
		tcp = header.TCP(ip[hl:tot])
	case header.IPv6ProtocolNumber:
		ip := header.IPv6(f[header.EthernetMinimumSize:])
		if len(ip) < header.IPv6MinimumSize || ip.TransportProtocol() != header.TCPProtocolNumber || int(ip.PayloadLength()) > len(ip)-header.IPv6MinimumSize {
			return false
		}
		tcp = header.TCP(ip[header.IPv6MinimumSize : header.IPv6MinimumSize+int(ip.PayloadLength())])
	default:
		return false
	}
	if len(tcp) < header.TCPMinimumSize {
		return false
	}
	off := int(tcp.DataOffset())
	return off >= header.TCPMinimumSize && len(tcp) > off && tcp.Flags()&(header.TCPFlagFin|header.TCPFlagRst) == 0
}

// TestTCPDataOnly: the segments a hold or a carry may wait behind, against gVisor's
// reading of the same frames.
func TestTCPDataOnly(t *testing.T) {
	data := []byte("HTTP/1.1 200 OK\r\n\r\nok\n")
	for _, tc := range []struct {
		name string
		s    seg
		want bool
	}{
		{"response", seg{flags: header.TCPFlagAck | header.TCPFlagPsh, payload: data}, true},
		{"response v6", seg{v6: true, flags: header.TCPFlagAck | header.TCPFlagPsh, payload: data}, true},
		{"response with its FIN", seg{flags: header.TCPFlagAck | header.TCPFlagFin, payload: data}, false},
		{"FIN", seg{flags: header.TCPFlagAck | header.TCPFlagFin}, false},
		{"RST with data", seg{flags: header.TCPFlagRst, payload: data}, false},
		{"pure ACK", seg{flags: header.TCPFlagAck}, false},
		{"SYN-ACK", seg{flags: header.TCPFlagSyn | header.TCPFlagAck}, false},
		{"first fragment", seg{flags: header.TCPFlagAck, payload: data, frag: 0x2000}, false},
	} {
		f := tc.s.frame()
		if got, ref := tcpDataOnly(f), refDataOnly(f); got != tc.want || ref != tc.want {
			t.Errorf("%s: tcpDataOnly %v, gVisor's reading %v, want %v", tc.name, got, ref, tc.want)
		}
	}
}

// TestFlowHash: a flow's frames hash alike whatever their payload, flags, ID or TTL;
// another client port is another flow (no collision among 4096 ports); fragments, which
// may lack the ports, hash by addresses and protocol; a non-IP frame is flow 0, an IP one
// never is.
func TestFlowHash(t *testing.T) {
	a := seg{sport: 40000, flags: header.TCPFlagAck | header.TCPFlagPsh, payload: []byte("request")}
	b := seg{sport: 40000, flags: header.TCPFlagAck | header.TCPFlagFin, id: 9}
	if flowHash(a.frame()) != flowHash(b.frame()) {
		t.Error("two segments of one connection hash apart")
	}
	f := b.frame()
	f[header.EthernetMinimumSize+8]-- // TTL
	if flowHash(f) != flowHash(a.frame()) {
		t.Error("the TTL changed the flow")
	}
	seen := map[uint64]uint16{}
	for p := range uint16(4096) {
		for _, v6 := range []bool{false, true} {
			h := flowHash(seg{v6: v6, sport: 30000 + p, flags: header.TCPFlagAck}.frame())
			if h == 0 {
				t.Fatalf("port %d: flow 0 for an IP frame", p)
			}
			if q, dup := seen[h]; dup {
				t.Fatalf("ports %d and %d hash alike", q, 30000+p)
			}
			seen[h] = 30000 + p
		}
	}
	fr1 := seg{sport: 1, frag: 0x2000, payload: []byte("x")}.frame()
	fr2 := seg{sport: 2, frag: 0x0010, payload: []byte("y")}.frame()
	if flowHash(fr1) != flowHash(fr2) {
		t.Error("fragments of one address pair hash apart")
	}
	arp := make([]byte, 42)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	if flowHash(arp) != 0 || flowHash(arp[:5]) != 0 {
		t.Error("a non-IP frame is not flow 0")
	}
}

// TestGroupPending: held writes reordered by groupPending, against a reference that
// sorts them stably by (first appearance of their egress, first appearance of their
// flow within it): random batches over two endpoints, two queues each, and six flows.
func TestGroupPending(t *testing.T) {
	eps := []*Endpoint{{files: make([]*os.File, 2)}, {files: make([]*os.File, 2)}}
	frames := make([][]byte, 6)
	for i := range frames {
		frames[i] = seg{sport: uint16(5000 + i), flags: header.TCPFlagAck}.frame()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	q := &rxQueue{}
	for round := range 2000 {
		n := 1 + rng.IntN(maxPending)
		type item struct{ ep, qi, flow, seq int }
		in := make([]item, n)
		for i := range n {
			in[i] = item{ep: rng.IntN(2), qi: rng.IntN(4), flow: rng.IntN(len(frames)), seq: i}
			f := frames[in[i].flow]
			q.pending[i] = pendingWrite{ep: eps[in[i].ep], qi: in[i].qi, b: f, frameLen: len(f)}
		}
		q.npend = n
		q.groupPending()

		egress := func(it item) int { return it.ep*2 + it.qi%2 }
		firstEgress, firstFlow := map[int]int{}, map[[2]int]int{}
		for i, it := range in {
			if _, ok := firstEgress[egress(it)]; !ok {
				firstEgress[egress(it)] = i
			}
			k := [2]int{egress(it), it.flow}
			if _, ok := firstFlow[k]; !ok {
				firstFlow[k] = i
			}
		}
		want := slices.Clone(in)
		slices.SortStableFunc(want, func(x, y item) int {
			if d := firstEgress[egress(x)] - firstEgress[egress(y)]; d != 0 {
				return d
			}
			return firstFlow[[2]int{egress(x), x.flow}] - firstFlow[[2]int{egress(y), y.flow}]
		})
		for i, w := range want {
			p := q.pending[i]
			if p.ep != eps[w.ep] || p.qi%2 != w.qi%2 || &p.b[0] != &frames[w.flow][0] {
				t.Fatalf("round %d: write %d is (ep %p, queue %d, flow %d...), want %+v", round, i, p.ep, p.qi, p.b[header.EthernetMinimumSize+header.IPv4MinimumSize+1], w)
			}
		}
		clear(q.pending[:n])
	}
}

// batchRecorder is a hook that records, for every frame handled, its tag (the first
// payload byte, or the IPv4 ID of a frame without payload) and the batch it was
// handled in.
type batchRecorder struct {
	mu      sync.Mutex
	tags    []uint16
	batches []uint64
}

func (r *batchRecorder) Inbound(ep *Endpoint, frame []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tags = append(r.tags, binary.BigEndian.Uint16(frame[header.EthernetMinimumSize+4:]))
	r.batches = append(r.batches, ep.stats.RxBatches.Load())
	return true
}

func (r *batchRecorder) wait(t *testing.T, ep *Endpoint, n int) ([]uint16, []uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		r.mu.Lock()
		got := len(r.tags)
		r.mu.Unlock()
		if got >= n {
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tags) != n {
		t.Fatalf("%d frames handled, want %d", len(r.tags), n)
	}
	return slices.Clone(r.tags), slices.Clone(r.batches)
}

// TestCarryKeepsResponseWithFIN: a full queue whose first batch ends with a response,
// its FIN the first frame of the next. While holds have been paying the response is
// carried over and handled in the FIN's batch; while they have not, the batch is cut as
// before. Either way every frame is handled once and each flow in its order.
func TestCarryKeepsResponseWithFIN(t *testing.T) {
	for _, paying := range []bool{true, false} {
		a := queuedLink(t, "a", macA, false)
		a.ep.batchDelay = time.Minute
		a.ep.queues[0].score = 0
		if paying {
			a.ep.queues[0].score = holdMax
		}
		rec := &batchRecorder{}
		a.ep.SetHook(rec)
		// BatchFrames-1 ACKs of other connections, then the response and its FIN, then
		// more ACKs. Tags: the IPv4 ID.
		var want []uint16
		for i := range BatchFrames + 10 {
			s := seg{sport: uint16(1000 + i), flags: header.TCPFlagAck, id: uint16(i)}
			switch i {
			case BatchFrames - 1:
				s = seg{sport: 7, flags: header.TCPFlagAck | header.TCPFlagPsh, payload: []byte("ok\n"), id: uint16(i)}
			case BatchFrames:
				s = seg{sport: 7, flags: header.TCPFlagAck | header.TCPFlagFin, id: uint16(i)}
			}
			a.send(t, 0, nil, s.frame())
			want = append(want, uint16(i))
		}
		a.ep.Attach(a.disp)
		tags, batches := rec.wait(t, a.ep, len(want))
		at := map[uint16]uint64{}
		for i, tag := range tags {
			at[tag] = batches[i]
		}
		if i, j := slices.Index(tags, BatchFrames-1), slices.Index(tags, BatchFrames); i > j {
			t.Errorf("paying=%v: the FIN was handled before its response", paying)
		}
		sorted := slices.Sorted(slices.Values(tags))
		if !slices.Equal(sorted, want) {
			t.Fatalf("paying=%v: frames handled %v, want each of %v once", paying, tags, want)
		}
		resp, fin := at[BatchFrames-1], at[BatchFrames]
		carried := a.ep.Stats().RxCarried.Load()
		if paying && (resp != fin || carried == 0) {
			t.Errorf("holds paying: response handled in batch %d, its FIN in batch %d (carried %d), want one batch", resp, fin, carried)
		}
		if !paying && (resp == fin || carried != 0) {
			t.Errorf("holds not paying: response in batch %d, FIN in batch %d, %d carried; want the batch cut as read", resp, fin, carried)
		}
	}
}

// TestHoldWaitsForTheFIN: a response alone in the queue, its FIN written while the batch
// is held open: both are handled in one batch, and the hold paid.
func TestHoldWaitsForTheFIN(t *testing.T) {
	a := queuedLink(t, "a", macA, false)
	a.ep.holdTime, a.ep.batchDelay = 10*time.Second, 10*time.Second // the FIN is written once the hold has begun
	a.ep.queues[0].score = 1
	rec := &batchRecorder{}
	a.ep.SetHook(rec)
	a.send(t, 0, nil, seg{sport: 7, flags: header.TCPFlagAck | header.TCPFlagPsh, payload: []byte{0, 1}}.frame())
	a.ep.Attach(a.disp)
	st := a.ep.Stats()
	for deadline := time.Now().Add(5 * time.Second); st.Holds.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if st.Holds.Load() != 1 {
		t.Fatalf("%d holds behind a lone response, want 1", st.Holds.Load())
	}
	a.send(t, 0, nil, seg{sport: 7, flags: header.TCPFlagAck | header.TCPFlagFin, id: 2}.frame())
	_, batches := rec.wait(t, a.ep, 2)
	if batches[0] != batches[1] || st.HoldsPaid.Load() != 1 || st.HoldsMissed.Load() != 0 {
		t.Fatalf("response in batch %d, FIN in batch %d, holds paid %d, missed %d; want one batch, 1 paid, 0 missed",
			batches[0], batches[1], st.HoldsPaid.Load(), st.HoldsMissed.Load())
	}
}

// TestHoldsStopWhenTheyMiss: isolated responses with nothing behind them (keep-alive):
// the holds miss, the score falls to zero, and from then on only one eligible batch end
// in holdSample is held; segments without data are never held for.
func TestHoldsStopWhenTheyMiss(t *testing.T) {
	a := queuedLink(t, "a", macA, false)
	const score = 3
	a.ep.queues[0].score = score
	rec := &batchRecorder{}
	a.ep.SetHook(rec)
	a.ep.Attach(a.disp)
	const n = 3 * holdSample
	for i := range n {
		a.send(t, 0, nil, seg{sport: uint16(100 + i), flags: header.TCPFlagAck | header.TCPFlagPsh, payload: []byte{byte(i >> 8), byte(i)}}.frame())
		rec.wait(t, a.ep, i+1)
	}
	st := a.ep.Stats()
	holds, missed := st.Holds.Load(), st.HoldsMissed.Load()
	if lim := uint64(score + n/holdSample); holds > lim || missed != holds || st.HoldsPaid.Load() != 0 {
		t.Errorf("%d isolated responses: %d holds, %d missed, %d paid; want at most %d, all missed", n, holds, missed, st.HoldsPaid.Load(), lim)
	}
	if holds < score {
		t.Errorf("%d holds, want the first %d (the score) at least", holds, score)
	}
	for i := range 2 * holdSample {
		a.send(t, 0, nil, seg{sport: uint16(1000 + i), flags: header.TCPFlagAck}.frame())
		rec.wait(t, a.ep, n+i+1)
	}
	if got := st.Holds.Load(); got != holds {
		t.Errorf("%d holds behind segments without data, want none", got-holds)
	}
}

// FuzzHoldClassifiers: frames from the network decide holds, carries and grouping, so
// their readers take any bytes. Invariants: tcpDataOnly agrees with gVisor's reading;
// flowHash is 0 exactly for frames that are not IPv4 or IPv6, and it ignores what does
// not name the flow (the TTL or hop limit, the checksum, the bytes past the ports).
func FuzzHoldClassifiers(f *testing.F) {
	f.Add(seg{flags: header.TCPFlagAck | header.TCPFlagPsh, payload: []byte("ok")}.frame())
	f.Add(seg{v6: true, flags: header.TCPFlagFin, payload: []byte("ok")}.frame())
	f.Add(seg{flags: header.TCPFlagAck, frag: 0x2001}.frame())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if got, want := tcpDataOnly(frame), refDataOnly(frame); got != want {
			t.Fatalf("tcpDataOnly %v, gVisor's reading %v", got, want)
		}
		h := flowHash(frame)
		ip4, ip6 := len(frame) >= header.EthernetMinimumSize && hdrIsIPv4(frame), len(frame) >= header.EthernetMinimumSize && hdrIsIPv6(frame)
		if (h == 0) != (!ip4 && !ip6) {
			t.Fatalf("flow %#x for a frame IPv4 %v, IPv6 %v", h, ip4, ip6)
		}
		if !ip4 && !ip6 {
			return
		}
		g := slices.Clone(frame)
		ttl, sum, rest := header.EthernetMinimumSize+8, header.EthernetMinimumSize+10, header.EthernetMinimumSize+header.IPv6MinimumSize+4
		if ip4 {
			g[ttl]++
			g[sum]++
			rest = header.EthernetMinimumSize + max(int(frame[header.EthernetMinimumSize]&0xf)*4, header.IPv4MinimumSize) + 4
		} else {
			g[header.EthernetMinimumSize+7]++ // hop limit
		}
		for i := rest; i < len(g); i++ {
			g[i] ^= 0x5a
		}
		if flowHash(g) != h {
			t.Fatalf("flow changed with bytes that do not name it")
		}
	})
}

func hdrIsIPv4(f []byte) bool {
	return header.Ethernet(f).Type() == header.IPv4ProtocolNumber && len(f) >= header.EthernetMinimumSize+header.IPv4MinimumSize
}

func hdrIsIPv6(f []byte) bool {
	return header.Ethernet(f).Type() == header.IPv6ProtocolNumber && len(f) >= header.EthernetMinimumSize+header.IPv6MinimumSize
}
