package announce

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// The model check: an Announcer and six server agents (real Receivers)
// joined by a network that loses, duplicates, delays and reorders
// datagrams, with an adversary replaying old announcements and
// acknowledgements, while the membership changes every few hundred
// milliseconds (failures, recoveries, drains, weights, servers added and
// removed). The oracle is the definition of safety itself, checked after
// every delivery: no bucket is in two servers' filters. At the end the
// network heals and every filter must be the target table's.

// flight is a datagram on the model's network.
type flight struct {
	at   time.Time
	to   int // a host, or toAppliance
	b    []byte
	from int
}

const toAppliance = -1

type model struct {
	t       *testing.T
	rng     *rand.Rand
	clk     *fakeClock
	a       *Announcer
	cl      *config.Cluster
	hosts   []*host
	net     []flight
	sent    [][]byte // every announcement sent, for replays
	acks    [][]byte // every acknowledgement sent, for replays
	loss    float64
	dup     float64
	delay   time.Duration
	checks  int
	applied int
	// lastAnnounce is the manager's last periodic Announce.
	lastAnnounce time.Time
	// excuseDeaf leaves deaf hosts out of the check: once the bound has
	// excused them, their stale filters are what the bound costs.
	excuseDeaf bool
	// everPinned are the clients any pin set of the run named.
	everPinned []netip.Addr
}

type host struct {
	id     int
	r      *Receiver
	owned  []uint32
	pinned []netip.Addr // the pinned clients its filter accepts
	away   []netip.Addr // and those it drops
	deaf   bool         // the agent is dead: its filter stays, it hears nothing
	listen bool
}

func newModel(t *testing.T, seed uint64, n int) *model {
	m := &model{t: t, rng: rand.New(rand.NewPCG(seed, 0x9e3779b9)), clk: &fakeClock{t: time.Unix(1_800_000_000, 0)}}
	m.cl = webCluster()
	m.cl.Buckets = 64
	m.cl.AnnounceInterval = 200 * time.Millisecond
	m.a = NewAnnouncer(7, func(_ *config.Cluster, b []byte) error {
		m.sent = append(m.sent, bytes.Clone(b))
		for _, h := range m.hosts {
			m.transmit(h.id, b, toAppliance)
		}
		return nil
	}, nil)
	m.a.now = m.clk.now
	for id := range n {
		m.hosts = append(m.hosts, &host{id: id, r: mustReceiver(t, id), owned: []uint32{}, listen: true})
	}
	return m
}

// transmit puts b on the network: perhaps lost, perhaps twice, each copy
// with its own delay (so copies and datagrams overtake each other).
func (m *model) transmit(to int, b []byte, from int) {
	copies := 1
	if m.rng.Float64() < m.dup {
		copies = 2
	}
	for range copies {
		if m.rng.Float64() < m.loss {
			continue
		}
		d := time.Duration(m.rng.Int64N(int64(m.delay) + 1))
		m.net = append(m.net, flight{at: m.clk.t.Add(d), to: to, b: bytes.Clone(b), from: from})
	}
}

// deliver hands over every datagram that is due.
func (m *model) deliver() {
	var later []flight
	due := []flight{}
	for _, f := range m.net {
		if !f.at.After(m.clk.t) {
			due = append(due, f)
		} else {
			later = append(later, f)
		}
	}
	m.net = later
	m.rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	for _, f := range due {
		if f.to == toAppliance {
			m.a.HandleAck(f.b, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + f.from)}), DefaultPort))
		} else {
			m.hostGets(m.hosts[f.to], f.b)
		}
		m.check()
	}
}

func (m *model) hostGets(h *host, b []byte) {
	if h.deaf || !h.listen {
		return
	}
	res := h.r.Handle(b)
	switch res.Verdict {
	case Apply:
		h.owned = res.Owned // the filter changes, then the acknowledgement leaves
		here, away, err := res.Msg.PinnedFor(h.id)
		if err != nil {
			m.t.Fatal(err)
		}
		h.pinned, h.away = here, away
		h.r.Applied(res)
		m.applied++
	case Repeat:
	default:
		return
	}
	if ack, ok := h.r.Ack(); ok {
		m.acks = append(m.acks, ack)
		m.transmit(toAppliance, ack, h.id)
	}
}

