package announce

import (
	"log/slog"
	"sync/atomic"

	"github.com/ghostrouter/ghostrouter/dispatch"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// Sender delivers one announcement datagram of cluster cl to the cluster's
// LAN: over UDP, to the LAN's subnet broadcast address, or to ff02::1 on an
// IPv6-only LAN (config.Interface.AnnounceTo of cl.Interface), and port
// cl.AnnouncePort. It is
// called with the dispatch manager's lock held and must not block for
// long; the datagram is not retained by the Announcer after the call.
type Sender func(cl *config.Cluster, datagram []byte) error

// Announcer is the appliance's side: it turns a broadcast cluster's
// membership into authenticated datagrams and hands them to a Sender. It
// implements dispatch.Announcer; the manager calls Announce on every table
// change and again every announce_interval. Safe for concurrent use.
type Announcer struct {
	epoch uint64
	send  Sender
	log   *slog.Logger

	tx      atomic.Uint64 // the last Tx used, for all clusters
	sent    atomic.Uint64
	failed  atomic.Uint64
	failing atomic.Bool // the last send failed: log only the first failure of a run
}

var _ dispatch.Announcer = (*Announcer)(nil)

// NewAnnouncer returns an announcer for one run of the appliance, named by
// epoch: NewEpoch's random number, a new one on every start (receivers
// treat a datagram of an epoch they heard before as a possible replay). A
// nil log discards.
func NewAnnouncer(epoch uint64, send Sender, log *slog.Logger) *Announcer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Announcer{epoch: epoch, send: send, log: log}
}

// Epoch is the announcer's epoch.
func (a *Announcer) Epoch() uint64 { return a.epoch }

// Message is the announcement of cl's membership servers at table version
// version, with the next Tx.
func (a *Announcer) Message(cl *config.Cluster, version uint64, servers []dispatch.Server) *Message {
	return &Message{
		Cluster:  cl.Name,
		Epoch:    a.epoch,
		Seq:      version,
		Tx:       a.tx.Add(1),
		Interval: cl.AnnounceInterval,
		Hash:     cl.Hash,
		Seed:     cl.Seed,
		Buckets:  cl.Buckets,
		Ghost:    cl.Address,
		Members:  MembersFrom(servers),
	}
}

// Announce sends one announcement of cl (implementing dispatch.Announcer).
// Failures are counted; the first of a run of failures is logged, and so
// is the recovery.
func (a *Announcer) Announce(cl *config.Cluster, version uint64, servers []dispatch.Server) {
	m := a.Message(cl, version, servers)
	if m.Hash == "" {
		m.Hash = config.HashJhash
	}
	b, err := m.Marshal(cl.AnnounceKey)
	if err == nil {
		err = a.send(cl, b)
	}
	if err != nil {
		a.failed.Add(1)
		if !a.failing.Swap(true) {
			a.log.Warn("announcement not sent", "cluster", cl.Name, "seq", version, "err", err)
		}
		return
	}
	a.sent.Add(1)
	if a.failing.Swap(false) {
		a.log.Info("announcements sent again", "cluster", cl.Name, "seq", version)
	}
}

// Stats are the datagrams sent and those that failed (to encode or send).
func (a *Announcer) Stats() (sent, failed uint64) { return a.sent.Load(), a.failed.Load() }
