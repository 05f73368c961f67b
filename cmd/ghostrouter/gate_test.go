package main

import (
	"crypto/ed25519"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/ghostrouter/ghostrouter/router/vrrp"
	"golang.org/x/sys/unix"
)

// gateRig is an announceGate over a real vrrp.Set on an in-memory link (a
// socketpair endpoint; what the Set writes is read and dropped), a peer
// master that advertises and announces (its announcements are handed to
// the gate's hear as the LAN would), and three servers' real Receivers that
// apply and acknowledge whatever either appliance sends.
type gateRig struct {
	t       *testing.T
	ep      *tap.Endpoint
	vr      *vrrp.Set
	g       *announceGate
	cl      *config.Cluster
	servers []core.Server
	peer    *announce.Announcer
	pub     ed25519.PublicKey

	async sync.WaitGroup // deliveries in flight
	mu    sync.Mutex
	rcv   []*announce.Receiver
	owned [][]uint32
	ours  [][]byte // datagrams the gate sent
}

var (
	gatePeer = netip.MustParseAddr("10.0.0.2")
	gateOwn  = netip.MustParseAddr("10.0.0.3")
	gateVIP  = netip.MustParseAddr("10.0.0.1")
)

func newGateRig(t *testing.T) *gateRig {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peerFile := os.NewFile(uintptr(fds[1]), "peer")
	ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: "lan0", Files: []*os.File{os.NewFile(uintptr(fds[0]), "lan0")},
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 2048)
		for {
			peerFile.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := peerFile.Read(buf); err != nil {
				return
			}
		}
	}()
	vr, err := vrrp.New([]config.VRRP{{Interface: "lan0", VRID: 52, Priority: 100, Interval: 50 * time.Millisecond, Preempt: true,
		Addresses: []netip.Addr{gateVIP}, Checksum: config.ChecksumRFC5798}}, vrrp.Deps{Link: func(string) (vrrp.Link, bool) {
		return vrrp.Link{EP: ep, V4: gateOwn, Broadcasts: []netip.Addr{netip.MustParseAddr("10.0.0.255")}}, true
	}})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &gateRig{t: t, ep: ep, vr: vr, pub: pub}
	r.cl = &config.Cluster{Name: "web", Address: netip.MustParseAddr("10.0.0.100"), Interface: "lan0", Mode: config.ModeBroadcast,
		Hash: config.HashJhash, Seed: 7, Buckets: 256, AnnounceKey: priv, AnnouncePort: announce.DefaultPort, AnnounceInterval: 100 * time.Millisecond}
	for id := range 3 {
		r.servers = append(r.servers, core.Server{ID: id, Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + id)}), Weight: 1, Up: true})
		rc, err := announce.NewReceiver("web", pub, id)
		if err != nil {
			t.Fatal(err)
		}
		r.rcv = append(r.rcv, rc)
		r.owned = append(r.owned, nil)
	}
	// The peer's announcements reach the servers (which acknowledge to
	// the peer) and the gate's ear.
	r.peer = announce.NewAnnouncer(77, func(_ *config.Cluster, b []byte) error {
		b = slices.Clone(b)
		r.async.Add(1)
		go func() {
			defer r.async.Done()
			r.deliver(b, r.peer.HandleAck)
			r.g.hear("lan0", gatePeer, b)
		}()
		return nil
	}, nil)
	r.g = newAnnounceGate(vr, func(_ *config.Cluster, b []byte) error {
		b = slices.Clone(b)
		r.mu.Lock()
		r.ours = append(r.ours, b)
		r.mu.Unlock()
		r.async.Add(1)
		go func() {
			defer r.async.Done()
			r.deliver(b, func(ack []byte, from netip.AddrPort) { r.g.HandleAck(ack, from) })
		}()
		return nil
	}, slog.New(slog.DiscardHandler), nil)
	r.g.listen = func(*config.Cluster) error { return nil }
	r.g.own = func(a netip.Addr) bool { return a == gateOwn }
	t.Cleanup(func() {
		r.g.Close()
		vr.Close()
		r.peer.Close()
		r.async.Wait()
		ep.Close()
		peerFile.Close()
		<-drained
	})
	return r
}

// deliver hands b to every server, which applies it and acknowledges.
func (r *gateRig) deliver(b []byte, ack func([]byte, netip.AddrPort)) {
	r.mu.Lock()
	var acks [][]byte
	for i, rc := range r.rcv {
		res := rc.Handle(b)
		switch res.Verdict {
		case announce.Apply:
			r.owned[i] = res.Owned
			rc.Applied(res)
		case announce.Repeat:
		default:
			continue
		}
		if a, ok := rc.Ack(); ok {
			acks = append(acks, a)
		}
	}
	r.mu.Unlock()
	for i, a := range acks {
		ack(a, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i)}), announce.DefaultPort))
	}
}

// advert injects one VRRPv3 advertisement of the peer into the Set.
func (r *gateRig) advert(prio uint8) {
	msg, err := vrrp.Append(nil, &vrrp.Message{VRID: 52, Priority: prio, Interval: 5, Addrs: []netip.Addr{gateVIP}, Checksum: vrrp.PseudoHeader}, gatePeer, vrrp.Group4())
	if err != nil {
		r.t.Fatal(err)
	}
	f := []byte{1, 0, 0x5e, 0, 0, 0x12, 2, 0, 0, 0, 0, 2, 8, 0}
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, vrrp.TTL, vrrp.Protocol, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(msg)))
	ip = append(ip, gatePeer.AsSlice()...)
	ip = append(ip, vrrp.Group4().AsSlice()...)
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	r.vr.Inbound(r.ep, append(append(f, ip...), msg...))
}

func (r *gateRig) sent() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ours)
}

