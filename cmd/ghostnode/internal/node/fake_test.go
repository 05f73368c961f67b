package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
)

// fakeHost is a Host in memory. Its nft understands exactly the three kinds
// of script package filter writes (create-or-replace, update, delete), each
// applied all or nothing like a transaction, and lists tables in nftables
// 1.0.6's JSON shape. The privileged tests run the same code against the
// real tools.
type fakeHost struct {
	sysctls map[string]string
	links   []Link
	tables  map[string]*fakeTable // "family name" →
	missing map[string]bool       // tools not installed

	// fail, when set, is consulted before each change; an error it returns
	// is the change's error and nothing changes.
	fail func(op string) error
	ops  []string // every change, in order
}

type fakeTable struct {
	family, name string
	setComment   string
	ghost        string
	hash         string // "jhash ip saddr mod B seed S"
	owned        []uint32
	unowned      []uint32
	counters     [6]filter.Counter // established, related, new, datagram, unowned, dropped
}

var _ Host = (*fakeHost)(nil)

// newFakeHost is a server with 10.0.0.12/24 on eth0, the sysctls of a
// fresh network namespace, and no nftables tables.
func newFakeHost() *fakeHost {
	h := &fakeHost{
		sysctls: map[string]string{},
		links: []Link{
			{Name: "lo", Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}},
			{Name: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.12/24")}},
		},
		tables:  map[string]*fakeTable{},
		missing: map[string]bool{},
	}
	for _, dev := range []string{"all", "default", "lo", "eth0"} {
		h.sysctls["net/ipv4/conf/"+dev+"/arp_ignore"] = "0"
		h.sysctls["net/ipv4/conf/"+dev+"/arp_announce"] = "0"
		h.sysctls["net/ipv4/conf/"+dev+"/rp_filter"] = "0"
	}
	h.sysctls["net/ipv4/conf/eth0/rp_filter"] = "1"
	h.sysctls["net/netfilter/nf_conntrack_tcp_loose"] = "1"
	return h
}

// snapshot is everything setup may change, for before/after comparisons.
type snapshot struct {
	sysctls map[string]string
	links   string
	tables  string
}

func (h *fakeHost) snapshot() snapshot {
	links, _ := json.Marshal(h.links)
	var tables []string
	for _, k := range slices.Sorted(maps.Keys(h.tables)) {
		tables = append(tables, fmt.Sprintf("%s %+v", k, *h.tables[k]))
	}
	return snapshot{maps.Clone(h.sysctls), string(links), strings.Join(tables, "\n")}
}

func (h *fakeHost) change(op string) error {
	if h.fail != nil {
		if err := h.fail(op); err != nil {
			return err
		}
	}
	h.ops = append(h.ops, op)
	return nil
}

func (h *fakeHost) Need(tool string) error {
	if h.missing[tool] {
		return map[string]error{"nft": ErrNoNFT, "ip": ErrNoIP}[tool]
	}
	return nil
}

func (h *fakeHost) ReadSysctl(key string) (string, error) {
	v, ok := h.sysctls[key]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrNoSysctl, SysctlName(key))
	}
	return v, nil
}

func (h *fakeHost) WriteSysctl(key, value string) error {
	if _, ok := h.sysctls[key]; !ok {
		return fmt.Errorf("%w: %s", ErrNoSysctl, SysctlName(key))
	}
	if err := h.change("sysctl " + key + "=" + value); err != nil {
		return err
	}
	h.sysctls[key] = value
	return nil
}

func (h *fakeHost) Links(context.Context) ([]Link, error) {
	out := slices.Clone(h.links)
	for i := range out {
		out[i].Addrs = slices.Clone(out[i].Addrs)
	}
	return out, nil
}

func (h *fakeHost) link(dev string) *Link {
	for i := range h.links {
		if h.links[i].Name == dev {
			return &h.links[i]
		}
	}
	return nil
}

func (h *fakeHost) AddAddr(_ context.Context, dev string, p netip.Prefix) error {
	l := h.link(dev)
	if l == nil {
		return fmt.Errorf("ip addr add: Cannot find device %q", dev)
	}
	if slices.Contains(l.Addrs, p) {
		return errors.New("ip addr add: RTNETLINK answers: File exists")
	}
	if err := h.change("addr add " + p.String() + " " + dev); err != nil {
		return err
	}
	l.Addrs = append(l.Addrs, p)
	return nil
}

