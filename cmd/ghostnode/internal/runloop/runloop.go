// Package runloop is the loop of `ghostnode run` in broadcast mode: it reads
// the appliance's table announcements (package dispatch/announce), installs
// each newer table in the server's filter, and reports what it did.
//
//	Source (UDP :9470) ──datagram──> [segment: announce.Reassembler, one announcement per sender] ──> announce.Receiver.Handle
//	    Apply   ──> Installer.Install (one nft transaction) ──> Receiver.Applied / Failed, logged once
//	    Repeat  ──> the appliance is alive; nothing changes
//	    Ignore* ──> counted; logged at most once a minute per reason
//	tick ──> quiet detection (the last table stays), status written if it changed
//
// The loop owns the Receiver and all its state: one goroutine (Run's)
// handles datagrams, ticks and the status; a second one, started and
// stopped by Run, only reads the Source.
package runloop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/node"
	"github.com/ghostrouter/ghostrouter/dispatch/announce"
)

// Installer changes the host: it makes the server's filter accept new
// connections for exactly the owned buckets that m grants it (m's ghost,
// bucket count and seed), and count those for the unowned buckets m grants
// nobody, in one transaction. Called from the loop's goroutine only.
type Installer interface {
	Install(ctx context.Context, m *announce.Message, owned, unowned []uint32) error
}

// Source is where datagrams come from, and where acknowledgements go back
// (to the announcement's source): a *net.UDPConn, or a fake. Close must
// make a blocked ReadFromUDPAddrPort return.
type Source interface {
	ReadFromUDPAddrPort(b []byte) (n int, from netip.AddrPort, err error)
	WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error)
	Close() error
}

// Defaults of Config's tunables.
const (
	DefaultTick     = 250 * time.Millisecond
	DefaultLogEvery = time.Minute
	// QuietIntervals is how many announcement intervals of silence make the
	// appliance quiet (logged once; the last table stays in force).
	QuietIntervals = 3
	// defaultInterval stands in when an announcement does not say.
	defaultInterval = time.Second
	maxDatagram     = 65536
)

// Config is what a Loop is made of.
type Config struct {
	Receiver  *announce.Receiver
	Installer Installer
	Source    Source
	// Status, when set, is given the loop's report whenever it changed:
	// at once after a table is applied, otherwise at most once a tick, and
	// once more, with Stopped set, when Run returns. Base's identity fields
	// (cluster, mode, server, pid, listen, started) are copied into it.
	Status func(*node.RunStatus) error
	Base   node.RunStatus
	// Owned is how many buckets the server owned when the loop started (for
	// the first "was M"); -1 when unknown.
	Owned  int
	Logger *slog.Logger
	// Tick (default DefaultTick) is how often quiet detection and status
	// writes happen; LogEvery (default DefaultLogEvery) is the least time
	// between two log lines about one reason to ignore announcements.
	Tick, LogEvery time.Duration
	Now            func() time.Time // default time.Now
}

// Loop is the run loop of one cluster. Build it with New; Run it once.
type Loop struct {
	c       Config
	cluster string
	log     *slog.Logger

	// Loop state, owned by Run's goroutine.
	owned     int                     // buckets owned now (-1: unknown)
	applied   *node.AppliedTable      // the last table applied
	heard     time.Time               // the last authentic, fresh datagram
	interval  time.Duration           // the appliance's announcement interval, as last heard
	quiet     bool                    // the appliance went quiet (and was logged so)
	lastError string                  // the last apply error
	ackErrors uint64                  // acknowledgements that could not be sent
	limits    map[string]*rateLimited // by reason
	dirty     bool                    // the status changed since it was last given out
	reasm     *announce.Reassembler   // segmented announcements, from the appliance's addresses only
}

type rateLimited struct {
	last       time.Time
	suppressed int
}

