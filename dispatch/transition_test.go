package dispatch

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// The flow memory against a map: every operation sequence gives the same
// answers, deletions (backward shift) never lose an entry, and the bound
// holds.
func TestFlowMemoryMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := newFlowMemory(2048)
	ref := map[flowKey]int32{}
	key := func() flowKey {
		var k flowKey
		k.addr[15] = byte(rng.IntN(8)) // few addresses: many collisions in a shard
		k.sport = uint16(rng.IntN(600))
		k.dport = 80
		k.proto = hdr.ProtoTCP
		return k
	}
	for i := 0; i < 200000; i++ {
		k := key()
		switch op := rng.IntN(10); {
		case op < 5:
			srv := int32(rng.IntN(4))
			got, res := m.insert(&k, srv, int64(i), false)
			want, had := ref[k]
			switch {
			case had && (res != flowHit || got != want):
				t.Fatalf("op %d: insert of a remembered flow: %d %v, want %d hit", i, got, res, want)
			case !had && res == flowInserted:
				ref[k] = srv
			case !had && res != flowOverflow:
				t.Fatalf("op %d: insert of a new flow: %v", i, res)
			}
		case op < 8:
			got, res := m.lookup(&k, int64(i), false, false, false)
			want, had := ref[k]
			if had != (res == flowHit) || had && got != want {
				t.Fatalf("op %d: lookup %v %d, want present=%v %d", i, res, got, had, want)
			}
		default:
			_, res := m.lookup(&k, int64(i), false, true, false)
			_, had := ref[k]
			if had != (res == flowReleasedR) {
				t.Fatalf("op %d: release %v, want present=%v", i, res, had)
			}
			delete(ref, k)
		}
		if int(m.entries.Load()) != len(ref) {
			t.Fatalf("op %d: %d entries, want %d", i, m.entries.Load(), len(ref))
		}
	}
	// A sweep that drops every odd port keeps exactly the even ones.
	m.sweep(func(e *flowEntry) bool { return e.key.sport%2 == 1 })
	for k, want := range ref {
		got, res := m.lookup(&k, 0, false, false, false)
		if k.sport%2 == 1 && res != flowMissed || k.sport%2 == 0 && (res != flowHit || got != want) {
			t.Fatalf("after the sweep: port %d: %v %d", k.sport, res, got)
		}
	}
}

func TestFlowMemoryBound(t *testing.T) {
	m := newFlowMemory(1000)
	inserted, overflow := 0, 0
	for i := 0; i < 5000; i++ {
		k := flowKey{sport: uint16(i), dport: 80, proto: hdr.ProtoTCP}
		k.addr[0] = byte(i >> 8)
		switch _, res := m.insert(&k, 1, 0, false); res {
		case flowInserted:
			inserted++
		case flowOverflow:
			overflow++
		}
	}
	if inserted > m.capacity || inserted < 1000 || int(m.entries.Load()) != inserted || overflow != 5000-inserted {
		t.Fatalf("inserted %d (capacity %d, entries %d), overflow %d", inserted, m.capacity, m.entries.Load(), overflow)
	}
}

// tcpFrame builds an Ethernet frame with a TCP segment from src:sport to the
// ghost's port 80 with the given flags.
func tcpFrame(src netip.Addr, sport uint16, flags uint8) []byte {
	f := make([]byte, 14+20+20)
	copy(f[0:6], hookLANMAC)
	copy(f[6:12], hookInMAC)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[6] = 0x40 // DF
	ip[8], ip[9] = 64, hdr.ProtoTCP
	s, d := src.As4(), hookGhost.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip[:20], 0))
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], 80)
	ip[32] = 5 << 4
	ip[33] = flags
	return f
}

// udpFrom is udpFrame from src:sport.
func udpFrom(src netip.Addr, sport uint16) []byte {
	f := udpFrame(src, hookGhost, 64)
	binary.BigEndian.PutUint16(f[14+20:], sport)
	return f
}

// transitionRig is a manager with one routing cluster on a socketpair LAN:
// send hands it a frame and reports which server ID received it (-1: none).
type transitionRig struct {
	t    *testing.T
	m    *Manager
	peer *os.File
	cfg  *config.Config
}

func routingConfig(n int, drainTimeout time.Duration, mem int) *config.Config {
	cfg := testConfig(config.ModeRouting, n)
	cfg.Clusters[0].DrainTimeout = drainTimeout
	cfg.Clusters[0].FlowMemory = mem
	return cfg
}

