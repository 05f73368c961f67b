package dispatch

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// Resolver gives the MAC of a LAN host as the appliance's own ARP/NDP has
// resolved it (neigh.Resolver implements it). It must not block.
type Resolver interface {
	LinkAddress(ifname string, addr netip.Addr) ([6]byte, bool)
}

// Announcer tells a broadcast cluster's servers its current membership, from
// which each computes the table (and so its own buckets) with NewTable. The
// appliance implements it over UDP; version orders the announcements.
type Announcer interface {
	Announce(cl *config.Cluster, version uint64, servers []Server)
}

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
	cfg     config.Cluster
	c       *Cluster // routing mode: the forwarding path's cluster; nil in broadcast mode
	sel     Selector
	table   *Table   // jhash: sel's table, which the next change starts from
	servers []Server // the order the selector's indices refer to
	macs    [][6]byte
	stats   map[int]*ServerStats // by server id, kept across table changes
	version uint64
	checker *health.Checker
	down    map[int]bool
	events  []string // the last transitions, newest last
	obs     Observer // may be nil
	win     *window  // routing mode: the open transition window, or nil (window.go)
}

const maxEvents = 16

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

func (m *Manager) applyLocked(cfg *config.Config, built map[string]*Table) (retired []*health.Checker, _ error) {
	old := map[string]*managed{}
	for _, mc := range m.clusters {
		old[mc.cfg.Name] = mc
	}
	// Build every new table first, so that a bad one changes nothing.
	next := make([]*managed, 0, len(cfg.Clusters))
	for _, cl := range cfg.Clusters {
		mc := &managed{cfg: cl, stats: map[int]*ServerStats{}, down: map[int]bool{}, obs: m.d.Observer}
		prev := old[cl.Name]
		if prev != nil && prev.cfg.Mode == cl.Mode && prev.cfg.Interface == cl.Interface && prev.cfg.Address == cl.Address {
			mc.stats, mc.version, mc.events = prev.stats, prev.version, prev.events
			mc.c = prev.c
			for id := range prev.down {
				if _, ok := cl.Server(id); ok {
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
		prev := old[mc.cfg.Name]
		var stale *window
		if prev != nil && prev.c != nil && prev.c == mc.c {
			stale = mc.transit(prev, true, now) // a planned change: keep the moved buckets' connections
		}
		if prev != nil && prev.checker != nil && reflect.DeepEqual(prev.cfg.Health, mc.cfg.Health) && sameTargets(prev.cfg, mc.cfg) {
			mc.checker = prev.checker
			keep[mc.cfg.Name] = true
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
		m.log.Info(verb, "cluster", mc.cfg.Name, "mode", mc.cfg.Mode, "ghost", mc.cfg.Address, "servers", len(mc.cfg.Servers),
			"hash", mc.cfg.Hash, "buckets", mc.cfg.Buckets, "health", health.Describe(mc.cfg.Health), "version", mc.version)
	}
	for _, mc := range m.clusters {
		if !keep[mc.cfg.Name] && mc.checker != nil {
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

func sameTargets(a, b config.Cluster) bool {
	if len(a.Servers) != len(b.Servers) {
		return false
	}
	for i := range a.Servers {
		if a.Servers[i].ID != b.Servers[i].ID || a.Servers[i].Address != b.Servers[i].Address {
			return false
		}
	}
	return true
}

// newChecker starts health checks for mc's servers.
func (m *Manager) newChecker(mc *managed, states map[int]health.State) *health.Checker {
	if m.d.Prober == nil {
		return nil
	}
	targets := make([]health.Target, len(mc.cfg.Servers))
	for i, s := range mc.cfg.Servers {
		targets[i] = health.Target{ID: s.ID, Addr: s.Address}
	}
	name := mc.cfg.Name
	var opts []health.Option
	if o := m.d.Observer; o != nil {
		opts = append(opts, health.WithObserver(func(id int, d time.Duration, err error) { o.HealthChecked(name, id, d, err) }))
	}
	return health.NewChecker(mc.cfg.Health, targets, m.d.Prober, states, func(ev health.Event) {
		m.healthChanged(name, ev)
	}, opts...)
}

// healthChanged applies a server's transition: only its buckets move.
func (m *Manager) healthChanged(cluster string, ev health.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var mc *managed
	for _, c := range m.clusters {
		if c.cfg.Name == cluster {
			mc = c
		}
	}
	if mc == nil {
		return
	}
	if _, ok := mc.cfg.Server(ev.ServerID); !ok {
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
	state := "up"
	if !ev.Up {
		state = "down"
	}
	text := fmt.Sprintf("%s server %d %s: %s; %d of %d buckets moved", ev.At.Format(time.RFC3339Nano), ev.ServerID, state, ev.Reason, moved, mc.cfg.Buckets)
	if !ev.Up {
		text += fmt.Sprintf("; detected %s after its last good check", ev.Detect.Round(time.Millisecond))
	}
	mc.events = append(mc.events, text)
	if len(mc.events) > maxEvents {
		mc.events = mc.events[len(mc.events)-maxEvents:]
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
	sel, servers, table, err := selectorFrom(&mc.cfg, mc.down, base)
	if mc.obs != nil && err == nil {
		mc.obs.TableBuilt(mc.cfg.Name, time.Since(start))
	}
	if err != nil {
		return fmt.Errorf("dispatch: cluster %s: %w", mc.cfg.Name, err)
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
		pins:     livePins(mc.cfg.Pins, mc.servers),
	}
	for i, s := range mc.servers {
		v.Stats[i] = mc.stats[s.ID]
	}
	if mc.win != nil {
		v.Trans = mc.win.tr
	}
	mc.c.Publish(v)
}

func (m *Manager) announce(mc *managed) {
	if m.d.Announce == nil || mc.cfg.Mode != config.ModeBroadcast || mc.cfg.AnnounceKey == nil {
		return
	}
	m.d.Announce.Announce(&mc.cfg, mc.version, mc.servers)
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
		wait := time.Second
		for _, mc := range m.clusters {
			if mc.sweepWindow(now) {
				mc.publish()
			}
			if d, ok := mc.nextWake(now); ok {
				wait = min(wait, d)
			}
		}
		for _, mc := range m.clusters {
			if mc.cfg.Mode != config.ModeBroadcast || mc.cfg.AnnounceKey == nil {
				continue
			}
			if now.Sub(lastAnnounce[mc.cfg.Name]) >= mc.cfg.AnnounceInterval {
				m.announce(mc)
				lastAnnounce[mc.cfg.Name] = now
			}
			wait = min(wait, mc.cfg.AnnounceInterval)
		}
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

// resolveOnce asks the resolver for every server's MAC and publishes the
// clusters whose MACs changed. It reports whether all are known.
func (m *Manager) resolveOnce() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	all := true
	for _, mc := range m.clusters {
		if mc.c == nil {
			continue
		}
		changed := false
		for i, s := range mc.servers {
			mac, ok := m.d.Resolver.LinkAddress(mc.cfg.Interface, s.Addr)
			if !ok {
				all = false
				continue
			}
			if mac != mc.macs[i] {
				m.log.Info("server link address", "cluster", mc.cfg.Name, "server", s.ID, "address", s.Addr, "mac", net.HardwareAddr(mac[:]).String())
				mc.macs[i] = mac
				changed = true
			}
		}
		if changed {
			mc.publish()
		}
	}
	return all
}

// ServerStatus is one server's state as `ghostrouter status` shows it.
type ServerStatus struct {
	ID          int    `json:"id"`
	Address     string `json:"address"`
	MAC         string `json:"mac"`
	Weight      int    `json:"weight"`
	Drain       bool   `json:"drain,omitempty"`
	Up          bool   `json:"up"`
	Since       string `json:"since,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	Transitions int    `json:"transitions"`
	Buckets     int    `json:"buckets"`
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
}

// ClusterStatus is one cluster's state as `ghostrouter status` shows it.
type ClusterStatus struct {
	Name             string            `json:"name"`
	Mode             string            `json:"mode"`
	Ghost            string            `json:"ghost"`
	BroadcastAddress string            `json:"broadcast_address,omitempty"`
	Interface        string            `json:"interface"`
	Hash             string            `json:"hash"`
	Seed             uint32            `json:"seed"`
	Buckets          int               `json:"buckets"`
	Health           string            `json:"health"`
	Version          uint64            `json:"version"`
	Servers          []ServerStatus    `json:"servers"`
	Counters         map[string]uint64 `json:"counters"`
	Events           []string          `json:"events,omitempty"`
	// Transition is the open transition window (routing mode), if any.
	Transition *TransitionStatus `json:"transition,omitempty"`
	// TableFingerprint digests where the table sends every bucket (see
	// Table.Fingerprint): equal on two appliances that dispatch alike.
	TableFingerprint string `json:"table_fingerprint"`
}

// Status reports every cluster.
func (m *Manager) Status() []ClusterStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ClusterStatus, 0, len(m.clusters))
	for _, mc := range m.clusters {
		cs := ClusterStatus{
			Name: mc.cfg.Name, Mode: mc.cfg.Mode, Ghost: mc.cfg.Address.String(), Interface: mc.cfg.Interface,
			Hash: mc.cfg.Hash, Seed: mc.cfg.Seed, Buckets: mc.cfg.Buckets, Version: mc.version,
			Health: health.Describe(mc.cfg.Health), Counters: map[string]uint64{},
			Events:           append([]string(nil), mc.events...),
			TableFingerprint: clusterFingerprint(mc.table, mc.servers, mc.cfg.Pins),
		}
		if mc.cfg.BroadcastAddress.IsValid() {
			cs.BroadcastAddress = mc.cfg.BroadcastAddress.String()
		}
		var states map[int]health.State
		if mc.checker != nil {
			states = mc.checker.States()
		}
		counts := bucketCounts(mc.sel, len(mc.servers))
		for i, s := range mc.servers {
			ss := ServerStatus{ID: s.ID, Address: s.Addr.String(), Weight: s.Weight, Up: s.Up, Buckets: counts[i]}
			if cs, ok := mc.cfg.Server(s.ID); ok {
				ss.Weight, ss.Drain = cs.Weight, cs.Drain
			}
			if st, ok := states[s.ID]; ok {
				ss.Since = st.Since.Format(time.RFC3339)
				ss.Transitions = st.Transitions
				if !st.Up {
					ss.LastError = st.LastError
				}
			}
			if mc.macs[i] != ([6]byte{}) {
				ss.MAC = net.HardwareAddr(mc.macs[i][:]).String()
			}
			if st := mc.stats[s.ID]; st != nil {
				ss.Packets, ss.Bytes = st.Packets.Load(), st.Bytes.Load()
			}
			cs.Servers = append(cs.Servers, ss)
		}
		sort.Slice(cs.Servers, func(i, j int) bool { return cs.Servers[i].ID < cs.Servers[j].ID })
		if mc.c != nil {
			st := mc.c.Stats()
			cs.Counters["packets"] = st.Packets.Load()
			cs.Counters["bytes"] = st.Bytes.Load()
			cs.Counters["drop_malformed"] = st.Malformed.Load()
			cs.Counters["drop_ttl_exceeded"] = st.TTLExceeded.Load()
			cs.Counters["drop_no_server"] = st.NoServer.Load()
			cs.Counters["drop_no_mac"] = st.NoMAC.Load()
			cs.Counters["drop_write_error"] = st.WriteErrors.Load()
			cs.Counters["drop_too_big"] = st.TooBig.Load()
			cs.Counters["drop_unfragmentable"] = st.Unfragmentable.Load()
			cs.Counters["fragmented"] = st.Fragmented.Load()
			cs.Counters["icmp_errors"] = st.ICMPErrors.Load()
			cs.Counters["drop_icmp_malformed"] = st.ICMPMalformed.Load()
			fl := mc.c.FlowStats()
			cs.Counters["flow_remembered"] = fl.Remembered.Load()
			cs.Counters["flow_overflow"] = fl.Overflow.Load()
			cs.Counters["flow_released"] = fl.Released.Load()
			cs.Counters["flow_held_packets"] = fl.Held.Load()
			cs.Counters["flow_windows"] = fl.Windows.Load()
			cs.Transition = mc.transitionStatus()
		}
		out = append(out, cs)
	}
	return out
}

// bucketCounts counts the buckets each server index owns, for selectors that
// have a table; others report zero.
func bucketCounts(sel Selector, n int) []int {
	counts := make([]int, n)
	js, ok := sel.(interface{ Table() *Table })
	if !ok {
		return counts
	}
	t := js.Table()
	for b := 0; b < t.Buckets(); b++ {
		if o := t.Owner(uint32(b)); o >= 0 && o < n {
			counts[o]++
		}
	}
	return counts
}
