package vrrp

import (
	"net/netip"
	"testing"
	"time"
)

// rfcDown is RFC 5798 section 6.1's Master_Down_Interval, computed here in
// float seconds from the RFC's text as the oracle:
// 3 * Master_Adver_Interval + ((256 - Priority) * Master_Adver_Interval) / 256.
func rfcDown(priority int, mai time.Duration) time.Duration {
	s := 3*mai.Seconds() + float64(256-priority)*mai.Seconds()/256
	return time.Duration(s * 1e9)
}

func rfcSkew(priority int, mai time.Duration) time.Duration {
	return time.Duration(float64(256-priority) * mai.Seconds() / 256 * 1e9)
}

func near(a, b time.Duration) bool { d := a - b; return d > -time.Microsecond && d < time.Microsecond }

var (
	t0    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	addrA = netip.MustParseAddr("198.51.100.2")
	addrB = netip.MustParseAddr("198.51.100.3")
)

func TestMachineTimers(t *testing.T) {
	for _, c := range []struct {
		prio     int
		interval time.Duration
	}{{100, time.Second}, {1, time.Second}, {254, 10 * time.Millisecond}, {150, 40950 * time.Millisecond}, {200, 300 * time.Millisecond}} {
		m := NewMachine(uint8(c.prio), c.interval, true, addrB)
		if act := m.Start(t0); act != 0 || m.State() != Backup {
			t.Fatalf("prio %d: start: %b, state %v", c.prio, act, m.State())
		}
		want := rfcDown(c.prio, c.interval)
		if got := m.Deadline().Sub(t0); !near(got, want) {
			t.Errorf("prio %d interval %v: master down after %v, RFC says %v", c.prio, c.interval, got, want)
		}
		if act := m.Tick(t0.Add(want - time.Millisecond)); act != 0 || m.State() != Backup {
			t.Errorf("prio %d: took over before Master_Down_Interval", c.prio)
		}
		if act := m.Tick(m.Deadline()); act != SendAdvert|BecameMaster || m.State() != Master {
			t.Errorf("prio %d: at Master_Down_Interval: %b, %v", c.prio, act, m.State())
		}
		// As master: an advertisement every interval.
		at := m.Deadline()
		if !near(at.Sub(t0), want+c.interval) {
			t.Errorf("prio %d: next advertisement at %v, want %v", c.prio, at.Sub(t0), want+c.interval)
		}
		if act := m.Tick(at); act != SendAdvert || !near(m.Deadline().Sub(at), c.interval) {
			t.Errorf("prio %d: advertisement timer: %b, next after %v", c.prio, act, m.Deadline().Sub(at))
		}
	}
}

func TestMachineBackup(t *testing.T) {
	m := NewMachine(100, time.Second, true, addrB)
	m.Start(t0)
	// A master's advertisement: the backup adopts its interval.
	now := t0.Add(500 * time.Millisecond)
	m.Receive(now, addrA, 150, 300*time.Millisecond)
	if got, want := m.Deadline().Sub(now), rfcDown(100, 300*time.Millisecond); !near(got, want) {
		t.Errorf("after a 30cs advertisement: down in %v, want %v", got, want)
	}
	if a, p := m.Master(); a != addrA || p != 150 {
		t.Errorf("master %v %d", a, p)
	}
	// Priority 0: take over after Skew_Time.
	now = now.Add(100 * time.Millisecond)
	m.Receive(now, addrA, 0, 300*time.Millisecond)
	if got, want := m.Deadline().Sub(now), rfcSkew(100, 300*time.Millisecond); !near(got, want) {
		t.Errorf("after priority 0: down in %v, want Skew_Time %v", got, want)
	}
	if act := m.Tick(m.Deadline()); act&BecameMaster == 0 {
		t.Errorf("no takeover at Skew_Time: %b", act)
	}

	// Preempt: a lower priority master's advertisements are ignored, so the
	// backup takes over when its timer runs out.
	m = NewMachine(150, time.Second, true, addrB)
	m.Start(t0)
	deadline := m.Deadline()
	m.Receive(t0.Add(time.Second), addrA, 100, time.Second)
	if m.Deadline() != deadline {
		t.Errorf("preempt: a lower priority reset the down timer")
	}
	// Without preempt it is obeyed.
	m = NewMachine(150, time.Second, false, addrB)
	m.Start(t0)
	m.Receive(t0.Add(time.Second), addrA, 100, time.Second)
	if got, want := m.Deadline().Sub(t0.Add(time.Second)), rfcDown(150, time.Second); !near(got, want) {
		t.Errorf("no preempt: down in %v, want %v", got, want)
	}
}