// check is the safety property: no bucket in two filters.
func (m *model) check() {
	m.t.Helper()
	m.checks++
	owner := make([]int, m.cl.Buckets)
	for i := range owner {
		owner[i] = -1
	}
	for _, h := range m.hosts {
		if h.deaf && m.excuseDeaf {
			continue
		}
		for _, b := range h.owned {
			if owner[b] >= 0 {
				m.t.Fatalf("at %v bucket %d is in the filters of servers %d and %d", m.clk.t.Format("15:04:05.000"), b, owner[b], h.id)
			}
			owner[b] = h.id
		}
	}
	// Every client ever pinned is accepted by one filter at most: as a pin
	// (ahead of the hash), or, where its host's table does not pin it, by
	// its bucket.
	for _, c := range m.everPinned {
		b := core.Bucket(core.JHash(c, m.cl.Seed), uint32(m.cl.Buckets))
		at := -1
		for _, h := range m.hosts {
			if h.deaf && m.excuseDeaf {
				continue
			}
			accepts := slices.Contains(h.pinned, c)
			if !accepts && !slices.Contains(h.away, c) {
				_, accepts = slices.BinarySearch(h.owned, b)
			}
			if accepts {
				if at >= 0 {
					m.t.Fatalf("at %v client %s (pinned) is accepted by the filters of servers %d and %d", m.clk.t.Format("15:04:05.000"), c, at, h.id)
				}
				at = h.id
			}
		}
	}
}

// replay has the adversary resend an old datagram.
func (m *model) replay() {
	if len(m.sent) > 0 && m.rng.IntN(2) == 0 {
		b := m.sent[m.rng.IntN(len(m.sent))]
		m.transmit(m.rng.IntN(len(m.hosts)), b, toAppliance)
	} else if len(m.acks) > 0 {
		m.transmit(toAppliance, m.acks[m.rng.IntN(len(m.acks))], 0)
	}
}

// membership is the table's view of the model's servers.
type membership struct {
	in     []bool
	up     []bool
	weight []int
}

func (ms *membership) servers() []core.Server {
	var out []core.Server
	for id := range ms.in {
		if ms.in[id] {
			out = append(out, core.Server{ID: id, Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + id)}), Weight: ms.weight[id], Up: ms.up[id]})
		}
	}
	return out
}

// change makes one random change of the kinds an operator or a health
// check makes.
func (ms *membership) change(rng *rand.Rand) string {
	id := rng.IntN(len(ms.in))
	switch rng.IntN(5) {
	case 0:
		ms.in[id] = !ms.in[id]
		return fmt.Sprintf("server %d member %v", id, ms.in[id])
	case 1:
		ms.up[id] = !ms.up[id]
		return fmt.Sprintf("server %d up %v", id, ms.up[id])
	case 2:
		if ms.weight[id] == 0 {
			ms.weight[id] = 1
		} else {
			ms.weight[id] = 0
		}
		return fmt.Sprintf("server %d weight %d", id, ms.weight[id])
	default:
		ms.weight[id] = 1 + rng.IntN(3)
		return fmt.Sprintf("server %d weight %d", id, ms.weight[id])
	}
}

// run advances the model by d in 1ms steps: the Announcer's timer, the
// manager's periodic Announce, deliveries and replays.
func (m *model) run(d time.Duration, ms *membership, replays float64) {
	end := m.clk.t.Add(d)
	for m.clk.t.Before(end) {
		m.clk.advance(time.Millisecond)
		m.a.Tick()
		if m.clk.t.Sub(m.lastAnnounce) >= m.cl.AnnounceInterval {
			m.a.Announce(m.cl, 0, ms.servers())
			m.lastAnnounce = m.clk.t
		}
		if m.rng.Float64() < replays {
			m.replay()
		}
		m.deliver()
	}
}

