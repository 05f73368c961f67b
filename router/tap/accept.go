package tap

// Additional unicast MACs: a link may own more than its own MAC for a
// while, e.g. a VRRP virtual router's MAC while this appliance is its
// master. A frame addressed to one of them is taken in as if addressed to
// the endpoint's own MAC: its destination is rewritten to the own MAC
// before any hook or netstack sees it, so everything after the receive
// loop treats the two alike. Any other foreign unicast is still dropped
// and counted (RxForeign).

// acceptSet is an immutable list of additional MACs.
type acceptSet struct{ macs [][6]byte }

// SetAcceptMACs replaces the additional unicast MACs the endpoint takes in
// (nil or empty: none). Safe to call at any time, from any goroutine.
func (e *Endpoint) SetAcceptMACs(macs [][6]byte) {
	if len(macs) == 0 {
		e.accept.Store(nil)
		return
	}
	e.accept.Store(&acceptSet{macs: append([][6]byte(nil), macs...)})
}

// AcceptMACs returns the additional MACs currently taken in.
func (e *Endpoint) AcceptMACs() [][6]byte {
	if s := e.accept.Load(); s != nil {
		return append([][6]byte(nil), s.macs...)
	}
	return nil
}

// takeForeign reports whether frame, unicast to another MAC than the
// endpoint's, is for one of the additional MACs; if so its destination is
// rewritten to the endpoint's own MAC.
func (e *Endpoint) takeForeign(frame []byte) bool {
	s := e.accept.Load()
	if s == nil {
		return false
	}
	dst := [6]byte(frame[:6])
	for _, m := range s.macs {
		if m == dst {
			copy(frame[:6], e.macB[:])
			e.stats.RxAccepted.Add(1)
			return true
		}
	}
	return false
}