func newTransitionRig(t *testing.T, cfg *config.Config) *transitionRig {
	t.Helper()
	lan, peer := lanPair(t)
	m, err := NewManager(cfg, Deps{
		Endpoint: func(name string) (*tap.Endpoint, bool) { return lan, name == "lan0" },
		Resolver: fakeResolver{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	m.resolveOnce()
	return &transitionRig{t: t, m: m, peer: peer, cfg: cfg}
}

func (r *transitionRig) send(frame []byte) int {
	r.t.Helper()
	work := append([]byte(nil), frame...)
	if !r.m.Forwarder().Inbound(nil, work).Taken() {
		r.t.Fatalf("the forwarder did not take a ghost packet: %x", frame)
	}
	out := readFrameQuick(r.peer)
	if out == nil {
		return -1
	}
	return int(out[5]) - 11 // fakeResolver: 10.0.0.(11+id) has MAC ...:00:(11+id)
}

func readFrameQuick(f *os.File) []byte {
	buf := make([]byte, 2048)
	f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := f.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func (r *transitionRig) mc() *managed { return r.m.clusters[0] }

func (r *transitionRig) cluster() *Cluster { return r.mc().c }

// sweep runs the manager's window step at now.
func (r *transitionRig) sweep(now time.Time) {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	if mc := r.mc(); mc.sweepWindow(now) {
		mc.publish()
	}
}

func (r *transitionRig) apply(cfg *config.Config) {
	r.t.Helper()
	if err := r.m.Apply(cfg); err != nil {
		r.t.Fatal(err)
	}
	r.m.resolveOnce()
}

// owner is the server ID sel names for client.
func (r *transitionRig) owner(client netip.Addr) int {
	mc := r.mc()
	return ownerID(mc.sel, mc.servers, client)
}

// clients finds, among 198.51.0.0/16, n clients whose owner changes from
// the first table to the second (moved) and n whose owner does not.
func movedClients(t *testing.T, before, after func(netip.Addr) int, n int) (moved, kept []netip.Addr) {
	t.Helper()
	for i := 0; i < 65536 && (len(moved) < n || len(kept) < n); i++ {
		a := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		switch b, c := before(a), after(a); {
		case b != c && len(moved) < n:
			moved = append(moved, a)
		case b == c && len(kept) < n:
			kept = append(kept, a)
		}
	}
	if len(moved) < n || len(kept) < n {
		t.Fatalf("found %d moved and %d kept clients", len(moved), len(kept))
	}
	return moved, kept
}

func ownerFunc(t *testing.T, cfg *config.Config, down map[int]bool) func(netip.Addr) int {
	t.Helper()
	sel, servers, err := core.SelectorFor(&cfg.Clusters[0], down)
	if err != nil {
		t.Fatal(err)
	}
	return func(a netip.Addr) int { return ownerID(sel, servers, a) }
}

// Adding a server: connections of moved clients that predate the change
// stay on their old server (seen in the learning phase or not: an idle one
// that shows up later too), a handshake that straddles the change finishes
// where it started, new connections and new UDP flows go to the new owner
// and stay there, clients that do not move are not remembered, and the
// memory is released when the window closes.
func TestTransitionKeepsConnectionsAcrossAnAddedServer(t *testing.T) {
	three, four := routingConfig(3, 10*time.Second, 1024), routingConfig(4, 10*time.Second, 1024)
	r := newTransitionRig(t, three)
	moved, kept := movedClients(t, ownerFunc(t, three, nil), ownerFunc(t, four, nil), 4)
	oldOf, newOf := ownerFunc(t, three, nil), ownerFunc(t, four, nil)
	a := moved[0]
	if r.send(tcpFrame(a, 1000, hdr.TCPAck)) != oldOf(a) {
		t.Fatal("before the change the client is not at its owner")
	}
	if r.send(tcpFrame(a, 1001, hdr.TCPSyn)) != oldOf(a) { // a handshake that straddles the change
		t.Fatal("before the change a SYN is not at its owner")
	}

	r.apply(four)
	st := r.m.State()[0]
	if st.Transition == nil || !st.Transition.Learning || st.Transition.Moved == 0 {
		t.Fatalf("after the reload: transition %+v, want learning with moved buckets", st.Transition)
	}
	// Learning: flows are remembered; new connections already go to the
	// new owner, UDP flows not seen yet still to the old one.
	if got := r.send(tcpFrame(a, 1000, hdr.TCPAck)); got != oldOf(a) {
		t.Fatalf("learning: established connection at %d, want %d", got, oldOf(a))
	}
	if got := r.send(udpFrom(a, 5000)); got != oldOf(a) {
		t.Fatalf("learning: UDP at %d, want %d", got, oldOf(a))
	}
	if got := r.send(tcpFrame(a, 1004, hdr.TCPSyn)); got != newOf(a) {
		t.Fatalf("learning: a new connection at %d, want the new owner %d", got, newOf(a))
	}
	r.sweep(time.Now().Add(learnPeriod))
	if tr := r.m.State()[0].Transition; tr.Learning {
		t.Fatalf("still learning after the learning period: %+v", tr)
	}

	for _, c := range []struct {
		what  string
		frame []byte
		want  int
	}{
		{"an established connection's data", tcpFrame(a, 1000, hdr.TCPAck|0x08), oldOf(a)},
		{"the straddling handshake's final ACK", tcpFrame(a, 1001, hdr.TCPAck), oldOf(a)},
		{"a connection opened while learning", tcpFrame(a, 1004, hdr.TCPAck), newOf(a)},
		{"a new connection's SYN", tcpFrame(a, 1002, hdr.TCPSyn), newOf(a)},
		{"the new connection's ACK", tcpFrame(a, 1002, hdr.TCPAck), newOf(a)},
		{"the new connection's data", tcpFrame(a, 1002, hdr.TCPAck|0x08), newOf(a)},
		{"an idle old connection's first packet since the change", tcpFrame(a, 1003, hdr.TCPAck), oldOf(a)},
		{"the idle old connection's next", tcpFrame(a, 1003, hdr.TCPAck), oldOf(a)},
		{"a UDP flow seen before the switch", udpFrom(a, 5000), oldOf(a)},
		{"a new UDP flow", udpFrom(a, 5001), newOf(a)},
		{"a new UDP flow's next datagram", udpFrom(a, 5001), newOf(a)},
		{"an ICMP-less other client", tcpFrame(kept[0], 1000, hdr.TCPSyn), oldOf(kept[0])},
	} {
		if got := r.send(c.frame); got != c.want {
			t.Errorf("%s: server %d, want %d", c.what, got, c.want)
		}
	}
	fl := r.cluster().FlowStats()
	// Remembered: 1000, 5000, 1004 (learning); 1001, 1002, 1003, 5001 (switched).
	if n := fl.Remembered.Load(); n != 7 {
		t.Errorf("%d flows remembered, want 7 (kept clients must not be)", n)
	}
	if fl.Held.Load() == 0 {
		t.Error("no packet counted as held on its old server")
	}

	// RST releases at once; FIN after the linger.
	r.send(tcpFrame(a, 1000, hdr.TCPRst))
	r.send(tcpFrame(a, 1001, hdr.TCPFin|hdr.TCPAck))
	if got := r.send(tcpFrame(a, 1001, hdr.TCPAck)); got != oldOf(a) {
		t.Errorf("an ACK after FIN at %d, want %d", got, oldOf(a))
	}
	// The client reuses the ports of a connection it closed: a new
	// connection, for the new owner.
	r.send(tcpFrame(a, 1002, hdr.TCPFin|hdr.TCPAck))
	if got := r.send(tcpFrame(a, 1002, hdr.TCPSyn)); got != newOf(a) {
		t.Errorf("a SYN on the ports of a closed connection at %d, want the new owner %d", got, newOf(a))
	}
	before := fl.Released.Load()
	r.sweep(time.Now().Add(finLinger + time.Second))
	if got := fl.Released.Load() - before; got != 1 {
		t.Errorf("%d entries released after the FIN linger, want 1", got)
	}
	if e := r.m.State()[0].Transition.Entries; e != 5 {
		t.Errorf("%d entries, want 5", e)
	}
	// The deadline closes the window and releases everything.
	r.sweep(time.Now().Add(learnPeriod + 10*time.Second + time.Second))
	st = r.m.State()[0]
	if st.Transition != nil || r.cluster().View().Trans != nil {
		t.Fatalf("window still open after drain_timeout: %+v", st.Transition)
	}
	if fl.Released.Load() != fl.Remembered.Load() || st.Flows.Released.Load() != 8 {
		t.Errorf("released %d of %d remembered", fl.Released.Load(), fl.Remembered.Load())
	}
	if got := r.send(tcpFrame(a, 1000, hdr.TCPAck)); got != newOf(a) {
		t.Errorf("after the window: server %d, want the new owner %d", got, newOf(a))
	}
	for _, k := range kept {
		if got := r.send(tcpFrame(k, 7, hdr.TCPAck)); got != newOf(k) {
			t.Errorf("unmoved client %s at %d, want %d", k, got, newOf(k))
		}
	}
}

// Draining a server keeps its connections on it and sends no new ones
// there; its failure during the window moves them at once.
func TestTransitionDrainAndFailure(t *testing.T) {
	cfg := routingConfig(3, time.Minute, 1024)
	r := newTransitionRig(t, cfg)
	drained := routingConfig(3, time.Minute, 1024)
	drained.Clusters[0].Servers[1].Drain = true
	moved, _ := movedClients(t, ownerFunc(t, cfg, nil), ownerFunc(t, drained, nil), 8)
	var onOne []netip.Addr
	for _, a := range moved {
		if ownerFunc(t, cfg, nil)(a) == 1 {
			onOne = append(onOne, a)
		}
	}
	if len(onOne) < 4 {
		t.Fatalf("only %d of %d moved clients were server 1's", len(onOne), len(moved))
	}
	a := onOne[0]
	r.apply(drained)
	r.send(tcpFrame(a, 2000, hdr.TCPAck))
	if got := r.send(tcpFrame(onOne[1], 2999, hdr.TCPSyn)); got == 1 || got < 0 {
		t.Fatalf("right after the drain a new connection went to %d", got)
	}
	r.sweep(time.Now().Add(learnPeriod))
	if got := r.send(tcpFrame(a, 2000, hdr.TCPAck)); got != 1 {
		t.Fatalf("drained server's connection at %d", got)
	}
	for i, c := range onOne {
		if got := r.send(tcpFrame(c, uint16(3000+i), hdr.TCPSyn)); got == 1 || got < 0 {
			t.Fatalf("a new connection from %s went to %d (server 1 is drained)", c, got)
		}
	}
	n := r.cluster().FlowStats().Remembered.Load()
	// Server 1 fails: its connection goes to the current owner at once.
	r.m.healthChanged("web", healthEvent(1, false))
	if got, want := r.send(tcpFrame(a, 2000, hdr.TCPAck)), ownerFunc(t, drained, map[int]bool{1: true})(a); got != want {
		t.Fatalf("after the drained server failed: %d, want %d", got, want)
	}
	if r.cluster().FlowStats().Remembered.Load() != n {
		t.Error("packets of a failed server's connection were remembered")
	}
	rel := r.cluster().FlowStats().Released.Load()
	r.sweep(time.Now().Add(learnPeriod + time.Second))
	if got := r.cluster().FlowStats().Released.Load() - rel; got != 1 {
		t.Fatalf("%d entries released after server 1 failed, want its one connection", got)
	}
	if tr := r.m.State()[0].Transition; tr == nil || tr.Entries != int64(len(onOne)+1) {
		t.Fatalf("transition %+v: want the %d new connections still remembered", tr, len(onOne)+1)
	}
}

func healthEvent(id int, up bool) health.Event {
	return health.Event{ServerID: id, Up: up, At: time.Now(), Reason: "test"}
}

// With the memory full, a new connection goes to the bucket's original
// owner and keeps going there (so it is not broken), counted as overflow.
func TestTransitionOverflow(t *testing.T) {
	cfg := routingConfig(3, time.Minute, 64)
	r := newTransitionRig(t, cfg)
	four := routingConfig(4, time.Minute, 64)
	moved, _ := movedClients(t, ownerFunc(t, cfg, nil), ownerFunc(t, four, nil), 1)
	a := moved[0]
	oldOf, newOf := ownerFunc(t, cfg, nil), ownerFunc(t, four, nil)
	r.apply(four)
	r.sweep(time.Now().Add(learnPeriod))
	over := -1
	for p := 0; p < 500; p++ {
		got := r.send(tcpFrame(a, uint16(10000+p), hdr.TCPSyn))
		if r.cluster().FlowStats().Overflow.Load() > 0 {
			over = p
			if got != oldOf(a) {
				t.Fatalf("an unremembered SYN went to %d, want the original owner %d", got, oldOf(a))
			}
			break
		}
		if got != newOf(a) {
			t.Fatalf("a remembered SYN went to %d, want %d", got, newOf(a))
		}
	}
	if over < 0 {
		t.Fatal("the memory never overflowed")
	}
	if got := r.send(tcpFrame(a, uint16(10000+over), hdr.TCPAck)); got != oldOf(a) {
		t.Fatalf("the unremembered connection's ACK at %d, want %d with its SYN", got, oldOf(a))
	}
	if e := r.m.State()[0].Transition.Entries; e > 64+flowShards {
		t.Fatalf("%d entries: the bound is not kept", e)
	}
}

// A reload that changes nothing opens no window; drain_timeout = 0 keeps
// routing mode stateless.
func TestTransitionNotOpenedWithoutMoves(t *testing.T) {
	cfg := routingConfig(3, time.Minute, 1024)
	r := newTransitionRig(t, cfg)
	r.apply(routingConfig(3, time.Minute, 1024))
	if r.m.State()[0].Transition != nil || r.cluster().View().Trans != nil {
		t.Fatal("a reload that moves nothing opened a window")
	}
	r.apply(routingConfig(4, 0, 1024))
	if r.m.State()[0].Transition != nil {
		t.Fatal("drain_timeout = 0 opened a window")
	}
}

// The forwarder allocates nothing with a window open, remembering or not.
func TestTransitionZeroAllocs(t *testing.T) {
	cfg := routingConfig(3, time.Minute, 1<<16)
	r := newTransitionRig(t, cfg)
	four := routingConfig(4, time.Minute, 1<<16)
	moved, _ := movedClients(t, ownerFunc(t, cfg, nil), ownerFunc(t, four, nil), 1)
	r.apply(four)
	r.sweep(time.Now().Add(learnPeriod))
	c := r.cluster()
	c.LAN = nullLAN(t, "null")
	f := r.m.Forwarder()
	port := uint16(0)
	for pass, flags := range []uint8{hdr.TCPAck, hdr.TCPSyn, hdr.TCPAck} { // inserts (old, new connections), then hits
		if pass == 2 {
			port = 0
		}
		frame := tcpFrame(moved[0], 1, flags)
		work := make([]byte, len(frame))
		allocs := testing.AllocsPerRun(1000, func() {
			copy(work, frame)
			port++
			binary.BigEndian.PutUint16(work[14+20:], port)
			f.Inbound(nil, work)
		})
		if allocs != 0 {
			t.Fatalf("flags %#x: %v allocations per packet with a window open", flags, allocs)
		}
	}
	if n := c.FlowStats().Remembered.Load(); n < 2000 {
		t.Fatalf("only %d flows remembered", n)
	}
}

// BenchmarkTransition measures the dispatch stage per packet, in one run:
// stateless (no window: the steady state), a window open but the clients'
// buckets not moved (one bitmap test more), and the clients' buckets moved
// with their flows remembered (a memory lookup per packet). 256 clients, one
// TCP flow each.
func BenchmarkTransition(b *testing.B) {
	lan := nullLAN(b, "null")
	three, four := routingConfig(3, time.Hour, 1<<16), routingConfig(4, time.Hour, 1<<16)
	before, after := ownerFunc(&testing.T{}, three, nil), ownerFunc(&testing.T{}, four, nil)
	var moved, kept [][]byte
	for i := 0; i < 65536 && (len(moved) < 256 || len(kept) < 256); i++ {
		a := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		f := tcpFrame(a, 40000, hdr.TCPAck)
		switch {
		case before(a) != after(a) && len(moved) < 256:
			moved = append(moved, f)
		case before(a) == after(a) && len(kept) < 256:
			kept = append(kept, f)
		}
	}
	newManager := func(cfg *config.Config) *Manager {
		m, err := NewManager(cfg, Deps{
			Endpoint: func(name string) (*tap.Endpoint, bool) { return lan, name == "lan0" },
			Resolver: fakeResolver{},
		})
		if err != nil {
			b.Fatal(err)
		}
		m.resolveOnce()
		return m
	}
	// Each case runs the whole stage (Inbound, with the write to /dev/null)
	// and the server choice alone (pickFlow), which is what the window adds to.
	run := func(b *testing.B, f *Forwarder, frames [][]byte) {
		work := make([]byte, len(frames[0]))
		for _, fr := range frames { // the window's learning: every flow remembered
			copy(work, fr)
			f.Inbound(nil, work)
		}
		c := f.Clusters()[hookGhost]
		b.Run("stage", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				copy(work, frames[i&255])
				f.Inbound(nil, work)
			}
		})
		b.Run("choice", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				ip := frames[i&255][hdr.EthLen:]
				if _, _, _, why := c.pickFlow(netip.AddrFrom4([4]byte(ip[12:16])), ip, hdr.IPv4Min, ip[9]); why != stage.None {
					b.Fatal("no server")
				}
			}
		})
	}
	b.Run("stateless", func(b *testing.B) {
		m := newManager(four)
		defer m.Close()
		run(b, m.Forwarder(), moved)
	})
	for _, c := range []struct {
		name   string
		frames [][]byte
	}{{"window-unmoved", kept}, {"window-remembered", moved}} {
		b.Run(c.name, func(b *testing.B) {
			m := newManager(three)
			defer m.Close()
			if err := m.Apply(four); err != nil {
				b.Fatal(err)
			}
			m.resolveOnce()
			m.mu.Lock()
			m.clusters[0].sweepWindow(time.Now().Add(learnPeriod))
			m.clusters[0].publish()
			m.mu.Unlock()
			if m.clusters[0].c.View().Trans == nil {
				b.Fatal("no window open")
			}
			run(b, m.Forwarder(), c.frames)
			if c.name == "window-remembered" && m.clusters[0].c.FlowStats().Remembered.Load() != 256 {
				b.Fatalf("%d flows remembered, want 256", m.clusters[0].c.FlowStats().Remembered.Load())
			}
		})
	}
}

