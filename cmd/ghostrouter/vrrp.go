package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch"
	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/vrrp"
	"github.com/prometheus/client_golang/prometheus"
)

// newVRRP builds the configured virtual routers over r's links. They join
// the election once the health checks have had time to find the servers
// that are down (a server starts up: fall x interval + timeout after start)
// and ready reports true, or at the latest 10 s after that.
func newVRRP(cfg *config.Config, r *router.Router, log *slog.Logger, ready func() bool) (*vrrp.Set, error) {
	settle := healthSettle(cfg)
	start := time.Now()
	return vrrp.New(cfg.VRRP, vrrp.Deps{
		Ready:     func() bool { return time.Since(start) >= settle && ready() },
		ReadyWait: settle + 10*time.Second,
		Link: func(name string) (vrrp.Link, bool) {
			l, ok := r.Link(name)
			if !ok {
				return vrrp.Link{}, false
			}
			out := vrrp.Link{EP: l.EP}
			for _, p := range l.Config.Addresses {
				a := p.Addr()
				if b, ok := config.SubnetBroadcast(p); ok {
					out.Broadcasts = append(out.Broadcasts, b)
				}
				switch {
				case a.Is4() && !out.V4.IsValid():
					out.V4 = a
				case a.Is6() && (!out.V6.IsValid() || a.IsLinkLocalUnicast() && !out.V6.IsLinkLocalUnicast()):
					out.V6 = a
				}
			}
			return out, true
		},
		Resolve: r.LinkAddress,
		Logger:  log,
	})
}

// warnVRRP logs set-ups that work but probably not as meant: a cluster LAN
// without a virtual router (the servers' replies go to one appliance's own
// address, and stop when it fails), and virtual routers on several links
// that are not in one sync group (each link could elect another master).
func warnVRRP(cfg *config.Config, log *slog.Logger) {
	if len(cfg.VRRP) == 0 {
		return
	}
	on := map[string]bool{}
	groups := map[string]bool{}
	for _, v := range cfg.VRRP {
		on[v.Interface] = true
		groups[v.Group] = true
	}
	for _, c := range cfg.Clusters {
		if !on[c.Interface] {
			log.Warn("vrrp: the cluster's LAN has no virtual router: the servers' gateway should be a virtual address on it", "cluster", c.Name, "interface", c.Interface)
		}
	}
	if len(on) > 1 && (len(groups) > 1 || groups[""]) {
		log.Warn("vrrp: virtual routers on several interfaces are not in one sync group: a partial failure could leave each link's master on a different appliance")
	}
}

// healthSettle is how long after start every cluster's health checks have
// had the chance to take a dead server down: the longest fall x interval +
// timeout (every server starts up).
func healthSettle(cfg *config.Config) time.Duration {
	var d time.Duration
	for _, c := range cfg.Clusters {
		if h := c.Health; h.Check != config.CheckNone {
			d = max(d, time.Duration(h.Fall)*h.Interval+h.Timeout)
		}
	}
	return d
}

// vrrpChanged reports whether two configurations' virtual routers differ
// (where in the file they are written does not count).
func vrrpChanged(a, b []config.VRRP) bool {
	strip := func(vs []config.VRRP) []config.VRRP {
		out := make([]config.VRRP, len(vs))
		for i, v := range vs {
			v.Line = 0
			out[i] = v
		}
		return out
	}
	return !reflect.DeepEqual(strip(a), strip(b))
}

// dispatchReady reports whether every cluster can dispatch: at least one
// server is up and every server that is up has its MAC resolved.
func dispatchReady(m *dispatch.Manager) bool {
	for _, c := range m.State() {
		up := 0
		for _, s := range c.Servers {
			if !s.Up {
				continue
			}
			up++
			if c.Mode == config.ModeRouting && s.MAC.IsZero() {
				return false
			}
		}
		if up == 0 && len(c.Servers) > 0 {
			return false
		}
	}
	return true
}

