package filter

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// MaxBuckets is the largest bucket count a filter accepts: the appliance's
// configuration limit (router/config.MaxBuckets).
const MaxBuckets = 65536

// Names inside the table. Package node and ParseTable rely on them.
const (
	SetName     = "owned"   // the set of owned buckets
	UnownedName = "unowned" // the set of buckets owned by no server (a change in progress)
	ChainName   = "pre"     // the prerouting chain
	// PinnedName and PinnedAwayName are the sets of clients pinned to this
	// server and to other servers; they exist only when the cluster has
	// pins.
	PinnedName     = "pinned"
	PinnedAwayName = "pinned_away"

	// Rule comments: how the rules are found again in `nft -j` output.
	CommentEstablished = "established"
	CommentRelated     = "related"
	// CommentForeignError counts ICMP errors about other servers' flows.
	CommentForeignError = "foreign-error"
	CommentNew          = "new"
	CommentDatagram     = "datagram"
	CommentUnowned      = "unowned"
	// Pins: clients pinned to this server, and to others.
	CommentPinnedNew      = "pinned-new"
	CommentPinnedDatagram = "pinned-datagram"
	CommentPinnedAway     = "pinned-away"
	CommentDropped        = "dropped"

	// mangle is the numeric priority of `priority mangle`, as `nft -j` reports it.
	manglePriority = -150
	// perLine is how many set elements a line of the ruleset holds.
	perLine = 12
)

// ErrSpec is wrapped by Spec.Check's errors.
var ErrSpec = errors.New("bad filter spec")

// Spec is what one server's filter for one cluster is made of.
type Spec struct {
	Cluster string     // the cluster's name; the table is "ghost_" + Cluster
	Ghost   netip.Addr // the cluster (ghost) address, IPv4 or IPv6
	Buckets int        // B of `jhash ... mod B`, 1..MaxBuckets
	Seed    uint32     // S of `jhash ... seed S`
	Server  int        // this server's id, for the set's comment; -1 when unknown
	Owned   []uint32   // the buckets this server accepts: ascending, distinct, < Buckets
	// Unowned are the buckets no server accepts new connections for while
	// a change is in progress (ascending, distinct, < Buckets, none of
	// Owned): their new connections are dropped and counted apart, and
	// wait for a SYN retransmission.
	Unowned []uint32
	// Pinned are the clients pinned to this server, PinnedAway those
	// pinned to others ([[cluster.pin]]): ascending, distinct, of the
	// ghost's family, none in both. A pinned client's new connections
	// and datagrams are accepted by its server and dropped by every other,
	// ahead of the hash; the sets and their rules exist only when there
	// are pins, so a filter without pins is unchanged by them.
	Pinned, PinnedAway []netip.Addr
}

// HasPins reports whether the filter has pin sets and rules.
func (s *Spec) HasPins() bool { return len(s.Pinned)+len(s.PinnedAway) > 0 }

// Family is the nftables family of the table: "ip" for an IPv4 ghost, "ip6"
// for an IPv6 one.
func (s *Spec) Family() string { return FamilyOf(s.Ghost) }

// Table is the table's name.
func (s *Spec) Table() string { return TableName(s.Cluster) }

// FamilyOf is the nftables family for a ghost address.
func FamilyOf(ghost netip.Addr) string {
	if ghost.Unmap().Is4() {
		return "ip"
	}
	return "ip6"
}

// TableName is the table for a cluster.
func TableName(cluster string) string { return "ghost_" + cluster }

