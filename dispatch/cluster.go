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
// buckets and servers), with the servers in down marked failed. It returns the
// selector and the servers its indices refer to.
func SelectorFor(cl *config.Cluster, down map[int]bool) (Selector, []Server, error) {
	servers := ServersFor(cl, down)
	switch cl.Hash {
	case "modulo":
		sel := NewModuloSelector(servers)
		return sel, sel.Servers(), nil
	case "jhash", "":
		t, err := NewTable(servers, cl.Buckets)
		if err != nil {
			return nil, nil, err
		}
		return NewJHashSelector(t, cl.Seed), t.Servers(), nil
	default:
		return nil, nil, fmt.Errorf("dispatch: cluster %s: unknown hash %q", cl.Name, cl.Hash)
	}
}
