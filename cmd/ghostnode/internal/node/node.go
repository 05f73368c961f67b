package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// Modes, as in the configuration.
const (
	ModeRouting   = config.ModeRouting
	ModeBroadcast = config.ModeBroadcast
)

// DefaultDev is where the ghost address goes by default: the loopback
// interface, the patent's `ifconfig lo0 alias`.
const DefaultDev = "lo"

// Spec is what setup makes of this server for one cluster.
type Spec struct {
	Cluster string
	Mode    config.Mode // ModeRouting or ModeBroadcast
	Ghost   netip.Addr  // the cluster address
	Dev     string      // interface for the ghost; DefaultDev when ""
	// LAN is the interface facing the appliance. When "", it is the
	// interface holding Primary.
	LAN     string
	Primary netip.Addr // the server's primary address; used only to find LAN
	// Filter is the broadcast-mode filter (nil in routing mode); its Cluster
	// and Ghost must equal the above.
	Filter *filter.Spec
}

// Node applies Specs to a host and undoes them. Changes are printed to Out
// as they are made, one line each. A Node is not safe for concurrent use;
// separate processes are serialized by the state directory's lock.
type Node struct {
	Host     Host
	StateDir string    // DefaultStateDir when ""
	Out      io.Writer // io.Discard when nil
}

func (n *Node) store() store {
	if n.StateDir == "" {
		return store{DefaultStateDir}
	}
	return store{n.StateDir}
}

func (n *Node) printf(format string, args ...any) {
	if n.Out != nil {
		fmt.Fprintf(n.Out, format+"\n", args...)
	}
}

// check validates s and fills in defaults.
func (s *Spec) check() error {
	if s.Dev == "" {
		s.Dev = DefaultDev
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadSpec, fmt.Sprintf(format, args...))
	}
	switch {
	case !config.ValidClusterName(s.Cluster):
		return bad("cluster name %q: want 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit", s.Cluster)
	case !s.Ghost.IsValid() || s.Ghost.Is4In6() || s.Ghost.IsUnspecified() || s.Ghost.IsMulticast() || s.Ghost.IsLoopback():
		return bad("ghost address %v: want a unicast IPv4 or IPv6 address", s.Ghost)
	case s.LAN == "" && !s.Primary.IsValid():
		return bad("no LAN interface: give the interface (--lan) or the server's primary address")
	}
	switch s.Mode {
	case ModeRouting:
		if s.Filter != nil {
			return bad("routing mode has no filter")
		}
	case ModeBroadcast:
		if s.Filter == nil {
			return bad("broadcast mode needs the filter's buckets, seed and owned buckets")
		}
		if s.Filter.Cluster != s.Cluster || s.Filter.Ghost != s.Ghost {
			return bad("filter is for cluster %s ghost %v, not %s %v", s.Filter.Cluster, s.Filter.Ghost, s.Cluster, s.Ghost)
		}
		if err := s.Filter.Check(); err != nil {
			return bad("%v", err)
		}
	default:
		return bad("mode %q: want %s or %s", s.Mode, ModeRouting, ModeBroadcast)
	}
	return nil
}

// sysctlWant is one sysctl setup needs: the value it writes and which
// values it accepts as found.
type sysctlWant struct {
	key string
	set string
	ok  func(string) bool
}

func atLeast(min int) func(string) bool {
	return func(v string) bool { n, err := strconv.Atoi(v); return err == nil && n >= min }
}

func oneOf(vals ...string) func(string) bool {
	return func(v string) bool { return slices.Contains(vals, v) }
}

