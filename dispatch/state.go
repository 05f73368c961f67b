package dispatch

import (
	"net/netip"
	"slices"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// ClusterState is one cluster as the manager runs it, as data: the binary
// decides how to show it (the appliance's status document, metrics, the
// routes it advertises).
type ClusterState struct {
	Name             string
	Mode             config.Mode
	Ghost            netip.Addr
	BroadcastAddress netip.Addr // broadcast mode's second ghost; invalid when none
	Interface        string
	Hash             config.Hash
	Seed             uint32
	Buckets          int
	Health           health.Spec
	Version          uint64        // the table's version, incremented on every change
	Servers          []ServerState // by ascending ID
	// Fingerprint digests where the table sends every bucket (see
	// Table.Fingerprint): equal on two appliances that dispatch alike.
	Fingerprint string
	// Events are the last health transitions, oldest first.
	Events []Event
	// Stats and Flows are the forwarding stage's counters: nil in
	// broadcast mode, where the appliance does not pick servers.
	Stats *ClusterStats
	Flows *FlowStats
	// Transition is the open transition window (routing mode), if any.
	Transition *Transition
}

// ServerState is one server of a ClusterState.
type ServerState struct {
	ID      int
	Addr    netip.Addr
	MAC     config.MAC // zero while unresolved
	Weight  int        // the configured weight
	Drain   bool
	Up      bool
	Buckets int // buckets the table gives it
	// Checked: the server has a health checker, whose state Health is.
	Checked bool
	Health  health.State
	Packets uint64 // dispatched to it (routing mode)
	Bytes   uint64
}

// Event is one server's health transition and what it did to the table.
type Event struct {
	At       time.Time
	ServerID int
	Up       bool
	Reason   string
	// Detect is how long after the server's last good check its failure
	// was detected (failures only).
	Detect time.Duration
	// Moved of Buckets buckets changed owner.
	Moved, Buckets int
}

// maxEvents is how many events a cluster keeps.
const maxEvents = 16

// Transition is an open transition window (transition.go): while it is
// open the moved buckets' known connections stay on their old servers.
type Transition struct {
	Learning bool // still learning UDP flows; false once switched
	Moved    int  // buckets moved (0 when decided per client)
	Entries  int64
	Capacity int
	Closes   time.Time // the window closes by then at the latest
}

// State reports every cluster.
func (m *Manager) State() []ClusterState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ClusterState, 0, len(m.clusters))
	for _, mc := range m.clusters {
		sp := &mc.spec
		cs := ClusterState{
			Name: sp.name, Mode: sp.mode, Ghost: sp.ghost, BroadcastAddress: sp.broadcast,
			Interface: sp.iface, Hash: sp.hash, Seed: sp.seed, Buckets: sp.buckets,
			Health: sp.health, Version: mc.version,
			Events:      slices.Clone(mc.events),
			Fingerprint: core.ClusterFingerprint(mc.table, mc.servers, mc.spec.pins),
		}
		var states map[int]health.State
		if mc.checker != nil {
			states = mc.checker.States()
		}
		counts := bucketCounts(mc.sel, len(mc.servers))
		for i, s := range mc.servers {
			ss := ServerState{ID: s.ID, Addr: s.Addr, MAC: config.MAC(mc.macs[i]), Weight: s.Weight, Up: s.Up, Buckets: counts[i]}
			if cs, ok := sp.server(s.ID); ok {
				ss.Weight, ss.Drain = cs.weight, cs.drain
			}
			ss.Health, ss.Checked = states[s.ID]
			if st := mc.stats[s.ID]; st != nil {
				ss.Packets, ss.Bytes = st.Packets.Load(), st.Bytes.Load()
			}
			cs.Servers = append(cs.Servers, ss)
		}
		slices.SortFunc(cs.Servers, func(a, b ServerState) int { return a.ID - b.ID })
		if mc.c != nil {
			cs.Stats, cs.Flows = mc.c.Stats(), mc.c.FlowStats()
			cs.Transition = mc.transitionState()
		}
		out = append(out, cs)
	}
	return out
}

// bucketCounts counts the buckets each server index owns, for selectors that
// have a table; others report zero.
func bucketCounts(sel core.Selector, n int) []int {
	counts := make([]int, n)
	js, ok := sel.(interface{ Table() *core.Table })
	if !ok {
		return counts
	}
	t := js.Table()
	for b := 0; b < t.Buckets(); b++ {
		if o := t.Owner(uint32(b)); o >= 0 && o < n {
			counts[o]++
		}
	}
	return counts
}