// New checks cfg and returns its loop.
func New(cfg Config) (*Loop, error) {
	switch {
	case cfg.Receiver == nil || cfg.Installer == nil || cfg.Source == nil:
		return nil, errors.New("listen: a Receiver, an Installer and a Source are required")
	case cfg.Base.Cluster == "":
		return nil, errors.New("listen: Base.Cluster is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = DefaultLogEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Loop{c: cfg, cluster: cfg.Base.Cluster, log: cfg.Logger, owned: cfg.Owned, limits: map[string]*rateLimited{}, dirty: true,
		reasm: announce.NewReassembler(announce.DefaultReassemblyTimeout, announce.DefaultReassemblies)}, nil
}

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// Run reads and handles announcements until ctx ends (it then returns nil)
// or the Source fails (it returns the error). It closes the Source before
// returning, and gives out a last status with Stopped set.
func (l *Loop) Run(ctx context.Context) error {
	in := make(chan datagram)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the reader: stopped by closing the Source
		defer wg.Done()
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := l.c.Source.ReadFromUDPAddrPort(buf)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case in <- datagram{slices.Clone(buf[:n]), from}:
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		l.c.Source.Close()
		wg.Wait()
		l.dirty = true
		l.writeStatus(true)
	}()
	l.writeStatus(false)
	tick := time.NewTicker(l.c.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cluster %s: reading announcements: %w", l.cluster, err)
		case d := <-in:
			l.handle(ctx, d)
		case <-tick.C:
			l.reasm.Expire(l.c.Now())
			l.checkQuiet()
			l.writeStatus(false)
		}
	}
}

// handle decides about one datagram and acts on it. A segment from the
// appliance goes to the reassembler, and the announcement it completes is
// handled as one datagram; a segment from anyone else is handed to the
// Receiver, which refuses it as foreign.
func (l *Loop) handle(ctx context.Context, d datagram) {
	r := l.c.Receiver
	l.dirty = true
	now := l.c.Now()
	b := d.b
	if announce.IsSegment(b) && r.Allowed(d.from.Addr()) {
		before := l.reasm.Stats()
		body, ok := l.reasm.Add(d.from.Addr(), b, now)
		if !ok {
			if after := l.reasm.Stats(); after.Malformed != before.Malformed || after.Conflicts != before.Conflicts {
				l.limited(slog.LevelWarn, "segment", "cluster "+l.cluster+": dropped an announcement segment", "from", d.from.String(),
					"malformed", after.Malformed, "conflicts", after.Conflicts)
			}
			return
		}
		b = body
	}
	res := r.HandleFrom(d.from.Addr(), b)
	switch res.Verdict {
	case announce.Apply, announce.Repeat, announce.IgnoreUnsupported:
		l.heardFresh(now, res.Msg)
	}
	switch res.Verdict {
	case announce.Apply:
		if l.apply(ctx, res, d.from, now) {
			l.ack(d.from)
			l.writeStatus(false)
		}
	case announce.Repeat:
		l.ack(d.from)
	case announce.IgnoreBadMAC, announce.IgnoreMalformed, announce.IgnoreUnsupported, announce.IgnoreForeign:
		l.limited(slog.LevelWarn, res.Verdict.String(), "cluster "+l.cluster+": ignored announcement: "+res.Verdict.String(),
			"from", d.from.String(), "err", res.Err)
	default: // stale, another cluster: expected on a LAN, debug only
		l.limited(slog.LevelDebug, res.Verdict.String(), "cluster "+l.cluster+": ignored announcement: "+res.Verdict.String(),
			"from", d.from.String(), "err", res.Err)
	}
}

func (l *Loop) heardFresh(now time.Time, m *announce.Message) {
	if l.quiet {
		l.log.Info(fmt.Sprintf("cluster %s: announcements resumed after %v", l.cluster, now.Sub(l.heard).Round(time.Millisecond)))
		l.quiet = false
	}
	l.heard = now
	l.interval = m.Interval
}

// ack tells the appliance (at to, the announcement's source) which table
// this server runs: the appliance gives a released bucket to its next
// owner only once the old owners have acknowledged the release.
func (l *Loop) ack(to netip.AddrPort) {
	b, ok := l.c.Receiver.Ack()
	if !ok || !to.IsValid() {
		return
	}
	if _, err := l.c.Source.WriteToUDPAddrPort(b, to); err != nil {
		l.ackErrors++
		l.limited(slog.LevelWarn, "ack", fmt.Sprintf("cluster %s: acknowledgement to %s not sent: %v", l.cluster, to, err))
	}
}

