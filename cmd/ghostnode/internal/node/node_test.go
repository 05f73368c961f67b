package node

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

var (
	ghost  = netip.MustParseAddr("203.0.113.10")
	ghost2 = netip.MustParseAddr("203.0.113.20")
)

// newNode is a Node over a fake host with a fresh state directory; out
// collects what it prints.
func newNode(t *testing.T, h *fakeHost) (*Node, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	return &Node{Host: h, StateDir: t.TempDir(), Out: &out}, &out
}

func routing(cluster string, g netip.Addr) Spec {
	return Spec{Cluster: cluster, Mode: ModeRouting, Ghost: g, Primary: netip.MustParseAddr("10.0.0.12")}
}

func broadcast(cluster string, g netip.Addr, owned ...uint32) Spec {
	s := routing(cluster, g)
	s.Mode = ModeBroadcast
	s.Filter = &filter.Spec{Cluster: cluster, Ghost: g, Buckets: 16, Seed: 0x5eed, Server: 1, Owned: owned}
	return s
}

func stateFile(t *testing.T, n *Node, cluster string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.StateDir, cluster+".json"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

func mustSetup(t *testing.T, n *Node, s Spec) {
	t.Helper()
	if err := n.Setup(context.Background(), s); err != nil {
		t.Fatalf("Setup(%s): %v", s.Cluster, err)
	}
}

func mustTeardown(t *testing.T, n *Node, cluster string) {
	t.Helper()
	if err := n.Teardown(context.Background(), cluster); err != nil {
		t.Fatalf("Teardown(%s): %v", cluster, err)
	}
}

func checkSame(t *testing.T, what string, got, want snapshot) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: host differs\n got %+v\nwant %+v", what, got, want)
	}
}

