package config

import (
	"fmt"
	"net/netip"
	"time"
)

// Checksum is a [[vrrp]] table's checksum = "..." key: how the VRRPv3
// checksum of what the instance sends is computed (both are accepted).
// The zero Checksum is ChecksumRFC5798, the default.
type Checksum uint8

// The checksum styles.
const (
	// ChecksumRFC5798 computes the VRRPv3 checksum over an IP pseudo-header
	// and the message, for IPv4 as for IPv6 (keepalived's default since
	// 1.3.8, and what tcpdump verifies).
	ChecksumRFC5798 Checksum = iota
	// ChecksumRFC9568 leaves the pseudo-header out for IPv4 (the message
	// alone, as VRRPv2 did), the variant RFC 9568 records that some
	// implementations send. IPv6 always includes the pseudo-header.
	ChecksumRFC9568
)

var checksumWords = [...]string{ChecksumRFC5798: "rfc5798", ChecksumRFC9568: "rfc9568"}

// String is the style as the configuration writes it: "rfc5798" or "rfc9568".
func (c Checksum) String() string { return word(checksumWords[:], c, "Checksum") }

// MarshalText writes the style as the configuration does.
func (c Checksum) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// The limits and defaults of a [[vrrp]] instance.
const (
	DefaultVRRPInterval = time.Second
	MinVRRPInterval     = 10 * time.Millisecond    // one centisecond
	MaxVRRPInterval     = 40950 * time.Millisecond // 4095 centiseconds: the 12-bit field
	MaxVRRPAddresses    = 32                       // per instance (the protocol allows 255; keep frames small)
	MaxVRRPPeers        = 16
	VRRPOwnerPriority   = 255
	DefaultVRRPPriority = 100
)

// VRRP is one [[vrrp]]: a VRRP version 3 virtual router (RFC 5798) on one
// of the appliance's interfaces. The master of the virtual router owns its
// addresses and its virtual MAC on that link.
type VRRP struct {
	Interface    string
	VRID         uint8         // 1..255
	Priority     uint8         // 1..254; 255 = the addresses are this router's own
	Interval     time.Duration // advertisement interval, a whole number of centiseconds
	Addresses    []netip.Addr  // the virtual addresses: one family
	Preempt      bool          // a higher priority backup takes over from a lower priority master
	Group        string        // sync group: its instances change state together; "" for none
	Checksum     Checksum      // what is sent; both styles are accepted
	UnicastPeers []netip.Addr  // unicast advertisements to these instead of the multicast group
	Line         int           // line of the [[vrrp]] header
}

// IPv6 reports whether the instance's virtual addresses are IPv6.
func (v *VRRP) IPv6() bool { return len(v.Addresses) > 0 && v.Addresses[0].Is6() }

// Name is how the instance is named in logs and status: "IFACE/VRID".
func (v *VRRP) Name() string { return fmt.Sprintf("%s/%d", v.Interface, v.VRID) }

// vrrp decodes one [[vrrp]] table.
func (d *decoder) vrrp(t *table) VRRP {
	v := VRRP{Line: t.line, Preempt: true, Checksum: ChecksumRFC5798}
	t.known("interface", "vrid", "priority", "interval", "addresses", "preempt", "group", "checksum", "unicast_peers")
	if s, ok := t.str("interface"); ok {
		v.Interface = s
	} else if !t.has("interface") {
		t.missing("interface", "the interface the virtual router lives on")
	}
	if t.has("vrid") {
		if n := t.intRange("vrid", 0, 1, 255); n >= 1 && n <= 255 {
			v.VRID = uint8(n)
		}
	} else {
		t.missing("vrid", "the virtual router identifier, 1..255")
	}
	if v.Interface != "" && v.VRID != 0 {
		t.label = fmt.Sprintf("vrrp %q", v.Name())
	}
	v.Priority = DefaultVRRPPriority
	if n := t.intRange("priority", DefaultVRRPPriority, 1, VRRPOwnerPriority); n >= 1 && n <= VRRPOwnerPriority {
		v.Priority = uint8(n)
	}
	if dur, ok := t.duration("interval", DefaultVRRPInterval); ok {
		switch {
		case dur < MinVRRPInterval || dur > MaxVRRPInterval:
			t.errorf("interval", "must be between 0.01s and 40.95s (the 12-bit centisecond field), not %s", dur)
		case dur%MinVRRPInterval != 0:
			t.errorf("interval", "%s is not a whole number of centiseconds (VRRPv3 carries centiseconds)", dur)
		default:
			v.Interval = dur
		}
	}
	if b, ok := t.boolean("preempt"); ok {
		v.Preempt = b
	}
	if s, ok := t.str("group"); ok {
		if !ValidClusterName(s) {
			t.errorf("group", "%q: a group name is 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit", s)
		} else {
			v.Group = s
		}
	}
	v.Checksum, _ = oneOfWord(t, "checksum", ChecksumRFC5798, true, ChecksumRFC5798, ChecksumRFC9568)
	if elems, ok := t.strings("addresses"); ok {
		for _, e := range elems {
			a, msg := parseAddr(e.s)
			if msg == "" {
				msg = notUnicast(a)
			}
			switch {
			case msg != "":
				t.errorAt(e.line, "addresses", "%s", msg)
			case len(v.Addresses) > 0 && a.Is6() != v.Addresses[0].Is6():
				t.errorAt(e.line, "addresses", "%s: one virtual router carries one address family (%s is the first); use a second [[vrrp]] for the other", a, v.Addresses[0])
			case containsAddr(v.Addresses, a):
				t.errorAt(e.line, "addresses", "%s is given twice", a)
			default:
				v.Addresses = append(v.Addresses, a)
			}
		}
		if len(elems) == 0 {
			t.errorf("addresses", "a virtual router needs at least one address")
		}
		if len(v.Addresses) > MaxVRRPAddresses {
			t.errorf("addresses", "%d addresses; at most %d per virtual router", len(v.Addresses), MaxVRRPAddresses)
		}
	} else if !t.has("addresses") {
		t.missing("addresses", "the virtual addresses")
	}
	if elems, ok := t.strings("unicast_peers"); ok {
		for _, e := range elems {
			a, msg := parseAddr(e.s)
			if msg == "" {
				msg = notUnicast(a)
			}
			if msg != "" {
				t.errorAt(e.line, "unicast_peers", "%s", msg)
				continue
			}
			if containsAddr(v.UnicastPeers, a) {
				t.errorAt(e.line, "unicast_peers", "%s is given twice", a)
				continue
			}
			v.UnicastPeers = append(v.UnicastPeers, a)
		}
		if len(v.UnicastPeers) > MaxVRRPPeers {
			t.errorf("unicast_peers", "%d peers; at most %d", len(v.UnicastPeers), MaxVRRPPeers)
		}
	}
	d.vrrps = append(d.vrrps, t)
	return v
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, b := range as {
		if a == b {
			return true
		}
	}
	return false
}