// apply installs an Apply result; it reports whether it did.
func (l *Loop) apply(ctx context.Context, res announce.Result, from netip.AddrPort, now time.Time) bool {
	m, r := res.Msg, l.c.Receiver
	if err := l.c.Installer.Install(ctx, m, res.Owned, res.Unowned); err != nil {
		r.Failed(res)
		l.lastError = err.Error()
		l.limited(slog.LevelError, "apply", fmt.Sprintf("cluster %s: table epoch %d seq %d not applied (the last table stays): %v", l.cluster, m.Epoch, m.Seq, err))
		return false
	}
	r.Applied(res)
	live := 0
	for _, s := range m.Members {
		if s.Up && s.Weight > 0 {
			live++
		}
	}
	was := "?"
	if l.owned >= 0 {
		was = fmt.Sprint(l.owned)
	}
	l.log.Info(fmt.Sprintf("cluster %s: table epoch %d seq %d applied: owns %d buckets (was %s)", l.cluster, m.Epoch, m.Seq, len(res.Owned), was),
		"from", from.String(), "buckets", m.Buckets, "members", len(m.Members), "live", live)
	l.owned = len(res.Owned)
	l.lastError = ""
	l.applied = &node.AppliedTable{Epoch: m.Epoch, Seq: m.Seq, At: now, From: from.String(), Buckets: m.Buckets, Seed: m.Seed,
		Members: len(m.Members), Live: live, Owned: len(res.Owned), Unowned: len(res.Unowned)}
	return true
}

// limited logs msg at level unless a line about reason was logged less
// than LogEvery ago; it then counts it, and the next line says how many
// were suppressed.
func (l *Loop) limited(level slog.Level, reason, msg string, args ...any) {
	now := l.c.Now()
	rl := l.limits[reason]
	if rl == nil {
		rl = &rateLimited{}
		l.limits[reason] = rl
	}
	if !rl.last.IsZero() && now.Sub(rl.last) < l.c.LogEvery {
		rl.suppressed++
		return
	}
	if rl.suppressed > 0 {
		args = append(args, "suppressed", rl.suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
	rl.last, rl.suppressed = now, 0
}

// checkQuiet logs, once, that the appliance has gone quiet: nothing
// authentic and fresh for QuietIntervals intervals. The last table stays.
func (l *Loop) checkQuiet() {
	if l.quiet || l.heard.IsZero() {
		return
	}
	iv := l.interval
	if iv <= 0 {
		iv = defaultInterval
	}
	silent := l.c.Now().Sub(l.heard)
	if silent < QuietIntervals*iv {
		return
	}
	l.quiet, l.dirty = true, true
	keep := "no table applied yet"
	if cur, owned := l.c.Receiver.Current(); cur != nil {
		keep = fmt.Sprintf("keeping table epoch %d seq %d (%d buckets)", cur.Epoch, cur.Seq, len(owned))
	}
	l.log.Warn(fmt.Sprintf("cluster %s: no announcement for %v (the appliance repeats every %v): %s",
		l.cluster, silent.Round(time.Millisecond), iv, keep))
}

// Status is the loop's report now.
func (l *Loop) Status() *node.RunStatus {
	rs := l.c.Base
	rs.Updated = l.c.Now()
	rs.Applied = l.applied
	rs.Heard = l.heard
	rs.IntervalMS = l.interval.Milliseconds()
	rs.Quiet = l.quiet
	rs.Counters = l.c.Receiver.Stats()
	rs.Segments = l.reasm.Stats()
	rs.LastError = l.lastError
	if e, tx, ok := l.c.Receiver.Floor(); ok {
		rs.Floor = &node.Floor{Epoch: e, Tx: tx}
	}
	rs.Epochs = l.c.Receiver.Floors()
	return &rs
}

func (l *Loop) writeStatus(stopped bool) {
	if l.c.Status == nil || !l.dirty {
		return
	}
	rs := l.Status()
	if stopped {
		rs.Stopped = rs.Updated
	}
	if err := l.c.Status(rs); err != nil {
		l.limited(slog.LevelWarn, "status", fmt.Sprintf("cluster %s: run status not written: %v", l.cluster, err))
		return
	}
	l.dirty = false
}