// A server fails while a window is open and recovers in it: connections
// opened meanwhile on the servers that took its buckets stay there when the
// buckets go back, even one that sends nothing while the recovery is learnt.
func TestTransitionRecoveryAfterFailureInWindow(t *testing.T) {
	three, four := routingConfig(3, time.Minute, 1024), routingConfig(4, time.Minute, 1024)
	r := newTransitionRig(t, three)
	r.apply(four) // opens the window
	r.sweep(time.Now().Add(learnPeriod))
	r.m.healthChanged("web", healthEvent(0, false))
	healthy, failed := ownerFunc(t, four, nil), ownerFunc(t, four, map[int]bool{0: true})
	var a netip.Addr
	for i := 0; i < 65536; i++ {
		c := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		if healthy(c) == 0 && ownerFunc(t, three, nil)(c) == 0 { // s0's, untouched by the add
			a = c
			break
		}
	}
	interim := failed(a)
	if got := r.send(tcpFrame(a, 4000, hdr.TCPSyn)); got != interim {
		t.Fatalf("during the failure: SYN at %d, want %d", got, interim)
	}
	r.send(tcpFrame(a, 4000, hdr.TCPAck))
	r.m.healthChanged("web", healthEvent(0, true))
	if st := r.m.State()[0].Transition; st == nil || !st.Learning {
		t.Fatalf("the recovery did not start learning: %+v", st)
	}
	r.sweep(time.Now().Add(2 * learnPeriod))
	if got := r.send(tcpFrame(a, 4000, hdr.TCPAck)); got != interim {
		t.Fatalf("after the recovery the connection opened during the failure went to %d, want %d", got, interim)
	}
	if got := r.send(tcpFrame(a, 4001, hdr.TCPSyn)); got != 0 {
		t.Fatalf("after the recovery a new connection went to %d, want the recovered server 0", got)
	}
}

