package filter

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrListing is wrapped by ParseTable's errors.
var ErrListing = errors.New("unexpected nft -j listing")

// Counter is one rule's counter.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Rule is one rule of the chain as the kernel has it, reduced to what a
// filter rule is made of.
type Rule struct {
	Comment  string
	Daddr    netip.Addr // the `ip daddr X` / `ip6 daddr X` match; zero if none
	CtState  []string   // the `ct state` match, sorted; nil if none
	L4proto  string     // the `meta l4proto` match: "tcp", "!tcp" (for != tcp); "" if none
	ICMP     []string   // the `icmp type { ... }` / `icmpv6 type { ... }` match, sorted; nil if none
	Hash     string     // the jhash lookup as Spec.Hash writes it, "" if none
	HashSet  string     // the set the hash is looked up in, without '@'
	SaddrSet string     // the set the source address is looked up in (pins), without '@'
	Counter  *Counter   // nil if the rule has no counter
	Pkttype  string     // the value of `meta pkttype set`, "" if none
	Verdict  string     // "accept", "drop", ... ; "" if none
	Unknown  []string   // statements this package does not model
	original string     // for error messages
}

// Table is a ghostnode table as `nft -j list table FAMILY NAME` reports it.
type Table struct {
	Family, Name string

	HasSet      bool // the owned set exists
	SetInterval bool // it has flags interval
	SetComment  string
	Owned       []uint32 // its elements, expanded, ascending

	HasUnowned bool     // the unowned set exists with flags interval
	Unowned    []uint32 // its elements, expanded, ascending

	// HasPinned: the pin sets exist; Pinned and PinnedAway are their
	// elements, ascending.
	HasPinned          bool
	Pinned, PinnedAway []netip.Addr

	HasChain bool // the chain exists as a prerouting filter chain at mangle priority, policy accept
	Rules    []Rule
}

// Counters are the filter's counters.
type Counters struct {
	Established Counter // accepted: packets of TCP connections known here
	Related     Counter // accepted: ICMP errors about connections known here
	New         Counter // accepted: first packets of TCP connections in owned buckets
	Datagram    Counter // accepted: packets other than TCP in owned buckets
	Unowned     Counter // dropped: new connections to buckets no server owns (a change in progress)
	Dropped     Counter // dropped: everything else for the ghost
}

// Counters finds the rules by their comments; ok is false when one is
// missing or has no counter.
func (t *Table) Counters() (c Counters, ok bool) {
	ok = true
	for _, x := range []struct {
		comment string
		dst     *Counter
	}{{CommentEstablished, &c.Established}, {CommentRelated, &c.Related}, {CommentNew, &c.New},
		{CommentDatagram, &c.Datagram}, {CommentUnowned, &c.Unowned}, {CommentDropped, &c.Dropped}} {
		i := slices.IndexFunc(t.Rules, func(r Rule) bool { return r.Comment == x.comment })
		if i < 0 || t.Rules[i].Counter == nil {
			ok = false
			continue
		}
		*x.dst = *t.Rules[i].Counter
	}
	return c, ok
}