func checkLines(t *testing.T, out *bytes.Buffer, want ...string) {
	t.Helper()
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if !slices.Equal(got, want) {
		t.Errorf("printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	out.Reset()
}

func TestSetupTeardownRouting(t *testing.T) {
	h := newFakeHost()
	n, out := newNode(t, h)
	before := h.snapshot()

	mustSetup(t, n, routing("web", ghost))
	checkLines(t, out,
		"added 203.0.113.10/32 to lo",
		"set net.ipv4.conf.all.arp_ignore 0 -> 1",
		"set net.ipv4.conf.eth0.arp_ignore 0 -> 1",
		"set net.ipv4.conf.all.arp_announce 0 -> 2",
		"set net.ipv4.conf.eth0.arp_announce 0 -> 2",
		"set net.ipv4.conf.eth0.rp_filter 1 -> 2",
		"cluster web: set up (routing mode, ghost 203.0.113.10 on lo, LAN eth0)",
	)
	first := stateFile(t, n, "web")

	// Setup again: nothing changes, the state file keeps the original values.
	ops := len(h.ops)
	mustSetup(t, n, routing("web", ghost))
	checkLines(t, out, "cluster web: already set up, nothing changed")
	if len(h.ops) != ops {
		t.Errorf("second setup changed the host: %v", h.ops[ops:])
	}
	if second := stateFile(t, n, "web"); !bytes.Equal(first, second) {
		t.Errorf("second setup rewrote the state file:\n%s\nwas\n%s", second, first)
	}

	mustTeardown(t, n, "web")
	checkLines(t, out,
		"restored net.ipv4.conf.eth0.rp_filter 2 -> 1",
		"restored net.ipv4.conf.eth0.arp_announce 2 -> 0",
		"restored net.ipv4.conf.all.arp_announce 2 -> 0",
		"restored net.ipv4.conf.eth0.arp_ignore 1 -> 0",
		"restored net.ipv4.conf.all.arp_ignore 1 -> 0",
		"removed 203.0.113.10/32 from lo",
		"cluster web: torn down",
	)
	checkSame(t, "after teardown", h.snapshot(), before)
	if b := stateFile(t, n, "web"); b != nil {
		t.Errorf("state file left after teardown: %s", b)
	}
	mustTeardown(t, n, "web")
	checkLines(t, out, "cluster web: not set up, nothing to undo")
}

func TestSetupTeardownBroadcast(t *testing.T) {
	h := newFakeHost()
	n, out := newNode(t, h)
	before := h.snapshot()
	ctx := context.Background()

	mustSetup(t, n, broadcast("web", ghost, 1, 2, 5, 6, 7))
	if tb := h.tables["ip ghost_web"]; tb == nil || !slices.Equal(tb.owned, []uint32{1, 2, 5, 6, 7}) {
		t.Fatalf("table after setup: %+v", tb)
	}
	if v := h.sysctls["net/netfilter/nf_conntrack_tcp_loose"]; v != "0" {
		t.Errorf("nf_conntrack_tcp_loose = %s, want 0", v)
	}
	if !strings.Contains(out.String(), "added nftables table ip ghost_web: 5 of 16 buckets, jhash ip saddr mod 16 seed 0x5eed\n") ||
		!strings.Contains(out.String(), "set net.netfilter.nf_conntrack_tcp_loose 1 -> 0\n") {
		t.Errorf("setup printed:\n%s", out)
	}
	out.Reset()
	first := stateFile(t, n, "web")

	ops := len(h.ops)
	mustSetup(t, n, broadcast("web", ghost, 1, 2, 5, 6, 7))
	checkLines(t, out, "cluster web: already set up, nothing changed")
	if len(h.ops) != ops || !bytes.Equal(first, stateFile(t, n, "web")) {
		t.Errorf("second setup changed something: ops %v", h.ops[ops:])
	}

	// Setup with another membership updates only the set.
	h.tables["ip ghost_web"].counters[2] = filter.Counter{Packets: 9, Bytes: 900}
	mustSetup(t, n, broadcast("web", ghost, 1, 2, 3))
	checkLines(t, out,
		"updated set owned of ip ghost_web: 5 -> 3 of 16 buckets (+1 -3)",
		"cluster web: set up (broadcast mode, ghost 203.0.113.10 on lo, LAN eth0)")
	if h.tables["ip ghost_web"].counters[2].Packets != 9 {
		t.Error("updating the set reset the counters")
	}

	// Update swaps the set; the same set again is no change.
	if err := n.Update(ctx, "web", []uint32{0, 15}); err != nil {
		t.Fatal(err)
	}
	if err := n.Update(ctx, "web", []uint32{0, 15}); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out,
		"updated set owned of ip ghost_web: 3 -> 2 of 16 buckets (+2 -3)",
		"set owned of ip ghost_web unchanged: 2 of 16 buckets")
	if err := n.Update(ctx, "web", []uint32{16}); err == nil || !strings.Contains(err.Error(), "bucket 16 is out of range") {
		t.Errorf("Update with bucket 16 of 16: %v", err)
	}

	// Status reads the kernel's set and counters.
	reps, err := n.Status(ctx, "")
	if err != nil || len(reps) != 1 {
		t.Fatalf("Status: %v, %v", reps, err)
	}
	if r := reps[0]; !r.FilterOK || !slices.Equal(r.Owned, []uint32{0, 15}) || r.Counters == nil || r.Counters.New.Packets != 9 {
		t.Errorf("Status = %+v", r)
	}

	// Setup with another seed replaces the table.
	s := broadcast("web", ghost, 4)
	s.Filter.Seed = 1
	mustSetup(t, n, s)
	if !strings.Contains(out.String(), "replaced nftables table ip ghost_web (set comment") {
		t.Errorf("setup with a new seed printed:\n%s", out)
	}
	out.Reset()

	mustTeardown(t, n, "web")
	if !strings.HasPrefix(out.String(), "deleted nftables table ip ghost_web\nrestored net.netfilter.nf_conntrack_tcp_loose 0 -> 1\n") {
		t.Errorf("teardown printed:\n%s", out)
	}
	checkSame(t, "after teardown", h.snapshot(), before)
}

// TestSetupKeepsOriginals: a sysctl changed behind ghostnode's back is set
// again, and teardown still restores the value found before the first setup.
func TestSetupKeepsOriginals(t *testing.T) {
	h := newFakeHost()
	n, out := newNode(t, h)
	before := h.snapshot()
	mustSetup(t, n, routing("web", ghost))
	out.Reset()
	h.sysctls["net/ipv4/conf/all/arp_announce"] = "1"
	h.sysctls["net/ipv4/conf/all/arp_ignore"] = "2" // stricter: kept
	h.sysctls["net/ipv4/conf/all/rp_filter"] = "1"  // was 0, acceptable; now strict
	mustSetup(t, n, routing("web", ghost))
	checkLines(t, out,
		"set net.ipv4.conf.all.arp_announce 1 -> 2",
		"set net.ipv4.conf.all.rp_filter 1 -> 2",
		"cluster web: set up (routing mode, ghost 203.0.113.10 on lo, LAN eth0)")
	mustTeardown(t, n, "web")
	checkSame(t, "after teardown", h.snapshot(), before)
}

func TestSetupRollback(t *testing.T) {
	for _, failOn := range []string{
		"addr add",
		"sysctl net/ipv4/conf/all/arp_announce",
		"nft create",
		"sysctl net/netfilter/nf_conntrack_tcp_loose",
	} {
		t.Run(failOn, func(t *testing.T) {
			h := newFakeHost()
			n, out := newNode(t, h)
			before := h.snapshot()
			h.fail = func(op string) error {
				if strings.HasPrefix(op, failOn) {
					return errors.New("injected failure")
				}
				return nil
			}
			err := n.Setup(context.Background(), broadcast("web", ghost, 1))
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("Setup = %v, want the injected failure", err)
			}
			checkSame(t, "after the failed setup", h.snapshot(), before)
			if b := stateFile(t, n, "web"); b != nil {
				t.Errorf("state file left after a failed setup: %s", b)
			}
			if failOn != "addr add" && !strings.Contains(out.String(), "rolled back") {
				t.Errorf("no rollback reported:\n%s", out)
			}
		})
	}

	// A failing re-setup leaves the first setup and its state file as they were.
	h := newFakeHost()
	n, _ := newNode(t, h)
	mustSetup(t, n, broadcast("web", ghost, 1))
	set := h.snapshot()
	state := stateFile(t, n, "web")
	h.sysctls["net/ipv4/conf/eth0/arp_ignore"] = "0"
	h.fail = func(op string) error {
		if strings.HasPrefix(op, "nft") {
			return errors.New("injected failure")
		}
		return nil
	}
	s := broadcast("web", ghost, 2)
	s.Filter.Seed = 99
	if err := n.Setup(context.Background(), s); err == nil {
		t.Fatal("Setup with failing nft succeeded")
	}
	h.sysctls["net/ipv4/conf/eth0/arp_ignore"] = "1"
	checkSame(t, "after the failed re-setup", h.snapshot(), set)
	if !bytes.Equal(state, stateFile(t, n, "web")) {
		t.Error("the failed re-setup changed the state file")
	}
}