// Packets from several goroutines while the manager applies changes,
// fails and recovers a server and sweeps: no race (go test -race), and the
// memory's count matches its slots and its bound.
func TestTransitionConcurrent(t *testing.T) {
	// drain_timeout 2 s: windows close and open again while packets flow.
	three, four := routingConfig(3, 2*time.Second, 512), routingConfig(4, 2*time.Second, 512)
	r := newTransitionRig(t, three)
	lan := nullLAN(t, "null")
	r.cluster().LAN = lan
	f := r.m.Forwarder()
	// A window is open before the first packet, and the packets flow until
	// the changes are done (bounded), so they always overlap.
	now := time.Now()
	r.apply(four)
	stop := make(chan struct{})
	done := make(chan struct{})
	for g := 0; g < 3; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			flags := []uint8{hdr.TCPSyn, hdr.TCPAck, hdr.TCPAck | hdr.TCPFin, hdr.TCPRst, hdr.TCPSyn | hdr.TCPAck}
			for i := 0; i < 2_000_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := netip.AddrFrom4([4]byte{198, 51, byte(rng.IntN(4)), byte(rng.IntN(256))})
				var fr []byte
				if rng.IntN(4) == 0 {
					fr = udpFrom(a, uint16(rng.IntN(2000)))
				} else {
					fr = tcpFrame(a, uint16(rng.IntN(2000)), flags[rng.IntN(len(flags))])
				}
				f.Inbound(nil, fr)
			}
		}()
	}
	for i := 0; i < 200; i++ {
		now = now.Add(300 * time.Millisecond)
		switch i % 4 {
		case 0:
			r.apply(three)
		case 1:
			r.m.healthChanged("web", healthEvent(i%3, false))
		case 2:
			r.m.healthChanged("web", healthEvent((i-1)%3, true))
		case 3:
			r.apply(four)
		}
		r.sweep(now)
		runtime.Gosched() // let the packets run between changes
	}
	close(stop)
	for range 3 {
		<-done
	}
	if n := r.cluster().FlowStats().Windows.Load(); n < 2 {
		t.Fatalf("%d windows opened, want several", n)
	}
	r.m.mu.Lock()
	if w := r.mc().win; w != nil {
		n := 0
		w.tr.mem.each(func(*flowEntry) { n++ })
		if int64(n) != w.tr.mem.entries.Load() || n > w.tr.mem.capacity {
			t.Fatalf("%d slots in use, entries %d, capacity %d", n, w.tr.mem.entries.Load(), w.tr.mem.capacity)
		}
	}
	r.m.mu.Unlock()
	// Closing the window releases exactly what was remembered, windows
	// closed while packets were in flight included.
	r.sweep(now.Add(time.Hour))
	if fl := r.cluster().FlowStats(); fl.Remembered.Load() != fl.Released.Load() || fl.Remembered.Load() == 0 {
		t.Fatalf("remembered %d, released %d", fl.Remembered.Load(), fl.Released.Load())
	}
}

