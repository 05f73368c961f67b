package dispatch

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// Deps are what the manager uses from the rest of the appliance.
type Deps struct {
	// Endpoint returns the link endpoint of a configured interface.
	Endpoint func(ifname string) (*tap.Endpoint, bool)
	Resolver Resolver
	Errors   ErrorSender
	Prober   health.Prober // nil: no health checks
	Announce Announcer     // nil: no announcements
	Logger   *slog.Logger
	Observer Observer // nil: timings are not reported
}

// Manager owns the clusters of a running appliance: it builds their tables
// from the configured membership and the servers' health, keeps the servers'
// MACs resolved, publishes the snapshots the Forwarder reads, announces
// broadcast clusters' membership, applies reloads, and reports state. Its
// methods are for the control path; the packet path only reads the
// published snapshots.
type Manager struct {
	d   Deps
	log *slog.Logger
	fwd *Forwarder

	applyMu  sync.Mutex // serializes Apply, whose table builds run outside mu
	mu       sync.Mutex // guards clusters and everything in them
	clusters []*managed

	kick chan struct{} // wakes the loop: a new server's MAC is wanted now
	stop chan struct{}
	wg   sync.WaitGroup
}

// managed is one configured cluster, with its runtime.
type managed struct {
	spec    spec     // what the configuration asks for
	c       *Cluster // routing mode: the forwarding path's cluster; nil in broadcast mode
	sel     core.Selector
	table   *core.Table   // jhash: sel's table, which the next change starts from
	servers []core.Server // the order the selector's indices refer to
	macs    [][6]byte
	stats   map[int]*ServerStats // by server id, kept across table changes
	version uint64
	checker *health.Checker
	down    map[int]bool
	events  []Event  // the last transitions, newest last
	obs     Observer // may be nil
	win     *window  // routing mode: the open transition window, or nil (window.go)
}

// NewManager builds the clusters of cfg.
func NewManager(cfg *config.Config, d Deps) (*Manager, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{d: d, log: d.Logger, fwd: NewForwarder(d.Errors), kick: make(chan struct{}, 1), stop: make(chan struct{})}
	if err := m.Apply(cfg); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Apply makes the manager serve cfg's clusters: new clusters start, removed
// ones stop, and a changed one keeps what is still true of it (its servers'
// health and MACs, its counters) while its table is rebuilt. It fails, and
// changes nothing, if a table cannot be built.
func (m *Manager) Apply(cfg *config.Config) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	// The expensive part, the new tables, is built without holding mu: the
	// datapath keeps the published tables and health changes keep being
	// applied meanwhile.
	built, err := m.buildTables(cfg)
	if err != nil {
		return err
	}
	m.mu.Lock()
	retired, err := m.applyLocked(cfg, built)
	m.mu.Unlock()
	// Stopped outside the lock: a checker may be waiting for it to report.
	for _, c := range retired {
		c.Stop()
	}
	return err
}

