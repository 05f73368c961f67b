package main

import (
	"crypto/ed25519"
	"errors"
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
// Becoming master, the gate starts announcing under a new random epoch
// (servers apply a fresh datagram of another epoch than the applied table's
// at once: the appliance that speaks now is in charge). While backup it
// listens to the master's announcements on the LAN (hear: signed with the
// cluster's key, from the address of the LAN's VRRP master, fresh) and
// records them in an announce.Follower; at takeover it continues them
// (Announcer.Adopt): its first announcement grants what the servers hold
// already, instead of granting nothing until they acknowledge, so a
// takeover drops no new connection. When it cannot vouch for what the
// servers hold (it heard too little, missed an announcement, or the master
// fell silent long before), it starts afresh: nothing granted until the
// servers acknowledge (the gap is then one acknowledgement round trip).
//
// A master stopped gracefully hands over (handover): it stops announcing
// and repeats its announcement in force once more before its virtual
// routers send priority 0, so the backup has heard its last table when it
// takes over.
//
// While two appliances both claim mastership (a partition, or the moment of
// a preemption) both announce: each server applies whichever fresh datagram
// of the other epoch reaches it, so its filter follows both in turn. Both
// compute the same table from the same configuration and health, and the
// newcomer continued the other's announcements, so the filters agree. If
// their health views differ, a bucket may belong to two servers for that
// moment: bounded by the disagreement (at most a health check's rise or
// fall) and by the partition; after it heals the loser falls silent and the
// winner's next repetition (one announce interval) sets every filter to its
// table again.
type announceGate struct {
	vr     *vrrp.Set
	mk     func(epoch uint64) *announce.Announcer
	log    *slog.Logger
	listen func(cl *config.Cluster) error // hear cl's LAN (nil: never)
	own    func(a netip.Addr) bool        // the appliance's own addresses (nil: none)

	mu         sync.Mutex // guards everything below
	cur        *announce.Announcer
	last       map[string]*lastAnnounce // per cluster: what the manager asked last
	master     map[string]bool          // per cluster: master at the last call
	follow     map[string]*follower     // per cluster: the master's announcements heard while backup
	sentBefore uint64                   // by retired announcers
	failBefore uint64
	malBefore  uint64
	unkBefore  uint64
	started    bool
	announcing bool // cur is this appliance's, as master; otherwise a spare, never started
	handedOver bool // stopped for good (shutdown)
	takeovers  takeoverCounts

	suppressed atomic.Uint64 // announcements not sent: this appliance is backup
}

// follower is one cluster's announce.Follower with what it was made for.
type follower struct {
	f       *announce.Follower
	since   time.Time // listening since
	key     string    // the private key it checks with
	listErr bool      // listening failed (logged once)
	foreign uint64    // datagrams from another source than the LAN's master
}

// takeoverCounts count how this appliance began announcing: continuing the
// previous master's announcements, or afresh (and why).
type takeoverCounts struct {
	continued, fresh uint64
	lastReason       string
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
		follow: map[string]*follower{},
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

// beginLocked makes this appliance the announcer: a new announcer of a new
// epoch (started if the gate is), continuing what the previous master
// announced where the followers can vouch for it.
func (g *announceGate) beginLocked() {
	g.retireLocked()
	now := time.Now()
	for name, la := range g.last {
		if !g.master[name] || g.listen == nil { // no virtual routers: nobody to take over from
			continue
		}
		heard, err := g.windowLocked(name, &la.cl, now)
		if err != nil {
			g.takeovers.fresh++
			g.takeovers.lastReason = err.Error()
			g.log.Info("announcing as master afresh: the servers' tables are granted once they acknowledge", "cluster", name, "why", err)
			continue
		}
		g.takeovers.continued++
		g.takeovers.lastReason = ""
		g.cur.Adopt(name, heard)
	}
	g.follow = map[string]*follower{} // heard afresh when backup again
	g.announcing = true
	if g.started {
		g.cur.Start()
	}
	g.log.Info("announcing as master", "epoch", g.cur.Epoch())
}

// windowLocked is what cluster name's follower vouches the servers may
// hold now.
func (g *announceGate) windowLocked(name string, cl *config.Cluster, now time.Time) ([]*announce.Message, error) {
	fl := g.follow[name]
	if fl == nil {
		return nil, announce.ErrNothingHeard
	}
	iv := cl.AnnounceInterval
	if iv <= 0 {
		iv = time.Second
	}
	// The master repeats every interval; its death is noticed within the
	// VRRP master down interval (less than four advertisement intervals).
	var vi time.Duration
	for _, v := range g.vr.Status() {
		vi = max(vi, v.Interval, v.MasterInterval)
	}
	return fl.f.Window(now, announce.AckTimeout(iv), iv+4*vi+200*time.Millisecond)
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
	g.announcing = false
}

// Start starts the current announcer's timer (break before make needs it).
func (g *announceGate) Start() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.started = true
	// The manager's first tables arrived while the appliance was being
	// built, before its links had addresses to send or listen from: they
	// are announced (or listened for) now.
	for name := range g.last {
		g.announceLocked(name)
	}
	if g.announcing {
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

// handover ends announcing for good (a graceful stop, before the virtual
// routers send priority 0): the announcement in force goes out once more,
// so the backup has heard the last one issued, and nothing after it.
func (g *announceGate) handover() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.handedOver {
		return
	}
	g.handedOver = true
	if g.announcing {
		g.cur.Flush()
		g.retireLocked()
		g.log.Info("handing over: announcing nothing more")
	}
}

// HandleAck hands a server's acknowledgement to the current announcer; one
// for a retired epoch is refused there like any stale one.
func (g *announceGate) HandleAck(b []byte, from netip.AddrPort) {
	g.mu.Lock()
	cur := g.cur
	g.mu.Unlock()
	cur.HandleAck(b, from)
}

// hear takes a datagram that arrived on ifname's announce port: while
// backup, the master's announcement of a cluster on that LAN is recorded
// (checked: its source must be the LAN's VRRP master, its signature the
// cluster's key, its tx fresh). Everything else is dropped.
func (g *announceGate) hear(ifname string, from netip.Addr, b []byte) {
	name, err := announce.Peek(b)
	if err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	la := g.last[name]
	if la == nil || g.announcing || g.handedOver || la.cl.Interface != ifname || len(la.cl.AnnounceKey) != ed25519.PrivateKeySize {
		return
	}
	fl := g.followerLocked(&la.cl)
	if fl == nil {
		return
	}
	if !g.fromMaster(ifname, from) {
		fl.foreign++
		return
	}
	if err := fl.f.Hear(b, time.Now()); err != nil {
		g.log.Debug("announcement heard and refused", "cluster", name, "from", from, "err", err)
	}
}

// fromMaster reports whether from is the address of the VRRP master this
// appliance sees on ifname; before its virtual routers have heard any
// master (they join the election only once ready), any address but the
// appliance's own.
func (g *announceGate) fromMaster(ifname string, from netip.Addr) bool {
	known := false
	for _, v := range g.vr.Status() {
		if v.Interface != ifname || v.Master == "" {
			continue
		}
		if v.Master == from.String() {
			return true
		}
		known = true
	}
	return !known && (g.own == nil || !g.own(from))
}

// readyToLead reports whether this appliance may join the election as far
// as the announcements go: for every broadcast cluster, it can continue
// what the master announces (it has listened long enough), or nobody
// announces (nothing heard for AckTimeout), or the master fell silent. A
// backup that preempts then continues the master's announcements instead
// of starting afresh (which would leave every bucket without an owner for
// an acknowledgement round trip).
func (g *announceGate) readyToLead() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.listen == nil {
		return true
	}
	now := time.Now()
	for name, la := range g.last {
		fl := g.follow[name]
		if fl == nil || fl.listErr {
			if fl == nil && len(la.cl.AnnounceKey) == ed25519.PrivateKeySize && !g.announcing {
				return false // not listening yet
			}
			continue
		}
		iv := la.cl.AnnounceInterval
		if iv <= 0 {
			iv = time.Second
		}
		if _, _, at := fl.f.Last(); at.IsZero() {
			if now.Sub(fl.since) < announce.AckTimeout(iv)+iv {
				return false
			}
			continue
		}
		if _, err := g.windowLocked(name, &la.cl, now); err != nil && !errors.Is(err, announce.ErrSilent) {
			return false
		}
	}
	return true
}

// followerLocked is cl's follower, made (and its LAN listened to) on first
// use or when the key changed; nil when none can be made.
func (g *announceGate) followerLocked(cl *config.Cluster) *follower {
	if len(cl.AnnounceKey) != ed25519.PrivateKeySize {
		return nil
	}
	key := string(cl.AnnounceKey)
	fl := g.follow[cl.Name]
	if fl != nil && fl.key == key {
		return fl
	}
	pub, _ := ed25519.PrivateKey(cl.AnnounceKey).Public().(ed25519.PublicKey)
	f, err := announce.NewFollower(cl.Name, pub)
	if err != nil {
		return nil
	}
	fl = &follower{f: f, key: key, since: time.Now()}
	g.follow[cl.Name] = fl
	return fl
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

// TakeoverStatus is how this appliance began announcing as master, and
// what it heard of the master while backup.
type TakeoverStatus struct {
	// Continued and Fresh count the takeovers that continued the previous
	// master's announcements and those that started afresh; LastFreshReason
	// says why the last one started afresh.
	Continued       uint64 `json:"continued"`
	Fresh           uint64 `json:"fresh"`
	LastFreshReason string `json:"last_fresh_reason,omitempty"`
	// Heard is, per cluster, what the backup heard of the master.
	Heard []HeardStatus `json:"heard,omitempty"`
}

// HeardStatus is one cluster's announcements heard from the master.
type HeardStatus struct {
	Cluster  string                    `json:"cluster"`
	Epoch    uint64                    `json:"epoch"`
	Seq      uint64                    `json:"seq"`
	At       string                    `json:"at,omitempty"`
	Foreign  uint64                    `json:"foreign"`
	Counters announce.FollowerCounters `json:"counters"`
}

// Takeover reports the gate's takeovers and what it hears.
func (g *announceGate) Takeover() TakeoverStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := TakeoverStatus{Continued: g.takeovers.continued, Fresh: g.takeovers.fresh, LastFreshReason: g.takeovers.lastReason}
	for name, fl := range g.follow {
		e, s, at := fl.f.Last()
		h := HeardStatus{Cluster: name, Epoch: e, Seq: s, Foreign: fl.foreign, Counters: fl.f.Counters()}
		if !at.IsZero() {
			h.At = at.UTC().Format(time.RFC3339Nano)
		}
		st.Heard = append(st.Heard, h)
	}
	slices.SortFunc(st.Heard, func(a, b HeardStatus) int { return strings.Compare(a.Cluster, b.Cluster) })
	return st
}

// Announce implements dispatch.Announcer.
func (g *announceGate) Announce(cl *config.Cluster, version uint64, servers []core.Server) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last[cl.Name] = &lastAnnounce{cl: *cl, version: version, servers: append([]core.Server(nil), servers...)}
	if !g.started {
		return // Start announces it, once the links can carry it
	}
	g.announceLocked(cl.Name)
}

