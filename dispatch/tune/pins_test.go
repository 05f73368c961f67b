package tune

import (
	"bytes"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/router/config"
)

func holdOutOf(t *testing.T, text []byte, n int, o HoldOutOptions) HoldOut {
	t.Helper()
	pop := NewPopulation()
	if err := pop.ReadLog("x", bytes.NewReader(text), nil); err != nil {
		t.Fatal(err)
	}
	h, err := EvaluateHoldOut(servers(n), pop, ByRequests, o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// persistent16 is sixteen clients heavy every hour, 3.5% each, for sixteen
// servers (a fair share is 6.25%): no seed can put them on sixteen different
// servers (a chance of 16!/16^16, about one in a million per seed), pins can.
func persistent16() []float64 {
	h := make([]float64, 16)
	for i := range h {
		h[i] = 0.035
	}
	return h
}

// TestPinsHeldOut: pins chosen on the earlier hours lower the held-out
// max/mean of the recommended setting on every later hour, by more than the
// spread of what random seeds achieve there: the pins are recommended, and
// they are exactly the sixteen persistent clients, on sixteen different
// servers.
func TestPinsHeldOut(t *testing.T) {
	heavy := persistent16()
	text := phases(12_000, heavy, []byte{10, 10, 10, 10}, false) // the same heavy clients, a new tail every hour
	cur := Candidate{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096}
	h := holdOutOf(t, text, 16, HoldOutOptions{Folds: 3, Pins: DefaultMaxPins,
		Search: SearchOptions{Seeds: 128, Buckets: []int{4096}, Current: cur}})
	o := h.Pins
	if o == nil || len(h.Folds) != 3 {
		t.Fatalf("pins %+v, %d folds", o, len(h.Folds))
	}
	t.Logf("held-out max/mean: current %s, searched %s (reliable %v); on top of %s: %s without pins, %s with, gain %s; random seeds %s",
		h.Current, h.Searched, h.Reliable, short(o.Base), o.Unpinned, o.Pinned, o.Gain, h.Random)
	if !o.Reliable {
		t.Fatalf("pins not recommended: %s", o.Why)
	}
	if o.Gain.Mean <= h.Random.SD || o.Gain.Mean <= o.Gain.SD {
		t.Errorf("held-out gain %s is not beyond the random seeds' spread %.3f", o.Gain, h.Random.SD)
	}
	for i, f := range h.Folds {
		if f.Pinned >= f.Unpinned || f.Pins != len(heavy) {
			t.Errorf("fold %d: %d pins, held-out %.3f with them, %.3f without", i+1, f.Pins, f.Pinned, f.Unpinned)
		}
	}
	got := map[netip.Addr]bool{}
	on := map[int]bool{}
	for _, p := range o.Pins {
		got[p.Client.Addr] = true
		if on[p.ID] {
			t.Errorf("two pinned clients on server %d", p.ID)
		}
		on[p.ID] = true
	}
	for i := range heavy {
		if a := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}); !got[a] {
			t.Errorf("persistent heavy client %s not pinned (pins %+v)", a, o.Pins)
		}
	}
	if len(o.Pins) != len(heavy) {
		t.Errorf("%d pins, want the %d persistent heavy clients", len(o.Pins), len(heavy))
	}
}

// TestPinsNotForShiftingClients: heavy clients that change every hour are
// not recommended as pins: none is heavy in every window. (The first fold,
// with one training window, cannot tell and tries that window's heavy
// clients; they do not help the next hour.)
func TestPinsNotForShiftingClients(t *testing.T) {
	text := phases(12_000, []float64{0.06, 0.05, 0.04}, []byte{10, 20, 30, 40}, false)
	cur := Candidate{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096}
	h := holdOutOf(t, text, 8, HoldOutOptions{Folds: 3, Pins: DefaultMaxPins,
		Search: SearchOptions{Seeds: 64, Buckets: []int{4096}, Current: cur}})
	if o := h.Pins; o == nil || o.Reliable || len(o.Pins) != 0 || !strings.Contains(o.Why, "no client is heavy") {
		t.Errorf("pins for shifting heavy clients: %+v", o)
	}
}

// TestMainWritesPins: the whole command on a log with persistent heavy
// clients recommends pins (report, JSON), and --write puts exactly them into
// the cluster, keeping every comment; the config parser reads them back, and
// a second --write finds nothing to change.
func TestMainWritesPins(t *testing.T) {
	dir := t.TempDir()
	heavy := persistent16()
	log := writeFile(t, dir, "steady.log", phases(12_000, heavy, []byte{10, 10, 10, 10}, false))
	text := configText(16, "routing", "jhash", defaultSeed, 4096, true)
	// An old pin of the cluster, to be replaced.
	text = strings.Replace(text, "\n  [cluster.health]", "\n  [[cluster.pin]] # an old pin\n  client = \"198.51.100.77\"\n  server = 10\n\n  [cluster.health]", 1)
	cfgPath := writeFile(t, dir, "g.toml", []byte(text))
	args := []string{"-c", cfgPath, "--cluster", "web", "--seeds", "128", "--buckets", "4096", log}

	j := tuneJSON(t, args...)
	if len(j.Pins) != len(heavy) || j.HoldOut == nil || j.HoldOut.Pins == nil || !j.HoldOut.Pins.Reliable {
		t.Fatalf("recommends %+v, pins %+v; held-out pins %+v", j.Recommended, j.Pins, j.HoldOut.Pins)
	}
	r := runMain(t, nil, false, append([]string{"--write"}, args...)...)
	if r.code != 0 {
		t.Fatalf("--write: exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"verdict: pin 16 clients: expected held-out max/mean", "[[cluster.pin]]", "removed [[cluster.pin]] 198.51.100.77 -> server 10"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.stdout)
		}
	}
	out, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, keep := range []string{"# ghostrouter test config", `log_level = "info" # keep`, "# the web cluster: tune me", `name = "web"          # the site`, "# chosen by hand in 2024", "# a multi-line array"} {
		if !strings.Contains(string(out), keep) {
			t.Errorf("--write lost %q:\n%s", keep, out)
		}
	}
	cfg, err := config.Parse(cfgPath, out)
	if err != nil {
		t.Fatalf("the written config does not parse: %v\n%s", err, out)
	}
	web, _ := cfg.Cluster("web")
	api, _ := cfg.Cluster("api")
	if len(api.Pins) != 0 || len(web.Pins) != len(heavy) {
		t.Fatalf("pins read back: web %+v, api %+v", web.Pins, api.Pins)
	}
	for _, p := range j.Pins {
		if !slices.ContainsFunc(web.Pins, func(q config.Pin) bool { return q.Client.String() == p.Client && q.Server == p.Server }) {
			t.Errorf("recommended pin %+v not in the written config %+v", p, web.Pins)
		}
	}
	again := runMain(t, nil, false, append([]string{"--write"}, args...)...)
	if again.code != 0 || !strings.Contains(again.stdout, "already has these settings") {
		t.Errorf("second --write: exit %d\n%s", again.code, again.stdout)
	}
	if out2, _ := os.ReadFile(cfgPath); !bytes.Equal(out, out2) {
		t.Errorf("the second --write changed the file")
	}
}