func TestSetupPreconditions(t *testing.T) {
	for _, tc := range []struct {
		name string
		prep func(*fakeHost)
		spec func() Spec
		want error
		msg  string
	}{
		{"no nft", func(h *fakeHost) { h.missing["nft"] = true }, func() Spec { return broadcast("web", ghost, 1) }, ErrNoNFT, "nft not found: install the nftables package"},
		{"no ip", func(h *fakeHost) { h.missing["ip"] = true }, func() Spec { return routing("web", ghost) }, ErrNoIP, "ip not found"},
		{"no dev", nil, func() Spec { s := routing("web", ghost); s.Dev = "dummy0"; return s }, ErrNoLink, `"dummy0"`},
		{"no lan", nil, func() Spec { s := routing("web", ghost); s.LAN = "eth9"; return s }, ErrNoLink, `"eth9"`},
		{"primary not here", nil, func() Spec { s := routing("web", ghost); s.Primary = netip.MustParseAddr("10.0.0.13"); return s }, ErrNoLink, "10.0.0.13"},
		{"primary not on lan", nil, func() Spec { s := routing("web", ghost); s.LAN = "lo"; s.Dev = "eth0"; return s }, ErrBadSpec, "not on the LAN interface lo"},
		{"ghost on lan", nil, func() Spec { s := routing("web", ghost); s.Dev = "eth0"; return s }, ErrBadSpec, "would answer ARP"},
		{"ghost elsewhere", func(h *fakeHost) {
			h.links[1].Addrs = append(h.links[1].Addrs, netip.MustParsePrefix("203.0.113.10/32"))
		}, func() Spec { return routing("web", ghost) }, ErrBadSpec, "already on eth0"},
		{"foreign table", func(h *fakeHost) {
			h.tables["ip ghost_web"] = &fakeTable{family: "ip", name: "ghost_web", setComment: "mine"}
		}, func() Spec { return broadcast("web", ghost, 1) }, ErrNotOurs, "delete it or use another cluster name"},
		{"bad name", nil, func() Spec { return routing("a b", ghost) }, ErrBadSpec, "cluster name"},
		{"bad mode", nil, func() Spec { s := routing("web", ghost); s.Mode = config.Mode(9); return s }, ErrBadSpec, "mode"},
		{"loopback ghost", nil, func() Spec { return routing("web", netip.MustParseAddr("127.0.0.2")) }, ErrBadSpec, "ghost address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost()
			if tc.prep != nil {
				tc.prep(h)
			}
			n, _ := newNode(t, h)
			before := h.snapshot()
			err := n.Setup(context.Background(), tc.spec())
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Setup = %v; want %v containing %q", err, tc.want, tc.msg)
			}
			checkSame(t, "after the refused setup", h.snapshot(), before)
		})
	}
}

