package neigh

import (
	"net/netip"
	"sort"
	"testing"
	"time"
)

// FuzzGuard drives one resolved server (IPv4 or IPv6, pinned or not)
// through a sequence of events read from the input: time passing (the
// resolver's steps), the known MAC's holder leaving or coming back, claims of
// every kind with every kind of MAC, answers to the appliance from any MAC,
// and raw bytes. Invariants after every event:
//   - the published MAC, and netstack's entry, is always unicast and the same;
//   - a pinned MAC never changes;
//   - a known MAC is replaced only after at least Probes unicast probes to it
//     went out since it last answered, the first of them at least
//     Probes x Probe before the change;
//   - it is replaced only by a MAC that answered the appliance.
func FuzzGuard(f *testing.F) {
	// Seeds: the holder answers through a claim storm (0x04 0x00: holder
	// stays; 0x02: claims; 0x00: time passes); the holder leaves and a
	// new MAC answers; broadcast answers during the change; pinned.
	f.Add([]byte{0, 0x02, 0x00, 0x02, 0x11, 0x00, 0x20, 0x02, 0x23, 0x00, 0x40, 0x00, 0xff})
	f.Add([]byte{0, 0x04, 0x01, 0x02, 0x01, 0x00, 0x40, 0x00, 0x40, 0x00, 0x40, 0x03, 0x02, 0x00, 0x40})
	f.Add([]byte{1, 0x04, 0x01, 0x02, 0x05, 0x00, 0xc8, 0x03, 0x01, 0x03, 0x02, 0x00, 0x10, 0x03, 0x00})
	f.Add([]byte{2, 0x04, 0x01, 0x02, 0x02, 0x00, 0xff, 0x03, 0x03, 0x03, 0x00, 0x05, 0x01})
	f.Add([]byte{3, 0x05, 0x08, 0x06, 0x00, 0x01, 0x00, 0x30})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 1 || len(in) > 512 {
			return
		}
		v6, pinned := in[0]&1 == 1, in[0]&2 == 2
		in = in[1:]
		p := DefaultParams()
		var r *Resolver
		var port *fakePort
		var st *fakeStatics
		var a netip.Addr
		var known [6]byte
		if pinned {
			var mac [6]byte
			a, mac = serverAddr(0, v6)
			r, port, st = newTest(t, p, []Target{{Interface: "lan0", Addr: a, Pin: mac}})
			known = mac
		} else {
			r, port, st, a, known = resolveOne(t, v6, p)
		}
		macs := [][6]byte{known, rogue, broadcastMAC, {0x01, 0x00, 0x5e, 0, 0, 1}, {0x33, 0x33, 0xff, 0, 0, 1}, {0x02, 0xbb, 0, 0, 0, 0x99}, {}}
		holder := known // the MAC of the host that answers unicast probes, or zero
		answered := map[[6]byte]bool{}
		var probes []time.Time // unicast probes to known since it last answered
		now := time.Unix(1000, 0)
		for len(in) >= 2 {
			op, arg := in[0]%6, in[1]
			in = in[2:]
			switch op {
			case 0: // time passes; the holder answers probes sent to it, anyone answers broadcasts as arg says
				now = now.Add(time.Duration(arg) * 10 * time.Millisecond)
				r.step(now)
				for _, fr := range port.take() {
					q := readRequest(t, fr)
					if q.to == known {
						probes = append(probes, now)
					}
					var from [6]byte
					switch {
					case !broadcastTo(q) && q.to == holder && holder != [6]byte{}:
						from = holder
					case broadcastTo(q) && holder != [6]byte{}:
						from = holder
					case broadcastTo(q):
						from = macs[int(arg)%len(macs)]
					default:
						continue
					}
					before := r.stats.Confirmed.Load()
					answered[from] = true
					r.input("lan0", selfMAC, replyFor(from, a), now)
					if from == known && r.stats.Confirmed.Load() > before {
						probes = nil
					}
				}
			case 1: // the holder leaves, or comes back, or a new one arrives
				holder = macs[int(arg)%len(macs)]
				if !Unicast(holder) {
					holder = [6]byte{}
				}
			case 2: // a claim of any kind with any MAC
				cs := claims(a, macs[int(arg)%len(macs)])
				keys := make([]string, 0, len(cs))
				for k := range cs {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				fr := cs[keys[int(arg>>3)%len(keys)]]
				if m, ok := Parse(fr, selfMAC); ok && m.Reply {
					answered[m.MAC] = true // a claim shaped as an answer to the appliance is one
				}
				r.input("lan0", selfMAC, fr, now)
			case 3: // an answer to the appliance from any MAC, at any time
				from := macs[int(arg)%len(macs)]
				before := r.stats.Confirmed.Load()
				answered[from] = true
				r.input("lan0", selfMAC, replyFor(from, a), now)
				if from == known && r.stats.Confirmed.Load() > before {
					probes = nil
				}
			case 4: // raw bytes as a frame
				n := min(int(arg), len(in))
				if m, ok := Parse(in[:n], selfMAC); ok && m.Reply {
					answered[m.MAC] = true
				}
				r.input("lan0", selfMAC, in[:n], now)
				in = in[n:]
			case 5: // a reload keeping the target
				r.SetTargets(r.currentTargets())
			}
			r.publish()
			got, ok := r.LinkAddress("lan0", a)
			if !ok {
				if e := r.Entries()[0]; e.State != StateGone || e.MAC != macString(known) {
					t.Fatalf("the resolved server lost its MAC in state %s (%s)", e.State, e.MAC)
				}
				if _, in := st.m[a]; in {
					t.Fatalf("netstack keeps an entry for a gone MAC")
				}
				continue
			}
			if !Unicast(got) {
				t.Fatalf("published MAC %x is not unicast", got)
			}
			if st.m[a] != got {
				t.Fatalf("netstack's entry %x, published %x", st.m[a], got)
			}
			if got == known {
				continue
			}
			if pinned {
				t.Fatalf("pinned MAC %x replaced by %x", known, got)
			}
			if !answered[got] {
				t.Fatalf("MAC %x accepted without ever answering the appliance", got)
			}
			if len(probes) < p.Probes {
				t.Fatalf("MAC %x replaced by %x after %d unanswered probes, want at least %d", known, got, len(probes), p.Probes)
			}
			if d := now.Sub(probes[0]); d < time.Duration(p.Probes)*p.Probe {
				t.Fatalf("MAC %x replaced by %x %v after the first unanswered probe, want at least %v", known, got, d, time.Duration(p.Probes)*p.Probe)
			}
			known, probes = got, nil
		}
	})
}

