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
// endpoint's hook. The router's own stages are Stages like the others (same
// verdicts, same counters), but the chain calls them by their concrete types,
// so that the walk costs no more than calling them in sequence.
type linkChain struct {
	given []stage.Stage
	pos   []chainStage // the given stages', then the router's own
	own   ownChain
}

// ownChain is the router's own stages of one link, in order.
type ownChain struct {
	l2     l2Policy
	ttl    ttlGuard
	refrag refragmenter
	fast   fastStage
	redir  redirector
}

// ownStages are the router's own stages for link l, in order (see package
// stage).
func (r *Router) ownStages(l *Link) ownChain {
	return ownChain{
		l2:     l2Policy{r},
		ttl:    ttlGuard{r, l},
		refrag: refragmenter{r, l},
		fast:   fastStage{r.fast, l},
		redir:  redirector{r, l},
	}
}

// list is the stages of o, in order.
func (o ownChain) list() []stage.Stage {
	return []stage.Stage{o.l2, o.ttl, o.refrag, o.fast, o.redir}
}

// buildChain fixes the chain every link runs and installs it as each link
// endpoint's hook. It runs before any link's receive loop starts.
func (r *Router) buildChain(given []stage.Stage) {
	given = append([]stage.Stage(nil), given...)
	for i, l := range r.links {
		own := r.ownStages(l)
		if i == 0 {
			for _, s := range append(append([]stage.Stage(nil), given...), own.list()...) {
				r.chain = append(r.chain, chainStage{name: s.Name(), counts: &stage.Counters{}})
			}
		}
		l.EP.SetHook(&linkChain{given: given, pos: r.chain, own: own})
	}
}

// Inbound implements tap.Hook: the frame walks the stages until one takes
// it; a Dropped or Answered verdict is counted under the stage's name.
func (c *linkChain) Inbound(ep *tap.Endpoint, frame []byte) bool {
	for i, s := range c.given {
		if v := s.Inbound(ep, frame); v.Taken() {
			return c.took(i, v)
		}
	}
	n := len(c.given)
	if v := c.own.l2.Inbound(ep, frame); v.Taken() {
		return c.took(n, v)
	}
	if v := c.own.ttl.Inbound(ep, frame); v.Taken() {
		return c.took(n+1, v)
	}
	if v := c.own.refrag.Inbound(ep, frame); v.Taken() {
		return c.took(n+2, v)
	}
	if v := c.own.fast.Inbound(ep, frame); v.Taken() {
		return c.took(n+3, v)
	}
	if v := c.own.redir.Inbound(ep, frame); v.Taken() {
		return c.took(n+4, v)
	}
	return false
}

// took counts the verdict of the stage at position i, which took the
// frame. Kept out of line: the walk itself stays small.
//
//go:noinline
func (c *linkChain) took(i int, v stage.Verdict) bool {
	c.pos[i].counts.Count(v)
	return true
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
