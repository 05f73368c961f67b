package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// RunDir is the subdirectory of the state directory where `ghostnode run`
// reports on each cluster it serves (RunStatus, one CLUSTER.json each).
// Being a directory, it is never mistaken for a cluster's state file.
const RunDir = "run"

// RunStatus is what a `ghostnode run` reports about its cluster, rewritten
// (atomically) as things happen: when a table is applied, and at most
// about once a second otherwise. `ghostnode status` shows it; a restarted
// `ghostnode run` takes its Floor back, so that replaying announcements it
// had already heard gains nothing.
type RunStatus struct {
	Cluster string      `json:"cluster"`
	Mode    config.Mode `json:"mode"`
	Server  int         `json:"server"`
	PID     int         `json:"pid"`
	Listen  string      `json:"listen,omitempty"` // the UDP address announcements are read on (broadcast mode)
	Started time.Time   `json:"started"`
	Updated time.Time   `json:"updated"`
	Stopped time.Time   `json:"stopped,omitzero"` // set when run exits cleanly

	// Broadcast mode: the announcements.
	Applied *AppliedTable `json:"applied,omitempty"` // the table in force, by this run
	// Heard is when the last authentic, fresh announcement arrived;
	// Interval is how often the appliance said it repeats them.
	Heard      time.Time `json:"heard,omitzero"`
	IntervalMS int64     `json:"interval_ms,omitempty"`
	Quiet      bool      `json:"quiet,omitempty"` // nothing heard for 3 intervals: the last table stays
	// Floor is the (epoch, tx) of the last authentic, fresh announcement.
	Floor *Floor `json:"floor,omitempty"`
	// Epochs is the replay state: the last tx heard in each of the
	// appliance's epochs heard last (announce.MaxEpochs at most), restored
	// by the next run.
	Epochs   []announce.EpochFloor `json:"epochs,omitempty"`
	Counters announce.Counters     `json:"counters"`
	// Segments counts the segments of announcements longer than one
	// datagram, by outcome of their reassembly.
	Segments  announce.ReassemblyCounters `json:"segments"`
	LastError string                      `json:"last_error,omitempty"` // the last failure to apply a table
}

// AppliedTable is the announced table a run installed last.
type AppliedTable struct {
	Epoch   uint64    `json:"epoch"`
	Seq     uint64    `json:"seq"`
	At      time.Time `json:"at"`
	From    string    `json:"from,omitempty"` // the sender's address and port
	Buckets int       `json:"buckets"`
	Seed    uint32    `json:"seed"`
	Members int       `json:"members"`
	Live    int       `json:"live"`  // members up with weight > 0
	Owned   int       `json:"owned"` // buckets this server owns in it
	// Unowned is the buckets it grants no server: new connections to them
	// wait until their next owner has them.
	Unowned int `json:"unowned"`
}

// Floor orders announcements: see package announce.
type Floor struct {
	Epoch uint64 `json:"epoch"`
	Tx    uint64 `json:"tx"`
}

// ErrRunning: another `ghostnode run` serves the cluster.
var ErrRunning = errors.New("ghostnode run is already serving it")

func (n *Node) runPath(cluster string) string {
	return filepath.Join(n.store().dir, RunDir, cluster+".json")
}

func (n *Node) runLockPath(cluster string) string {
	return filepath.Join(n.store().dir, RunDir, "."+cluster+".lock")
}

// LockRun takes the cluster's run lock, held by a `ghostnode run` for as
// long as it serves the cluster (the kernel drops it when the process
// dies, however it dies). It fails with ErrRunning when another process
// holds it. The returned function releases it.
func (n *Node) LockRun(cluster string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(n.runLockPath(cluster)), 0o755); err != nil {
		return nil, fmt.Errorf("run lock: %w", err)
	}
	f, err := os.OpenFile(n.runLockPath(cluster), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("cluster %s: %w", cluster, ErrRunning)
		}
		return nil, fmt.Errorf("run lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// RunActive reports whether a `ghostnode run` holds the cluster's run lock
// now.
func (n *Node) RunActive(cluster string) bool {
	f, err := os.Open(n.runLockPath(cluster))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// WriteRunStatus replaces the cluster's run status.
func (n *Node) WriteRunStatus(rs *RunStatus) error {
	data, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(n.runPath(rs.Cluster), append(data, '\n')); err != nil {
		return fmt.Errorf("writing run status %s: %w", n.runPath(rs.Cluster), err)
	}
	return nil
}

// ReadRunStatus returns the cluster's run status; nil, nil when no run has
// written one.
func (n *Node) ReadRunStatus(cluster string) (*RunStatus, error) {
	data, err := os.ReadFile(n.runPath(cluster))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rs RunStatus
	if err := dec.Decode(&rs); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrBadState, n.runPath(cluster), err)
	}
	if rs.Cluster != cluster {
		return nil, fmt.Errorf("%w %s: it is about cluster %q", ErrBadState, n.runPath(cluster), rs.Cluster)
	}
	return &rs, nil
}

// Apply makes a broadcast cluster's filter hold spec.Filter; it is how
// `ghostnode run` installs each announced table. When the cluster is set
// up with the same ghost, bucket count, seed and server id, only the owned
// set changes, in one transaction (Update: rules, counters and open
// connections stay), and nothing is printed. Otherwise, and when the
// kernel's table has gone or differs from what setup made, it runs Setup,
// which sets the cluster up or replaces its table, printing each change.
func (n *Node) Apply(ctx context.Context, spec Spec) error {
	if spec.Mode != ModeBroadcast || spec.Filter == nil {
		return fmt.Errorf("%w: cluster %s: only a broadcast cluster's filter can be applied", ErrBadSpec, spec.Cluster)
	}
	st, _, err := n.store().load(spec.Cluster)
	if err != nil {
		return err
	}
	f := spec.Filter
	if st != nil && st.Table != nil && st.Mode == ModeBroadcast && st.Ghost == spec.Ghost &&
		st.Table.Buckets == f.Buckets && st.Table.Seed == f.Seed && st.Table.Server == f.Server {
		quiet := *n
		quiet.Out = nil
		// Pins that changed replace the table whole (ErrDifferent).
		err := quiet.updateSets(ctx, spec.Cluster, f.Owned, f.Unowned, &pinSets{here: f.Pinned, away: f.PinnedAway})
		if !errors.Is(err, ErrNoTable) && !errors.Is(err, ErrDifferent) {
			return err
		}
		n.printf("cluster %s: %v; setting it up again", spec.Cluster, err)
	}
	return n.Setup(ctx, spec)
}