func (h *fakeHost) DelAddr(_ context.Context, dev string, p netip.Prefix) error {
	l := h.link(dev)
	if l == nil || !slices.Contains(l.Addrs, p) {
		return errors.New("ip addr del: RTNETLINK answers: Cannot assign requested address")
	}
	if err := h.change("addr del " + p.String() + " " + dev); err != nil {
		return err
	}
	l.Addrs = slices.DeleteFunc(l.Addrs, func(q netip.Prefix) bool { return q == p })
	return nil
}

// The fake nft's patterns for package filter's scripts; read-only.
var (
	reDelete   = regexp.MustCompile(`(?m)^delete table (\S+) (\S+)$`)
	reCreate   = regexp.MustCompile(`(?m)^table (\S+) (\S+) \{$`)
	reFlush    = regexp.MustCompile(`(?m)^flush set (\S+) (\S+) owned$`)
	reComment  = regexp.MustCompile(`(?m)^\t\tcomment "(.*)"$`)
	reNewRule  = regexp.MustCompile(`(?m)daddr (\S+) meta l4proto tcp ct state new (jhash .*) @owned`)
	reSetBlock = regexp.MustCompile(`(?s)\tset (owned|unowned) \{(.*?)\n\t\}`)
	reElements = regexp.MustCompile(`(?s)elements = \{(.*?)\}`)
	reAdd      = regexp.MustCompile(`(?s)add element \S+ \S+ (owned|unowned) \{(.*?)\}`)
)

func (h *fakeHost) NFT(_ context.Context, script string) error {
	// elements returns the elements the script gives set (owned or unowned).
	elements := func(set string) ([]uint32, error) {
		text := ""
		for _, m := range reSetBlock.FindAllStringSubmatch(script, -1) {
			if e := reElements.FindStringSubmatch(m[2]); m[1] == set && e != nil {
				text = e[1]
			}
		}
		for _, m := range reAdd.FindAllStringSubmatch(script, -1) {
			if m[1] == set {
				text = m[2]
			}
		}
		return filter.ParseList(strings.Join(strings.Fields(text), ""), filter.MaxBuckets)
	}
	switch {
	case reCreate.MatchString(script):
		c := reCreate.FindStringSubmatch(script)
		cm, nr := reComment.FindStringSubmatch(script), reNewRule.FindStringSubmatch(script)
		owned, err := elements("owned")
		unowned, err2 := elements("unowned")
		if cm == nil || nr == nil || err != nil || err2 != nil {
			return fmt.Errorf("fake nft: script not understood (%v, %v):\n%s", err, err2, script)
		}
		if err := h.change("nft create " + c[1] + " " + c[2]); err != nil {
			return err
		}
		h.tables[c[1]+" "+c[2]] = &fakeTable{family: c[1], name: c[2], setComment: cm[1], ghost: nr[1], hash: nr[2], owned: owned, unowned: unowned}
	case reDelete.MatchString(script):
		d := reDelete.FindStringSubmatch(script)
		if err := h.change("nft delete " + d[1] + " " + d[2]); err != nil {
			return err
		}
		delete(h.tables, d[1]+" "+d[2])
	case reFlush.MatchString(script):
		f := reFlush.FindStringSubmatch(script)
		t := h.tables[f[1]+" "+f[2]]
		if t == nil {
			return fmt.Errorf("nft: Error: No such file or directory; did you mean table %s %s?", f[1], f[2])
		}
		owned, err := elements("owned")
		unowned, err2 := elements("unowned")
		if err != nil || err2 != nil {
			return fmt.Errorf("fake nft: %v %v", err, err2)
		}
		if err := h.change("nft update " + f[1] + " " + f[2]); err != nil {
			return err
		}
		t.owned, t.unowned = owned, unowned
	default:
		return fmt.Errorf("fake nft: script not understood:\n%s", script)
	}
	return nil
}

