package filter

import (
	"errors"
	"flag"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites the file with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the generated text (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// membership is the cluster of the golden tests: three equal servers.
func membership(t *testing.T, buckets int, id int) []uint32 {
	t.Helper()
	servers := []core.Server{
		{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: true},
		{ID: 1, Addr: netip.MustParseAddr("10.0.0.12"), Weight: 1, Up: true},
		{ID: 2, Addr: netip.MustParseAddr("10.0.0.13"), Weight: 1, Up: true},
	}
	tbl, err := core.NewTable(servers, buckets)
	if err != nil {
		t.Fatal(err)
	}
	return tbl.Owned(id)
}

// TestRulesetGolden pins the generated ruleset for given memberships.
func TestRulesetGolden(t *testing.T) {
	all := make([]uint32, 4096)
	for i := range all {
		all[i] = uint32(i)
	}
	for _, tc := range []struct {
		file string
		spec Spec
	}{
		{"web-server1.nft", Spec{Cluster: "web", Ghost: netip.MustParseAddr("203.0.113.10"), Buckets: 64, Seed: 0x5eed, Server: 1, Owned: membership(t, 64, 1)}},
		{"web-flags.nft", Spec{Cluster: "web", Ghost: netip.MustParseAddr("203.0.113.10"), Buckets: 16, Seed: 7, Server: -1, Owned: []uint32{1, 2, 5, 6, 7, 8, 9}, Unowned: []uint32{3, 4, 15}}},
		{"drained.nft", Spec{Cluster: "web", Ghost: netip.MustParseAddr("203.0.113.10"), Buckets: 4096, Seed: 0, Server: 3}},
		{"v6-all.nft", Spec{Cluster: "web6", Ghost: netip.MustParseAddr("2001:db8::10"), Buckets: 4096, Seed: 0x5eed, Server: 0, Owned: all}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			if err := tc.spec.Check(); err != nil {
				t.Fatalf("Check: %v", err)
			}
			golden(t, tc.file, tc.spec.Ruleset())
			golden(t, strings.TrimSuffix(tc.file, ".nft")+"-update.nft", tc.spec.UpdateScript())
		})
	}
}

// TestRulesetMembership checks that the elements of a generated ruleset are
// exactly dispatch's buckets for the server, and that the three servers'
// filters together accept every bucket exactly once.
func TestRulesetMembership(t *testing.T) {
	const buckets = 4096
	seen := make([]int, buckets)
	for id := range 3 {
		owned := membership(t, buckets, id)
		s := Spec{Cluster: "web", Ghost: netip.MustParseAddr("203.0.113.10"), Buckets: buckets, Seed: 1, Server: id, Owned: owned}
		got := scriptElements(t, s.Ruleset())
		if !slices.Equal(got, owned) {
			t.Fatalf("server %d: ruleset elements (%d) differ from dispatch's Owned (%d)", id, len(got), len(owned))
		}
		if up := scriptElements(t, s.UpdateScript()); !slices.Equal(up, owned) {
			t.Fatalf("server %d: update script elements differ from dispatch's Owned", id)
		}
		for _, b := range owned {
			seen[b]++
		}
	}
	for b, n := range seen {
		if n != 1 {
			t.Fatalf("bucket %d is accepted by %d servers, want 1", b, n)
		}
	}
}

// elementsRE finds the elements of a generated script; read-only.
var elementsRE = regexp.MustCompile(`(?s)(?:elements = |add element \S+ \S+ \S+ )\{(.*?)\}`)

// scriptElements reads the set elements of a generated script back.
func scriptElements(t *testing.T, script string) []uint32 {
	t.Helper()
	m := elementsRE.FindStringSubmatch(script)
	if m == nil {
		return nil
	}
	var items []string
	for it := range strings.SplitSeq(m[1], ",") {
		items = append(items, strings.TrimSpace(it))
	}
	got, err := ParseList(strings.Join(items, ","), MaxBuckets)
	if err != nil {
		t.Fatalf("elements of the script do not parse: %v\n%s", err, script)
	}
	return got
}

// TestElements4096 checks the worst cases of a 4096-bucket table: every
// bucket (one range) and every other bucket (2048 single elements).
func TestElements4096(t *testing.T) {
	var all, even []uint32
	for b := range uint32(4096) {
		all = append(all, b)
		if b%2 == 0 {
			even = append(even, b)
		}
	}
	for _, tc := range []struct {
		name   string
		owned  []uint32
		ranges int
	}{{"all", all, 1}, {"even", even, 2048}} {
		if got := len(Ranges(tc.owned)); got != tc.ranges {
			t.Errorf("%s: Ranges gives %d elements, want %d", tc.name, got, tc.ranges)
		}
		s := Spec{Cluster: "web", Ghost: netip.MustParseAddr("203.0.113.10"), Buckets: 4096, Server: 0, Owned: tc.owned}
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
		if got := scriptElements(t, s.Ruleset()); !slices.Equal(got, tc.owned) {
			t.Errorf("%s: ruleset elements differ (%d, want %d)", tc.name, len(got), len(tc.owned))
		}
	}
}

func TestParseList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want []uint32
		err  string // substring; "" for success
	}{
		{"1,2,5-9", 16, []uint32{1, 2, 5, 6, 7, 8, 9}, ""},
		{" 9 , 0-1 ,4 ", 16, []uint32{0, 1, 4, 9}, ""},
		{"", 16, []uint32{}, ""},
		{"none", 16, []uint32{}, ""},
		{"0-4095", 4096, Expand([]Range{{0, 4095}}), ""},
		{"3-3", 4, []uint32{3}, ""},
		{"1,2,1", 16, nil, "bucket 1 is listed more than once"},
		{"1-5,4", 16, nil, "bucket 4 is listed more than once"},
		{"16", 16, nil, "bucket 16 is out of range (the table has 16 buckets: 0-15)"},
		{"9-5", 16, nil, "range ends before it starts"},
		{"1,,2", 16, nil, "empty bucket number"},
		{"a", 16, nil, `"a" is not a bucket number`},
		{"-3", 16, nil, "empty bucket number"},
		{"1-2-3", 16, nil, `"2-3" is not a bucket number`},
		{"4294967296", 16, nil, "is not a bucket number"},
	} {
		got, err := ParseList(tc.in, tc.n)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrBucketList) {
				t.Errorf("ParseList(%q, %d) = %v, %v; want an ErrBucketList error containing %q", tc.in, tc.n, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseList(%q, %d) = %v, %v; want %v", tc.in, tc.n, got, err, tc.want)
		}
	}
}