// hostSysctls are the sysctls of both modes, for an IPv4 ghost (IPv6 has no
// ARP, and Linux answers neighbor solicitations only for addresses on the
// interface they arrive on, so a ghost on lo is never announced):
//
//   - arp_ignore >= 1 on all and the LAN interface: answer ARP only for
//     addresses on the interface the request came in on, so never for the
//     ghost on lo (the kernel uses the larger of all and the interface;
//     2, 3 and 8 are stricter still and are kept as found);
//   - arp_announce = 2 on all and the LAN interface: never use the ghost as
//     the source of ARP requests;
//   - rp_filter loose (2) or off (0) on all, the LAN interface and Dev:
//     strict reverse-path filtering (1) can drop dispatched packets whose
//     client is not routed back out the interface they came in on.
func hostSysctls(s *Spec) []sysctlWant {
	if !s.Ghost.Is4() {
		return nil
	}
	conf := func(dev, name string) string { return "net/ipv4/conf/" + dev + "/" + name }
	ws := []sysctlWant{
		{conf("all", "arp_ignore"), "1", atLeast(1)},
		{conf(s.LAN, "arp_ignore"), "1", atLeast(1)},
		{conf("all", "arp_announce"), "2", oneOf("2")},
		{conf(s.LAN, "arp_announce"), "2", oneOf("2")},
		{conf("all", "rp_filter"), "2", oneOf("0", "2")},
		{conf(s.LAN, "rp_filter"), "2", oneOf("0", "2")},
	}
	if s.Dev != s.LAN {
		ws = append(ws, sysctlWant{conf(s.Dev, "rp_filter"), "2", oneOf("0", "2")})
	}
	return ws
}

// tcpLoose: a mid-stream TCP packet of a connection this server does not
// know (one that belongs to another server, or moved away with its bucket)
// must not create conntrack state here, or the filter would accept it as
// established and the server would answer with a RST.
var tcpLoose = sysctlWant{"net/netfilter/nf_conntrack_tcp_loose", "0", oneOf("0")}

// setupRun is one Setup call: the state it is building and how to undo
// what it changed if it fails.
type setupRun struct {
	n       *Node
	ctx     context.Context
	st      *State
	undo    []func() error
	changes int
}

func (r *setupRun) save() error { return r.n.store().save(r.st) }

// Setup makes the host serve the cluster: the ghost address on Dev, the
// sysctls, and in broadcast mode the filter. It is idempotent: changes are
// made only where the host differs from spec, and the state file keeps the
// values found before the first setup. On failure it undoes what it changed
// and leaves the state file as it was.
func (n *Node) Setup(ctx context.Context, spec Spec) (err error) {
	if err := spec.check(); err != nil {
		return err
	}
	if err := n.Host.Need("ip"); err != nil {
		return err
	}
	if spec.Mode == ModeBroadcast {
		if err := n.Host.Need("nft"); err != nil {
			return err
		}
	}
	unlock, err := n.store().lock()
	if err != nil {
		return err
	}
	defer unlock()

	links, err := n.Host.Links(ctx)
	if err != nil {
		return err
	}
	if err := resolveLinks(&spec, links); err != nil {
		return err
	}
	prev, prevData, err := n.store().load(spec.Cluster)
	if err != nil {
		return err
	}
	r := &setupRun{n: n, ctx: ctx}
	if prev != nil {
		if err := conflicts(prev, &spec); err != nil {
			return err
		}
		r.st = prev.clone()
	} else {
		r.st = &State{Version: StateVersion, Cluster: spec.Cluster, Mode: spec.Mode, Ghost: spec.Ghost, Dev: spec.Dev, LAN: spec.LAN}
	}
	defer func() {
		if err == nil {
			return
		}
		errs := []error{err}
		for i := len(r.undo) - 1; i >= 0; i-- {
			if uerr := r.undo[i](); uerr != nil {
				errs = append(errs, fmt.Errorf("rolling back: %w", uerr))
			}
		}
		if werr := n.store().write(spec.Cluster, prevData); werr != nil {
			errs = append(errs, fmt.Errorf("rolling back: %w", werr))
		}
		if len(r.undo) > 0 {
			n.printf("rolled back %d change(s)", len(r.undo))
		}
		err = errors.Join(errs...)
	}()

	if err := r.address(links, &spec); err != nil {
		return err
	}
	for _, w := range hostSysctls(&spec) {
		if err := r.sysctl(w); err != nil {
			return err
		}
	}
	if spec.Mode == ModeBroadcast {
		if err := r.table(prev, spec.Filter); err != nil {
			return err
		}
		// nf_conntrack_tcp_loose exists once nf_conntrack is loaded, which
		// the table's ct expressions guarantee.
		if err := r.sysctl(tcpLoose); err != nil {
			return err
		}
	}
	if err := r.save(); err != nil {
		return err
	}
	if r.changes == 0 {
		n.printf("cluster %s: already set up, nothing changed", spec.Cluster)
	} else {
		n.printf("cluster %s: set up (%s mode, ghost %s on %s, LAN %s)", spec.Cluster, spec.Mode, spec.Ghost, spec.Dev, spec.LAN)
	}
	return nil
}

