package icmp

import (
	"testing"
	"time"
)

// TestBudgetPerType: draining one type's bucket leaves every other type's,
// fragmentation needed's (a code of type 3) and the other family's whole;
// types outside the rate mask are never limited; buckets refill at the
// rate.
func TestBudgetPerType(t *testing.T) {
	b := NewBudget(100, 5, DefaultRateMask)
	now := time.Unix(1000, 0)
	drain := func(v6 bool, typ, code uint8) int {
		n := 0
		for b.Allow(v6, typ, code, now) {
			n++
			if n > 1000 {
				break
			}
		}
		return n
	}
	if n := drain(false, TypeTimeExceeded, CodeTTLExceeded); n != 5 {
		t.Fatalf("time exceeded: %d allowed at once, want the burst 5", n)
	}
	for _, tc := range []struct {
		name      string
		v6        bool
		typ, code uint8
		want      int
	}{
		{"fragmentation needed", false, TypeDestUnreachable, CodeFragNeeded, 5},
		{"host unreachable", false, TypeDestUnreachable, 1, 5},
		{"redirect", false, TypeRedirect, CodeRedirectHost, 5},
		{"ICMPv6 time exceeded", true, Type6TimeExceeded, 0, 5},
		{"ICMPv6 packet too big", true, Type6PacketTooBig, 0, 5},
		{"echo reply (not in the mask)", false, 0, 0, 1001},
	} {
		if n := drain(tc.v6, tc.typ, tc.code); n != tc.want {
			t.Errorf("%s after time exceeded was drained: %d allowed, want %d", tc.name, n, tc.want)
		}
	}
	if n := drain(false, TypeDestUnreachable, 1); n != 0 {
		t.Errorf("host unreachable drained, then %d more", n)
	}
	now = now.Add(30 * time.Millisecond) // 3 tokens at 100/s
	if n := drain(false, TypeTimeExceeded, CodeTTLExceeded); n != 3 {
		t.Errorf("after 30 ms at 100/s: %d allowed, want 3", n)
	}
	if n := testing.AllocsPerRun(100, func() { b.Allow(false, TypeTimeExceeded, 0, now) }); n != 0 {
		t.Errorf("Allow allocates %v times", n)
	}
}