// FuzzTransitionInbound feeds arbitrary frames to the dispatch stage with a
// window open over every bucket (a server drained, so all its clients'
// flows are remembered, and a server added). Invariants: a frame is sent
// only to a server of the view, with the packet's addresses;
// each frame adds at most one entry; entries = remembered - released and
// never exceed the capacity.
func FuzzTransitionInbound(f *testing.F) {
	a := netip.MustParseAddr("198.51.100.10")
	syn := tcpFrame(a, 1000, hdr.TCPSyn)
	f.Add(syn)
	f.Add(tcpFrame(a, 1000, hdr.TCPAck|hdr.TCPFin))
	f.Add(tcpFrame(a, 1000, hdr.TCPRst))
	f.Add(udpFrom(a, 5000))
	f.Add(tcpFrame(a, 1000, hdr.TCPAck)[:14+20+12]) // TCP header cut short
	three := routingConfig(3, time.Minute, 64)
	drained := routingConfig(4, time.Minute, 64)
	drained.Clusters[0].Servers[0].Drain = true
	lan, peer := lanPair(f)
	m, err := NewManager(three, Deps{
		Endpoint: func(name string) (*tap.Endpoint, bool) { return lan, name == "lan0" },
		Resolver: fakeResolver{},
	})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	m.resolveOnce()
	if err := m.Apply(drained); err != nil {
		f.Fatal(err)
	}
	m.resolveOnce()
	c := m.clusters[0].c
	mem := c.View().Trans.mem
	buf := make([]byte, 4096)
	f.Fuzz(func(t *testing.T, frame []byte) {
		before := mem.entries.Load()
		work := append([]byte(nil), frame...)
		m.Forwarder().Inbound(nil, work)
		sent := 0
		defer func() {
			if string(frame) == string(syn) && sent != 1 { // the reading is real
				t.Fatalf("a good SYN made %d frames, want 1", sent)
			}
		}()
		for { // every frame sent (fragments included): to a server, the packet's addresses kept
			n := readInto(t, peer, buf)
			if n < 0 {
				break
			}
			sent++
			out := buf[:n]
			okMAC := false
			for _, mac := range c.View().MACs {
				okMAC = okMAC || [6]byte(out[0:6]) == mac
			}
			if !okMAC || len(out) < 14+20 || len(frame) < 14+20 || string(out[14+12:14+20]) != string(frame[14+12:14+20]) {
				t.Fatalf("sent %x for %x", out, frame)
			}
		}
		fl := c.FlowStats()
		e := mem.entries.Load()
		if e > before+1 || e > int64(mem.capacity) || uint64(e) != fl.Remembered.Load()-fl.Released.Load() {
			t.Fatalf("entries %d (before %d, capacity %d), remembered %d, released %d", e, before, mem.capacity, fl.Remembered.Load(), fl.Released.Load())
		}
	})
}

