package main

import (
	"errors"
	"log/slog"
	"maps"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch"
	"github.com/ghostrouter/ghostrouter/router"
	"github.com/ghostrouter/ghostrouter/router/bgp"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
	"github.com/prometheus/client_golang/prometheus"
)

// announcePoll is how often the announced set is recomputed from the
// clusters' health; a change reaches the peers within it.
const announcePoll = 200 * time.Millisecond

// bgpAnnouncer ties the BGP speaker to the datapath: every cluster's ghost
// is announced while the cluster has a live server and its LAN link is
// alive, and withdrawn otherwise; Close withdraws everything.
type bgpAnnouncer struct {
	sp   *bgp.Speaker
	m    *dispatch.Manager
	log  *slog.Logger
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	cfg     *config.Config
	faulted map[string]bool // links whose receive loop stopped
}

// speakerConfig converts the [bgp] table. Each neighbor's IPv6 next hop is
// the first global IPv6 address of the interface that reaches it.
func speakerConfig(cfg *config.Config) bgp.Config {
	b := cfg.BGP
	out := bgp.Config{ASN: b.ASN, RouterID: b.RouterID, HoldTime: b.HoldTime}
	for _, n := range b.Neighbors {
		bn := bgp.Neighbor{Address: n.Address, ASN: n.ASN, Port: uint16(n.Port)}
		for _, ifc := range cfg.Interfaces {
			if ifc.Name != n.Interface {
				continue
			}
			for _, p := range ifc.Addresses {
				if a := p.Addr(); a.Is6() && a.IsGlobalUnicast() && !bn.NextHop6.IsValid() {
					bn.NextHop6 = a
				}
			}
		}
		out.Neighbors = append(out.Neighbors, bn)
	}
	return out
}

// startBGP starts the speaker when the configuration has [bgp]; it returns
// nil otherwise.
func startBGP(cfg *config.Config, r *router.Router, m *dispatch.Manager, log *slog.Logger) *bgpAnnouncer {
	if cfg.BGP == nil {
		return nil
	}
	a := &bgpAnnouncer{
		sp: bgp.New(speakerConfig(cfg), r.DialTCP, log.With("component", "bgp")),
		m:  m, log: log, cfg: cfg,
		stop: make(chan struct{}), done: make(chan struct{}), faulted: map[string]bool{},
	}
	a.sp.Announce(a.wanted())
	a.sp.Start()
	go a.poll()
	return a
}

func (a *bgpAnnouncer) poll() {
	defer close(a.done)
	t := time.NewTicker(announcePoll)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.sp.Announce(a.wanted())
		}
	}
}

// wanted is the set to announce: the ghost of every cluster with at least
// one server up, with a weight and not drained, whose LAN link has not
// failed.
func (a *bgpAnnouncer) wanted() []netip.Prefix {
	a.mu.Lock()
	faulted := a.faulted
	a.mu.Unlock()
	var out []netip.Prefix
	for _, c := range a.m.State() {
		if faulted[c.Interface] {
			continue
		}
		live := false
		for _, s := range c.Servers {
			live = live || (s.Up && s.Weight > 0 && !s.Drain)
		}
		if !live || !c.Ghost.IsValid() {
			continue
		}
		out = append(out, netip.PrefixFrom(c.Ghost, c.Ghost.BitLen()))
	}
	return out
}

// linkFault withdraws the ghosts served on a link whose receive loop
// stopped (err is the router's *tap.LinkFault).
func (a *bgpAnnouncer) linkFault(err error) {
	var lf *tap.LinkFault
	if a == nil || !errors.As(err, &lf) {
		return
	}
	a.mu.Lock()
	nf := maps.Clone(a.faulted)
	nf[lf.Link] = true
	a.faulted = nf
	a.mu.Unlock()
	a.sp.Announce(a.wanted())
}

// reconfigure applies a reloaded configuration: announcements follow the
// clusters, and sessions whose neighbor settings did not change stay up.
// It returns the announcer to keep (nil when [bgp] was removed).
func reconfigureBGP(a *bgpAnnouncer, cfg *config.Config, r *router.Router, m *dispatch.Manager, log *slog.Logger) *bgpAnnouncer {
	switch {
	case a == nil:
		return startBGP(cfg, r, m, log)
	case cfg.BGP == nil:
		a.close()
		return nil
	}
	a.mu.Lock()
	a.cfg = cfg
	a.mu.Unlock()
	a.sp.Reconfigure(speakerConfig(cfg))
	a.sp.Announce(a.wanted())
	return a
}

// close withdraws every ghost and ends the sessions with Cease.
func (a *bgpAnnouncer) close() {
	if a == nil {
		return
	}
	close(a.stop)
	<-a.done
	a.sp.Close()
}

func (a *bgpAnnouncer) status() []bgp.SessionStatus {
	if a == nil {
		return nil
	}
	return a.sp.Status()
}

// writeBGPMetrics exports each session: whether it is established, its
// uptime, the prefixes it announces, and its message and error counts.
func writeBGPMetrics(emit emitFunc, ss []bgp.SessionStatus) {
	l := []string{"neighbor", "peer_asn"}
	for _, s := range ss {
		v := []string{s.Neighbor, strconv.FormatUint(uint64(s.PeerASN), 10)}
		up := uint64(0)
		if s.State == "Established" {
			up = 1
		}
		emit("ghostrouter_bgp_session_established", "1 while the BGP session is Established.", prometheus.GaugeValue, up, l, v...)
		emit("ghostrouter_bgp_session_uptime_seconds", "Seconds since the BGP session was established (0 when down).", prometheus.GaugeValue, uint64(s.UptimeSec), l, v...)
		emit("ghostrouter_bgp_announced_prefixes", "Prefixes announced on the session.", prometheus.GaugeValue, uint64(len(s.Announced)), l, v...)
		emit("ghostrouter_bgp_established_total", "Times the session reached Established.", prometheus.CounterValue, s.Established, l, v...)
		emit("ghostrouter_bgp_messages_received_total", "BGP messages received.", prometheus.CounterValue, s.MsgIn, l, v...)
		emit("ghostrouter_bgp_messages_sent_total", "BGP messages sent.", prometheus.CounterValue, s.MsgOut, l, v...)
		emit("ghostrouter_bgp_updates_sent_total", "BGP UPDATE messages sent.", prometheus.CounterValue, s.Updates, l, v...)
		emit("ghostrouter_bgp_errors_total", "Session errors (each restarts the session).", prometheus.CounterValue, s.Errors, l, v...)
	}
}