func (h *fakeHost) ListTable(_ context.Context, family, name string) ([]byte, error) {
	if h.missing["nft"] {
		return nil, ErrNoNFT
	}
	t := h.tables[family+" "+name]
	if t == nil {
		return nil, fmt.Errorf("%w: %s %s", ErrNoTable, family, name)
	}
	type obj = map[string]any
	daddr := obj{"match": obj{"op": "==", "left": obj{"payload": obj{"protocol": family, "field": "daddr"}}, "right": t.ghost}}
	var mod, seed uint32
	var proto string
	fmt.Sscanf(t.hash, "jhash %s saddr mod %d seed %v", &proto, &mod, &seed)
	elems := func(bs []uint32) []any {
		var elem []any
		for _, r := range filter.Ranges(bs) {
			if r.Lo == r.Hi {
				elem = append(elem, r.Lo)
			} else {
				elem = append(elem, obj{"range": []uint32{r.Lo, r.Hi}})
			}
		}
		return elem
	}
	set := obj{"family": family, "name": "owned", "table": name, "type": "integer", "handle": 2, "comment": t.setComment, "flags": []string{"interval"}}
	if e := elems(t.owned); len(e) > 0 {
		set["elem"] = e
	}
	unset := obj{"family": family, "name": "unowned", "table": name, "type": "integer", "handle": 3, "flags": []string{"interval"}}
	if e := elems(t.unowned); len(e) > 0 {
		unset["elem"] = e
	}
	l4 := func(op string) obj {
		return obj{"match": obj{"op": op, "left": obj{"meta": obj{"key": "l4proto"}}, "right": "tcp"}}
	}
	ct := func(states ...string) obj {
		var right any = states
		if len(states) == 1 {
			right = states[0]
		}
		return obj{"match": obj{"op": "in", "left": obj{"ct": obj{"key": "state"}}, "right": right}}
	}
	jh := func(set string) obj {
		return obj{"match": obj{"op": "==", "left": obj{"jhash": obj{"mod": mod, "seed": seed, "expr": obj{"payload": obj{"protocol": proto, "field": "saddr"}}}}, "right": "@" + set}}
	}
	host := obj{"mangle": obj{"key": obj{"meta": obj{"key": "pkttype"}}, "value": "host"}}
	rule := func(comment string, c filter.Counter, exprs ...any) obj {
		return obj{"rule": obj{"family": family, "table": name, "chain": "pre", "comment": comment, "expr": exprs}}
	}
	counter := func(c filter.Counter) obj { return obj{"counter": obj{"packets": c.Packets, "bytes": c.Bytes}} }
	doc := obj{"nftables": []any{
		obj{"metainfo": obj{"version": "1.0.6", "json_schema_version": 1}},
		obj{"table": obj{"family": family, "name": name, "handle": 1}},
		obj{"set": set},
		obj{"set": unset},
		obj{"chain": obj{"family": family, "table": name, "name": "pre", "handle": 1, "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}},
		rule("established", t.counters[0], daddr, l4("=="), ct("established"), counter(t.counters[0]), host, obj{"accept": nil}),
		rule("related", t.counters[1], daddr, ct("related"), counter(t.counters[1]), host, obj{"accept": nil}),
		rule("foreign-error", filter.Counter{}, daddr, icmpErrors(proto), counter(filter.Counter{}), obj{"drop": nil}),
		rule("new", t.counters[2], daddr, l4("=="), ct("new"), jh("owned"), counter(t.counters[2]), host, obj{"accept": nil}),
		rule("datagram", t.counters[3], daddr, l4("!="), jh("owned"), counter(t.counters[3]), host, obj{"accept": nil}),
		rule("unowned", t.counters[4], daddr, ct("new"), jh("unowned"), counter(t.counters[4]), obj{"drop": nil}),
		rule("dropped", t.counters[5], daddr, counter(t.counters[5]), obj{"drop": nil}),
	}}
	return json.Marshal(doc)
}

// icmpErrors is the foreign-error rule's match as nft 1.0.6 lists it.
func icmpErrors(proto string) map[string]any {
	if proto == "ip" {
		return map[string]any{"match": map[string]any{"op": "==", "left": map[string]any{"payload": map[string]any{"protocol": "icmp", "field": "type"}},
			"right": map[string]any{"set": []string{"destination-unreachable", "time-exceeded", "parameter-problem"}}}}
	}
	return map[string]any{"match": map[string]any{"op": "==", "left": map[string]any{"payload": map[string]any{"protocol": "icmpv6", "field": "type"}},
		"right": map[string]any{"set": []string{"destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem"}}}}
}