// A shard filled to its bound, then emptied in every order: deletion never
// loops and never loses an entry (tiny shards wrap around).
func TestFlowMemoryFullShardDeletion(t *testing.T) {
	for _, capacity := range []int{64, 128, 192, 640} {
		m := newFlowMemory(capacity)
		var keys []flowKey
		for p := 0; len(keys) < 100000 && m.entries.Load() < int64(m.capacity); p++ {
			k := flowKey{sport: uint16(p), dport: 80, proto: hdr.ProtoTCP}
			k.addr[1] = byte(p >> 16)
			if _, res := m.insert(&k, int32(p), 0, false); res == flowInserted {
				keys = append(keys, k)
			}
		}
		rng := rand.New(rand.NewPCG(uint64(capacity), 3))
		rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		for n, k := range keys {
			if _, res := m.lookup(&k, 0, false, true, false); res != flowReleasedR {
				t.Fatalf("capacity %d: entry %d of %d lost before its release", capacity, n, len(keys))
			}
		}
		if m.entries.Load() != 0 {
			t.Fatalf("capacity %d: %d entries left", capacity, m.entries.Load())
		}
	}
}

// readInto reads one frame from f if one is waiting, without waiting; -1 if
// none is.
func readInto(t *testing.T, f *os.File, buf []byte) int {
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := -1
	rc.Read(func(fd uintptr) bool {
		if m, err := unix.Read(int(fd), buf); err == nil {
			n = m
		}
		return true // never wait
	})
	return n
}

