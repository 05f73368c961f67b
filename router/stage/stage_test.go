package stage

import (
	"testing"
)

func TestVerdicts(t *testing.T) {
	if Pass.Taken() || Pass.Kind() != KindPass || Pass != (Verdict{}) {
		t.Fatalf("Pass is %v", Pass)
	}
	if !Consumed.Taken() || Consumed.Kind() != KindConsumed || Consumed.Reason() != None {
		t.Fatalf("Consumed is %v", Consumed)
	}
	d := Drop(NoMAC)
	if !d.Taken() || d.Kind() != KindDropped || d.Reason() != NoMAC || d.String() != "dropped(no_mac)" {
		t.Fatalf("Drop(NoMAC) is %v", d)
	}
	a := Answer(TTLExceeded)
	if !a.Taken() || a.Kind() != KindAnswered || a.Reason() != TTLExceeded || a.String() != "answered(ttl_exceeded)" {
		t.Fatalf("Answer(TTLExceeded) is %v", a)
	}
	if Drop(NoMAC) == Drop(NoServer) || Drop(TooBig) == Answer(TooBig) {
		t.Fatal("verdicts with different reasons or kinds compare equal")
	}
}

// TestReasonNames: every reason has its own name, usable as a metrics
// label value (lower case letters and underscores).
func TestReasonNames(t *testing.T) {
	seen := map[string]Reason{}
	for r := Reason(0); r < NumReasons; r++ {
		n := r.String()
		if n == "" || n == "unknown" {
			t.Errorf("reason %d has no name", r)
		}
		for _, c := range n {
			if (c < 'a' || c > 'z') && c != '_' {
				t.Errorf("reason %d name %q is not a label value", r, n)
			}
		}
		if o, dup := seen[n]; dup {
			t.Errorf("reasons %d and %d share the name %q", o, r, n)
		}
		seen[n] = r
	}
	if NumReasons.String() != "unknown" {
		t.Errorf("an out-of-range reason is named %q", NumReasons.String())
	}
}

func TestCounters(t *testing.T) {
	var c Counters
	for range 3 {
		c.Count(Drop(NoServer))
	}
	c.Count(Answer(TooBig))
	c.Count(Pass)
	c.Count(Consumed)
	got := c.Append(nil, "dispatch")
	want := []Count{ // in the order of the reasons
		{Stage: "dispatch", Kind: "answered", Reason: "too_big", N: 1},
		{Stage: "dispatch", Kind: "dropped", Reason: "no_server", N: 3},
	}
	if len(got) != len(want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("count %d: %v, want %v", i, got[i], want[i])
		}
	}
	if n := testing.AllocsPerRun(1000, func() { c.Count(Drop(Malformed)) }); n != 0 {
		t.Errorf("Count allocates %v times", n)
	}
}