// currentTargets returns the resolver's targets (for reload tests).
func (r *Resolver) currentTargets() []Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Target, len(r.order))
	for i, e := range r.order {
		out[i] = e.t
	}
	return out
}

// FuzzParse: Parse never panics and never reads what is not there; what it
// reports is in the frame: the stated MAC is the ARP sender, an NDP option or
// (a solicited advertisement without one) the Ethernet source, and the
// address is the ARP sender, the NS source or the NA target.
func FuzzParse(f *testing.F) {
	a4, m4 := serverAddr(1, false)
	a6, m6 := serverAddr(1, true)
	f.Add(arpAnswer(m4, a4))
	f.Add(naReply(m6, a6))
	for _, c := range claims(a6, rogue) {
		f.Add(c)
	}
	for _, c := range claims(a4, broadcastMAC) {
		f.Add(c)
	}
	f.Add(naFrame(selfMAC, m6, a6, self6, a6, 0x40, [6]byte{}, false))
	var buf [FrameSize]byte
	f.Add(AppendRequest(buf[:0], selfMAC, self6, a6, [6]byte{}))
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, ok := Parse(frame, selfMAC)
		if !ok {
			return
		}
		found := false
		for i := 0; i+6 <= len(frame); i++ {
			if [6]byte(frame[i:i+6]) == m.MAC {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("stated MAC %x is nowhere in the frame", m.MAC)
		}
		switch m.Kind {
		case KindARPRequest, KindARPReply, KindARPGratuitous:
			if !m.Addr.Is4() || [6]byte(frame[22:28]) != m.MAC {
				t.Fatalf("ARP %s: %v at %x, not the sender fields", m.Kind, m.Addr, m.MAC)
			}
		case KindNS:
			if netip.AddrFrom16([16]byte(frame[22:38])) != m.Addr || m.Addr.IsUnspecified() {
				t.Fatalf("NS: address %v is not the source", m.Addr)
			}
		case KindNA:
			if netip.AddrFrom16([16]byte(frame[62:78])) != m.Addr {
				t.Fatalf("NA: address %v is not the target", m.Addr)
			}
		default:
			t.Fatalf("unknown kind %q", m.Kind)
		}
		if m.Reply && [6]byte(frame[0:6]) != selfMAC {
			t.Fatalf("a reply not unicast to the appliance")
		}
	})
}
