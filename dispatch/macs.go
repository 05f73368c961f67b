package dispatch

import (
	"net/netip"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// Resolver gives the MAC of a LAN host as the appliance's own ARP/NDP has
// resolved it (neigh.Resolver implements it). It must not block.
type Resolver interface {
	LinkAddress(ifname string, addr netip.Addr) ([6]byte, bool)
}

// resolveOnce asks the resolver for every server's MAC and publishes the
// clusters whose MACs changed. It reports whether all are known.
func (m *Manager) resolveOnce() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	all := true
	for _, mc := range m.clusters {
		if mc.c == nil {
			continue
		}
		changed := false
		for i, s := range mc.servers {
			mac, ok := m.d.Resolver.LinkAddress(mc.spec.iface, s.Addr)
			if !ok {
				all = false
				continue
			}
			if mac != mc.macs[i] {
				m.log.Info("server link address", "cluster", mc.spec.name, "server", s.ID, "address", s.Addr, "mac", config.MAC(mac))
				mc.macs[i] = mac
				changed = true
			}
		}
		if changed {
			mc.publish()
		}
	}
	return all
}

// Kick makes the manager re-read its servers' MACs from the Resolver now
// rather than at its next tick: the resolver calls it when a MAC was learned
// or replaced, so the packet path follows within milliseconds.
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}