// TestRangesRoundTrip checks Ranges, Expand, FormatList and ParseList
// against each other on random bucket sets.
func TestRangesRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		n := 1 + rng.IntN(4096)
		var owned []uint32
		p := rng.Float64()
		for b := range uint32(n) {
			if rng.Float64() < p {
				owned = append(owned, b)
			}
		}
		rs := Ranges(owned)
		for j := 1; j < len(rs); j++ {
			if rs[j].Lo <= rs[j-1].Hi+1 {
				t.Fatalf("case %d: ranges %v and %v are not maximal", i, rs[j-1], rs[j])
			}
		}
		if got := Expand(rs); !slices.Equal(got, owned) {
			t.Fatalf("case %d: Expand(Ranges(x)) != x", i)
		}
		got, err := ParseList(FormatList(owned), n)
		if err != nil || !slices.Equal(got, owned) && len(owned) > 0 {
			t.Fatalf("case %d: ParseList(FormatList(x)) = %v, %v", i, len(got), err)
		}
	}
}

func TestSpecCheck(t *testing.T) {
	good := Spec{Cluster: "web", Ghost: netip.MustParseAddr("203.0.113.10"), Buckets: 8, Owned: []uint32{1, 2}}
	if err := good.Check(); err != nil {
		t.Fatalf("Check(%+v) = %v", good, err)
	}
	for _, tc := range []struct {
		mod  func(*Spec)
		want string
	}{
		{func(s *Spec) { s.Cluster = "-web" }, "cluster name"},
		{func(s *Spec) { s.Cluster = "a b" }, "cluster name"},
		{func(s *Spec) { s.Ghost = netip.Addr{} }, "ghost address"},
		{func(s *Spec) { s.Ghost = netip.MustParseAddr("::ffff:203.0.113.10") }, "ghost address"},
		{func(s *Spec) { s.Ghost = netip.MustParseAddr("224.0.0.1") }, "ghost address"},
		{func(s *Spec) { s.Buckets = 0 }, "0 buckets"},
		{func(s *Spec) { s.Buckets = MaxBuckets + 1 }, "65537 buckets"},
		{func(s *Spec) { s.Owned = []uint32{2, 1} }, "not ascending"},
		{func(s *Spec) { s.Owned = []uint32{8} }, "out of range"},
		{func(s *Spec) { s.Owned, s.Unowned = []uint32{1, 2}, []uint32{2, 3} }, "bucket 2 is both owned and unowned"},
		{func(s *Spec) { s.Unowned = []uint32{3, 3} }, "unowned buckets"},
	} {
		s := good
		tc.mod(&s)
		if err := s.Check(); err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrSpec) {
			t.Errorf("Check(%+v) = %v; want an ErrSpec error containing %q", s, err, tc.want)
		}
	}
}