// resolveLinks checks Dev, finds LAN, and checks that the ghost is on no
// interface but Dev.
func resolveLinks(s *Spec, links []Link) error {
	byName := func(name string) *Link {
		for i := range links {
			if links[i].Name == name {
				return &links[i]
			}
		}
		return nil
	}
	if byName(s.Dev) == nil {
		return fmt.Errorf("%w: %q (the ghost's interface)", ErrNoLink, s.Dev)
	}
	if s.LAN != "" {
		l := byName(s.LAN)
		if l == nil {
			return fmt.Errorf("%w: %q (the LAN interface)", ErrNoLink, s.LAN)
		}
		if s.Primary.IsValid() && !slices.ContainsFunc(l.Addrs, func(p netip.Prefix) bool { return p.Addr() == s.Primary }) {
			return fmt.Errorf("%w: the server's primary address %s is not on the LAN interface %s", ErrBadSpec, s.Primary, s.LAN)
		}
	} else {
		for _, l := range links {
			if slices.ContainsFunc(l.Addrs, func(p netip.Prefix) bool { return p.Addr() == s.Primary }) {
				s.LAN = l.Name
				break
			}
		}
		if s.LAN == "" {
			return fmt.Errorf("%w: none holds the server's primary address %s (give --lan IFACE)", ErrNoLink, s.Primary)
		}
	}
	if s.LAN == s.Dev {
		return fmt.Errorf("%w: the ghost cannot go on the LAN interface %s: the server would answer ARP for it; use lo or a dummy interface", ErrBadSpec, s.LAN)
	}
	for _, l := range links {
		if l.Name != s.Dev && slices.ContainsFunc(l.Addrs, func(p netip.Prefix) bool { return p.Addr() == s.Ghost }) {
			return fmt.Errorf("%w: the ghost %s is already on %s, not on %s", ErrBadSpec, s.Ghost, l.Name, s.Dev)
		}
	}
	return nil
}

// conflicts reports a re-setup that would change what the state's undo
// information is about.
func conflicts(st *State, s *Spec) error {
	var diff []string
	if st.Mode != s.Mode {
		diff = append(diff, fmt.Sprintf("mode %s, not %s", st.Mode, s.Mode))
	}
	if st.Ghost != s.Ghost {
		diff = append(diff, fmt.Sprintf("ghost %s, not %s", st.Ghost, s.Ghost))
	}
	if st.Dev != s.Dev {
		diff = append(diff, fmt.Sprintf("ghost on %s, not %s", st.Dev, s.Dev))
	}
	if st.LAN != s.LAN {
		diff = append(diff, fmt.Sprintf("LAN %s, not %s", st.LAN, s.LAN))
	}
	if len(diff) == 0 {
		return nil
	}
	return fmt.Errorf("cluster %s %w (it has %s): run `ghostnode teardown --cluster %s` first",
		st.Cluster, ErrConflict, strings.Join(diff, ", "), st.Cluster)
}

func (r *setupRun) address(links []Link, s *Spec) error {
	p := netip.PrefixFrom(s.Ghost, s.Ghost.BitLen())
	present := false
	for _, l := range links {
		if l.Name == s.Dev && slices.ContainsFunc(l.Addrs, func(q netip.Prefix) bool { return q.Addr() == s.Ghost }) {
			present = true
		}
	}
	if r.st.Address == nil {
		r.st.Address = &AddressRecord{Prefix: p, Dev: s.Dev, Added: !present}
		if err := r.save(); err != nil {
			return err
		}
	}
	if present {
		return nil
	}
	if err := r.n.Host.AddAddr(r.ctx, s.Dev, p); err != nil {
		return fmt.Errorf("adding %s to %s: %w", p, s.Dev, err)
	}
	r.undo = append(r.undo, func() error { return r.n.Host.DelAddr(context.WithoutCancel(r.ctx), s.Dev, p) })
	r.changes++
	r.n.printf("added %s to %s", p, s.Dev)
	return nil
}