// settle heals the network and runs until every filter is the target's.
func (m *model) settle(ms *membership) {
	m.t.Helper()
	m.loss, m.dup = 0, 0
	m.run(3*time.Second, ms, 0)
	tb, err := core.NewTable(ms.servers(), m.cl.Buckets)
	if err != nil {
		m.t.Fatal(err)
	}
	st := m.a.Status()
	if len(st) != 1 || !st[0].Settled {
		m.t.Fatalf("not settled after the network healed: %+v", st)
	}
	for _, h := range m.hosts {
		want := tb.Owned(h.id)
		if want == nil {
			want = []uint32{}
		}
		if !h.deaf && !slices.Equal(h.owned, want) {
			m.t.Errorf("server %d's filter has %v, the table gives it %v", h.id, h.owned, want)
		}
		// A pin is this server's when it is live, else the hash decides.
		var wantPins []netip.Addr
		for _, p := range m.cl.Pins {
			live := slices.ContainsFunc(ms.servers(), func(s core.Server) bool { return s.ID == p.Server && s.Up && s.Weight > 0 })
			owner := p.Server
			if !live {
				owner, _ = tb.OwnerID(core.Bucket(core.JHash(p.Client, m.cl.Seed), uint32(m.cl.Buckets)))
				if _, ok := tb.OwnerID(core.Bucket(core.JHash(p.Client, m.cl.Seed), uint32(m.cl.Buckets))); !ok {
					owner = -1
				}
			}
			if owner == h.id {
				wantPins = append(wantPins, p.Client)
			}
		}
		slices.SortFunc(wantPins, netip.Addr.Compare)
		if !h.deaf && !slices.Equal(h.pinned, wantPins) {
			m.t.Errorf("server %d's filter accepts pinned clients %v, want %v", h.id, h.pinned, wantPins)
		}
	}
}

// TestTransitionModelPins is TestTransitionModel with pinned clients (on
// servers that fail, recover, drain and leave like the others) and pins that
// change (moved to another server, dropped, added back) now and then: no
// pinned client is ever accepted by two filters, as a pin or by its bucket,
// and once the network heals each is accepted by its pinned server when
// that is live, else by its bucket's owner.
func TestTransitionModelPins(t *testing.T) {
	for seed := range uint64(10) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			m := newModel(t, 100+seed, 6)
			all := []config.Pin{
				{Client: netip.MustParseAddr("192.0.2.7"), Server: 0},
				{Client: netip.MustParseAddr("192.0.2.8"), Server: 1},
				{Client: netip.MustParseAddr("198.51.100.9"), Server: 2},
			}
			for _, p := range all {
				m.everPinned = append(m.everPinned, p.Client)
			}
			m.cl.Pins = slices.Clone(all)
			m.a.ackTimeout = time.Hour
			m.loss, m.dup, m.delay = 0.25, 0.1, 150*time.Millisecond
			ms := &membership{in: []bool{true, true, true, true, false, false}, up: make([]bool, 6), weight: []int{1, 1, 1, 1, 1, 1}}
			for i := range ms.up {
				ms.up[i] = true
			}
			m.a.Announce(m.cl, 0, ms.servers())
			for range 25 {
				m.run(time.Duration(20+m.rng.IntN(400))*time.Millisecond, ms, 0.05)
				if m.rng.IntN(4) == 0 {
					// A reload changes the pins: one moves, or the set
					// shrinks or grows back.
					cl := *m.cl
					cl.Pins = nil
					for _, p := range all {
						switch m.rng.IntN(4) {
						case 0: // dropped
						case 1:
							cl.Pins = append(cl.Pins, config.Pin{Client: p.Client, Server: m.rng.IntN(6)})
						default:
							cl.Pins = append(cl.Pins, p)
						}
					}
					m.cl = &cl
				} else {
					ms.change(m.rng)
				}
				m.a.Announce(m.cl, 0, ms.servers())
			}
			m.settle(ms)
			if st := m.a.Status()[0]; st.Excused != 0 {
				t.Errorf("excused %d, want 0", st.Excused)
			}
		})
	}
}

