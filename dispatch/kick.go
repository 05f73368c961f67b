package dispatch

// Kick makes the manager re-read its servers' MACs from the Resolver now
// rather than at its next tick: the resolver calls it when a MAC was learned
// or replaced, so the packet path follows within milliseconds.
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}
