package dispatch

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// ErrorSender sends an ICMP error about a received frame back to its sender
// (the router implements it, with its rate limit).
type ErrorSender interface {
	SendICMPError(in *tap.Endpoint, frame []byte, typ, code uint8, rest [4]byte)
	SendICMPv6Error(in *tap.Endpoint, frame []byte, typ, code uint8)
}

// Drop reasons, each a counter of ClusterStats.
type ClusterStats struct {
	Packets     atomic.Uint64 // dispatched to a server
	Bytes       atomic.Uint64 // IP bytes dispatched
	Malformed   atomic.Uint64 // bad version, header length, total length or checksum: dropped
	TTLExceeded atomic.Uint64 // arrived with TTL/hop limit <= 1: time exceeded sent, dropped
	NoServer    atomic.Uint64 // no live server: dropped
	NoMAC       atomic.Uint64 // the chosen server's MAC is not resolved yet: dropped
	WriteErrors atomic.Uint64 // the LAN link refused the frame: dropped
}

// ServerStats counts what one server was sent.
type ServerStats struct {
	Packets atomic.Uint64
	Bytes   atomic.Uint64
}

// Cluster is one routing-mode cluster in the forwarding path.
type Cluster struct {
	Name  string
	Ghost netip.Addr
	LAN   *tap.Endpoint // the servers' link
	// lanMAC is the appliance's MAC on the LAN: the source of dispatched frames.
	lanMAC [6]byte
	view   atomic.Pointer[View]
	stats  ClusterStats
}

// View is an immutable snapshot of what the packet path needs for one
// cluster: the selector, the servers its indices refer to, their MACs and
// counters. It is replaced whole.
type View struct {
	Version  uint64
	Selector Selector
	Servers  []Server
	MACs     [][6]byte // per server; all zero when unresolved
	Stats    []*ServerStats
}

// NewCluster returns a cluster dispatching ghost traffic out of lan.
func NewCluster(name string, ghost netip.Addr, lan *tap.Endpoint) *Cluster {
	return &Cluster{Name: name, Ghost: ghost, LAN: lan, lanMAC: lan.MACBytes()}
}

// Stats returns the cluster's counters.
func (c *Cluster) Stats() *ClusterStats { return &c.stats }

// View returns the current snapshot (nil before the first Publish).
func (c *Cluster) View() *View { return c.view.Load() }

// Publish makes v the cluster's snapshot. Packets in flight finish with the
// old one; no lock is taken on the packet path.
func (c *Cluster) Publish(v *View) { c.view.Store(v) }

// Forwarder is the dispatch stage of the router's datapath: a tap.Hook that
// takes IPv4 and IPv6 packets for a routing-mode ghost address, whatever link
// they arrive on, and writes them to the chosen server's MAC on the cluster's
// LAN with only the TTL (hop limit) changed. Everything else passes on.
type Forwarder struct {
	clusters atomic.Pointer[map[netip.Addr]*Cluster]
	errs     ErrorSender
}

var _ tap.Hook = (*Forwarder)(nil)

// NewForwarder returns a forwarder with no clusters.
func NewForwarder(errs ErrorSender) *Forwarder {
	f := &Forwarder{errs: errs}
	m := map[netip.Addr]*Cluster{}
	f.clusters.Store(&m)
	return f
}

// SetClusters replaces the set of clusters the forwarder serves.
func (f *Forwarder) SetClusters(cs []*Cluster) {
	m := make(map[netip.Addr]*Cluster, len(cs))
	for _, c := range cs {
		m[c.Ghost] = c
	}
	f.clusters.Store(&m)
}

// Clusters returns the clusters served now.
func (f *Forwarder) Clusters() map[netip.Addr]*Cluster { return *f.clusters.Load() }

const (
	ethLen    = 14
	ipv4Min   = 20
	ipv6Len   = 40
	icmpTimeX = 11
	icmp6Time = 3
)

