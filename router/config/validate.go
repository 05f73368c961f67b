package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// validate runs the checks that span entries: names and addresses that must
// not collide, and addresses that must lie on an interface's subnets. It
// sees only values that decoded cleanly (an invalid address is the zero
// Addr and is skipped), so one mistake is reported once, not again by every
// check that depends on it. It also resolves Route.Interface.
func (d *decoder) validate(cfg *Config) {
	own := d.checkInterfaces(cfg)
	d.checkRoutes(cfg, own)
	d.checkNeighbors(cfg, own)
	d.checkClusters(cfg, own)
	d.checkVRRP(cfg, own)
	d.checkBGP(cfg, own)
	d.checkLimits(cfg)
}

// owner is where one of the appliance's own addresses is assigned.
type owner struct {
	iface string
	index int // into Config.Interfaces
	line  int
}

// checkInterfaces checks names, addresses and subnets across interfaces and
// returns the appliance's own addresses.
func (d *decoder) checkInterfaces(cfg *Config) map[netip.Addr]owner {
	own := make(map[netip.Addr]owner)
	names := make(map[string]int) // name → line
	type subnet struct {
		p     netip.Prefix // masked
		iface string
		index int
		line  int
	}
	var subnets []subnet
	for i := range cfg.Interfaces {
		ifc, src := &cfg.Interfaces[i], d.ifaces[i]
		t := src.t
		if ifc.Name != "" {
			if line, dup := names[ifc.Name]; dup {
				t.errorf("name", "interface %q is already defined on line %d", ifc.Name, line)
			} else {
				names[ifc.Name] = t.lineOf("name")
			}
		}
		for j, p := range ifc.Addresses {
			line, a := src.addrLines[j], p.Addr()
			if o, dup := own[a]; dup {
				if o.index == i {
					t.errorAt(line, "addresses", "%s is given twice (also on line %d)", a, o.line)
				} else {
					t.errorAt(line, "addresses", "%s is already assigned to interface %q on line %d", a, o.iface, o.line)
				}
				continue
			}
			own[a] = owner{iface: ifc.Name, index: i, line: line}
			sub := p.Masked()
			for _, s := range subnets {
				switch {
				case s.index == i || !sub.Overlaps(s.p):
				case sub == s.p:
					t.errorAt(line, "addresses", "subnet %s is also on interface %q (line %d)", sub, s.iface, s.line)
				default:
					t.errorAt(line, "addresses", "subnet %s overlaps %s on interface %q (line %d)", sub, s.p, s.iface, s.line)
				}
			}
			subnets = append(subnets, subnet{p: sub, iface: ifc.Name, index: i, line: line})
		}
	}
	return own
}