func (r *setupRun) sysctl(w sysctlWant) error {
	cur, err := r.n.Host.ReadSysctl(w.key)
	if err != nil {
		return err
	}
	rec := r.st.sysctl(w.key)
	if rec == nil {
		r.st.Sysctls = append(r.st.Sysctls, SysctlRecord{Key: w.key, Old: cur, Set: w.set})
		rec = &r.st.Sysctls[len(r.st.Sysctls)-1]
	}
	if w.ok(cur) {
		return r.save() // record that this cluster needs it, unchanged
	}
	rec.Changed, rec.Set = true, w.set
	if err := r.save(); err != nil {
		return err
	}
	if err := r.n.Host.WriteSysctl(w.key, w.set); err != nil {
		return err
	}
	r.undo = append(r.undo, func() error { return r.n.Host.WriteSysctl(w.key, cur) })
	r.changes++
	r.n.printf("set %s %s -> %s", SysctlName(w.key), cur, w.set)
	return nil
}

func (r *setupRun) table(prev *State, f *filter.Spec) error {
	ctx, h := r.ctx, r.n.Host
	fam, name := f.Family(), f.Table()
	summary := fmt.Sprintf("%d of %d buckets, %s", len(f.Owned), f.Buckets, f.Hash())
	data, err := h.ListTable(ctx, fam, name)
	if errors.Is(err, ErrNoTable) {
		rec := r.st.Table
		if rec == nil {
			rec = &TableRecord{Added: true}
			r.st.Table = rec
		}
		rec.Family, rec.Name, rec.Buckets, rec.Seed, rec.Server = fam, name, f.Buckets, f.Seed, f.Server
		if err := r.save(); err != nil {
			return err
		}
		if err := h.NFT(ctx, f.Ruleset()); err != nil {
			return fmt.Errorf("loading the filter: %w", err)
		}
		r.undo = append(r.undo, func() error { return h.NFT(context.WithoutCancel(ctx), filter.DeleteScript(fam, name)) })
		r.changes++
		r.n.printf("added nftables table %s %s: %s", fam, name, summary)
		return nil
	}
	if err != nil {
		return err
	}
	cur, err := filter.ParseTable(data)
	if err != nil {
		return fmt.Errorf("table %s %s: %w", fam, name, err)
	}
	if r.st.Table == nil {
		// A table of this name that no state file accounts for: a leftover
		// of a ghostnode whose state was lost is adopted; anything else is
		// someone else's.
		if !strings.HasPrefix(cur.SetComment, "ghostnode:") {
			return fmt.Errorf("nftables table %s %s exists and is %w: delete it or use another cluster name", fam, name, ErrNotOurs)
		}
		r.st.Table = &TableRecord{Added: true}
	}
	rec := r.st.Table
	old := *rec
	rec.Family, rec.Name, rec.Buckets, rec.Seed, rec.Server = fam, name, f.Buckets, f.Seed, f.Server
	if err := r.save(); err != nil {
		return err
	}
	if ok, why := f.Matches(cur); !ok {
		if err := h.NFT(ctx, f.Ruleset()); err != nil {
			return fmt.Errorf("replacing the filter: %w", err)
		}
		// Undo by loading the previous filter, when the previous state
		// describes it.
		if prev != nil && prev.Table != nil {
			ps := &filter.Spec{Cluster: f.Cluster, Ghost: f.Ghost, Buckets: old.Buckets, Seed: old.Seed, Server: old.Server, Owned: cur.Owned,
				Pinned: cur.Pinned, PinnedAway: cur.PinnedAway}
			if ok, _ := ps.Matches(cur); ok && ps.Check() == nil {
				r.undo = append(r.undo, func() error { return h.NFT(context.WithoutCancel(ctx), ps.Ruleset()) })
			}
		}
		r.changes++
		r.n.printf("replaced nftables table %s %s (%s): %s", fam, name, why, summary)
		return nil
	}
	if slices.Equal(cur.Owned, f.Owned) && slices.Equal(cur.Unowned, f.Unowned) {
		return nil
	}
	if err := h.NFT(ctx, f.UpdateScript()); err != nil {
		return fmt.Errorf("updating the owned set: %w", err)
	}
	back := *f
	back.Owned, back.Unowned = cur.Owned, cur.Unowned
	r.undo = append(r.undo, func() error { return h.NFT(context.WithoutCancel(ctx), back.UpdateScript()) })
	r.changes++
	r.n.printf("updated set %s of %s %s: %s", filter.SetName, fam, name, ownedChange(cur.Owned, f.Owned, f.Buckets))
	return nil
}

