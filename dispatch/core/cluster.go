package core

import (
	"fmt"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// ServersFor returns the table's view of a configured cluster's servers.
// Drained servers (drain = true) get weight 0: they own no buckets. A server
// whose id is in down is marked not Up.
func ServersFor(cl *config.Cluster, down map[int]bool) []Server {
	out := make([]Server, len(cl.Servers))
	for i, s := range cl.Servers {
		w := s.Weight
		if s.Drain {
			w = 0
		}
		out[i] = Server{ID: s.ID, Addr: s.Address, Weight: w, Up: !down[s.ID]}
	}
	return out
}

// SelectorFor builds the selector a configured cluster uses (its hash, seed,
// buckets, servers and pins), with the servers in down marked failed. It
// returns the selector and the servers its indices refer to.
func SelectorFor(cl *config.Cluster, down map[int]bool) (Selector, []Server, error) {
	sel, servers, _, err := SelectorFrom(cl, down, nil)
	if err != nil {
		return nil, nil, err
	}
	return NewPinnedSelector(sel, servers, cl.Pins), servers, nil
}

// SelectorFrom is SelectorFor starting from base, the cluster's previous
// table (nil for none): a health change then recomputes only the buckets it
// moves (Table.Update). It also returns the new table (nil for modulo).
func SelectorFrom(cl *config.Cluster, down map[int]bool, base *Table) (Selector, []Server, *Table, error) {
	return NewSelector(Params{Name: cl.Name, Hash: cl.Hash, Seed: cl.Seed, Buckets: cl.Buckets}, ServersFor(cl, down), base)
}

// Params are what a cluster's selector is built from besides its servers:
// its hash function, seed and bucket count, and its name for errors.
type Params struct {
	Name    string
	Hash    config.Hash
	Seed    uint32
	Buckets int
}

// NewSelector builds the selector of cl over servers, starting from base as
// SelectorFrom does. It returns the selector, the servers its indices refer
// to and the new table (nil for modulo).
func NewSelector(cl Params, servers []Server, base *Table) (Selector, []Server, *Table, error) {
	switch cl.Hash {
	case config.HashModulo:
		if len(servers) > MaxModuloServers {
			return nil, nil, nil, fmt.Errorf("dispatch: cluster %s: %d servers: the modulo function takes at most %d", cl.Name, len(servers), MaxModuloServers)
		}
		sel := NewModuloSelector(servers)
		return sel, sel.Servers(), nil, nil
	case config.HashJhash:
		var t *Table
		var err error
		if base != nil && base.Buckets() == cl.Buckets {
			t, err = base.Update(servers)
		} else {
			t, err = NewTable(servers, cl.Buckets)
		}
		if err != nil {
			return nil, nil, nil, err
		}
		return NewJHashSelector(t, cl.Seed), t.Servers(), t, nil
	default:
		return nil, nil, nil, fmt.Errorf("dispatch: cluster %s: unknown hash %q", cl.Name, cl.Hash)
	}
}