func (m *Manager) applyLocked(cfg *config.Config, built map[string]*core.Table) (retired []*health.Checker, _ error) {
	old := map[string]*managed{}
	for _, mc := range m.clusters {
		old[mc.spec.name] = mc
	}
	// Build every new table first, so that a bad one changes nothing.
	next := make([]*managed, 0, len(cfg.Clusters))
	for i := range cfg.Clusters {
		cl := &cfg.Clusters[i]
		mc := &managed{spec: specOf(cl), stats: map[int]*ServerStats{}, down: map[int]bool{}, obs: m.d.Observer}
		prev := old[cl.Name]
		if prev != nil && prev.spec.mode == mc.spec.mode && prev.spec.iface == mc.spec.iface && prev.spec.ghost == mc.spec.ghost {
			mc.stats, mc.version, mc.events = prev.stats, prev.version, prev.events
			mc.c = prev.c
			for id := range prev.down {
				if _, ok := mc.spec.server(id); ok {
					mc.down[id] = true
				}
			}
		}
		// Start from the table built outside the lock; health that changed
		// since is applied to it incrementally.
		mc.table = built[cl.Name]
		if err := mc.rebuild(prev); err != nil {
			return nil, err
		}
		if cl.Mode == config.ModeRouting && mc.c == nil {
			lan, ok := m.d.Endpoint(cl.Interface)
			if !ok {
				return nil, fmt.Errorf("dispatch: cluster %s: no interface %q", cl.Name, cl.Interface)
			}
			mc.c = NewCluster(cl.Name, cl.Address, lan)
		}
		next = append(next, mc)
	}
	// Commit: health checkers, snapshots, forwarder, announcements.
	var routing []*Cluster
	keep := map[string]bool{}
	now := time.Now()
	for _, mc := range next {
		prev := old[mc.spec.name]
		var stale *window
		if prev != nil && prev.c != nil && prev.c == mc.c {
			stale = mc.transit(prev, true, now) // a planned change: keep the moved buckets' connections
		}
		if prev != nil && prev.checker != nil && prev.spec.health == mc.spec.health && sameTargets(&prev.spec, &mc.spec) {
			mc.checker = prev.checker
			keep[mc.spec.name] = true
		} else {
			var states map[int]health.State
			if prev != nil && prev.checker != nil {
				states = prev.checker.States()
			}
			mc.checker = m.newChecker(mc, states)
		}
		mc.publish()
		mc.closeWindow(stale)
		if mc.c != nil {
			routing = append(routing, mc.c)
		}
		m.announce(mc)
		verb := "cluster ready"
		if prev != nil {
			verb = "cluster updated"
		}
		m.log.Info(verb, "cluster", mc.spec.name, "mode", mc.spec.mode, "ghost", mc.spec.ghost, "servers", len(mc.spec.servers),
			"hash", mc.spec.hash, "buckets", mc.spec.buckets, "health", health.Describe(mc.spec.health), "version", mc.version)
	}
	for _, mc := range m.clusters {
		if !keep[mc.spec.name] && mc.checker != nil {
			retired = append(retired, mc.checker)
		}
	}
	for name := range old {
		if _, ok := cfg.Cluster(name); !ok {
			m.log.Info("cluster removed", "cluster", name)
		}
	}
	m.clusters = next
	m.fwd.SetClusters(routing)
	select { // resolve new servers' MACs now, not at the next tick
	case m.kick <- struct{}{}:
	default:
	}
	return retired, nil
}

// newChecker starts health checks for mc's servers.
func (m *Manager) newChecker(mc *managed, states map[int]health.State) *health.Checker {
	if m.d.Prober == nil {
		return nil
	}
	targets := make([]health.Target, len(mc.spec.servers))
	for i, s := range mc.spec.servers {
		targets[i] = health.Target{ID: s.id, Addr: s.addr}
	}
	name := mc.spec.name
	var opts []health.Option
	if o := m.d.Observer; o != nil {
		opts = append(opts, health.WithObserver(func(id int, d time.Duration, err error) { o.HealthChecked(name, id, d, err) }))
	}
	return health.NewChecker(mc.spec.health, targets, m.d.Prober, states, func(ev health.Event) {
		m.healthChanged(name, ev)
	}, opts...)
}

// healthChanged applies a server's transition: only its buckets move.
func (m *Manager) healthChanged(cluster string, ev health.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var mc *managed
	for _, c := range m.clusters {
		if c.spec.name == cluster {
			mc = c
		}
	}
	if mc == nil {
		return
	}
	if _, ok := mc.spec.server(ev.ServerID); !ok {
		return
	}
	before := ownerCounts(mc)
	if ev.Up {
		delete(mc.down, ev.ServerID)
	} else {
		mc.down[ev.ServerID] = true
	}
	prev := *mc
	if err := mc.rebuild(&prev); err != nil {
		m.log.Error("table rebuild failed; keeping the old table", "cluster", cluster, "err", err)
		*mc = prev
		return
	}
	// A recovery is planned (its buckets' connections stay on the servers
	// that took them); a failure moves the failed server's buckets at once.
	stale := mc.transit(&prev, ev.Up, time.Now())
	mc.publish()
	mc.closeWindow(stale)
	m.announce(mc)
	after := ownerCounts(mc)
	moved := 0
	for id, n := range before {
		if d := n - after[id]; d > 0 {
			moved += d
		}
	}
	mc.events = append(mc.events, Event{At: ev.At, ServerID: ev.ServerID, Up: ev.Up, Reason: ev.Reason, Detect: ev.Detect,
		Moved: moved, Buckets: mc.spec.buckets})
	if len(mc.events) > maxEvents {
		mc.events = mc.events[len(mc.events)-maxEvents:]
	}
	state := "up"
	if !ev.Up {
		state = "down"
	}
	m.log.Warn("server "+state, "cluster", cluster, "server", ev.ServerID, "address", ev.Addr, "reason", ev.Reason,
		"detect", ev.Detect.Round(time.Millisecond), "buckets_moved", moved, "table_version", mc.version)
}

