package dispatch

import "net/netip"

// pinned returns the index of client's pinned server, if it has one in
// effect (core.LivePins; the pins are part of the table's definition, see
// dispatch/core). It does not allocate.
func (v *View) pinned(client netip.Addr) (int, bool) {
	if v.pins == nil {
		return 0, false
	}
	i, ok := v.pins[client]
	return int(i), ok
}
