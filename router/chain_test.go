package router

import (
	"testing"

	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// fixedStage returns the same verdict for every frame and counts its calls.
type fixedStage struct {
	name  string
	v     stage.Verdict
	calls int
}

func (s *fixedStage) Name() string { return s.name }

func (s *fixedStage) Inbound(*tap.Endpoint, []byte) stage.Verdict {
	s.calls++
	return s.v
}

// TestChainOrderAndVerdicts: the given stages run first, in order, then
// the router's own; the walk ends at the first stage that takes the frame,
// and a Dropped or Answered verdict is counted under that stage's name.
func TestChainOrderAndVerdicts(t *testing.T) {
	r, _, _ := newTestRouter(t)
	want := []string{"l2-policy", "ttl-guard", "refragment", "fast-path", "redirect"}
	got := r.StageNames()
	if len(got) != len(want) {
		t.Fatalf("stages %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stages %v, want %v", got, want)
		}
	}

	first := &fixedStage{name: "first", v: stage.Pass}
	second := &fixedStage{name: "second", v: stage.Answer(stage.TooBig)}
	third := &fixedStage{name: "third", v: stage.Consumed}
	la, _ := r.Link("a")
	pos := []chainStage{{name: "first", counts: &stage.Counters{}}, {name: "second", counts: &stage.Counters{}}, {name: "third", counts: &stage.Counters{}}}
	for _, n := range want {
		pos = append(pos, chainStage{name: n, counts: &stage.Counters{}})
	}
	c := &linkChain{given: []stage.Stage{first, second, third}, pos: pos, own: r.ownStages(la)}
	frame := make([]byte, 64)
	if !c.Inbound(nil, frame) || first.calls != 1 || second.calls != 1 || third.calls != 0 {
		t.Fatalf("walk: taken by the second? calls %d %d %d", first.calls, second.calls, third.calls)
	}
	if n := c.pos[1].counts.Answered[stage.TooBig].Load(); n != 1 {
		t.Fatalf("second stage's too_big answers = %d, want 1", n)
	}
	second.v = stage.Pass
	third.v = stage.Pass
	if c.Inbound(nil, frame) || third.calls != 1 {
		t.Fatal("a frame every stage passed was not handed on")
	}
	if n := testing.AllocsPerRun(1000, func() { c.Inbound(nil, frame) }); n != 0 {
		t.Fatalf("the chain allocates %v times per frame", n)
	}
}
