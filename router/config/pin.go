package config

import (
	"fmt"
	"math"
	"net/netip"
)

// MaxPins bounds a cluster's [[cluster.pin]] entries: pins are for the few
// heavy clients (crawlers, proxies, NATs) that a per-client hash cannot
// spread; the long tail stays hashed. The dispatcher looks every packet's
// client up among them.
const MaxPins = 64

// Pin is one [[cluster.pin]]: a client that always goes to one server
// while that server is up and owns buckets (otherwise the hash decides).
// Pins are part of the table's definition: lookup, the dispatcher and the
// table fingerprint all include them.
type Pin struct {
	Client netip.Addr // a unicast address of the ghost's family
	Server int        // the id of one of the cluster's servers
	Line   int
}

// pins decodes the cluster's [[cluster.pin]] tables; c's servers and
// address are decoded already.
func (d *decoder) pins(t *table, c *Cluster) {
	pts := t.tables("pin", "pin")
	if len(pts) > MaxPins {
		t.errorf("pin", "%d pins: at most %d (pins are for a few heavy clients; the rest stay hashed)", len(pts), MaxPins)
	}
	ids := make(map[int]bool, len(c.Servers))
	for _, s := range c.Servers {
		ids[s.ID] = true
	}
	seen := make(map[netip.Addr]int) // client -> line
	for _, pt := range pts {
		pt.label = fmt.Sprintf("%s %s", t.label, pt.label)
		p := Pin{Line: pt.line}
		pt.known("client", "server")
		if a, ok := pt.unicast("client"); ok {
			pt.label = fmt.Sprintf("%s pin %s", t.label, a)
			switch line, dup := seen[a]; {
			case dup:
				pt.errorf("client", "%s is already pinned (line %d)", a, line)
			case c.Address.IsValid() && a.Is4() != c.Address.Is4():
				pt.errorf("client", "%s and the ghost %s are of different IP families: such a client never reaches this cluster", a, c.Address)
			default:
				seen[a] = pt.lineOf("client")
				p.Client = a
			}
		} else if !pt.has("client") {
			pt.missing("client", "the client address to pin")
		}
		if id, ok := pt.integer("server"); ok {
			p.Server = int(max(min(id, math.MaxInt32), math.MinInt32))
			if !ids[p.Server] {
				pt.errorf("server", "%d is not the id of a server of this cluster", id)
			}
		} else if !pt.has("server") {
			pt.missing("server", "the id of the server the client goes to")
		}
		c.Pins = append(c.Pins, p)
	}
}
