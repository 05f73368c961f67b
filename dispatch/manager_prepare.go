package dispatch

import (
	"errors"
	"fmt"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// Plan is a reconfiguration the manager has built and validated but not
// applied: Commit applies it, Discard drops it. While a plan is open no
// other reconfiguration runs (Apply and Prepare wait), so what it
// validated stays true until it is committed; health changes keep being
// applied meanwhile, and Commit brings the new tables up to them.
type Plan struct {
	m     *Manager
	cfg   *config.Config
	built map[string]*core.Table
	done  bool
}

// Prepare builds the tables of cfg's clusters and checks everything Apply
// would need, changing nothing: every table builds, and every routing-mode
// cluster's interface has a link endpoint. The caller must Commit or
// Discard the plan.
func (m *Manager) Prepare(cfg *config.Config) (*Plan, error) {
	m.applyMu.Lock()
	built, err := m.buildTables(cfg)
	if err == nil {
		err = m.checkEndpoints(cfg)
	}
	if err != nil {
		m.applyMu.Unlock()
		return nil, err
	}
	return &Plan{m: m, cfg: cfg, built: built}, nil
}

// checkEndpoints reports a routing-mode cluster whose interface has no
// link endpoint (applyLocked would refuse it).
func (m *Manager) checkEndpoints(cfg *config.Config) error {
	for _, cl := range cfg.Clusters {
		if cl.Mode != config.ModeRouting {
			continue
		}
		if _, ok := m.d.Endpoint(cl.Interface); !ok {
			return fmt.Errorf("dispatch: cluster %s: no interface %q", cl.Name, cl.Interface)
		}
	}
	return nil
}

// Commit applies the plan as Apply would. It fails, and changes nothing,
// only if a health change since Prepare makes a table impossible to build.
func (p *Plan) Commit() error {
	if p.done {
		return errors.New("dispatch: plan already committed or discarded")
	}
	p.done = true
	m := p.m
	defer m.applyMu.Unlock()
	m.mu.Lock()
	retired, err := m.applyLocked(p.cfg, p.built)
	m.mu.Unlock()
	// Stopped outside the lock: a checker may be waiting for it to report.
	for _, c := range retired {
		c.Stop()
	}
	return err
}

// Discard drops the plan; the running clusters are untouched. Discarding a
// committed plan does nothing.
func (p *Plan) Discard() {
	if p.done {
		return
	}
	p.done = true
	p.m.applyMu.Unlock()
}
