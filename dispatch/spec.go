package dispatch

import (
	"net/netip"
	"slices"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// spec is a configured cluster as the manager runs it: the validated values
// it acts on, taken from the decoded [[cluster]] once, without the file's
// line numbers, so comparing two specs compares what they do (moving a table
// in the file changes nothing).
type spec struct {
	name      string
	ghost     netip.Addr
	iface     string // the servers' LAN
	mode      config.Mode
	broadcast netip.Addr // broadcast mode's second ghost
	hash      config.Hash
	seed      uint32
	buckets   int
	servers   []serverSpec  // in file order
	pins      []config.Pin  // the cluster's pins, their Line cleared
	members   []core.Server // the table's view of servers, all up (core.ServersFor)
	health    health.Spec
	// drainTimeout and flowMemory shape routing mode's transition windows
	// (window.go).
	drainTimeout time.Duration
	flowMemory   int
	// announce is what the announcer sends for a broadcast cluster with an
	// announce key (its key, port and interval with the table's
	// parameters); nil when the cluster announces nothing.
	announce         *config.Cluster
	announceInterval time.Duration
}

// serverSpec is one configured server.
type serverSpec struct {
	id     int
	addr   netip.Addr
	weight int // as configured; drain takes it to 0 in the table
	drain  bool
}

// specOf is the spec of a validated cluster. cl is kept (for the
// announcer) and must not change afterwards.
func specOf(cl *config.Cluster) spec {
	s := spec{
		name: cl.Name, ghost: cl.Address, iface: cl.Interface, mode: cl.Mode, broadcast: cl.BroadcastAddress,
		hash: cl.Hash, seed: cl.Seed, buckets: cl.Buckets,
		servers:      make([]serverSpec, len(cl.Servers)),
		health:       health.SpecOf(cl.Health),
		drainTimeout: cl.DrainTimeout, flowMemory: cl.FlowMemory,
		announceInterval: cl.AnnounceInterval,
	}
	for i, sv := range cl.Servers {
		s.servers[i] = serverSpec{id: sv.ID, addr: sv.Address, weight: sv.Weight, drain: sv.Drain}
	}
	for _, p := range cl.Pins {
		s.pins = append(s.pins, config.Pin{Client: p.Client, Server: p.Server})
	}
	s.members = core.ServersFor(cl, nil)
	if cl.Mode == config.ModeBroadcast && cl.AnnounceKey != nil {
		s.announce = cl
	}
	return s
}

// server returns the configured server with the given id.
func (s *spec) server(id int) (serverSpec, bool) {
	for _, sv := range s.servers {
		if sv.id == id {
			return sv, true
		}
	}
	return serverSpec{}, false
}

// tableServers is the table's view of the servers, those in down failed.
func (s *spec) tableServers(down map[int]bool) []core.Server {
	out := slices.Clone(s.members)
	for i := range out {
		out[i].Up = !down[out[i].ID]
	}
	return out
}

// sameTargets reports whether a and b check the same servers at the same
// addresses, in the same order.
func sameTargets(a, b *spec) bool {
	if len(a.servers) != len(b.servers) {
		return false
	}
	for i := range a.servers {
		if a.servers[i].id != b.servers[i].id || a.servers[i].addr != b.servers[i].addr {
			return false
		}
	}
	return true
}
