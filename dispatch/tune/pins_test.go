package tune

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
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

// TestPinsHeldOut: eight clients heavy every hour (3% each; a server's fair
// share is 6.25%). Pins chosen on the earlier hours lower the held-out
// max/mean of the current setting on every later hour, by more than the
// spread of what random seeds achieve there: the pins are recommended, and
// they are exactly the eight persistent clients, on eight different servers.
func TestPinsHeldOut(t *testing.T) {
	heavy := []float64{0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03}
	text := phases(12_000, heavy, []byte{10, 10, 10, 10}, false) // the same heavy clients, a new tail every hour
	cur := Candidate{Hash: HashJHash, Seed: defaultSeed, Buckets: 4096}
	h := holdOutOf(t, text, 16, HoldOutOptions{Folds: 3, Pins: DefaultMaxPins,
		Search: SearchOptions{Seeds: 128, Buckets: []int{4096}, Current: cur}})
	o := h.Pins
	if o == nil || len(h.Folds) != 3 {
		t.Fatalf("pins %+v, %d folds", o, len(h.Folds))
	}
	t.Logf("held-out max/mean: current %s, with pins %s, gain %s; random seeds %s", h.Current, o.Pinned, o.Gain, h.Random)
	if !o.Reliable {
		t.Fatalf("pins not recommended: %s", o.Why)
	}
	if o.Gain.Mean <= h.Random.SD || o.Gain.Mean <= o.Gain.SD {
		t.Errorf("held-out gain %s is not beyond the random seeds' spread %.3f", o.Gain, h.Random.SD)
	}
	for i, f := range h.Folds {
		if f.Pinned >= f.Current || f.Pins != len(heavy) {
			t.Errorf("fold %d: %d pins, held-out %.3f with them, %.3f without", i+1, f.Pins, f.Pinned, f.Current)
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