func TestSetupConflict(t *testing.T) {
	h := newFakeHost()
	n, _ := newNode(t, h)
	mustSetup(t, n, routing("web", ghost))
	set := h.snapshot()
	for _, s := range []Spec{routing("web", ghost2), broadcast("web", ghost, 1)} {
		err := n.Setup(context.Background(), s)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "ghostnode teardown --cluster web") {
			t.Errorf("Setup(%+v) = %v, want ErrConflict", s, err)
		}
	}
	checkSame(t, "after the refused setups", h.snapshot(), set)
}

// TestTwoClusters: clusters share the host-wide sysctls; whichever is torn
// down last restores them.
func TestTwoClusters(t *testing.T) {
	for _, order := range [][2]string{{"web", "db"}, {"db", "web"}} {
		t.Run(order[0]+" first", func(t *testing.T) {
			h := newFakeHost()
			n, out := newNode(t, h)
			before := h.snapshot()
			mustSetup(t, n, broadcast("web", ghost, 1))
			mustSetup(t, n, routing("db", ghost2))
			out.Reset()
			mustTeardown(t, n, order[0])
			if order[0] == "web" {
				// db needs the ARP sysctls but not nf_conntrack_tcp_loose.
				if !strings.Contains(out.String(), "left net.ipv4.conf.all.arp_ignore as it is: cluster db still needs it (its teardown restores 0)") ||
					!strings.Contains(out.String(), "restored net.netfilter.nf_conntrack_tcp_loose 0 -> 1") {
					t.Errorf("teardown of web printed:\n%s", out)
				}
			}
			for _, k := range []string{"all/arp_ignore", "eth0/arp_ignore", "all/arp_announce", "eth0/rp_filter"} {
				if v := h.sysctls["net/ipv4/conf/"+k]; v == before.sysctls["net/ipv4/conf/"+k] {
					t.Errorf("after tearing down %s only, %s is back to %s", order[0], k, v)
				}
			}
			mustTeardown(t, n, order[1])
			checkSame(t, "after both teardowns", h.snapshot(), before)
		})
	}
}

func TestPreexistingAddress(t *testing.T) {
	h := newFakeHost()
	h.links[0].Addrs = append(h.links[0].Addrs, netip.MustParsePrefix("203.0.113.10/32"))
	n, out := newNode(t, h)
	before := h.snapshot()
	mustSetup(t, n, routing("web", ghost))
	if strings.Contains(out.String(), "added 203.0.113.10") {
		t.Errorf("setup claims to have added a pre-existing address:\n%s", out)
	}
	mustTeardown(t, n, "web")
	checkSame(t, "after teardown", h.snapshot(), before)
}