// announceLocked announces cluster name's last table if this appliance is
// its LAN's master, and otherwise listens for the master's announcements.
func (g *announceGate) announceLocked(name string) {
	la := g.last[name]
	cl, version, servers := &la.cl, la.version, la.servers
	master := g.vr.GroupMaster(cl.Interface) && !g.handedOver
	g.master[cl.Name] = master
	if !master {
		g.suppressed.Add(1)
		if g.listen != nil && g.followerLocked(cl) != nil {
			if fl := g.follow[cl.Name]; !fl.listErr {
				if err := g.listen(cl); err != nil {
					fl.listErr = true
					g.log.Warn("cannot hear the master's announcements: a takeover will start afresh", "cluster", cl.Name, "err", err)
				}
			}
		}
		return
	}
	if !g.announcing {
		g.beginLocked()
	}
	g.cur.Announce(cl, version, servers)
}

// changed runs after a virtual router's state changed (or another master
// was seen): an appliance that became master of a cluster's LAN begins
// announcing (continuing the previous master's announcements where it
// can) and announces every table now; one master of no cluster's LAN
// stops its announcer altogether (its own timer would otherwise go on
// repeating and completing changes).
func (g *announceGate) changed() {
	g.mu.Lock()
	defer g.mu.Unlock()
	any := false
	for name, la := range g.last {
		master := g.vr.GroupMaster(la.cl.Interface) && !g.handedOver
		g.master[name] = master
		any = any || master
	}
	if !any {
		if g.announcing {
			g.retireLocked()
			g.log.Info("not master: announcing nothing")
		}
		return
	}
	if !g.announcing {
		g.beginLocked()
	}
	for name, la := range g.last {
		if g.master[name] {
			g.cur.Announce(&la.cl, la.version, la.servers)
		}
	}
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

// printTakeover writes how this appliance began announcing as master and
// what it hears of the master's announcements while backup.
func printTakeover(w io.Writer, tk *TakeoverStatus) {
	if tk == nil || tk.Continued+tk.Fresh == 0 && len(tk.Heard) == 0 { // no broadcast cluster
		return
	}
	fmt.Fprintf(w, "  announcement takeovers: %d continued the previous master's, %d afresh\n", tk.Continued, tk.Fresh)
	if tk.LastFreshReason != "" {
		fmt.Fprintf(w, "  last afresh because: %s\n", tk.LastFreshReason)
	}
	for _, h := range tk.Heard {
		at := h.At
		if at == "" {
			at = "-"
		}
		fmt.Fprintf(w, "  heard from the master: %s\tepoch %#x seq %d at %s\theard %d, stale %d, refused %d, other source %d\n",
			h.Cluster, h.Epoch, h.Seq, at, h.Counters.Heard, h.Counters.Stale, h.Counters.Refused, h.Foreign)
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