// Check reports the first thing wrong with s.
func (s *Spec) Check() error {
	switch {
	case !config.ValidClusterName(s.Cluster):
		return fmt.Errorf("%w: cluster name %q: want 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit", ErrSpec, s.Cluster)
	case !s.Ghost.IsValid() || s.Ghost.Is4In6() || s.Ghost.IsUnspecified() || s.Ghost.IsMulticast():
		return fmt.Errorf("%w: ghost address %v: want a unicast IPv4 or IPv6 address", ErrSpec, s.Ghost)
	case s.Buckets < 1 || s.Buckets > MaxBuckets:
		return fmt.Errorf("%w: %d buckets: want 1..%d", ErrSpec, s.Buckets, MaxBuckets)
	}
	if err := CheckOwned(s.Owned, s.Buckets); err != nil {
		return fmt.Errorf("%w: owned buckets: %v", ErrSpec, err)
	}
	if err := CheckOwned(s.Unowned, s.Buckets); err != nil {
		return fmt.Errorf("%w: unowned buckets: %v", ErrSpec, err)
	}
	for _, b := range s.Unowned {
		if _, found := slices.BinarySearch(s.Owned, b); found {
			return fmt.Errorf("%w: bucket %d is both owned and unowned", ErrSpec, b)
		}
	}
	for _, set := range [][]netip.Addr{s.Pinned, s.PinnedAway} {
		for i, a := range set {
			switch {
			case !a.IsValid() || a.Is4() != s.Ghost.Is4() || a.Is4In6():
				return fmt.Errorf("%w: pinned client %v is not an address of the ghost's family", ErrSpec, a)
			case i > 0 && set[i-1].Compare(a) >= 0:
				return fmt.Errorf("%w: pinned clients not ascending and distinct at %v", ErrSpec, a)
			}
		}
	}
	for _, a := range s.Pinned {
		if _, found := slices.BinarySearchFunc(s.PinnedAway, a, netip.Addr.Compare); found {
			return fmt.Errorf("%w: client %v is pinned both here and away", ErrSpec, a)
		}
	}
	return nil
}

// Hash is the hash expression as nft writes it: "jhash ip saddr mod B seed S".
func (s *Spec) Hash() string {
	return fmt.Sprintf("jhash %s saddr mod %d seed %#x", s.Family(), s.Buckets, s.Seed)
}

// SetComment is the owned set's comment; it names the hash the set's
// elements are buckets of (the set's own type, `meta length`, does not).
func (s *Spec) SetComment() string {
	who := "this server"
	if s.Server >= 0 {
		who = fmt.Sprintf("server %d", s.Server)
	}
	return fmt.Sprintf("ghostnode: buckets of %s owned by %s", s.Hash(), who)
}

// Ruleset is the nft script that creates the table, or replaces it whole
// if it exists, in one transaction (`table` creates it if missing, so the
// `delete` always succeeds). s must pass Check.
func (s *Spec) Ruleset() string {
	fam, tbl, g := s.Family(), s.Table(), s.Ghost.String()
	var b strings.Builder
	fmt.Fprintf(&b, "# ghostnode: broadcast-mode filter of cluster %s on %s: %d of %d buckets.\n",
		s.Cluster, s.who(), len(s.Owned), s.Buckets)
	fmt.Fprintf(&b, "# Accepts a packet for the ghost %s when its TCP connection is known here (or it\n", g)
	fmt.Fprintf(&b, "# is an ICMP error about one), or when %s is an owned\n", s.Hash())
	fmt.Fprintf(&b, "# bucket and it opens a TCP connection or is not TCP (UDP follows the bucket, not\n")
	fmt.Fprintf(&b, "# conntrack); counts new connections to buckets no server owns; drops the rest.\n")
	fmt.Fprintf(&b, "# Loading it creates or replaces the table in one transaction.\n")
	fmt.Fprintf(&b, "table %s %s\n", fam, tbl)
	fmt.Fprintf(&b, "delete table %s %s\n", fam, tbl)
	fmt.Fprintf(&b, "table %s %s {\n", fam, tbl)
	fmt.Fprintf(&b, "\tset %s {\n", SetName)
	fmt.Fprintf(&b, "\t\ttypeof meta length\n")
	fmt.Fprintf(&b, "\t\tflags interval\n")
	fmt.Fprintf(&b, "\t\tcomment %q\n", s.SetComment())
	if len(s.Owned) > 0 {
		fmt.Fprintf(&b, "\t\telements = {%s\n\t\t}\n", elements(s.Owned, "\n\t\t\t"))
	}
	fmt.Fprintf(&b, "\t}\n\n")
	fmt.Fprintf(&b, "\tset %s {\n", UnownedName)
	fmt.Fprintf(&b, "\t\ttypeof meta length\n")
	fmt.Fprintf(&b, "\t\tflags interval\n")
	if len(s.Unowned) > 0 {
		fmt.Fprintf(&b, "\t\telements = {%s\n\t\t}\n", elements(s.Unowned, "\n\t\t\t"))
	}
	fmt.Fprintf(&b, "\t}\n\n")
	if s.HasPins() {
		for _, set := range []struct {
			name    string
			clients []netip.Addr
		}{{PinnedName, s.Pinned}, {PinnedAwayName, s.PinnedAway}} {
			fmt.Fprintf(&b, "\tset %s {\n", set.name)
			fmt.Fprintf(&b, "\t\ttypeof %s saddr\n", fam)
			if len(set.clients) > 0 {
				fmt.Fprintf(&b, "\t\telements = {%s\n\t\t}\n", addrElements(set.clients, "\n\t\t\t"))
			}
			fmt.Fprintf(&b, "\t}\n\n")
		}
	}
	fmt.Fprintf(&b, "\tchain %s {\n", ChainName)
	fmt.Fprintf(&b, "\t\ttype filter hook prerouting priority mangle; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto tcp ct state established counter meta pkttype set host accept comment %q\n",
		fam, g, CommentEstablished)
	fmt.Fprintf(&b, "\t\t%s daddr %s ct state related counter meta pkttype set host accept comment %q\n",
		fam, g, CommentRelated)
	// An ICMP error conntrack does not relate to a connection of this
	// server is about another server's: it must not fall to the bucket of
	// its outer source (a router between the client and the appliance).
	if fam == "ip" {
		fmt.Fprintf(&b, "\t\tip daddr %s icmp type { destination-unreachable, time-exceeded, parameter-problem } counter drop comment %q\n",
			g, CommentForeignError)
	} else {
		fmt.Fprintf(&b, "\t\tip6 daddr %s icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } counter drop comment %q\n",
			g, CommentForeignError)
	}
	if s.HasPins() {
		// Pins come before the hash: a pinned client's new connections and
		// datagrams are its server's alone.
		fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto tcp ct state new %s saddr @%s counter meta pkttype set host accept comment %q\n",
			fam, g, fam, PinnedName, CommentPinnedNew)
		fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto != tcp %s saddr @%s counter meta pkttype set host accept comment %q\n",
			fam, g, fam, PinnedName, CommentPinnedDatagram)
		fmt.Fprintf(&b, "\t\t%s daddr %s %s saddr @%s counter drop comment %q\n",
			fam, g, fam, PinnedAwayName, CommentPinnedAway)
	}
	fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto tcp ct state new %s @%s counter meta pkttype set host accept comment %q\n",
		fam, g, s.Hash(), SetName, CommentNew)
	fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto != tcp %s @%s counter meta pkttype set host accept comment %q\n",
		fam, g, s.Hash(), SetName, CommentDatagram)
	fmt.Fprintf(&b, "\t\t%s daddr %s ct state new %s @%s counter drop comment %q\n",
		fam, g, s.Hash(), UnownedName, CommentUnowned)
	fmt.Fprintf(&b, "\t\t%s daddr %s counter drop comment %q\n", fam, g, CommentDropped)
	fmt.Fprintf(&b, "\t}\n}\n")
	return b.String()
}