// Matches reports whether the table has s's shape: the set, the chain and
// the three rules exactly as Ruleset writes them (ghost, hash, buckets,
// seed, comments). The set's elements and the counters are not compared.
// When it does not match, the reason says what differs.
func (s *Spec) Matches(t *Table) (ok bool, reason string) {
	switch {
	case t.Family != s.Family() || t.Name != s.Table():
		return false, fmt.Sprintf("table is %s %s, want %s %s", t.Family, t.Name, s.Family(), s.Table())
	case !t.HasSet || !t.SetInterval:
		return false, "no interval set " + SetName
	case t.SetComment != s.SetComment():
		return false, fmt.Sprintf("set comment %q, want %q", t.SetComment, s.SetComment())
	case !t.HasUnowned:
		return false, "no interval set " + UnownedName
	case !t.HasChain:
		return false, "no prerouting chain " + ChainName + " at mangle priority"
	case s.HasPins() != t.HasPinned:
		return false, fmt.Sprintf("pin sets: %v, want %v", t.HasPinned, s.HasPins())
	case !slices.Equal(t.Pinned, s.Pinned) || !slices.Equal(t.PinnedAway, s.PinnedAway):
		return false, "the pinned clients differ"
	}
	want := []Rule{
		{Comment: CommentEstablished, Daddr: s.Ghost, L4proto: "tcp", CtState: []string{"established"}, Pkttype: "host", Verdict: "accept"},
		{Comment: CommentRelated, Daddr: s.Ghost, CtState: []string{"related"}, Pkttype: "host", Verdict: "accept"},
		{Comment: CommentForeignError, Daddr: s.Ghost, ICMP: s.errorTypes(), Verdict: "drop"},
	}
	if s.HasPins() {
		want = append(want,
			Rule{Comment: CommentPinnedNew, Daddr: s.Ghost, L4proto: "tcp", CtState: []string{"new"}, SaddrSet: PinnedName, Pkttype: "host", Verdict: "accept"},
			Rule{Comment: CommentPinnedDatagram, Daddr: s.Ghost, L4proto: "!tcp", SaddrSet: PinnedName, Pkttype: "host", Verdict: "accept"},
			Rule{Comment: CommentPinnedAway, Daddr: s.Ghost, SaddrSet: PinnedAwayName, Verdict: "drop"})
	}
	want = append(want, []Rule{
		{Comment: CommentNew, Daddr: s.Ghost, L4proto: "tcp", CtState: []string{"new"}, Hash: s.Hash(), HashSet: SetName, Pkttype: "host", Verdict: "accept"},
		{Comment: CommentDatagram, Daddr: s.Ghost, L4proto: "!tcp", Hash: s.Hash(), HashSet: SetName, Pkttype: "host", Verdict: "accept"},
		{Comment: CommentUnowned, Daddr: s.Ghost, CtState: []string{"new"}, Hash: s.Hash(), HashSet: UnownedName, Verdict: "drop"},
		{Comment: CommentDropped, Daddr: s.Ghost, Verdict: "drop"},
	}...)
	if len(t.Rules) != len(want) {
		return false, fmt.Sprintf("%d rules, want %d", len(t.Rules), len(want))
	}
	for i, w := range want {
		r := t.Rules[i]
		if r.Comment != w.Comment || r.Daddr != w.Daddr || !slices.Equal(r.CtState, w.CtState) || r.L4proto != w.L4proto || !slices.Equal(r.ICMP, w.ICMP) ||
			r.Hash != w.Hash || r.HashSet != w.HashSet || r.SaddrSet != w.SaddrSet || r.Pkttype != w.Pkttype ||
			r.Verdict != w.Verdict || r.Counter == nil || len(r.Unknown) > 0 {
			return false, fmt.Sprintf("rule %d (%q) differs: %s", i+1, r.Comment, r.original)
		}
	}
	return true, ""
}

// ParseTable reads the output of `nft -j list table FAMILY NAME` (nftables
// 1.0.x JSON schema 1).
func ParseTable(data []byte) (*Table, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrListing, err)
	}
	t := &Table{}
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			var err error
			switch kind {
			case "table":
				var x struct{ Family, Name string }
				err = json.Unmarshal(raw, &x)
				t.Family, t.Name = x.Family, x.Name
			case "set":
				err = t.parseSet(raw)
			case "chain":
				var x struct {
					Name, Type, Hook, Policy string
					Prio                     int
				}
				err = json.Unmarshal(raw, &x)
				if x.Name == ChainName && x.Type == "filter" && x.Hook == "prerouting" && x.Prio == manglePriority && x.Policy == "accept" {
					t.HasChain = true
				}
			case "rule":
				err = t.parseRule(raw)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrListing, kind, err)
			}
		}
	}
	if t.Name == "" {
		return nil, fmt.Errorf("%w: no table in the listing", ErrListing)
	}
	return t, nil
}

func (t *Table) parseSet(raw json.RawMessage) error {
	var x struct {
		Name    string
		Comment string
		Flags   []string
		Elem    []json.RawMessage
	}
	if err := json.Unmarshal(raw, &x); err != nil {
		return err
	}
	if x.Name == PinnedName || x.Name == PinnedAwayName {
		var as []netip.Addr
		for _, e := range x.Elem {
			var v string
			if json.Unmarshal(e, &v) != nil {
				return fmt.Errorf("set %s element %s: want an address", x.Name, e)
			}
			a, err := netip.ParseAddr(v)
			if err != nil {
				return fmt.Errorf("set %s element %s: %v", x.Name, e, err)
			}
			as = append(as, a)
		}
		slices.SortFunc(as, netip.Addr.Compare)
		t.HasPinned = true
		if x.Name == PinnedName {
			t.Pinned = as
		} else {
			t.PinnedAway = as
		}
		return nil
	}
	if x.Name != SetName && x.Name != UnownedName {
		return nil
	}
	if x.Name == SetName {
		t.HasSet, t.SetComment = true, x.Comment
		t.SetInterval = slices.Contains(x.Flags, "interval")
	} else {
		t.HasUnowned = slices.Contains(x.Flags, "interval")
	}
	var rs []Range
	for _, e := range x.Elem {
		var v uint32
		if json.Unmarshal(e, &v) == nil {
			rs = append(rs, Range{v, v})
			continue
		}
		var r struct{ Range []uint32 }
		if err := json.Unmarshal(e, &r); err != nil || len(r.Range) != 2 || r.Range[1] < r.Range[0] {
			return fmt.Errorf("set element %s: want a number or a range", e)
		}
		rs = append(rs, Range{r.Range[0], r.Range[1]})
	}
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.Lo, b.Lo) })
	if x.Name == SetName {
		t.Owned = Expand(rs)
	} else {
		t.Unowned = Expand(rs)
	}
	return nil
}