// checkVRRP checks the virtual routers against the interfaces and each
// other: the interface exists and has an address of the family to send
// from; every virtual and peer address is on its subnets; an owner
// (priority 255) holds the addresses itself and nobody else does; a VRID is
// used once per interface and family; a virtual address belongs to one
// virtual router.
func (d *decoder) checkVRRP(cfg *Config, own map[netip.Addr]owner) {
	type key struct {
		iface string
		vrid  uint8
		v6    bool
	}
	seen := map[key]int{}
	vips := map[netip.Addr]string{}
	for i := range cfg.VRRP {
		v, t := &cfg.VRRP[i], d.vrrps[i]
		ifc := d.lookupIface(cfg, t, "interface", v.Interface)
		if ifc == nil || len(v.Addresses) == 0 {
			continue
		}
		v6 := v.IPv6()
		if v.VRID != 0 {
			k := key{v.Interface, v.VRID, v6}
			if line, dup := seen[k]; dup {
				t.errorf("vrid", "VRID %d is already used on interface %q for this address family (line %d)", v.VRID, v.Interface, line)
			} else {
				seen[k] = t.lineOf("vrid")
			}
		}
		hasFamily := false
		for _, p := range ifc.Addresses {
			// IPv6 advertisements come from a link-local address (RFC 5798 5.1.2.1).
			if p.Addr().Is6() == v6 && (!v6 || p.Addr().IsLinkLocalUnicast()) {
				hasFamily = true
			}
		}
		if !hasFamily {
			what := "IPv4 address"
			if v6 {
				what = "IPv6 link-local address (fe80::/10)"
			}
			t.errorf("addresses", "interface %q has no %s to send advertisements from", v.Interface, what)
			continue
		}
		for j, a := range v.Addresses {
			line := t.elemLine("addresses", j)
			if other, dup := vips[a]; dup {
				t.errorAt(line, "addresses", "%s is already a virtual address of vrrp %q", a, other)
			}
			vips[a] = v.Name()
			o, isOwn := own[a]
			switch {
			case v.Priority == VRRPOwnerPriority && (!isOwn || o.iface != v.Interface):
				t.errorAt(line, "addresses", "%s: priority 255 means this router owns the address, but it is not an address of interface %q", a, v.Interface)
			case v.Priority != VRRPOwnerPriority && isOwn:
				t.errorAt(line, "addresses", "%s is this router's own address on interface %q (line %d); a backup's virtual address must not be (or set priority = 255)", a, o.iface, o.line)
			case !a.IsLinkLocalUnicast():
				if msg := onSubnet(ifc, a); msg != "" {
					t.errorAt(line, "addresses", "%s", msg)
				}
			}
		}
		for j, a := range v.UnicastPeers {
			line := t.elemLine("unicast_peers", j)
			switch {
			case a.Is6() != v6:
				t.errorAt(line, "unicast_peers", "%s is not of the virtual router's family (%s)", a, family(v6))
			case isOwn(own, a) != "":
				t.errorAt(line, "unicast_peers", "%s", isOwn(own, a))
			case !a.IsLinkLocalUnicast() && onSubnet(ifc, a) != "":
				t.errorAt(line, "unicast_peers", "%s", onSubnet(ifc, a))
			}
		}
	}
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}
