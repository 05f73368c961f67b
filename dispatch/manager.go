package dispatch

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// Resolver gives the MAC of a LAN host as the appliance's own ARP/NDP has
// resolved it (the router implements it). It must not block.
type Resolver interface {
	LinkAddress(ifname string, addr netip.Addr) ([6]byte, bool)
}

// Manager owns the clusters of a running appliance: it builds their tables,
// keeps the servers' MACs resolved, publishes the snapshots the Forwarder
// reads, and reports their state. Its methods are for the control path; the
// packet path only reads the published snapshots.
type Manager struct {
	log *slog.Logger
	res Resolver
	fwd *Forwarder

	mu       sync.Mutex // guards clusters and their mutable fields
	clusters []*managed

	stop chan struct{}
	wg   sync.WaitGroup
}

// managed is one configured cluster, with its runtime.
type managed struct {
	cfg     config.Cluster
	c       *Cluster // routing mode: the forwarding path's cluster; nil in broadcast mode
	sel     Selector
	servers []Server // the order the selector's indices refer to
	macs    [][6]byte
	stats   map[int]*ServerStats // by server id, kept across table changes
	version uint64
}

// NewManager builds the clusters of cfg. endpoint returns the link endpoint of
// a configured interface.
func NewManager(cfg *config.Config, endpoint func(ifname string) (*tap.Endpoint, bool), res Resolver, errs ErrorSender, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{log: log, res: res, fwd: NewForwarder(errs), stop: make(chan struct{})}
	var routing []*Cluster
	for _, cl := range cfg.Clusters {
		mc := &managed{cfg: cl, stats: map[int]*ServerStats{}}
		if err := mc.rebuild(); err != nil {
			return nil, err
		}
		if cl.Mode == "routing" {
			lan, ok := endpoint(cl.Interface)
			if !ok {
				return nil, fmt.Errorf("dispatch: cluster %s: no interface %q", cl.Name, cl.Interface)
			}
			mc.c = NewCluster(cl.Name, cl.Address, lan)
			mc.publish()
			routing = append(routing, mc.c)
		}
		m.clusters = append(m.clusters, mc)
		log.Info("cluster ready", "cluster", cl.Name, "mode", cl.Mode, "ghost", cl.Address, "servers", len(cl.Servers), "hash", cl.Hash, "buckets", cl.Buckets)
	}
	m.fwd.SetClusters(routing)
	return m, nil
}

// rebuild recomputes the selector from the configuration (every server up
// for now; health checking marks servers down).
func (mc *managed) rebuild() error {
	sel, servers, err := SelectorFor(&mc.cfg, nil)
	if err != nil {
		return fmt.Errorf("dispatch: cluster %s: %w", mc.cfg.Name, err)
	}
	old := map[netip.Addr][6]byte{}
	for i, s := range mc.servers {
		old[s.Addr] = mc.macs[i]
	}
	mc.sel, mc.servers = sel, servers
	mc.macs = make([][6]byte, len(servers))
	for i, s := range servers {
		mc.macs[i] = old[s.Addr]
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
	}
	for i, s := range mc.servers {
		v.Stats[i] = mc.stats[s.ID]
	}
	mc.c.Publish(v)
}

// Forwarder is the datapath stage to install in the router.
func (m *Manager) Forwarder() *Forwarder { return m.fwd }

// Start starts resolving the servers' MACs; Close stops it.
func (m *Manager) Start() {
	m.wg.Add(1)
	go m.resolveLoop()
}

// Close stops the manager's goroutines.
func (m *Manager) Close() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	m.wg.Wait()
}

// resolveLoop keeps every routing cluster's server MACs current: quickly
// while any is unknown, once a second after that.
func (m *Manager) resolveLoop() {
	defer m.wg.Done()
	for {
		all := m.resolveOnce()
		wait := time.Second
		if !all {
			wait = 100 * time.Millisecond
		}
		select {
		case <-m.stop:
			return
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
			mac, ok := m.res.LinkAddress(mc.cfg.Interface, s.Addr)
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
	ID      int    `json:"id"`
	Address string `json:"address"`
	MAC     string `json:"mac"`
	Weight  int    `json:"weight"`
	Up      bool   `json:"up"`
	Buckets int    `json:"buckets"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
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
	Version          uint64            `json:"version"`
	Servers          []ServerStatus    `json:"servers"`
	Counters         map[string]uint64 `json:"counters"`
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
			Counters: map[string]uint64{},
		}
		if mc.cfg.BroadcastAddress.IsValid() {
			cs.BroadcastAddress = mc.cfg.BroadcastAddress.String()
		}
		counts := bucketCounts(mc.sel, len(mc.servers))
		for i, s := range mc.servers {
			ss := ServerStatus{ID: s.ID, Address: s.Addr.String(), Weight: s.Weight, Up: s.Up, Buckets: counts[i]}
			if mc.macs[i] != ([6]byte{}) {
				ss.MAC = net.HardwareAddr(mc.macs[i][:]).String()
			}
			if st := mc.stats[s.ID]; st != nil {
				ss.Packets, ss.Bytes = st.Packets.Load(), st.Bytes.Load()
			}
			cs.Servers = append(cs.Servers, ss)
		}
		if mc.c != nil {
			st := mc.c.Stats()
			cs.Counters["packets"] = st.Packets.Load()
			cs.Counters["bytes"] = st.Bytes.Load()
			cs.Counters["drop_malformed"] = st.Malformed.Load()
			cs.Counters["drop_ttl_exceeded"] = st.TTLExceeded.Load()
			cs.Counters["drop_no_server"] = st.NoServer.Load()
			cs.Counters["drop_no_mac"] = st.NoMAC.Load()
			cs.Counters["drop_write_error"] = st.WriteErrors.Load()
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
