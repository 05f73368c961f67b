package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// DefaultStateDir is where state files live unless told otherwise. /run is
// emptied at boot, like the addresses, sysctls and nftables it describes.
const DefaultStateDir = "/run/ghostnode"

// StateVersion is the version of the state file format written.
const StateVersion = 1

// State is what setup did for one cluster, kept in STATE_DIR/CLUSTER.json so
// that teardown undoes exactly that. It is written before each change
// (write-ahead), so that a setup killed half-way leaves a file teardown can
// use; undoing a change that was recorded but never made is harmless.
type State struct {
	Version int         `json:"version"`
	Cluster string      `json:"cluster"`
	Mode    config.Mode `json:"mode"`  // "routing" or "broadcast"
	Ghost   netip.Addr  `json:"ghost"` // the cluster address
	Dev     string      `json:"dev"`   // the interface holding the ghost
	LAN     string      `json:"lan"`   // the interface holding the server's primary address

	Address *AddressRecord `json:"address,omitempty"`
	// Sysctls are in the order setup first touched them.
	Sysctls []SysctlRecord `json:"sysctls,omitempty"`
	Table   *TableRecord   `json:"table,omitempty"`
}

// AddressRecord is the ghost address on Dev.
type AddressRecord struct {
	Prefix netip.Prefix `json:"prefix"` // ghost/32 or ghost/128
	Dev    string       `json:"dev"`
	// Added: setup added it, teardown removes it. False: it was there
	// before setup, and stays.
	Added bool `json:"added"`
}

// SysctlRecord is one sysctl setup needs.
type SysctlRecord struct {
	Key string `json:"key"` // path under /proc/sys: "net/ipv4/conf/all/arp_ignore"
	Old string `json:"old"` // the value when setup first saw it
	Set string `json:"set"` // the value setup writes when the current one is not acceptable
	// Changed: setup wrote Set, teardown restores Old. False: the value was
	// acceptable as found and teardown leaves it alone.
	Changed bool `json:"changed"`
}

// TableRecord is the broadcast-mode filter.
type TableRecord struct {
	Family  string `json:"family"` // "ip" or "ip6"
	Name    string `json:"name"`   // "ghost_" + cluster
	Buckets int    `json:"buckets"`
	Seed    uint32 `json:"seed"`
	Server  int    `json:"server"` // this server's id; -1 when given by flags without --id
	// Added: setup created the table, teardown deletes it.
	Added bool `json:"added"`
}

// FilterSpec is the filter of the recorded table with the given owned
// buckets.
func (st *State) FilterSpec(owned []uint32) *filter.Spec {
	t := st.Table
	return &filter.Spec{Cluster: st.Cluster, Ghost: st.Ghost, Buckets: t.Buckets, Seed: t.Seed, Server: t.Server, Owned: owned}
}

func (st *State) sysctl(key string) *SysctlRecord {
	for i := range st.Sysctls {
		if st.Sysctls[i].Key == key {
			return &st.Sysctls[i]
		}
	}
	return nil
}

func (st *State) clone() *State {
	c := *st
	if st.Address != nil {
		a := *st.Address
		c.Address = &a
	}
	c.Sysctls = slices.Clone(st.Sysctls)
	if st.Table != nil {
		t := *st.Table
		c.Table = &t
	}
	return &c
}

// store is the state directory.
type store struct{ dir string }

func (s store) path(cluster string) string { return filepath.Join(s.dir, cluster+".json") }

// load reads a cluster's state; nil, nil when there is none.
func (s store) load(cluster string) (*State, []byte, error) {
	data, err := os.ReadFile(s.path(cluster))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	st, err := decodeState(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w %s: %v", ErrBadState, s.path(cluster), err)
	}
	if st.Cluster != cluster {
		return nil, nil, fmt.Errorf("%w %s: it is about cluster %q", ErrBadState, s.path(cluster), st.Cluster)
	}
	return st, data, nil
}

func decodeState(data []byte) (*State, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st State
	if err := dec.Decode(&st); err != nil {
		return nil, err
	}
	if st.Version != StateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, StateVersion)
	}
	if dec.More() {
		return nil, fmt.Errorf("more after the state")
	}
	if err := st.check(); err != nil {
		return nil, err
	}
	return &st, nil
}

// all reads every cluster's state, sorted by cluster name.
func (s store) all() ([]*State, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*State
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		st, _, err := s.load(name)
		if err != nil {
			return nil, err
		}
		if st != nil {
			out = append(out, st)
		}
	}
	return out, nil
}

// save writes a cluster's state atomically (temporary file, fsync, rename).
func (s store) save(st *State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return s.write(st.Cluster, append(data, '\n'))
}

// write puts data in place as the cluster's state file; nil data removes it.
func (s store) write(cluster string, data []byte) error {
	if err := writeFile(s.path(cluster), data); err != nil {
		return fmt.Errorf("writing state %s: %w", s.path(cluster), err)
	}
	return nil
}

// writeFile replaces the file at path with data atomically (temporary file
// in the same directory, fsync, rename), creating the directory; nil data
// removes the file.
func writeFile(path string, data []byte) error {
	if data == nil {
		err := os.Remove(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// lock takes the directory's exclusive lock, which serializes every
// ghostnode command that changes the host (setup, update, teardown, and the
// listener of `ghostnode run`). The returned function releases it.
func (s store) lock() (func(), error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	return func() { f.Close() }, nil
}