func (t *Table) parseRule(raw json.RawMessage) error {
	var x struct {
		Chain   string
		Comment string
		Expr    []map[string]json.RawMessage
	}
	if err := json.Unmarshal(raw, &x); err != nil {
		return err
	}
	if x.Chain != ChainName {
		return nil
	}
	r := Rule{Comment: x.Comment, original: string(raw)}
	for _, st := range x.Expr {
		for k, v := range st {
			if !r.statement(k, v) {
				r.Unknown = append(r.Unknown, k)
			}
		}
	}
	t.Rules = append(t.Rules, r)
	return nil
}

// payload is nft JSON's {"payload": {"protocol": "ip", "field": "daddr"}}.
type payload struct {
	Payload *struct{ Protocol, Field string }
}

// statement models one statement of a rule; it reports false for a
// statement it does not know.
func (r *Rule) statement(kind string, v json.RawMessage) bool {
	switch kind {
	case "accept", "drop":
		r.Verdict = kind
		return true
	case "counter":
		var c Counter
		if json.Unmarshal(v, &c) != nil {
			return false
		}
		r.Counter = &c
		return true
	case "mangle":
		var m struct {
			Key struct {
				Meta *struct{ Key string }
			}
			Value string
		}
		if json.Unmarshal(v, &m) != nil || m.Key.Meta == nil || m.Key.Meta.Key != "pkttype" {
			return false
		}
		r.Pkttype = m.Value
		return true
	case "match":
		return r.match(v)
	}
	return false
}

func (r *Rule) match(v json.RawMessage) bool {
	var m struct {
		Op    string
		Left  map[string]json.RawMessage
		Right json.RawMessage
	}
	if json.Unmarshal(v, &m) != nil {
		return false
	}
	if raw, ok := m.Left["payload"]; ok && m.Op == "==" {
		var p struct{ Protocol, Field string }
		var s string
		if json.Unmarshal(raw, &p) == nil && p.Field == "type" && (p.Protocol == "icmp" || p.Protocol == "icmpv6") {
			var set struct{ Set []string }
			if json.Unmarshal(m.Right, &set) != nil || len(set.Set) == 0 {
				return false
			}
			r.ICMP = slices.Sorted(slices.Values(set.Set))
			return true
		}
		if json.Unmarshal(raw, &p) == nil && p.Field == "saddr" && json.Unmarshal(m.Right, &s) == nil && strings.HasPrefix(s, "@") {
			r.SaddrSet = strings.TrimPrefix(s, "@")
			return true
		}
		if json.Unmarshal(raw, &p) != nil || p.Field != "daddr" || json.Unmarshal(m.Right, &s) != nil {
			return false
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return false
		}
		r.Daddr = a
		return true
	}
	if raw, ok := m.Left["meta"]; ok && (m.Op == "==" || m.Op == "!=") {
		var k struct{ Key string }
		var proto string
		if json.Unmarshal(raw, &k) != nil || k.Key != "l4proto" || json.Unmarshal(m.Right, &proto) != nil {
			return false
		}
		if m.Op == "!=" {
			proto = "!" + proto
		}
		r.L4proto = proto
		return true
	}
	if raw, ok := m.Left["ct"]; ok {
		var c struct{ Key string }
		if json.Unmarshal(raw, &c) != nil || c.Key != "state" {
			return false
		}
		var one string
		var many []string
		switch {
		case json.Unmarshal(m.Right, &one) == nil:
			many = []string{one}
		case json.Unmarshal(m.Right, &many) == nil:
		default:
			return false
		}
		slices.Sort(many)
		r.CtState = many
		return true
	}
	if raw, ok := m.Left["jhash"]; ok && m.Op == "==" {
		var h struct {
			Mod  *uint32
			Seed *uint32
			Expr payload
		}
		var set string
		if json.Unmarshal(raw, &h) != nil || h.Mod == nil || h.Seed == nil || h.Expr.Payload == nil ||
			h.Expr.Payload.Field != "saddr" || json.Unmarshal(m.Right, &set) != nil || !strings.HasPrefix(set, "@") {
			return false
		}
		r.Hash = fmt.Sprintf("jhash %s saddr mod %d seed %#x", h.Expr.Payload.Protocol, *h.Mod, *h.Seed)
		r.HashSet = strings.TrimPrefix(set, "@")
		return true
	}
	return false
}

// errorTypes are the ICMP error types the foreign-error rule drops, sorted,
// as nft names them.
func (s *Spec) errorTypes() []string {
	if s.Family() == "ip" {
		return []string{"destination-unreachable", "parameter-problem", "time-exceeded"}
	}
	return []string{"destination-unreachable", "packet-too-big", "parameter-problem", "time-exceeded"}
}