// ownedChange describes a change of owned buckets: "21 -> 22 of 64 buckets (+3 -2)".
func ownedChange(from, to []uint32, buckets int) string {
	added, removed := 0, 0
	for _, b := range to {
		if _, found := slices.BinarySearch(from, b); !found {
			added++
		}
	}
	for _, b := range from {
		if _, found := slices.BinarySearch(to, b); !found {
			removed++
		}
	}
	return fmt.Sprintf("%d -> %d of %d buckets (+%d -%d)", len(from), len(to), buckets, added, removed)
}

// Update replaces the owned buckets of a broadcast cluster's filter in one
// transaction; the rules, the other clusters and the counters stay. The
// cluster must be set up, with the filter as setup made it. This is what the
// listener of `ghostnode run` calls for each new table version.
func (n *Node) Update(ctx context.Context, cluster string, owned []uint32) error {
	return n.UpdateSets(ctx, cluster, owned, nil)
}

// UpdateSets is Update with the buckets no server owns as well (the
// filter counts new connections to them apart): what `ghostnode run`
// installs for each announced table.
func (n *Node) UpdateSets(ctx context.Context, cluster string, owned, unowned []uint32) error {
	return n.updateSets(ctx, cluster, owned, unowned, nil)
}

// pinSets are a filter's pinned clients: those accepted here and those
// dropped.
type pinSets struct{ here, away []netip.Addr }

// updateSets is UpdateSets; with pins not nil the filter must have exactly
// those pins (else ErrDifferent: the table is replaced whole), with nil it
// keeps the kernel's.
func (n *Node) updateSets(ctx context.Context, cluster string, owned, unowned []uint32, pins *pinSets) error {
	if err := n.Host.Need("nft"); err != nil {
		return err
	}
	unlock, err := n.store().lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, _, err := n.store().load(cluster)
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("cluster %s: %w (no state in %s): run ghostnode setup first", cluster, ErrNotSetUp, n.store().dir)
	}
	if st.Table == nil {
		return fmt.Errorf("cluster %s: %w: it is set up in %s mode", cluster, ErrNoFilter, st.Mode)
	}
	f := st.FilterSpec(owned)
	f.Unowned = unowned
	if err := f.Check(); err != nil {
		return err
	}
	data, err := n.Host.ListTable(ctx, f.Family(), f.Table())
	if err != nil {
		return fmt.Errorf("cluster %s: %w: run ghostnode setup again", cluster, err)
	}
	cur, err := filter.ParseTable(data)
	if err != nil {
		return err
	}
	f.Pinned, f.PinnedAway = cur.Pinned, cur.PinnedAway
	if pins != nil {
		f.Pinned, f.PinnedAway = pins.here, pins.away
	}
	if ok, why := f.Matches(cur); !ok {
		return fmt.Errorf("cluster %s: table %s %s %w (%s): run ghostnode setup again", cluster, f.Family(), f.Table(), ErrDifferent, why)
	}
	if slices.Equal(cur.Owned, f.Owned) && slices.Equal(cur.Unowned, f.Unowned) {
		n.printf("set %s of %s %s unchanged: %d of %d buckets", filter.SetName, f.Family(), f.Table(), len(owned), f.Buckets)
		return nil
	}
	if err := n.Host.NFT(ctx, f.UpdateScript()); err != nil {
		return fmt.Errorf("updating the owned set: %w", err)
	}
	n.printf("updated set %s of %s %s: %s", filter.SetName, f.Family(), f.Table(), ownedChange(cur.Owned, f.Owned, f.Buckets))
	return nil
}