func (s *Spec) who() string {
	if s.Server >= 0 {
		return fmt.Sprintf("server %d", s.Server)
	}
	return "this server"
}

// UpdateScript is the nft script that replaces the owned and unowned
// sets' elements with s.Owned and s.Unowned in one transaction; the table
// must exist with s's shape.
func (s *Spec) UpdateScript() string {
	fam, tbl := s.Family(), s.Table()
	var b strings.Builder
	fmt.Fprintf(&b, "flush set %s %s %s\n", fam, tbl, SetName)
	fmt.Fprintf(&b, "flush set %s %s %s\n", fam, tbl, UnownedName)
	if len(s.Owned) > 0 {
		fmt.Fprintf(&b, "add element %s %s %s {%s\n}\n", fam, tbl, SetName, elements(s.Owned, "\n\t"))
	}
	if len(s.Unowned) > 0 {
		fmt.Fprintf(&b, "add element %s %s %s {%s\n}\n", fam, tbl, UnownedName, elements(s.Unowned, "\n\t"))
	}
	return b.String()
}

// DeleteScript is the nft script that deletes a table if it exists.
func DeleteScript(family, table string) string {
	return fmt.Sprintf("table %s %s\ndelete table %s %s\n", family, table, family, table)
}

// elements writes owned as nft set elements, ranges compressed, perLine to
// a line, each line starting with sep.
func elements(owned []uint32, sep string) string { return setElements(Ranges(owned), sep) }

// addrElements writes addresses as nft set elements, perLine to a line,
// each line starting with sep.
func addrElements(as []netip.Addr, sep string) string { return setElements(as, sep) }

// setElements writes items as nft set elements, perLine to a line, each
// line starting with sep.
func setElements[T fmt.Stringer](items []T, sep string) string {
	var b strings.Builder
	for i, it := range items {
		switch {
		case i%perLine == 0:
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(sep)
		default:
			b.WriteString(", ")
		}
		b.WriteString(it.String())
	}
	return b.String()
}