// TestTransitionModel: the safety property under loss, duplication, delay,
// reordering and replays, for 20 seeds; then liveness once the network
// heals. The acknowledgement bound is out of reach (an hour), so no server
// is ever excused: safety must hold without exception.
func TestTransitionModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			m := newModel(t, seed, 6)
			m.a.ackTimeout = time.Hour
			m.loss, m.dup, m.delay = 0.25, 0.1, 150*time.Millisecond
			ms := &membership{in: []bool{true, true, true, true, false, false}, up: make([]bool, 6), weight: []int{1, 1, 1, 1, 1, 1}}
			for i := range ms.up {
				ms.up[i] = true
			}
			m.a.Announce(m.cl, 0, ms.servers())
			var changes []string
			for range 25 {
				m.run(time.Duration(20+m.rng.IntN(400))*time.Millisecond, ms, 0.05)
				changes = append(changes, ms.change(m.rng))
				m.a.Announce(m.cl, 0, ms.servers())
			}
			m.settle(ms)
			st := m.a.Status()[0]
			if st.Excused != 0 || st.Stalls == 0 || m.applied < 20 {
				t.Errorf("excused %d (want 0), %d acquisitions waited (want some), %d tables applied", st.Excused, st.Stalls, m.applied)
			}
			t.Logf("%d changes (%v...), %d announcements, %d tables applied, %d checks, %d acquisitions waited for acknowledgements",
				len(changes), changes[:3], len(m.sent), m.applied, m.checks, st.Stalls)
		})
	}
}

// TestTransitionBound: a server whose agent is dead (its filter stays, it
// hears nothing) holds up a change for AckTimeout and no longer: then the
// acquisition goes out, the server is excused and shown late. Until then
// its buckets have no owner besides it.
func TestTransitionBound(t *testing.T) {
	m := newModel(t, 1, 3)
	m.delay = 5 * time.Millisecond
	ms := &membership{in: []bool{true, true, true}, up: []bool{true, true, true}, weight: []int{1, 1, 1}}
	m.a.Announce(m.cl, 0, ms.servers())
	m.run(time.Second, ms, 0)
	m.settle(ms)
	m.hosts[0].deaf = true
	ms.weight[0] = 0 // drain server 0: its buckets move
	m.a.Announce(m.cl, 0, ms.servers())
	changed := m.clk.t
	bound := AckTimeout(m.cl.AnnounceInterval)
	var acquired time.Time
	for m.clk.t.Sub(changed) < 3*bound {
		m.run(time.Millisecond, ms, 0) // checks, with the deaf server's filter, until the acquisition
		if acquired.IsZero() && m.a.Status()[0].Settled {
			acquired = m.clk.t
			m.excuseDeaf = true
		}
	}
	if acquired.IsZero() {
		t.Fatalf("the change never completed: %+v", m.a.Status())
	}
	if wait := acquired.Sub(changed); wait < bound || wait > bound+50*time.Millisecond {
		t.Errorf("the acquisition went out %v after the change, want the bound %v", wait, bound)
	}
	st := m.a.Status()[0]
	if st.Excused != 1 || !st.Servers[0].Late || st.Servers[0].Excused != 1 || st.Servers[0].Behind == 0 {
		t.Errorf("status: %+v", st)
	}
	t.Logf("a dead agent held the change up for %v (bound %v); status %+v", acquired.Sub(changed), bound, st.Servers[0])
}

// members3 is three equal servers, those in down failed.
func members3(down ...int) []Member {
	var out []Member
	for id := range 3 {
		out = append(out, Member{ID: id, Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + id)}), Weight: 1, Up: !slices.Contains(down, id)})
	}
	return out
}