// Teardown undoes what setup did for the cluster: deletes the filter it
// added, restores the sysctls it changed to the values they had before, and
// removes the address it added. A sysctl or address another set-up cluster
// still needs is handed over to that cluster's state instead, so the last
// teardown restores it. When something cannot be undone, the rest still is,
// and the state file keeps what is left for another try. Tearing down a
// cluster that is not set up changes nothing.
func (n *Node) Teardown(ctx context.Context, cluster string) error {
	if !config.ValidClusterName(cluster) {
		return fmt.Errorf("%w: cluster name %q", ErrBadSpec, cluster)
	}
	unlock, err := n.store().lock()
	if err != nil {
		return err
	}
	defer unlock()
	s := n.store()
	st, _, err := s.load(cluster)
	if err != nil {
		return err
	}
	if st == nil {
		n.printf("cluster %s: not set up, nothing to undo", cluster)
		return nil
	}
	all, err := s.all()
	if err != nil {
		return err
	}
	others := slices.DeleteFunc(all, func(o *State) bool { return o.Cluster == cluster })
	var errs []error
	fail := func(err error) { errs = append(errs, err) }

	if t := st.Table; t != nil {
		if t.Added {
			switch _, err := n.Host.ListTable(ctx, t.Family, t.Name); {
			case errors.Is(err, ErrNoTable):
				n.printf("nftables table %s %s was already gone", t.Family, t.Name)
				st.Table = nil
			case err != nil:
				fail(err)
			default:
				if err := n.Host.NFT(ctx, filter.DeleteScript(t.Family, t.Name)); err != nil {
					fail(fmt.Errorf("deleting table %s %s: %w", t.Family, t.Name, err))
				} else {
					n.printf("deleted nftables table %s %s", t.Family, t.Name)
					st.Table = nil
				}
			}
		} else {
			st.Table = nil
		}
		if err := s.save(st); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}

	var keep []SysctlRecord
	for i := len(st.Sysctls) - 1; i >= 0; i-- {
		rec := st.Sysctls[i]
		if !rec.Changed {
			continue
		}
		if o := needsSysctl(others, rec.Key); o != nil {
			or := o.sysctl(rec.Key)
			or.Changed, or.Old = true, rec.Old
			if err := s.save(o); err != nil {
				fail(err)
				keep = append(keep, rec)
				continue
			}
			n.printf("left %s as it is: cluster %s still needs it (its teardown restores %s)", SysctlName(rec.Key), o.Cluster, rec.Old)
			continue
		}
		cur, err := n.Host.ReadSysctl(rec.Key)
		if errors.Is(err, ErrNoSysctl) {
			n.printf("%s is gone (its interface was removed), nothing to restore", SysctlName(rec.Key))
			continue
		}
		if err != nil {
			fail(err)
			keep = append(keep, rec)
			continue
		}
		if cur == rec.Old {
			continue
		}
		if err := n.Host.WriteSysctl(rec.Key, rec.Old); err != nil {
			fail(err)
			keep = append(keep, rec)
			continue
		}
		n.printf("restored %s %s -> %s", SysctlName(rec.Key), cur, rec.Old)
	}
	slices.Reverse(keep)
	st.Sysctls = keep
	if err := s.save(st); err != nil {
		return errors.Join(append(errs, err)...)
	}

	if a := st.Address; a != nil && a.Added {
		if o := needsAddress(others, a); o != nil {
			o.Address.Added = true
			if err := s.save(o); err != nil {
				fail(err)
			} else {
				n.printf("left %s on %s: cluster %s still needs it", a.Prefix, a.Dev, o.Cluster)
				st.Address = nil
			}
		} else if err := n.delAddr(ctx, a); err != nil {
			fail(err)
		} else {
			st.Address = nil
		}
	} else {
		st.Address = nil
	}

	if len(errs) > 0 {
		if err := s.save(st); err != nil {
			errs = append(errs, err)
		}
		return fmt.Errorf("cluster %s: teardown incomplete, what is left is in %s: %w", cluster, s.path(cluster), errors.Join(errs...))
	}
	if err := s.write(cluster, nil); err != nil {
		return err
	}
	if err := writeFile(n.runPath(cluster), nil); err != nil {
		return err
	}
	n.printf("cluster %s: torn down", cluster)
	return nil
}