func (r *gateRig) state() string {
	for _, v := range r.vr.Status() {
		return v.State
	}
	return ""
}

func gateWait(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestAnnounceGateTakeover: a backup gate hears the peer master's
// announcements (and refuses forged or foreign ones), sends nothing itself,
// joins the election only once it can continue them, and when the peer
// hands over (priority 0) continues them under its own epoch: its first
// announcement grants every server the buckets it had, and the servers'
// filters never lose a bucket. Then handover: one last repetition, then
// silence.
func TestAnnounceGateTakeover(t *testing.T) {
	r := newGateRig(t)
	stopAdverts := make(chan struct{})
	advertsDone := make(chan struct{})
	go func() { // the peer advertises every 50ms, priority 150
		defer close(advertsDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopAdverts:
				return
			case <-tick.C:
				r.advert(150)
			}
		}
	}()
	r.vr.Start()
	r.g.Start()
	gateWait(t, "backup", 3*time.Second, func() bool { return r.state() == "backup" })

	// The peer announces (its first grants nothing; the table follows the
	// acknowledgements); the manager asks the gate to announce too.
	r.peer.Start()
	stopManager := make(chan struct{})
	managerDone := make(chan struct{})
	go func() {
		defer close(managerDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopManager:
				return
			case <-tick.C:
				r.peer.Announce(r.cl, 1, r.servers)
				r.g.Announce(r.cl, 1, r.servers)
			}
		}
	}()
	tb, err := core.NewTable(r.servers, r.cl.Buckets)
	if err != nil {
		t.Fatal(err)
	}
	gateWait(t, "the servers in step with the peer", 3*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i := range r.rcv {
			if len(r.owned[i]) != len(tb.Owned(i)) {
				return false
			}
		}
		return true
	})
	// Forged and foreign datagrams are refused.
	good := r.lastPeerDatagram()
	forged := slices.Clone(good)
	forged[len(forged)-1] ^= 1
	r.g.hear("lan0", gatePeer, forged)
	r.g.hear("lan0", netip.MustParseAddr("10.0.0.9"), good)
	gateWait(t, "the gate ready to lead", 3*time.Second, r.g.readyToLead)
	if n := r.sent(); n != 0 {
		t.Fatalf("the backup gate sent %d announcements", n)
	}
	tk := r.g.Takeover()
	if len(tk.Heard) != 1 || tk.Heard[0].Epoch != 77 || tk.Heard[0].Counters.Refused != 1 || tk.Heard[0].Foreign != 1 || tk.Heard[0].Counters.Heard == 0 {
		t.Fatalf("what the backup heard: %+v", tk)
	}

	// The peer hands over: it stops announcing, repeats its last, sends
	// priority 0.
	close(stopManager)
	<-managerDone
	r.peer.Flush()
	r.peer.Close()
	close(stopAdverts)
	<-advertsDone
	before := r.ownedNow()
	r.advert(0)
	gateWait(t, "master", 2*time.Second, func() bool { return r.state() == "master" && r.sent() > 0 })
	r.mu.Lock()
	first := slices.Clone(r.ours[0])
	r.mu.Unlock()
	m, err := announce.Unmarshal(first, r.pub)
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Grants()
	if err != nil {
		t.Fatal(err)
	}
	if m.Epoch == 77 || len(announce.Unowned(g)) != 0 || len(m.Also) != 0 {
		t.Errorf("the new master's first announcement: epoch %d, %d further tables, %d buckets without an owner; want a new epoch granting the whole table",
			m.Epoch, len(m.Also), len(announce.Unowned(g)))
	}
	for i := range r.servers {
		if !slices.Equal(announce.OwnedBy(g, i), tb.Owned(i)) {
			t.Errorf("server %d: the first announcement grants %d buckets, the table %d", i, len(announce.OwnedBy(g, i)), len(tb.Owned(i)))
		}
	}
	gateWait(t, "the servers on the new epoch", 2*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, rc := range r.rcv {
			if e, _, _ := rc.Floor(); e != m.Epoch {
				return false
			}
		}
		return true
	})
	if after := r.ownedNow(); !slices.EqualFunc(after, before, slices.Equal) {
		t.Errorf("the servers' buckets changed across the takeover")
	}
	if tk := r.g.Takeover(); tk.Continued != 1 || tk.Fresh != 0 {
		t.Errorf("takeovers: %+v", tk)
	}
	if st := r.g.Status(); len(st) != 1 || st[0].Continued == nil || st[0].Continued.Epoch != 77 || !st[0].Settled {
		t.Errorf("status after the takeover: %+v", st)
	}

	// Handover: one more datagram, then nothing.
	n := r.sent()
	r.g.handover()
	if r.sent() != n+1 {
		t.Errorf("handover sent %d datagrams, want 1", r.sent()-n)
	}
	r.g.Announce(r.cl, 1, r.servers)
	if r.sent() != n+1 {
		t.Errorf("announced after the handover")
	}
}

func (r *gateRig) ownedNow() [][]uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]uint32, len(r.owned))
	for i, o := range r.owned {
		out[i] = slices.Clone(o)
	}
	return out
}

// lastPeerDatagram is a fresh datagram of the peer (its announcement in
// force, signed), for the refusal checks.
func (r *gateRig) lastPeerDatagram() []byte {
	st := r.peer.Status()
	if len(st) != 1 {
		r.t.Fatalf("peer status %+v", st)
	}
	m := announce.Message{Cluster: "web", Epoch: 77, Seq: st[0].Seq, Tx: 1 << 40, Hash: config.HashJhash, Seed: 7, Buckets: 256,
		Ghost: r.cl.Address, Interval: r.cl.AnnounceInterval, Members: announce.MembersFrom(r.servers)}
	b, err := m.Marshal(r.cl.AnnounceKey)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}