// TestTeardownPartial: what cannot be undone stays in the state file, the
// rest is undone, and a second teardown finishes the job.
func TestTeardownPartial(t *testing.T) {
	h := newFakeHost()
	n, _ := newNode(t, h)
	before := h.snapshot()
	mustSetup(t, n, broadcast("web", ghost, 1))
	h.missing["nft"] = true
	err := n.Teardown(context.Background(), "web")
	if !errors.Is(err, ErrNoNFT) || !strings.Contains(err.Error(), "teardown incomplete") {
		t.Fatalf("Teardown without nft = %v", err)
	}
	st, _, err := n.store().load("web")
	if err != nil || st == nil || st.Table == nil || st.Address != nil || len(st.Sysctls) != 0 {
		t.Fatalf("state after the partial teardown: %+v, %v", st, err)
	}
	delete(h.missing, "nft")
	mustTeardown(t, n, "web")
	checkSame(t, "after the second teardown", h.snapshot(), before)
}

// TestTeardownGoneInterface: the sysctls of a LAN interface that was
// removed since setup are gone with it; teardown does the rest.
func TestTeardownGoneInterface(t *testing.T) {
	h := newFakeHost()
	n, out := newNode(t, h)
	mustSetup(t, n, routing("web", ghost))
	for k := range h.sysctls {
		if strings.Contains(k, "/eth0/") {
			delete(h.sysctls, k)
		}
	}
	out.Reset()
	mustTeardown(t, n, "web")
	if !strings.Contains(out.String(), "net.ipv4.conf.eth0.arp_ignore is gone") {
		t.Errorf("teardown printed:\n%s", out)
	}
}