// announceGate is the dispatch.Announcer of an appliance with virtual
// routers: only the master of a broadcast cluster's LAN announces its
// tables (a backup's are current too, but servers must hear one
// appliance).
//
// Servers accept a datagram only when its (epoch, tx) is after the last
// they heard, and a table only when its (epoch, seq) is newer than the
// applied one. A backup that takes over would be ignored if its epoch (its
// start time) were older than the old master's, so the gate starts a new
// epoch, the time now, whenever this appliance becomes master, sees another
// master on a link, or announces a changed table; and it announces every
// broadcast cluster's current table at once on becoming master. Servers
// therefore follow the appliance that most recently became master or
// changed its table. While two appliances both claim mastership (a
// partition), both announce and each server applies whichever newer epoch
// reaches it; both appliances compute the same table from the same
// configuration and health, so the servers' filters agree. After the
// partition heals the loser stops; the remaining master's next change (or
// its sight of the other's advertisement) starts a newer epoch, and servers
// follow it again.
type announceGate struct {
	vr  *vrrp.Set
	mk  func(epoch uint64) *announce.Announcer
	log *slog.Logger

	mu         sync.Mutex // guards everything below
	cur        *announce.Announcer
	last       map[string]*lastAnnounce // per cluster: what the manager asked last
	master     map[string]bool          // per cluster: master at the last call
	sentBefore uint64                   // by retired announcers
	failBefore uint64
	malBefore  uint64
	unkBefore  uint64
	started    bool
	silent     bool // the announcer is retired and not started: backup

	suppressed atomic.Uint64 // announcements not sent: this appliance is backup
}

type lastAnnounce struct {
	cl      config.Cluster
	version uint64
	servers []core.Server
}

var _ dispatch.Announcer = (*announceGate)(nil)

func newAnnounceGate(vr *vrrp.Set, send announce.Sender, log *slog.Logger, onAck func(string, time.Duration)) *announceGate {
	g := &announceGate{
		vr:     vr,
		log:    log,
		last:   map[string]*lastAnnounce{},
		master: map[string]bool{},
		mk: func(epoch uint64) *announce.Announcer {
			a := announce.NewAnnouncer(epoch, send, log)
			if onAck != nil {
				a.OnAck(onAck)
			}
			return a
		},
	}
	g.cur = g.mk(announce.NewEpoch())
	vr.Watch(g.changed)
	return g
}

// newEpochLocked replaces the announcer with one of a new, larger epoch
// (started if the old one was).
func (g *announceGate) newEpochLocked() {
	g.retireLocked()
	g.silent = false
	if g.started {
		g.cur.Start()
	}
}

// retireLocked stops the current announcer, keeps its counts, and puts an
// unstarted one of a new epoch in its place.
func (g *announceGate) retireLocked() {
	sent, failed := g.cur.Stats()
	g.sentBefore += sent
	g.failBefore += failed
	m, u := g.cur.AckDrops()
	g.malBefore += m
	g.unkBefore += u
	g.cur.Close()
	g.cur = g.mk(announce.NewEpoch())
}

// Start starts the current announcer's timer (break before make needs it).
func (g *announceGate) Start() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.started = true
	if !g.silent {
		g.cur.Start()
	}
}

// Close stops the current announcer.
func (g *announceGate) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.started = false
	g.cur.Close()
}

// HandleAck hands a server's acknowledgement to the current announcer; one
// for a retired epoch is refused there like any stale one.
func (g *announceGate) HandleAck(b []byte, from netip.AddrPort) {
	g.mu.Lock()
	cur := g.cur
	g.mu.Unlock()
	cur.HandleAck(b, from)
}

// AckDrops are the acknowledgements refused as malformed or for an unknown
// cluster, over every epoch.
func (g *announceGate) AckDrops() (malformed, unknownCluster uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, u := g.cur.AckDrops()
	return g.malBefore + m, g.unkBefore + u
}

// Status is the current announcer's view of the servers.
func (g *announceGate) Status() []announce.ClusterStatus {
	g.mu.Lock()
	cur := g.cur
	g.mu.Unlock()
	return cur.Status()
}

// Announce implements dispatch.Announcer.
func (g *announceGate) Announce(cl *config.Cluster, version uint64, servers []core.Server) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last[cl.Name] = &lastAnnounce{cl: *cl, version: version, servers: append([]core.Server(nil), servers...)}
	master := g.vr.GroupMaster(cl.Interface)
	g.master[cl.Name] = master
	if !master {
		g.suppressed.Add(1)
		return
	}
	g.cur.Announce(cl, version, servers)
}

