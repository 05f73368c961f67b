package node

import (
	"fmt"
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
	return s, nil
}