// ownerCounts counts buckets per server id.
func ownerCounts(mc *managed) map[int]int {
	out := make(map[int]int, len(mc.servers))
	for i, n := range bucketCounts(mc.sel, len(mc.servers)) {
		out[mc.servers[i].ID] = n
	}
	return out
}

// rebuild recomputes the selector from the configuration and the down set,
// carrying MACs over from prev (which may be nil or mc itself).
func (mc *managed) rebuild(prev *managed) error {
	base := mc.table
	if base == nil && prev != nil {
		base = prev.table
	}
	start := time.Now()
	sp := &mc.spec
	sel, servers, table, err := core.NewSelector(core.Params{Name: sp.name, Hash: sp.hash, Seed: sp.seed, Buckets: sp.buckets}, sp.tableServers(mc.down), base)
	if mc.obs != nil && err == nil {
		mc.obs.TableBuilt(mc.spec.name, time.Since(start))
	}
	if err != nil {
		return fmt.Errorf("dispatch: cluster %s: %w", mc.spec.name, err)
	}
	mc.sel, mc.servers, mc.table = sel, servers, table
	mc.macs = carryMACs(prev, servers)
	for _, s := range servers {
		if mc.stats[s.ID] == nil {
			mc.stats[s.ID] = &ServerStats{}
		}
	}
	mc.version++
	return nil
}

// publish hands the packet path a fresh snapshot.
func (mc *managed) publish() {
	if mc.c == nil {
		return
	}
	v := &View{
		Version:  mc.version,
		Selector: mc.sel,
		Servers:  mc.servers,
		MACs:     append([][6]byte(nil), mc.macs...),
		Stats:    make([]*ServerStats, len(mc.servers)),
		pins:     core.LivePins(mc.spec.pins, mc.servers),
	}
	for i, s := range mc.servers {
		v.Stats[i] = mc.stats[s.ID]
	}
	if mc.win != nil {
		v.Trans = mc.win.tr
	}
	mc.c.Publish(v)
}

// Forwarder is the datapath stage to install in the router.
func (m *Manager) Forwarder() *Forwarder { return m.fwd }

// Start starts resolving the servers' MACs and repeating announcements;
// Close stops it.
func (m *Manager) Start() {
	m.wg.Add(1)
	go m.loop()
}

// Close stops the manager's goroutines, health checks included.
func (m *Manager) Close() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	m.wg.Wait()
	m.mu.Lock()
	var checkers []*health.Checker
	for _, mc := range m.clusters {
		if mc.checker != nil {
			checkers = append(checkers, mc.checker)
			mc.checker = nil
		}
	}
	m.mu.Unlock()
	for _, c := range checkers {
		c.Stop()
	}
}

// loop keeps every routing cluster's server MACs current (quickly while any
// is unknown, once a second after that) and repeats each broadcast cluster's
// announcement at its interval, so a lost or late one heals itself.
func (m *Manager) loop() {
	defer m.wg.Done()
	lastAnnounce := map[string]time.Time{}
	for {
		all := m.resolveOnce()
		now := time.Now()
		m.mu.Lock()
		wait := min(time.Second, m.sweepWindowsLocked(now), m.repeatAnnouncementsLocked(lastAnnounce, now))
		m.mu.Unlock()
		if !all {
			wait = min(wait, 100*time.Millisecond)
		}
		select {
		case <-m.stop:
			return
		case <-m.kick:
		case <-time.After(wait):
		}
	}
}