// tcp6Frame is tcpFrame for IPv6, to ghost6.
func tcp6Frame(src, ghost6 netip.Addr, sport uint16, flags uint8) []byte {
	f := make([]byte, 14+40+20)
	copy(f[0:6], hookLANMAC)
	copy(f[6:12], hookInMAC)
	f[12], f[13] = 0x86, 0xdd
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 20)
	ip[6], ip[7] = hdr.ProtoTCP, 64
	s, d := src.As16(), ghost6.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	binary.BigEndian.PutUint16(ip[40:], sport)
	binary.BigEndian.PutUint16(ip[42:], 80)
	ip[52] = 5 << 4
	ip[53] = flags
	return f
}

// IPv6 clients: the same rules (an old connection stays, a new one goes to
// the new owner).
func TestTransitionIPv6(t *testing.T) {
	ghost6 := netip.MustParseAddr("2001:db8::10")
	v6 := func(n int) *config.Config {
		cfg := routingConfig(n, time.Minute, 1024)
		cfg.Clusters[0].Address = ghost6
		return cfg
	}
	r := newTransitionRig(t, v6(3))
	before, after := ownerFunc(t, v6(3), nil), ownerFunc(t, v6(4), nil)
	var a netip.Addr
	for i := 1; i < 65536; i++ {
		c := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: byte(i >> 8), 15: byte(i)})
		if before(c) != after(c) {
			a = c
			break
		}
	}
	if !a.IsValid() {
		t.Fatal("no IPv6 client moves")
	}
	if got := r.send(tcp6Frame(a, ghost6, 1000, hdr.TCPSyn)); got != before(a) {
		t.Fatalf("before the change: %d, want %d", got, before(a))
	}
	r.apply(v6(4))
	r.sweep(time.Now().Add(learnPeriod))
	if got := r.send(tcp6Frame(a, ghost6, 1000, hdr.TCPAck)); got != before(a) {
		t.Fatalf("the straddling handshake's ACK at %d, want %d", got, before(a))
	}
	if got := r.send(tcp6Frame(a, ghost6, 1001, hdr.TCPSyn)); got != after(a) {
		t.Fatalf("a new connection at %d, want %d", got, after(a))
	}
	if got := r.send(tcp6Frame(a, ghost6, 1001, hdr.TCPAck)); got != after(a) {
		t.Fatalf("the new connection's ACK at %d, want %d", got, after(a))
	}
}