func TestUpdateErrors(t *testing.T) {
	h := newFakeHost()
	n, _ := newNode(t, h)
	ctx := context.Background()
	if err := n.Update(ctx, "web", []uint32{1}); !errors.Is(err, ErrNotSetUp) {
		t.Errorf("Update before setup = %v, want ErrNotSetUp", err)
	}
	mustSetup(t, n, routing("web", ghost))
	if err := n.Update(ctx, "web", []uint32{1}); !errors.Is(err, ErrNoFilter) {
		t.Errorf("Update of a routing cluster = %v, want ErrNoFilter", err)
	}
	mustSetup(t, n, broadcast("db", ghost2, 1))
	delete(h.tables, "ip ghost_db")
	if err := n.Update(ctx, "db", []uint32{1}); !errors.Is(err, ErrNoTable) {
		t.Errorf("Update with the table gone = %v, want ErrNoTable", err)
	}
	mustSetup(t, n, broadcast("db", ghost2, 1)) // recreates it
	h.tables["ip ghost_db"].hash = "jhash ip saddr mod 16 seed 0x1"
	if err := n.Update(ctx, "db", []uint32{1}); !errors.Is(err, ErrDifferent) {
		t.Errorf("Update with a changed table = %v, want ErrDifferent", err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	s := store{t.TempDir()}
	st := &State{
		Version: StateVersion, Cluster: "web", Mode: ModeBroadcast, Ghost: netip.MustParseAddr("203.0.113.10"), Dev: "lo", LAN: "eth0.100",
		Address: &AddressRecord{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Dev: "lo", Added: true},
		Sysctls: []SysctlRecord{{Key: "net/ipv4/conf/eth0.100/rp_filter", Old: "1", Set: "2", Changed: true}},
		Table:   &TableRecord{Family: "ip", Name: "ghost_web", Buckets: 4096, Seed: 0xdeadbeef, Server: -1, Added: true},
	}
	if err := s.save(st); err != nil {
		t.Fatal(err)
	}
	got, data, err := s.load("web")
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("load(save(x)) = %+v, %v; want %+v", got, err, st)
	}
	if all, err := s.all(); err != nil || len(all) != 1 || !reflect.DeepEqual(all[0], st) {
		t.Errorf("all() = %v, %v", all, err)
	}
	if SysctlName(st.Sysctls[0].Key) != "net.ipv4.conf.eth0/100.rp_filter" {
		t.Errorf("SysctlName(%q) = %q", st.Sysctls[0].Key, SysctlName(st.Sysctls[0].Key))
	}
	for _, bad := range []struct{ name, text, want string }{
		{"unknown field", strings.Replace(string(data), `"version"`, `"surprise": 1, "version"`, 1), "unknown field"},
		{"version", strings.Replace(string(data), `"version": 1`, `"version": 2`, 1), "version 2"},
		{"cluster", strings.NewReplacer(`"cluster": "web"`, `"cluster": "db"`, `"ghost_web"`, `"ghost_db"`).Replace(string(data)), `about cluster "db"`},
		{"table of another cluster", strings.Replace(string(data), `"ghost_web"`, `"ghost_db"`, 1), `table name "ghost_db", want "ghost_web"`},
		{"truncated", string(data[:len(data)/2]), "unexpected EOF"},
	} {
		if err := s.write("web", []byte(bad.text)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.load("web"); !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: load = %v, want ErrBadState containing %q", bad.name, err, bad.want)
		}
	}
	if st, _, err := s.load("none"); st != nil || err != nil {
		t.Errorf("load of a missing state = %v, %v; want nil, nil", st, err)
	}
}

const testConfig = `
[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
seed = 0x5eed
buckets = 64

  [[cluster.server]]
  id = 0
  address = "10.0.0.11"

  [[cluster.server]]
  id = 1
  address = "10.0.0.12"

  [[cluster.server]]
  id = 2
  address = "10.0.0.13"
  drain = true

[[cluster]]
name = "api"
address = "203.0.113.20"
interface = "lan0"
mode = "routing"

  [[cluster.server]]
  id = 7
  address = "10.0.0.12"
`

func TestFromConfig(t *testing.T) {
	cfg, err := config.Parse("test.toml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := cfg.Cluster("web")
	for _, tc := range []struct {
		id   int
		down map[int]bool
	}{{0, nil}, {1, nil}, {2, nil}, {1, map[int]bool{0: true}}} {
		s, err := FromConfig(cfg, "web", tc.id, tc.down)
		if err != nil {
			t.Fatal(err)
		}
		tbl, _ := core.NewTable(core.ServersFor(cl, tc.down), 64)
		want := tbl.Owned(tc.id)
		if s.Mode != ModeBroadcast || s.Ghost != ghost || s.Primary != cl.Servers[tc.id].Address || s.Filter == nil ||
			s.Filter.Buckets != 64 || s.Filter.Seed != 0x5eed || s.Filter.Server != tc.id || !slices.Equal(s.Filter.Owned, want) && len(want) > 0 {
			t.Errorf("FromConfig(web, %d, %v) = %+v %+v; want owned %v", tc.id, tc.down, s, s.Filter, want)
		}
		if tc.id == 2 && len(s.Filter.Owned) != 0 {
			t.Errorf("drained server 2 owns %d buckets", len(s.Filter.Owned))
		}
		if tc.down != nil && len(s.Filter.Owned) != 64 {
			t.Errorf("with server 0 down, server 1 owns %d of 64 buckets (server 2 is drained)", len(s.Filter.Owned))
		}
	}
	if s, err := FromConfig(cfg, "api", 7, nil); err != nil || s.Mode != ModeRouting || s.Filter != nil || s.Ghost != ghost2 {
		t.Errorf("FromConfig(api, 7) = %+v, %v", s, err)
	}
	if _, err := FromConfig(cfg, "nope", 0, nil); err == nil || !strings.Contains(err.Error(), `no cluster "nope" (clusters: web, api)`) {
		t.Errorf("unknown cluster: %v", err)
	}
	if _, err := FromConfig(cfg, "web", 5, nil); err == nil || !strings.Contains(err.Error(), "has no server 5 (servers: 0, 1, 2)") {
		t.Errorf("unknown server: %v", err)
	}
}
