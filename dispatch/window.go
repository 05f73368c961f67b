package dispatch

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// window is a routing cluster's open transition window as the manager keeps
// it (transition.go describes the behaviour). Guarded by Manager.mu.
type window struct {
	tr *transition // what the packet path reads now
	// learnUntil ends the learning phase of the latest change (UDP flows not
	// seen yet still go to their old owner: transition.go); zero after it,
	// the "switch".
	learnUntil time.Time
	switched   time.Time // when the last learning phase ended; zero while learning
	deadline   time.Time // the window closes at the latest then
	moved      int       // touched buckets (0 when decided per client)
}

func (w *window) learning() bool { return !w.learnUntil.IsZero() }

// liveIn reports whether server id is in servers and up.
func liveIn(servers []core.Server, id int) bool {
	i, found := slices.BinarySearchFunc(servers, id, func(s core.Server, id int) int { return cmp.Compare(s.ID, id) })
	return found && servers[i].Up
}

// transit opens, joins or closes mc's transition window for the change from
// prev (the state before, nil for a new cluster) to mc's freshly rebuilt
// selector. planned is false for a server's failure: then nothing waits. It
// is called before mc.publish; a window it returns is to be closed
// (closeWindow) after that publish.
func (mc *managed) transit(prev *managed, planned bool, now time.Time) (stale *window) {
	var old *window
	if prev != nil {
		old = prev.win
	}
	mc.win = nil
	if mc.c == nil || prev == nil || prev.sel == nil || mc.spec.drainTimeout <= 0 {
		return old
	}
	effSel, effServers := prev.sel, prev.servers
	origin, originServers := effSel, effServers
	if old != nil {
		origin, originServers = old.tr.origin, old.tr.originServers
	}

	// The buckets this change moves away from a server that is still up.
	var origins []int32
	newly, moved := 0, 0
	nj, ok1 := mc.sel.(*core.JHashSelector)
	ej, ok2 := effSel.(*core.JHashSelector)
	oj, ok3 := origin.(*core.JHashSelector)
	if ok1 && ok2 && ok3 && sameBuckets(nj, ej) && sameBuckets(nj, oj) && (old == nil || old.tr.origins != nil) {
		n := nj.Table().Buckets()
		origins = make([]int32, n)
		if old != nil {
			copy(origins, old.tr.origins)
		} else {
			for b := range origins {
				origins[b] = -1
			}
		}
		for b := 0; b < n; b++ {
			was, wok := ej.Table().OwnerID(uint32(b))
			is, iok := nj.Table().OwnerID(uint32(b))
			wasLive := wok && liveIn(mc.servers, was)
			switch o := origins[b]; {
			case o >= 0 && !liveIn(mc.servers, int(o)):
				// Its original owner failed or left, with its connections:
				// those still alive are on the owner in effect until now.
				switch {
				case wasLive:
					origins[b] = int32(was)
				case iok:
					origins[b] = int32(is)
				}
			case o < 0 && wasLive && (!iok || is != was):
				origins[b] = int32(was)
				newly++
			}
			if origins[b] >= 0 {
				moved++
			}
		}
	} else if !sameMembership(effServers, mc.servers) || !sameKind(effSel, mc.sel) || ok1 && ok2 && !sameBuckets(nj, ej) {
		newly = 1 // decided per client
	}
	if newly == 0 && old == nil {
		return nil // nothing moved: stay stateless
	}

	w := &window{moved: moved}
	tr := &transition{origin: origin, originServers: originServers, origins: origins}
	if old != nil {
		tr.mem, tr.epoch = old.tr.mem, old.tr.epoch
		w.switched, w.deadline, w.learnUntil = old.switched, old.deadline, old.learnUntil
	} else {
		tr.mem, tr.epoch = newFlowMemory(mc.spec.flowMemory), now
		mc.c.flows.Windows.Add(1)
	}
	learn := min(learnPeriod, mc.spec.drainTimeout)
	if newly > 0 {
		w.deadline = now.Add(learn + mc.spec.drainTimeout)
	}
	switch {
	case planned && newly > 0:
		// Learn: UDP flows not yet seen still go to their old owner.
		w.learnUntil, w.switched = now.Add(learn), time.Time{}
		tr.prev, tr.prevServers = effSel, effServers
	case planned && w.learning():
		tr.prev, tr.prevServers = old.tr.prev, old.tr.prevServers
	default:
		// A failure, or nothing left to learn: the new table takes effect now.
		w.learnUntil = time.Time{}
		if w.switched.IsZero() {
			w.switched = now
		}
	}
	w.tr = tr
	mc.win = w
	return nil
}