// delAddr removes the recorded address if it is still there.
func (n *Node) delAddr(ctx context.Context, a *AddressRecord) error {
	links, err := n.Host.Links(ctx)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Name == a.Dev && slices.Contains(l.Addrs, a.Prefix) {
			if err := n.Host.DelAddr(ctx, a.Dev, a.Prefix); err != nil {
				return fmt.Errorf("removing %s from %s: %w", a.Prefix, a.Dev, err)
			}
			n.printf("removed %s from %s", a.Prefix, a.Dev)
			return nil
		}
	}
	n.printf("%s was already gone from %s", a.Prefix, a.Dev)
	return nil
}

func needsSysctl(others []*State, key string) *State {
	for _, o := range others {
		if o.sysctl(key) != nil {
			return o
		}
	}
	return nil
}

func needsAddress(others []*State, a *AddressRecord) *State {
	for _, o := range others {
		if o.Address != nil && o.Address.Prefix == a.Prefix && o.Address.Dev == a.Dev {
			return o
		}
	}
	return nil
}

// Report is one cluster's status: its state, and in broadcast mode what the
// kernel's filter holds.
type Report struct {
	State *State `json:"state"`
	// Filter fields, broadcast mode only.
	Owned      []uint32         `json:"owned,omitempty"`
	Counters   *filter.Counters `json:"counters,omitempty"`
	FilterOK   bool             `json:"filter_ok"`             // the table has the shape setup made
	FilterNote string           `json:"filter_note,omitempty"` // why it has not, or why it could not be read
	// Run is what `ghostnode run` last reported for the cluster (nil when
	// none has run); RunNote says why it could not be read.
	Run       *RunStatus `json:"run,omitempty"`
	RunActive bool       `json:"run_active"` // a ghostnode run serves the cluster now
	RunNote   string     `json:"run_note,omitempty"`
}

// Status reports every set-up cluster, or only the one named.
func (n *Node) Status(ctx context.Context, cluster string) ([]Report, error) {
	s := n.store()
	var sts []*State
	if cluster != "" {
		st, _, err := s.load(cluster)
		if err != nil {
			return nil, err
		}
		if st == nil {
			return nil, fmt.Errorf("cluster %s: %w (no state in %s)", cluster, ErrNotSetUp, s.dir)
		}
		sts = []*State{st}
	} else {
		var err error
		if sts, err = s.all(); err != nil {
			return nil, err
		}
	}
	var out []Report
	for _, st := range sts {
		r := Report{State: st}
		if st.Table != nil {
			n.readFilter(ctx, &r)
		}
		if rs, err := n.ReadRunStatus(st.Cluster); err != nil {
			r.RunNote = err.Error()
		} else {
			r.Run = rs
		}
		r.RunActive = n.RunActive(st.Cluster)
		out = append(out, r)
	}
	return out, nil
}

func (n *Node) readFilter(ctx context.Context, r *Report) {
	t := r.State.Table
	if err := n.Host.Need("nft"); err != nil {
		r.FilterNote = err.Error()
		return
	}
	data, err := n.Host.ListTable(ctx, t.Family, t.Name)
	if err != nil {
		r.FilterNote = err.Error()
		return
	}
	tbl, err := filter.ParseTable(data)
	if err != nil {
		r.FilterNote = err.Error()
		return
	}
	r.Owned = tbl.Owned
	if r.Owned == nil {
		r.Owned = []uint32{}
	}
	if c, ok := tbl.Counters(); ok {
		r.Counters = &c
	}
	fs := r.State.FilterSpec(tbl.Owned)
	fs.Pinned, fs.PinnedAway = tbl.Pinned, tbl.PinnedAway // static, like the owned buckets: their shape is checked
	r.FilterOK, r.FilterNote = fs.Matches(tbl)
}