// TestParseTable reads listings captured from nftables 1.0.6 (`nft -j list
// table`) after loading web-flags.nft and sending two UDP datagrams from
// each of 198.51.100.10-19 (buckets 15 7 1 7 7 2 8 15 14 11 of jhash mod 16
// seed 7): six clients in owned buckets, answered, both datagrams accepted
// by the bucket rule (UDP follows the bucket, not conntrack: none counts as
// established); .10 and .17 in the unowned bucket 15, counted apart; .18
// and .19 in another server's buckets, dropped.
func TestParseTable(t *testing.T) {
	data, err := os.ReadFile("testdata/web-flags.json")
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := ParseTable(data)
	if err != nil {
		t.Fatalf("ParseTable: %v", err)
	}
	spec := Spec{Cluster: "web", Ghost: netip.MustParseAddr("203.0.113.10"), Buckets: 16, Seed: 7, Server: -1, Owned: []uint32{1, 2, 5, 6, 7, 8, 9}, Unowned: []uint32{3, 4, 15}}
	if ok, why := spec.Matches(tbl); !ok {
		t.Errorf("Matches = false (%s), want true", why)
	}
	if !slices.Equal(tbl.Owned, spec.Owned) || !slices.Equal(tbl.Unowned, spec.Unowned) {
		t.Errorf("Owned = %v, Unowned = %v; want %v, %v", tbl.Owned, tbl.Unowned, spec.Owned, spec.Unowned)
	}
	c, ok := tbl.Counters()
	// 31 bytes: a 20-byte IP header, 8 of UDP, "one" or "two".
	want := Counters{Datagram: Counter{12, 12 * 31}, Unowned: Counter{4, 4 * 31}, Dropped: Counter{4, 4 * 31}}
	if !ok || c != want {
		t.Errorf("Counters() = %+v, %v; want %+v, true", c, ok, want)
	}
	for _, tc := range []struct {
		mod  func(*Spec)
		want string
	}{
		{func(s *Spec) { s.Seed = 8 }, "set comment"},
		{func(s *Spec) { s.Server = 2 }, "set comment"},
		{func(s *Spec) { s.Cluster = "db" }, "table is ip ghost_web"},
		{func(s *Spec) { s.Ghost = netip.MustParseAddr("203.0.113.11") }, "rule 1"},
	} {
		s := spec
		tc.mod(&s)
		if ok, why := s.Matches(tbl); ok || !strings.Contains(why, tc.want) {
			t.Errorf("Matches(%+v) = %v, %q; want false with %q", s, ok, why, tc.want)
		}
	}

	// The same table with its third rule deleted by hand.
	cut := regexp.MustCompile(`, \{"rule": \{[^{]*"comment": "dropped".*\}\]\}\}\]\}`).ReplaceAllString(string(data), "]}")
	tbl2, err := ParseTable([]byte(cut))
	if err != nil {
		t.Fatalf("ParseTable(cut): %v", err)
	}
	if ok, _ := spec.Matches(tbl2); ok || len(tbl2.Rules) != 6 {
		t.Errorf("a table without the drop rule matches (%d rules)", len(tbl2.Rules))
	}
	if _, ok := tbl2.Counters(); ok {
		t.Error("Counters() of a table without the drop rule reports ok")
	}

	for _, bad := range []string{"", "{", `{"nftables": []}`, `{"nftables": [{"table": {"family": "ip", "name": "x"}}, {"set": {"name": "owned", "elem": [{"range": [5, 1]}]}}]}`} {
		if _, err := ParseTable([]byte(bad)); !errors.Is(err, ErrListing) {
			t.Errorf("ParseTable(%q) = %v, want ErrListing", bad, err)
		}
	}
}

