package config

import (
	"fmt"
	"net/netip"
	"time"
)

// BGP defaults and limits.
const (
	DefaultBGPHoldTime = 90 * time.Second // RFC 4271 10's suggested value
	MinBGPHoldTime     = 3 * time.Second  // RFC 4271 4.2: 0 or at least 3 s
	MaxBGPHoldTime     = 65535 * time.Second
	MaxBGPNeighbors    = 64
)

// BGP is the optional [bgp] table: the appliance announces every cluster's
// ghost as a /32 (/128) to its neighbors, with its own address on the link
// to each neighbor as next hop, and withdraws it when the cluster has no
// live server, when its LAN link fails and when the appliance stops.
type BGP struct {
	ASN      uint32
	RouterID netip.Addr    // IPv4
	HoldTime time.Duration // 0 (no keepalives) or 3s..65535s, whole seconds
	// Neighbors are the [[bgp.neighbor]] entries, in file order.
	Neighbors []BGPNeighbor
	Line      int
}

// BGPNeighbor is one [[bgp.neighbor]]: an upstream router on a connected
// subnet (single-hop).
type BGPNeighbor struct {
	Address netip.Addr
	ASN     uint32
	// Port is the neighbor's TCP port (179 unless written).
	Port int
	// Interface is the interface whose subnet holds Address (resolved by
	// validation).
	Interface string
	Line      int
}

func (d *decoder) bgp(root *table) *BGP {
	t, ok := root.sub("bgp", "", "bgp.")
	if !ok {
		return nil
	}
	b := &BGP{Line: t.line, HoldTime: DefaultBGPHoldTime}
	t.known("asn", "router_id", "hold_time", "neighbor")
	b.ASN = asn(t, "the appliance's AS number")
	if a, ok := t.addr("router_id"); ok {
		if !a.Is4() || a.IsUnspecified() {
			t.errorf("router_id", "%s: a BGP router ID is a non-zero IPv4 address", a)
		} else {
			b.RouterID = a
		}
	} else if !t.has("router_id") {
		t.missing("router_id", "an IPv4 address, usually the appliance's upstream address")
	}
	if t.has("hold_time") {
		if s, isStr := t.m["hold_time"].(string); isStr && (s == "0" || s == "0s") {
			b.HoldTime = 0
		} else if h, ok := t.duration("hold_time", DefaultBGPHoldTime); ok {
			switch {
			case h%time.Second != 0:
				t.errorf("hold_time", "%s: BGP counts the hold time in whole seconds", h)
			case h < MinBGPHoldTime || h > MaxBGPHoldTime:
				t.errorf("hold_time", "%s: must be \"0s\" or between %s and %s (RFC 4271)", h, MinBGPHoldTime, MaxBGPHoldTime)
			default:
				b.HoldTime = h
			}
		}
	}
	nbrs := t.tables("neighbor", "bgp.neighbor")
	if len(nbrs) == 0 {
		t.errorf("neighbor", "[bgp] needs at least one [[bgp.neighbor]]")
	}
	if len(nbrs) > MaxBGPNeighbors {
		t.errorf("neighbor", "%d neighbors; at most %d", len(nbrs), MaxBGPNeighbors)
	}
	for _, nt := range nbrs {
		n := BGPNeighbor{Line: nt.line, Port: 179}
		if s, ok := nt.str("address"); ok {
			nt.label = fmt.Sprintf("bgp neighbor %q", s)
		}
		nt.known("address", "asn", "port")
		if a, ok := nt.unicast("address"); ok {
			n.Address = a
		} else if !nt.has("address") {
			nt.missing("address", "the upstream router's address on a connected subnet")
		}
		n.ASN = asn(nt, "the neighbor's AS number")
		n.Port = int(nt.intRange("port", 179, 1, 65535))
		b.Neighbors = append(b.Neighbors, n)
		d.bgpNbrs = append(d.bgpNbrs, nt)
	}
	return b
}

// asn decodes the table's "asn" key (required; what names it in the
// message when missing); 0 when absent or bad (reported).
func asn(t *table, what string) uint32 {
	n, ok := t.integer("asn")
	switch {
	case !ok && !t.has("asn"):
		t.missing("asn", what)
	case !ok:
	case n < 1 || n > 4294967295 || n == 23456:
		t.errorf("asn", "%d is not an AS number (1..4294967295, not 23456, AS_TRANS)", n)
	default:
		return uint32(n)
	}
	return 0
}

// checkBGP resolves each neighbor's interface: it must be on a connected
// subnet (the session is single-hop, from the appliance's address there),
// not one of the appliance's own addresses, and listed once.
func (d *decoder) checkBGP(cfg *Config, own map[netip.Addr]owner) {
	if cfg.BGP == nil {
		return
	}
	seen := map[netip.Addr]int{}
	for i := range cfg.BGP.Neighbors {
		n := &cfg.BGP.Neighbors[i]
		t := d.bgpNbrs[i]
		if !n.Address.IsValid() {
			continue
		}
		if line, dup := seen[n.Address]; dup {
			t.errorf("address", "%s is already a neighbor (line %d)", n.Address, line)
			continue
		}
		seen[n.Address] = n.Line
		if msg := isOwn(own, n.Address); msg != "" {
			t.errorf("address", "%s", msg)
			continue
		}
		for _, ifc := range cfg.Interfaces {
			for _, p := range ifc.Addresses {
				if p.Contains(n.Address) && n.Interface == "" {
					n.Interface = ifc.Name
				}
			}
		}
		if n.Interface == "" {
			t.errorf("address", "%s is not on a subnet of any interface: a BGP neighbor must be directly connected", n.Address)
		}
	}
}
