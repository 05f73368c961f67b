package dispatch

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
	sel, servers, _, err := selectorFrom(cl, down, nil)
	if err != nil {
		return nil, nil, err
	}
	return NewPinnedSelector(sel, servers, cl.Pins), servers, nil
}

// selectorFrom is SelectorFor starting from base, the cluster's previous
// table (nil for none): a health change then recomputes only the buckets it
// moves (Table.Update). It also returns the new table (nil for modulo).
func selectorFrom(cl *config.Cluster, down map[int]bool, base *Table) (Selector, []Server, *Table, error) {
	servers := ServersFor(cl, down)
	switch cl.Hash {
	case "modulo":
		if len(servers) > MaxModuloServers {
			return nil, nil, nil, fmt.Errorf("dispatch: cluster %s: %d servers: the modulo function takes at most %d", cl.Name, len(servers), MaxModuloServers)
		}
		sel := NewModuloSelector(servers)
		return sel, sel.Servers(), nil, nil
	case "jhash", "":
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
