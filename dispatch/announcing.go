package dispatch

import (
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// Announcer tells a broadcast cluster's servers its current membership, from
// which each computes the table (and so its own buckets) with NewTable. The
// appliance implements it over UDP; version orders the announcements.
type Announcer interface {
	Announce(cl *config.Cluster, version uint64, servers []core.Server)
}

// announce sends mc's membership to its servers now, if it is a broadcast
// cluster with announcements.
func (m *Manager) announce(mc *managed) {
	if m.d.Announce == nil || mc.spec.announce == nil {
		return
	}
	m.d.Announce.Announce(mc.spec.announce, mc.version, mc.servers)
}

// repeatAnnouncementsLocked repeats each broadcast cluster's announcement
// whose interval has passed since last[name] (updated), so a lost or late
// one heals itself, and returns how long until the next one is due.
func (m *Manager) repeatAnnouncementsLocked(last map[string]time.Time, now time.Time) time.Duration {
	wait := time.Duration(1<<63 - 1)
	for _, mc := range m.clusters {
		if mc.spec.announce == nil {
			continue
		}
		if now.Sub(last[mc.spec.name]) >= mc.spec.announceInterval {
			m.announce(mc)
			last[mc.spec.name] = now
		}
		wait = min(wait, mc.spec.announceInterval)
	}
	return wait
}