// switchWindow ends mc's learning phase: the new table takes effect.
func (mc *managed) switchWindow(now time.Time) {
	w := mc.win
	tr := *w.tr
	tr.prev, tr.prevServers = nil, nil
	w.tr = &tr
	w.learnUntil, w.switched = time.Time{}, now
}

// closeWindow releases a window's memory (counted) once it is no longer
// published: packets that still read it remember nothing more.
func (mc *managed) closeWindow(w *window) {
	if w == nil || mc.c == nil {
		return
	}
	mc.c.flows.Released.Add(uint64(w.tr.mem.close()))
}

func sameBuckets(a, b *core.JHashSelector) bool {
	return a.Table().Buckets() == b.Table().Buckets() && a.Seed() == b.Seed()
}

func sameKind(a, b core.Selector) bool {
	_, ja := a.(*core.JHashSelector)
	_, jb := b.(*core.JHashSelector)
	return ja == jb
}

// sameMembership reports whether two server lists (sorted by ID) agree on
// every server's ID, weight and health.
func sameMembership(a, b []core.Server) bool {
	return slices.EqualFunc(a, b, func(x, y core.Server) bool { return x.ID == y.ID && x.Weight == y.Weight && x.Up == y.Up })
}

// sweepWindow advances mc's window at now: the switch after learning, the
// release of ended, idle and orphaned flows, and the close (publishing the
// view without it first). It reports whether mc must be published again.
func (mc *managed) sweepWindow(now time.Time) (republish bool) {
	w := mc.win
	if w == nil {
		return false
	}
	if w.learning() {
		w.tr.mem.clock.Store(int64(now.Sub(w.tr.epoch)))
		if now.Before(w.learnUntil) {
			return false
		}
		mc.switchWindow(now)
		republish = true
	}
	tr := w.tr
	t := int64(now.Sub(tr.epoch))
	tr.mem.clock.Store(t)
	idle := int64(min(flowIdle, mc.spec.drainTimeout))
	divergent := 0
	released := tr.mem.sweep(func(e *flowEntry) bool {
		age := t - e.last
		switch {
		case e.state == slotClosing && age >= int64(finLinger), age >= idle:
			return true
		case !liveIn(mc.servers, int(e.server)):
			return true // failed or removed: its connections are lost anyway
		}
		if ownerID(mc.sel, mc.servers, netip.AddrFrom16(e.key.addr).Unmap()) != int(e.server) {
			divergent++
		}
		return false
	})
	mc.c.flows.Released.Add(uint64(released))
	quiet := min(flowIdle, mc.spec.drainTimeout)
	if !now.Before(w.deadline) || (now.Sub(w.switched) >= quiet && divergent == 0) {
		mc.win = nil
		mc.publish()
		mc.closeWindow(w)
		return false
	}
	return republish
}

// nextWake is how soon mc's window needs sweepWindow again.
func (mc *managed) nextWake(now time.Time) (time.Duration, bool) {
	w := mc.win
	if w == nil {
		return 0, false
	}
	if w.learning() {
		return max(w.learnUntil.Sub(now), time.Millisecond), true
	}
	return min(250*time.Millisecond, max(w.deadline.Sub(now), time.Millisecond)), true
}

// transitionState is the open window as State reports it; nil when none.
func (mc *managed) transitionState() *Transition {
	w := mc.win
	if w == nil {
		return nil
	}
	return &Transition{Learning: w.learning(), Moved: w.moved, Entries: w.tr.mem.entries.Load(),
		Capacity: w.tr.mem.capacity, Closes: w.deadline}
}

// sweepWindowsLocked closes or advances every cluster's transition window
// that is due, republishing what changed, and returns how long until the
// next one is due.
func (m *Manager) sweepWindowsLocked(now time.Time) time.Duration {
	wait := time.Duration(1<<63 - 1)
	for _, mc := range m.clusters {
		if mc.sweepWindow(now) {
			mc.publish()
		}
		if d, ok := mc.nextWake(now); ok {
			wait = min(wait, d)
		}
	}
	return wait
}
