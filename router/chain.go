package router

import (
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// chainStage is one position of the chain: its name and the counters of
// its Dropped and Answered verdicts, shared by every link.
type chainStage struct {
	name   string
	counts *stage.Counters
}

// linkChain is the chain of stages on one link's inbound frames: the given
// stages, then the router's own bound to the link. It is the link
// endpoint's hook.
type linkChain struct {
	stages []stage.Stage
	pos    []chainStage // same length as stages
}

// ownStages are the router's own stages for link l, in order (see package
// stage).
func (r *Router) ownStages(l *Link) []stage.Stage {
	return []stage.Stage{
		l2Policy{r},
		ttlGuard{r, l},
		refragmenter{r, l},
		fastStage{r.fast, l},
		redirector{r, l},
	}
}

// buildChain fixes the chain every link runs and installs it as each link
// endpoint's hook. It runs before any link's receive loop starts.
func (r *Router) buildChain(given []stage.Stage) {
	for i, l := range r.links {
		stages := append(append([]stage.Stage(nil), given...), r.ownStages(l)...)
		if i == 0 {
			for _, s := range stages {
				r.chain = append(r.chain, chainStage{name: s.Name(), counts: &stage.Counters{}})
			}
		}
		l.EP.SetHook(&linkChain{stages: stages, pos: r.chain})
	}
}

// Inbound implements tap.Hook: the frame walks the stages until one takes
// it; a Dropped or Answered verdict is counted under the stage's name.
func (c *linkChain) Inbound(ep *tap.Endpoint, frame []byte) bool {
	for i, s := range c.stages {
		v := s.Inbound(ep, frame)
		if !v.Taken() {
			continue
		}
		c.pos[i].counts.Count(v)
		return true
	}
	return false
}

// StageCounts lists every stage's non-zero Dropped and Answered counters,
// in chain order.
func (r *Router) StageCounts() []stage.Count {
	var out []stage.Count
	for _, p := range r.chain {
		out = p.counts.Append(out, p.name)
	}
	return out
}

// StageNames lists the stages every inbound frame passes, in order.
func (r *Router) StageNames() []string {
	out := make([]string, len(r.chain))
	for i, p := range r.chain {
		out[i] = p.name
	}
	return out
}