// lookupIface returns the interface named by key k of t, reporting an unknown
// name. It returns nil when the key is absent, bad or unknown.
func (d *decoder) lookupIface(cfg *Config, t *table, k, name string) *Interface {
	if name == "" {
		if s, ok := t.m[k].(string); ok && s == "" {
			t.errorf(k, "must not be empty")
		}
		return nil
	}
	ifc, ok := cfg.Interface(name)
	if !ok {
		var names []string
		for _, i := range cfg.Interfaces {
			if n := strconv.Quote(i.Name); i.Name != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		t.errorf(k, "unknown interface %q (interfaces: %s)", name, strings.Join(names, ", "))
		return nil
	}
	return ifc
}

// onSubnet returns why a cannot be a host on ifc's connected subnets, or "".
func onSubnet(ifc *Interface, a netip.Addr) string {
	for _, p := range ifc.Addresses {
		if p.Contains(a) {
			return notHost(p, a)
		}
	}
	subnets := make([]string, 0, len(ifc.Addresses))
	for _, p := range ifc.Addresses {
		subnets = append(subnets, p.Masked().String())
	}
	return fmt.Sprintf("%s is not on a subnet of interface %q (%s)", a, ifc.Name, strings.Join(subnets, ", "))
}

// isOwn returns a message when a is one of the appliance's own addresses.
func isOwn(own map[netip.Addr]owner, a netip.Addr) string {
	if o, ok := own[a]; ok {
		return fmt.Sprintf("%s is this router's own address on interface %q (line %d)", a, o.iface, o.line)
	}
	return ""
}

func (d *decoder) checkRoutes(cfg *Config, own map[netip.Addr]owner) {
	seen := make(map[netip.Prefix]int) // To → line
	for i := range cfg.Routes {
		r, t := &cfg.Routes[i], d.routes[i]
		if r.To.IsValid() {
			if line, dup := seen[r.To]; dup {
				t.errorf("to", "duplicate route to %s (also on line %d)", r.To, line)
			} else {
				seen[r.To] = t.lineOf("to")
			}
		}
		ifc := d.lookupIface(cfg, t, "interface", r.Interface)
		switch {
		case r.Via.IsValid():
			if msg := isOwn(own, r.Via); msg != "" {
				t.errorf("via", "%s", msg)
				continue
			}
			if t.has("interface") {
				if ifc != nil {
					if msg := onSubnet(ifc, r.Via); msg != "" {
						t.errorf("via", "%s: a next hop must be reachable on-link", msg)
					}
				}
				continue
			}
			c, ok := cfg.Connected(r.Via)
			if !ok {
				t.errorf("via", "%s is not on any interface's subnet: a next hop must be reachable on-link", r.Via)
				continue
			}
			if msg := onSubnet(c, r.Via); msg != "" {
				t.errorf("via", "%s", msg)
			}
			r.Interface = c.Name
		case !t.has("via") && !t.has("interface"):
			t.missing("interface", "a route without via is on-link and needs an interface")
		}
	}
}

func (d *decoder) checkNeighbors(cfg *Config, own map[netip.Addr]owner) {
	type key struct {
		iface string
		addr  netip.Addr
	}
	seen := make(map[key]int) // → line
	for i := range cfg.Neighbors {
		n, t := &cfg.Neighbors[i], d.nbrs[i]
		ifc := d.lookupIface(cfg, t, "interface", n.Interface)
		if !n.Address.IsValid() {
			continue
		}
		if msg := isOwn(own, n.Address); msg != "" {
			t.errorf("address", "%s", msg)
			continue
		}
		if ifc != nil {
			if msg := onSubnet(ifc, n.Address); msg != "" {
				t.errorf("address", "%s", msg)
			}
		}
		k := key{n.Interface, n.Address}
		if line, dup := seen[k]; dup {
			t.errorf("address", "duplicate neighbor %s on interface %q (also on line %d)", n.Address, n.Interface, line)
		} else {
			seen[k] = t.lineOf("address")
		}
	}
}

func (d *decoder) checkClusters(cfg *Config, own map[netip.Addr]owner) {
	// Every ghost and every server address, for the checks that look across
	// clusters.
	type use struct {
		cluster string
		index   int // into Config.Clusters
		line    int
	}
	ghosts := make(map[netip.Addr]use)
	servers := make(map[netip.Addr]use)
	for i := range cfg.Clusters {
		c, src := &cfg.Clusters[i], d.clusters[i]
		if c.Address.IsValid() {
			if _, dup := ghosts[c.Address]; !dup {
				ghosts[c.Address] = use{c.Name, i, src.t.lineOf("address")}
			}
		}
		for j := range c.Servers {
			if a := c.Servers[j].Address; a.IsValid() {
				if _, dup := servers[a]; !dup {
					servers[a] = use{c.Name, i, src.servers[j].lineOf("address")}
				}
			}
		}
	}

	names := make(map[string]int) // → line
	for i := range cfg.Clusters {
		c, src := &cfg.Clusters[i], d.clusters[i]
		t := src.t
		if c.Name != "" {
			if line, dup := names[c.Name]; dup {
				t.errorf("name", "cluster %q is already defined on line %d", c.Name, line)
			} else {
				names[c.Name] = t.lineOf("name")
			}
		}
		ghost := c.Address
		if ghost.IsValid() {
			if msg := isOwn(own, ghost); msg != "" {
				t.errorf("address", "%s; a ghost address must be the cluster's alone", msg)
			} else if u := ghosts[ghost]; u.index != i {
				t.errorf("address", "%s is already the ghost of cluster %q (line %d)", ghost, u.cluster, u.line)
			}
			// A ghost that is also a server's address is reported on the
			// server, below.
		}
		ifc := d.lookupIface(cfg, t, "interface", c.Interface)

		if b := c.BroadcastAddress; b.IsValid() {
			msg := ""
			u, isServer := servers[b]
			g, isGhost := ghosts[b]
			switch {
			case ghost.IsValid() && b.Is4() != ghost.Is4():
				msg = fmt.Sprintf("%s and the ghost %s are of different IP families", b, ghost)
			case isOwn(own, b) != "":
				msg = isOwn(own, b)
			case isGhost:
				msg = fmt.Sprintf("%s is the ghost of cluster %q (line %d); the broadcast address must be a second, free address", b, g.cluster, g.line)
			case isServer:
				msg = fmt.Sprintf("%s is the address of a server of cluster %q (line %d)", b, u.cluster, u.line)
			case ifc != nil:
				msg = onSubnet(ifc, b)
			}
			if msg != "" {
				t.errorf("broadcast_address", "%s", msg)
			} else if c.Mode == ModeBroadcast {
				d.checkBroadcastNeighbor(cfg, c)
			}
		}

		ids := make(map[int]int)          // → line
		addrs := make(map[netip.Addr]int) // → line
		weighted := false
		for j := range c.Servers {
			s, st := &c.Servers[j], src.servers[j]
			weighted = weighted || s.Weight > 0
			if st.has("id") && s.ID >= 0 {
				if line, dup := ids[s.ID]; dup {
					st.errorf("id", "duplicate server id %d (also on line %d)", s.ID, line)
				} else {
					ids[s.ID] = st.lineOf("id")
				}
			}
			a := s.Address
			if !a.IsValid() {
				continue
			}
			if line, dup := addrs[a]; dup {
				st.errorf("address", "%s is already a server of this cluster (line %d)", a, line)
				continue
			}
			addrs[a] = st.lineOf("address")
			msg := ""
			switch u, isGhost := ghosts[a]; {
			case ghost.IsValid() && a.Is4() != ghost.Is4():
				msg = fmt.Sprintf("%s and the ghost %s are of different IP families", a, ghost)
			case isOwn(own, a) != "":
				msg = isOwn(own, a)
			case isGhost:
				msg = fmt.Sprintf("%s is the ghost of cluster %q (line %d); use the server's own primary address", a, u.cluster, u.line)
			case ifc != nil:
				msg = onSubnet(ifc, a)
			}
			if msg != "" {
				st.errorf("address", "%s", msg)
			}
		}
		if len(c.Servers) > 0 && !weighted {
			t.errorf("server", "every server has weight 0: no server would own a bucket")
		}
	}
}

// checkBroadcastNeighbor reports a permanent neighbor entry that would
// resolve broadcast-mode cluster c's second ghost to anything but the
// broadcast MAC.
func (d *decoder) checkBroadcastNeighbor(cfg *Config, c *Cluster) {
	for i := range cfg.Neighbors {
		n := &cfg.Neighbors[i]
		if n.Address != c.BroadcastAddress || n.Interface != c.Interface || n.MAC.IsZero() {
			continue
		}
		if !n.MAC.IsBroadcast() {
			d.nbrs[i].errorf("mac", "%s is the broadcast_address of cluster %q and must resolve to ff:ff:ff:ff:ff:ff",
				n.Address, c.Name)
		}
	}
}