func TestMachineMaster(t *testing.T) {
	master := func() *Machine {
		m := NewMachine(100, time.Second, true, addrB)
		m.Start(t0)
		m.Tick(m.Deadline())
		return m
	}
	now := t0.Add(10 * time.Second)
	for _, c := range []struct {
		name string
		src  netip.Addr
		prio uint8
		want Action
		st   State
	}{
		{"higher priority", addrA, 101, BecameBackup, Backup},
		{"equal priority, higher address", netip.MustParseAddr("198.51.100.4"), 100, BecameBackup, Backup},
		{"equal priority, lower address", addrA, 100, SawLowerMaster, Master},
		{"lower priority", addrA, 99, SawLowerMaster, Master},
		{"priority 0", addrA, 0, SendAdvert, Master},
	} {
		m := master()
		act := m.Receive(now, c.src, c.prio, 2*time.Second)
		if act != c.want || m.State() != c.st {
			t.Errorf("%s: %b %v, want %b %v", c.name, act, m.State(), c.want, c.st)
		}
		if c.st == Backup {
			if got, want := m.Deadline().Sub(now), rfcDown(100, 2*time.Second); !near(got, want) {
				t.Errorf("%s: down in %v, want %v (the new master's interval)", c.name, got, want)
			}
		}
		if c.prio == 0 && !near(m.Deadline().Sub(now), time.Second) {
			t.Errorf("priority 0: advertisement timer not reset")
		}
	}
	m := master()
	if act := m.Shutdown(); act != SendShutdown|BecameBackup || m.State() != Initialize {
		t.Errorf("shutdown: %b %v", act, m.State())
	}
	owner := NewMachine(255, time.Second, true, addrA)
	if act := owner.Start(t0); act != SendAdvert|BecameMaster {
		t.Errorf("owner start: %b", act)
	}
}

// TestMachinePair runs two machines on a simulated LAN with a fake clock:
// A (150) and B (100) elect A; A dies; B becomes master exactly
// Master_Down_Interval after A's last advertisement; A returns and preempts;
// A shuts down and B takes over after Skew_Time.
func TestMachinePair(t *testing.T) {
	const iv = 100 * time.Millisecond
	a := NewMachine(150, iv, true, addrA)
	b := NewMachine(100, iv, true, addrB)
	now := t0
	aliveA := true
	var bTook time.Time
	var lastA time.Time
	var deliver func(from *Machine, act Action)
	deliver = func(from *Machine, act Action) {
		if act&(SendAdvert|SendShutdown) == 0 {
			return
		}
		prio := uint8(150)
		src, to := addrA, b
		if from == b {
			prio, src, to = 100, addrB, a
		}
		if act&SendShutdown != 0 {
			prio = 0
		}
		if from == a {
			lastA = now
		}
		if to == a && !aliveA || to.State() == Initialize {
			return
		}
		deliver(to, to.Receive(now, src, prio, iv))
	}
	step := func(until time.Time) {
		for {
			next := until
			for _, m := range []*Machine{a, b} {
				if d := m.Deadline(); !d.IsZero() && d.Before(next) && (m != a || aliveA) {
					next = d
				}
			}
			if next.After(until) || next.Equal(until) && !until.After(now) {
				now = until
				return
			}
			now = next
			for _, m := range []*Machine{a, b} {
				if m == a && !aliveA {
					continue
				}
				act := m.Tick(now)
				if m == b && act&BecameMaster != 0 {
					bTook = now
				}
				deliver(m, act)
			}
			if now.Equal(until) {
				return
			}
		}
	}
	deliver(b, b.Start(now))
	deliver(a, a.Start(now))
	step(t0.Add(time.Second))
	if a.State() != Master || b.State() != Backup {
		t.Fatalf("after 1s: A %v, B %v", a.State(), b.State())
	}
	// A dies.
	aliveA = false
	step(t0.Add(2 * time.Second))
	if b.State() != Master {
		t.Fatalf("B did not take over")
	}
	if got, want := bTook.Sub(lastA), rfcDown(100, iv); !near(got, want) {
		t.Errorf("B took over %v after A's last advertisement, want Master_Down_Interval %v", got, want)
	}
	// A returns (a fresh machine) and preempts B after its own down interval.
	a = NewMachine(150, iv, true, addrA)
	aliveA = true
	back := now
	deliver(a, a.Start(now))
	step(back.Add(time.Second))
	if a.State() != Master || b.State() != Backup {
		t.Fatalf("after A's return: A %v, B %v", a.State(), b.State())
	}
	// A shuts down: B takes over after its Skew_Time.
	stop := now
	deliver(a, a.Shutdown())
	step(stop.Add(time.Second))
	if b.State() != Master {
		t.Fatalf("B not master after A's priority 0")
	}
	if got, want := bTook.Sub(stop), rfcSkew(100, iv); !near(got, want) {
		t.Errorf("B took over %v after priority 0, want Skew_Time %v", got, want)
	}
}