// Pins: two sets and three rules ahead of the hash, only when there are
// pins; the filter without pins is unchanged; bad pins are refused.
func TestRulesetPins(t *testing.T) {
	base := Spec{Cluster: "web", Ghost: netip.MustParseAddr("203.0.113.10"), Buckets: 64, Seed: 0x5eed, Server: 1, Owned: []uint32{1, 2}}
	pinned := base
	pinned.Pinned = []netip.Addr{netip.MustParseAddr("192.0.2.7")}
	pinned.PinnedAway = []netip.Addr{netip.MustParseAddr("192.0.2.8"), netip.MustParseAddr("192.0.2.9")}
	if err := pinned.Check(); err != nil {
		t.Fatal(err)
	}
	plain, with := base.Ruleset(), pinned.Ruleset()
	if strings.Contains(plain, "pinned") {
		t.Errorf("a filter without pins has pin rules:\n%s", plain)
	}
	for _, want := range []string{
		"set pinned {\n\t\ttypeof ip saddr\n\t\telements = {\n\t\t\t192.0.2.7\n\t\t}",
		"elements = {\n\t\t\t192.0.2.8, 192.0.2.9\n",
		"ip daddr 203.0.113.10 meta l4proto tcp ct state new ip saddr @pinned counter meta pkttype set host accept comment \"pinned-new\"",
		"ip daddr 203.0.113.10 meta l4proto != tcp ip saddr @pinned counter meta pkttype set host accept comment \"pinned-datagram\"",
		"ip daddr 203.0.113.10 ip saddr @pinned_away counter drop comment \"pinned-away\"",
	} {
		if !strings.Contains(with, want) {
			t.Errorf("the ruleset with pins lacks %q:\n%s", want, with)
		}
	}
	if strings.Index(with, "pinned-away") > strings.Index(with, "comment \"new\"") {
		t.Errorf("the pin rules do not come before the hash:\n%s", with)
	}
	for _, bad := range [][2][]netip.Addr{
		{{netip.MustParseAddr("2001:db8::7")}, nil},
		{{netip.MustParseAddr("192.0.2.8"), netip.MustParseAddr("192.0.2.7")}, nil},
		{{netip.MustParseAddr("192.0.2.7")}, {netip.MustParseAddr("192.0.2.7")}},
	} {
		s := base
		s.Pinned, s.PinnedAway = bad[0], bad[1]
		if err := s.Check(); err == nil {
			t.Errorf("pins %v / %v accepted", bad[0], bad[1])
		}
	}
}
