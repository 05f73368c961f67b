package core

import (
	"fmt"
	"net/netip"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// ServersFor returns the table's view of a configured cluster's servers.
// Drained servers (drain = true) get weight 0: they own no buckets. A server
// whose id is in down is marked not Up.
func ServersFor(cl *config.Cluster, down map[int]bool) []Server {
	out := make([]Server, len(cl.Servers))
	for i, s := range cl.Servers {
		out[i] = ServerOf(s.ID, s.Address, s.Weight, s.Drain, !down[s.ID])
	}
	return out
}

// ServerOf is the table's view of one configured server: a drained server
// has weight 0, so it owns no buckets.
func ServerOf(id int, addr netip.Addr, weight int, drain, up bool) Server {
	if drain {
		weight = 0
	}
	return Server{ID: id, Addr: addr, Weight: weight, Up: up}
}

// SelectorFor builds the selector a configured cluster uses (its hash, seed,
// buckets and servers), with the servers in down marked failed. It returns the
// selector and the servers its indices refer to.
func SelectorFor(cl *config.Cluster, down map[int]bool) (Selector, []Server, error) {
	sel, servers, _, err := SelectorFrom(cl, down, nil)
	return sel, servers, err
}

// SelectorFrom is SelectorFor starting from base, the cluster's previous
// table (nil for none): a health change then recomputes only the buckets it
// moves (Table.Update). It also returns the new table (nil for modulo).
func SelectorFrom(cl *config.Cluster, down map[int]bool, base *Table) (Selector, []Server, *Table, error) {
	return NewSelector(cl.Name, cl.Hash, cl.Seed, cl.Buckets, ServersFor(cl, down), base)
}

// NewSelector builds the selector of the named cluster's hash function over
// servers, starting from base as SelectorFrom does. It returns the selector,
// the servers its indices refer to and the new table (nil for modulo).
func NewSelector(cluster string, hash config.Hash, seed uint32, buckets int, servers []Server, base *Table) (Selector, []Server, *Table, error) {
	switch hash {
	case config.HashModulo:
		if len(servers) > MaxModuloServers {
			return nil, nil, nil, fmt.Errorf("dispatch: cluster %s: %d servers: the modulo function takes at most %d", cluster, len(servers), MaxModuloServers)
		}
		sel := NewModuloSelector(servers)
		return sel, sel.Servers(), nil, nil
	case config.HashJhash:
		var t *Table
		var err error
		if base != nil && base.Buckets() == buckets {
			t, err = base.Update(servers)
		} else {
			t, err = NewTable(servers, buckets)
		}
		if err != nil {
			return nil, nil, nil, err
		}
		return NewJHashSelector(t, seed), t.Servers(), t, nil
	default:
		return nil, nil, nil, fmt.Errorf("dispatch: cluster %s: unknown hash %q", cluster, hash)
	}
}