// settleAll acknowledges the announcement in force from every party and
// steps until nothing is due.
func settleAll(t *testing.T, tr *Transition, now time.Time) {
	t.Helper()
	for range 8 {
		for _, p := range tr.Parties() {
			if _, err := tr.Ack(p.ID, tr.Seq(), now); err != nil {
				t.Fatal(err)
			}
		}
		if did, err := tr.Step(now); err != nil {
			t.Fatal(err)
		} else if !did {
			break
		}
	}
	if !tr.Settled() {
		t.Fatal("not settled")
	}
}

// TestTransitionNewParameters: a new seed (or bucket count) makes the
// buckets of the two tables incomparable: everything is released under the
// new parameters, and the new table follows once every server has
// acknowledged the release.
func TestTransitionNewParameters(t *testing.T) {
	now := time.Unix(1000, 0)
	tr := &Transition{AckTimeout: time.Hour}
	if _, err := tr.SetTarget(config.HashJhash, 1, 64, members3()); err != nil {
		t.Fatal(err)
	}
	tr.Step(now)
	settleAll(t, tr, now)
	if _, err := tr.SetTarget(config.HashJhash, 2, 128, members3()); err != nil {
		t.Fatal(err)
	}
	if did, _ := tr.Step(now); !did {
		t.Fatal("no release for the new parameters")
	}
	m := tr.Current()
	if m.Seed != 2 || m.Buckets != 128 || len(Unowned(tr.CurrentGrants())) != 128 {
		t.Fatalf("release: seed %d, %d buckets, %d unowned; want seed 2, 128 buckets, all unowned", m.Seed, m.Buckets, len(Unowned(tr.CurrentGrants())))
	}
	for _, id := range []int{0, 1} {
		tr.Ack(id, tr.Seq(), now)
	}
	if did, _ := tr.Step(now); did {
		t.Fatal("the new table went out before server 2 acknowledged the release")
	}
	tr.Ack(2, tr.Seq(), now)
	if did, _ := tr.Step(now); !did || !tr.Settled() || len(Unowned(tr.CurrentGrants())) != 0 {
		t.Fatalf("after every acknowledgement: issued %v, settled %v", did, tr.Settled())
	}
}

// TestTransitionChangesInFlight: changes that arrive while none is
// acknowledged are folded into releases carrying the tables in force (at
// most MaxAlso further ones); each only takes buckets away, and nothing is
// acquired until the servers acknowledge.
func TestTransitionChangesInFlight(t *testing.T) {
	now := time.Unix(1000, 0)
	tr := &Transition{AckTimeout: time.Hour}
	tr.SetTarget(config.HashJhash, 1, 64, members3())
	tr.Step(now)
	settleAll(t, tr, now)
	// Without acknowledgements every server may still hold whatever any
	// announcement since the last one acknowledged gave it.
	mayHold := make([]map[int32]bool, 64)
	for b, o := range tr.CurrentGrants() {
		mayHold[b] = map[int32]bool{o: true}
	}
	for i, down := range [][]int{{0}, {0, 1}, {1}, {2}, {}} {
		tr.SetTarget(config.HashJhash, 1, 64, members3(down...))
		if _, err := tr.Step(now); err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		for b, o := range tr.CurrentGrants() {
			if o == Nobody {
				continue
			}
			for h := range mayHold[b] {
				if h != Nobody && h != o {
					t.Fatalf("change %d: bucket %d given to %d while %d may still hold it", i, b, o, h)
				}
			}
			mayHold[b][o] = true
		}
		if n := len(tr.Current().Also); n > MaxAlso {
			t.Fatalf("change %d: %d further tables", i, n)
		}
	}
	settleAll(t, tr, now)
	tb, _ := core.NewTable(toServers(members3()), 64)
	for id := range 3 {
		if got := OwnedBy(tr.CurrentGrants(), id); !slices.Equal(got, tb.Owned(id)) {
			t.Errorf("server %d: %v, want %v", id, got, tb.Owned(id))
		}
	}
}

func toServers(ms []Member) []core.Server {
	m := Message{Members: ms}
	return m.Servers()
}