// changed runs after a virtual router's state changed (or another master
// was seen): a master starts a new epoch and announces every table now; an
// appliance master of no cluster's LAN stops its announcer altogether (its
// own timer would otherwise go on repeating and completing changes).
func (g *announceGate) changed() {
	g.mu.Lock()
	defer g.mu.Unlock()
	epoch, any := false, false
	for name, la := range g.last {
		master := g.vr.GroupMaster(la.cl.Interface)
		g.master[name] = master
		if !master {
			continue
		}
		any = true
		if !epoch {
			g.newEpochLocked()
			epoch = true
			g.log.Info("announcing as master", "epoch", g.cur.Epoch())
		}
		g.cur.Announce(&la.cl, la.version, la.servers)
	}
	if !any && len(g.last) > 0 && !g.silent {
		g.silenceLocked()
		g.log.Info("not master: announcing nothing")
	}
}

// silenceLocked retires the current announcer for one that is never
// started: nothing more goes out until this appliance is master again.
func (g *announceGate) silenceLocked() {
	g.retireLocked()
	g.silent = true
}

// Stats are the datagrams sent, those that failed, and those not sent
// because this appliance is backup.
func (g *announceGate) Stats() (sent, failed, suppressed uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, f := g.cur.Stats()
	return g.sentBefore + s, g.failBefore + f, g.suppressed.Load()
}

// printVRRP writes the virtual routers' section of `ghostrouter status`.
func printVRRP(w io.Writer, vs []vrrp.Status) {
	if len(vs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nvirtual routers (VRRPv3)")
	fmt.Fprintln(w, "  NAME\tSTATE\tPRIORITY\tINTERVAL\tMASTER\tMASTER PRIORITY\tVIRTUAL MAC\tADDRESSES\tGROUP")
	for _, v := range vs {
		master := v.Master
		if master == "" {
			master = "(unknown)"
		}
		group := v.Group
		if group == "" {
			group = "-"
		}
		addrs := make([]string, len(v.Addresses))
		for i, a := range v.Addresses {
			addrs[i] = a.String()
		}
		fmt.Fprintf(w, "  %s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", v.Name, v.State, v.Priority, v.Interval, master,
			v.MasterPriority, v.VirtualMAC, strings.Join(addrs, ","), group)
	}
	for _, v := range vs {
		for _, t := range v.Transitions {
			fmt.Fprintf(w, "  %s: %s %s -> %s (%s)\n", v.Name, t.At.UTC().Format("2006-01-02T15:04:05.000Z07:00"), t.From, t.To, t.Reason)
		}
		printCounters(w, "  "+v.Name+" counters:", v.Counters)
	}
}

// writeVRRPMetrics adds the virtual routers' samples: state (1 for the
// current one), the master's priority, transitions and counters.
func writeVRRPMetrics(emit emitFunc, vs []vrrp.Status) {
	labels := []string{"vrrp", "interface", "vrid"}
	for _, v := range vs {
		vals := []string{v.Name, v.Interface, strconv.Itoa(int(v.VRID))}
		for _, s := range []string{"init", "backup", "master"} {
			n := uint64(0)
			if v.State == s {
				n = 1
			}
			emit("ghostrouter_vrrp_state", "1 for the virtual router's current state.", prometheus.GaugeValue, n,
				append(slices.Clone(labels), "state"), append(slices.Clone(vals), s)...)
		}
		emit("ghostrouter_vrrp_priority", "The local priority.", prometheus.GaugeValue, uint64(v.Priority), labels, vals...)
		emit("ghostrouter_vrrp_master_priority", "The current master's priority, labelled with its address.", prometheus.GaugeValue,
			uint64(v.MasterPriority), append(slices.Clone(labels), "master"), append(slices.Clone(vals), v.Master)...)
		for k, n := range v.Counters {
			emit("ghostrouter_vrrp_"+k+"_total", "Virtual router counter.", prometheus.CounterValue, n, labels, vals...)
		}
		if len(v.Transitions) > 0 {
			emit("ghostrouter_vrrp_last_transition_seconds", "Unix time of the last state change.", prometheus.GaugeValue,
				uint64(v.Transitions[len(v.Transitions)-1].At.Unix()), labels, vals...)
		}
	}
}