// An ICMP error about a flow (a quoted packet from the ghost to the client)
// goes where the flow's own packets go, window or not, and changes nothing.
func TestTransitionPickQuoted(t *testing.T) {
	three, four := routingConfig(3, time.Minute, 1024), routingConfig(4, time.Minute, 1024)
	r := newTransitionRig(t, three)
	moved, _ := movedClients(t, ownerFunc(t, three, nil), ownerFunc(t, four, nil), 1)
	a := moved[0]
	oldOf, newOf := ownerFunc(t, three, nil), ownerFunc(t, four, nil)
	quoted := func(port uint16, proto uint8) int {
		ghostPort := uint16(80) // tcpFrame's
		if proto == hdr.ProtoUDP {
			ghostPort = 9000 // udpFrame's
		}
		_, idx, _, why := r.cluster().pickQuoted(a, proto, port, ghostPort)
		ok := why == stage.None
		if !ok {
			return -1
		}
		return r.cluster().View().Servers[idx].ID
	}
	if got := quoted(1000, hdr.ProtoTCP); got != oldOf(a) {
		t.Fatalf("steady state: %d, want %d", got, oldOf(a))
	}
	r.apply(four)
	r.send(tcpFrame(a, 1000, hdr.TCPAck)) // an old connection
	r.send(udpFrom(a, 5000))              // an old UDP flow
	r.sweep(time.Now().Add(learnPeriod))
	r.send(tcpFrame(a, 1001, hdr.TCPSyn)) // a new connection
	n := r.cluster().FlowStats().Remembered.Load()
	for _, c := range []struct {
		port  uint16
		proto uint8
		want  int
	}{
		{1000, hdr.ProtoTCP, oldOf(a)}, {1001, hdr.ProtoTCP, newOf(a)}, {1002, hdr.ProtoTCP, oldOf(a)},
		{5000, hdr.ProtoUDP, oldOf(a)}, {5001, hdr.ProtoUDP, newOf(a)},
	} {
		if got := quoted(c.port, c.proto); got != c.want {
			t.Errorf("error about %d/%d: server %d, want %d", c.port, c.proto, got, c.want)
		}
	}
	if r.cluster().FlowStats().Remembered.Load() != n {
		t.Error("an ICMP error changed the memory")
	}
}

// A reload that changes the bucket count moves clients without stable
// buckets: the window decides per client, and keeps an old connection.
func TestTransitionBucketCountChange(t *testing.T) {
	before := routingConfig(3, time.Minute, 1024)
	after := routingConfig(3, time.Minute, 1024)
	after.Clusters[0].Buckets = 1000
	r := newTransitionRig(t, before)
	moved, kept := movedClients(t, ownerFunc(t, before, nil), ownerFunc(t, after, nil), 1)
	a := moved[0]
	r.apply(after)
	if r.m.State()[0].Transition == nil {
		t.Fatal("a change of bucket count opened no window")
	}
	r.sweep(time.Now().Add(learnPeriod))
	if got, want := r.send(tcpFrame(a, 1, hdr.TCPAck)), ownerFunc(t, before, nil)(a); got != want {
		t.Fatalf("an old connection at %d, want %d", got, want)
	}
	if got, want := r.send(tcpFrame(a, 2, hdr.TCPSyn)), ownerFunc(t, after, nil)(a); got != want {
		t.Fatalf("a new connection at %d, want %d", got, want)
	}
	n := r.cluster().FlowStats().Remembered.Load()
	r.send(tcpFrame(kept[0], 3, hdr.TCPAck))
	if r.cluster().FlowStats().Remembered.Load() != n {
		t.Fatal("a client that did not move was remembered")
	}
}

// hash = "modulo" (the patent's CA mod N): adding a server moves most
// clients; the window keeps their old connections all the same.
func TestTransitionModulo(t *testing.T) {
	mod := func(n int) *config.Config {
		cfg := routingConfig(n, time.Minute, 1024)
		cfg.Clusters[0].Hash = config.HashModulo
		return cfg
	}
	r := newTransitionRig(t, mod(3))
	before, after := ownerFunc(t, mod(3), nil), ownerFunc(t, mod(4), nil)
	moved, kept := movedClients(t, before, after, 1)
	a := moved[0]
	r.apply(mod(4))
	r.sweep(time.Now().Add(learnPeriod))
	if got := r.send(tcpFrame(a, 1, hdr.TCPAck)); got != before(a) {
		t.Fatalf("an old connection at %d, want %d", got, before(a))
	}
	if got := r.send(tcpFrame(a, 2, hdr.TCPSyn)); got != after(a) {
		t.Fatalf("a new connection at %d, want %d", got, after(a))
	}
	if got := r.send(tcpFrame(kept[0], 3, hdr.TCPAck)); got != after(kept[0]) {
		t.Fatalf("an unmoved client at %d, want %d", got, after(kept[0]))
	}
}