// Inbound implements tap.Hook. It allocates nothing.
func (f *Forwarder) Inbound(in *tap.Endpoint, frame []byte) bool {
	if len(frame) < ethLen+ipv4Min || frame[0]&1 != 0 {
		return false
	}
	var dst netip.Addr
	v6 := false
	switch {
	case frame[12] == 0x08 && frame[13] == 0x00:
		dst = netip.AddrFrom4([4]byte(frame[ethLen+16 : ethLen+20]))
	case frame[12] == 0x86 && frame[13] == 0xdd:
		if len(frame) < ethLen+ipv6Len {
			return false
		}
		dst = netip.AddrFrom16([16]byte(frame[ethLen+24 : ethLen+40]))
		v6 = true
	default:
		return false
	}
	c := (*f.clusters.Load())[dst]
	if c == nil {
		return false
	}
	if v6 {
		f.dispatch6(c, in, frame)
	} else {
		f.dispatch4(c, in, frame)
	}
	return true
}

func (f *Forwarder) dispatch4(c *Cluster, in *tap.Endpoint, frame []byte) {
	ip := frame[ethLen:]
	hl := int(ip[0]&0x0f) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || hl < ipv4Min || tot < hl || tot > len(ip) || checksum.Checksum(ip[:hl], 0) != 0xffff {
		c.stats.Malformed.Add(1)
		return
	}
	if ip[8] <= 1 {
		c.stats.TTLExceeded.Add(1)
		if f.errs != nil {
			f.errs.SendICMPError(in, frame[:ethLen+tot], icmpTimeX, 0, [4]byte{})
		}
		return
	}
	v, idx, mac, ok := c.pick(netip.AddrFrom4([4]byte(ip[12:16])))
	if !ok {
		return
	}
	hdr.DecTTL(ip)
	f.send(c, v, idx, mac, frame[:ethLen+tot], tot)
}

func (f *Forwarder) dispatch6(c *Cluster, in *tap.Endpoint, frame []byte) {
	ip := frame[ethLen:]
	tot := ipv6Len + int(binary.BigEndian.Uint16(ip[4:6]))
	if ip[0]>>4 != 6 || tot > len(ip) {
		c.stats.Malformed.Add(1)
		return
	}
	if ip[7] <= 1 {
		c.stats.TTLExceeded.Add(1)
		if f.errs != nil {
			f.errs.SendICMPv6Error(in, frame[:ethLen+tot], icmp6Time, 0)
		}
		return
	}
	v, idx, mac, ok := c.pick(netip.AddrFrom16([16]byte(ip[8:24])))
	if !ok {
		return
	}
	ip[7]--
	f.send(c, v, idx, mac, frame[:ethLen+tot], tot)
}

// pick chooses the server for client in the current snapshot; when there
// is none to send to, it counts why and reports false.
func (c *Cluster) pick(client netip.Addr) (v *View, idx int, mac [6]byte, ok bool) {
	v = c.view.Load()
	if v == nil {
		c.stats.NoServer.Add(1)
		return nil, 0, mac, false
	}
	idx, _, ok = v.Selector.Select(client)
	if !ok {
		c.stats.NoServer.Add(1)
		return nil, 0, mac, false
	}
	if mac = v.MACs[idx]; mac == ([6]byte{}) {
		c.stats.NoMAC.Add(1)
		return nil, 0, mac, false
	}
	return v, idx, mac, true
}

// send rewrites the Ethernet header in place and writes the frame to the LAN.
func (f *Forwarder) send(c *Cluster, v *View, idx int, mac [6]byte, frame []byte, ipLen int) {
	copy(frame[0:6], mac[:])
	copy(frame[6:12], c.lanMAC[:])
	if err := c.LAN.WriteFrame(frame); err != nil {
		c.stats.WriteErrors.Add(1)
		return
	}
	c.stats.Packets.Add(1)
	c.stats.Bytes.Add(uint64(ipLen))
	if idx < len(v.Stats) {
		v.Stats[idx].Packets.Add(1)
		v.Stats[idx].Bytes.Add(uint64(ipLen))
	}
}
