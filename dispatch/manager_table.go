package dispatch

import (
	"fmt"
	"maps"
	"net/netip"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// buildTables computes the jhash tables of cfg's clusters without holding
// m.mu, each from the cluster's current table and failed servers as they are
// when it starts (a cluster whose membership is unchanged costs an Update
// for the health that differs, usually nothing). applyLocked then brings
// each table up to the health of the moment, which touches only the buckets
// of servers whose health changed in between. An error is a cluster whose
// table cannot be built; nothing has changed then.
func (m *Manager) buildTables(cfg *config.Config) (map[string]*core.Table, error) {
	type start struct {
		base *core.Table
		down map[int]bool
	}
	starts := map[string]start{}
	m.mu.Lock()
	for _, mc := range m.clusters {
		starts[mc.spec.name] = start{base: mc.table, down: maps.Clone(mc.down)}
	}
	m.mu.Unlock()

	built := map[string]*core.Table{}
	for i := range cfg.Clusters {
		cl := &cfg.Clusters[i]
		if cl.Hash != config.HashJhash {
			continue
		}
		st := starts[cl.Name]
		_, _, t, err := core.SelectorFrom(cl, st.down, st.base)
		if err != nil {
			return nil, fmt.Errorf("dispatch: cluster %s: %w", cl.Name, err)
		}
		built[cl.Name] = t
	}
	return built, nil
}

// carryMACs returns the MACs of servers as prev (nil for none) knew them,
// by address; unknown ones are zero. A health change keeps the servers and
// their order, so the usual case is a copy.
func carryMACs(prev *managed, servers []core.Server) [][6]byte {
	out := make([][6]byte, len(servers))
	if prev == nil {
		return out
	}
	same := len(prev.servers) == len(servers)
	for i := 0; same && i < len(servers); i++ {
		same = prev.servers[i].Addr == servers[i].Addr
	}
	if same {
		copy(out, prev.macs)
		return out
	}
	macs := make(map[netip.Addr][6]byte, len(prev.servers))
	for i, s := range prev.servers {
		macs[s.Addr] = prev.macs[i]
	}
	for i, s := range servers {
		out[i] = macs[s.Addr]
	}
	return out
}
