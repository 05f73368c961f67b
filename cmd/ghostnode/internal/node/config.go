package node

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// FromConfig is the Spec of server id in a configured cluster. In broadcast
// mode its owned buckets come from dispatch's table for the cluster's
// membership (the same code the appliance runs, so both agree on every
// bucket), with the servers in down marked failed and drained servers owning
// none. Dev and LAN are left empty: the defaults, lo and the interface
// holding the server's address.
func FromConfig(cfg *config.Config, cluster string, id int, down map[int]bool) (Spec, error) {
	cl, ok := cfg.Cluster(cluster)
	if !ok {
		names := make([]string, len(cfg.Clusters))
		for i, c := range cfg.Clusters {
			names[i] = c.Name
		}
		return Spec{}, fmt.Errorf("%s: no cluster %q (clusters: %s)", cfg.File, cluster, strings.Join(names, ", "))
	}
	var srv *config.Server
	ids := make([]string, len(cl.Servers))
	for i := range cl.Servers {
		ids[i] = strconv.Itoa(cl.Servers[i].ID)
		if cl.Servers[i].ID == id {
			srv = &cl.Servers[i]
		}
	}
	if srv == nil {
		return Spec{}, fmt.Errorf("%s: cluster %s has no server %d (servers: %s)", cfg.File, cluster, id, strings.Join(ids, ", "))
	}
	s := Spec{Cluster: cl.Name, Mode: cl.Mode, Ghost: cl.Address, Primary: srv.Address}
	if cl.Mode != config.ModeBroadcast {
		return s, nil
	}
	if cl.Hash != config.HashJhash {
		return Spec{}, fmt.Errorf("%s: cluster %s: broadcast mode needs hash = %q, the one the kernel filter computes", cfg.File, cluster, config.HashJhash)
	}
	t, err := core.NewTable(core.ServersFor(cl, down), cl.Buckets)
	if err != nil {
		return Spec{}, fmt.Errorf("%s: cluster %s: %w", cfg.File, cluster, err)
	}
	owned := t.Owned(id)
	if owned == nil {
		owned = []uint32{}
	}
	s.Filter = &filter.Spec{Cluster: cl.Name, Ghost: cl.Address, Buckets: cl.Buckets, Seed: cl.Seed, Server: id, Owned: owned}
	s.Filter.Pinned, s.Filter.PinnedAway = pinsOf(cl, id, down)
	return s, nil
}

// pinsOf splits a cluster's pins that are in effect into the clients
// pinned to server id and those pinned to others. A pin is in effect while
// its server is live (not in down, not drained, with a positive weight), as
// on the appliance; a client whose pin is not in effect is hashed.
func pinsOf(cl *config.Cluster, id int, down map[int]bool) (here, away []netip.Addr) {
	for _, p := range cl.Pins {
		srv, ok := cl.Server(p.Server)
		if !ok || down[p.Server] || srv.Drain || srv.Weight <= 0 {
			continue
		}
		if p.Server == id {
			here = append(here, p.Client)
		} else {
			away = append(away, p.Client)
		}
	}
	slices.SortFunc(here, netip.Addr.Compare)
	slices.SortFunc(away, netip.Addr.Compare)
	return here, away
}
