package dispatch

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/icmp"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// ErrorSender sends an ICMP error about a received frame back to its sender
// (the router implements it, with its rate limit).
type ErrorSender interface {
	SendICMPError(in *tap.Endpoint, frame []byte, typ, code uint8, rest [4]byte)
	SendICMPv6Error(in *tap.Endpoint, frame []byte, typ, code uint8, rest [4]byte)
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
	// TooBig: larger than the LAN MTU with DF set (IPv4) or IPv6: ICMP
	// fragmentation needed or packet too big sent with the LAN MTU, dropped.
	TooBig atomic.Uint64
	// Fragmented: IPv4 without DF larger than the LAN MTU, sent as fragments
	// (one count per packet).
	Fragmented atomic.Uint64
	// Unfragmentable: larger than the LAN MTU, without DF, and either a TCP
	// super-frame (segmentation offload) or too short an MTU to carry a
	// fragment: dropped.
	Unfragmentable atomic.Uint64
	// ICMPErrors: ICMP errors dispatched by the client their quoted packet
	// was sent to; ICMPMalformed: ICMP errors whose quoted header is not a
	// whole header of a packet from the ghost: dropped.
	ICMPErrors, ICMPMalformed atomic.Uint64
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
	flows  FlowStats // the transition memory's (transition.go)
}

// View is an immutable snapshot of what the packet path needs for one
// cluster: the selector, the servers its indices refer to, their MACs and
// counters. It is replaced whole.
type View struct {
	Version  uint64
	Selector core.Selector
	Servers  []core.Server
	MACs     [][6]byte // per server; all zero when unresolved
	Stats    []*ServerStats
	// Trans is the open transition window (transition.go); nil in the
	// steady state.
	Trans *transition
	// pins are the cluster's pins in effect (pins.go); nil without.
	pins core.PinMap
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

// Forwarder is the dispatch stage of the router's datapath: a stage.Stage that
// takes IPv4 and IPv6 packets for a routing-mode ghost address, whatever link
// they arrive on, and writes them to the chosen server's MAC on the cluster's
// LAN with only the TTL (hop limit) changed. Everything else passes on.
type Forwarder struct {
	clusters atomic.Pointer[map[netip.Addr]*Cluster]
	errs     ErrorSender
	frags    sync.Pool // *[]byte of tap.MaxFrame bytes: fragments being built
}

var _ stage.Stage = (*Forwarder)(nil)

// NewForwarder returns a forwarder with no clusters.
func NewForwarder(errs ErrorSender) *Forwarder {
	f := &Forwarder{errs: errs}
	f.frags.New = func() any {
		b := make([]byte, tap.MaxFrame)
		return &b
	}
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

// Name implements stage.Stage.
func (f *Forwarder) Name() string { return "dispatch" }

// Inbound implements stage.Stage: a packet for a routing-mode ghost is
// Consumed (dispatched, or fragmented and dispatched), Answered (time
// exceeded, too big) or Dropped with its reason; anything else passes. It
// allocates nothing.
func (f *Forwarder) Inbound(in *tap.Endpoint, frame []byte) stage.Verdict {
	if len(frame) < hdr.EthLen+hdr.IPv4Min || hdr.IsGroup(frame) {
		return stage.Pass
	}
	var dst netip.Addr
	v6 := false
	switch {
	case hdr.IsIPv4(frame):
		dst = netip.AddrFrom4(hdr.IP4(frame[hdr.EthLen:]).Dst())
	case hdr.IsIPv6(frame):
		dst = netip.AddrFrom16(hdr.IP6(frame[hdr.EthLen:]).Dst())
		v6 = true
	default:
		return stage.Pass
	}
	c := (*f.clusters.Load())[dst]
	if c == nil {
		return stage.Pass
	}
	if v6 {
		return f.dispatch6(c, in, frame)
	}
	return f.dispatch4(c, in, frame)
}

func (f *Forwarder) dispatch4(c *Cluster, in *tap.Endpoint, frame []byte) stage.Verdict {
	ip := hdr.IP4(frame[hdr.EthLen:])
	hl := ip.HeaderLen()
	tot := ip.TotalLen()
	if ip.Version() != 4 || hl < hdr.IPv4Min || tot < hl || tot > len(ip) || checksum.Checksum(ip[:hl], 0) != 0xffff {
		c.stats.Malformed.Add(1)
		return stage.Drop(stage.Malformed)
	}
	if ip.TTL() <= 1 {
		c.stats.TTLExceeded.Add(1)
		if f.errs != nil {
			f.errs.SendICMPError(in, frame[:hdr.EthLen+tot], icmp.TypeTimeExceeded, icmp.CodeTTLExceeded, [4]byte{})
		}
		return stage.Answer(stage.TTLExceeded)
	}
	var v *View
	var idx int
	var mac [6]byte
	var why stage.Reason
	if ip.Protocol() == hdr.ProtoICMP {
		// An ICMP error goes where the flow it quotes goes (icmperr.go).
		v, idx, mac, why = c.pickICMP4(ip[:tot], hl)
	} else {
		l4 := hl
		if ip.FragOffset() != 0 {
			l4 = noL4 // a later fragment: no ports
		}
		v, idx, mac, why = c.pickFlow(netip.AddrFrom4(ip.Src()), ip[:tot], l4, ip.Protocol())
	}
	if why != stage.None {
		return stage.Drop(why)
	}
	mtu, seg := c.LAN.MTU(), 0
	if tot > int(mtu) { // a super-frame always is; a packet within the MTU fits
		seg = segmentSize(in, frame)
	}
	if hdr.Exceeds(ip, hl, tot, ip.Protocol(), seg, mtu) {
		switch {
		case ip.DF():
			c.stats.TooBig.Add(1)
			if f.errs != nil {
				f.errs.SendICMPError(in, frame[:hdr.EthLen+tot], icmp.TypeDestUnreachable, icmp.CodeFragNeeded, icmp.MTUWord(mtu))
			}
			return stage.Answer(stage.TooBig)
		case seg > 0 || int(mtu) < hl+8:
			c.stats.Unfragmentable.Add(1)
			return stage.Drop(stage.Unfragmentable)
		default:
			hdr.DecTTL(ip)
			return f.fragment(c, v, idx, mac, ip[:tot], hl, int(mtu))
		}
	}
	hdr.DecTTL(ip)
	return f.send(c, v, idx, mac, frame[:hdr.EthLen+tot], tot)
}

// segmentSize is the TCP segment size of a super-frame received on in, or 0.
func segmentSize(in *tap.Endpoint, frame []byte) int {
	if in == nil {
		return 0
	}
	return in.SegmentSize(frame)
}

// fragment sends the IPv4 packet ip (header length hl, TTL already
// decremented) to the server as fragments that fit mtu, as RFC 791 cuts
// them: every fragment but the last carries a multiple of 8 data bytes, the
// first keeps all options, later ones only those with the copied flag. A
// packet that was itself a fragment keeps its offset and MF on the last
// piece. All fragments go to the one server: the hash is on the source.
func (f *Forwarder) fragment(c *Cluster, v *View, idx int, mac [6]byte, ip []byte, hl, mtu int) stage.Verdict {
	bp := f.frags.Get().(*[]byte)
	defer f.frags.Put(bp)
	buf := *bp
	var later [40]byte // options copied into fragments after the first
	nl := hdr.CopiedOptions(later[:], ip[hdr.IPv4Min:hl])
	fw := hdr.IP4(ip).FlagsFrag()
	baseOff := int(fw & 0x1fff)
	payload := ip[hl:]
	if !fragmentFits(baseOff, len(payload)) {
		c.stats.Malformed.Add(1)
		return stage.Drop(stage.Malformed)
	}
	for off := 0; off < len(payload); {
		opts := ip[hdr.IPv4Min:hl]
		if off > 0 {
			opts = later[:nl]
		}
		h := hdr.IPv4Min + len(opts)
		n := len(payload) - off
		if h+n > mtu {
			n = (mtu - h) &^ 7
		}
		last := off+n == len(payload)
		out := buf[:hdr.EthLen+h+n]
		copy(out[0:6], mac[:])
		copy(out[6:12], c.lanMAC[:])
		binary.BigEndian.PutUint16(out[12:14], hdr.EtherIPv4)
		fh := out[hdr.EthLen : hdr.EthLen+h]
		copy(fh, ip[:hdr.IPv4Min])
		copy(fh[hdr.IPv4Min:], opts)
		fh[0] = 0x40 | byte(h/4)
		binary.BigEndian.PutUint16(fh[2:4], uint16(h+n))
		flags := fw & 0xe000 &^ hdr.FlagMF
		if !last || fw&hdr.FlagMF != 0 {
			flags |= hdr.FlagMF
		}
		binary.BigEndian.PutUint16(fh[6:8], flags|uint16(baseOff+off/8))
		fh[10], fh[11] = 0, 0
		binary.BigEndian.PutUint16(fh[10:12], ^checksum.Checksum(fh, 0))
		copy(out[hdr.EthLen+h:], payload[off:off+n])
		if err := c.LAN.WriteFrame(out); err != nil {
			c.stats.WriteErrors.Add(1)
			return stage.Drop(stage.WriteError)
		}
		off += n
	}
	c.stats.Fragmented.Add(1)
	c.stats.Packets.Add(1)
	c.stats.Bytes.Add(uint64(len(ip)))
	if idx < len(v.Stats) {
		v.Stats[idx].Packets.Add(1)
		v.Stats[idx].Bytes.Add(uint64(len(ip)))
	}
	return stage.Consumed
}

func (f *Forwarder) dispatch6(c *Cluster, in *tap.Endpoint, frame []byte) stage.Verdict {
	ip := hdr.IP6(frame[hdr.EthLen:])
	tot := hdr.IPv6Len + ip.PayloadLen()
	if ip.Version() != 6 || tot > len(ip) {
		c.stats.Malformed.Add(1)
		return stage.Drop(stage.Malformed)
	}
	if ip.HopLimit() <= 1 {
		c.stats.TTLExceeded.Add(1)
		if f.errs != nil {
			f.errs.SendICMPv6Error(in, frame[:hdr.EthLen+tot], icmp.Type6TimeExceeded, icmp.Code6HopLimit, [4]byte{})
		}
		return stage.Answer(stage.TTLExceeded)
	}
	var v *View
	var idx int
	var mac [6]byte
	var why stage.Reason
	if ip.NextHeader() == hdr.ProtoICMPv6 {
		v, idx, mac, why = c.pickICMP6(ip[:tot])
	} else {
		v, idx, mac, why = c.pickFlow(netip.AddrFrom16(ip.Src()), ip[:tot], hdr.IPv6Len, ip.NextHeader())
	}
	if why != stage.None {
		return stage.Drop(why)
	}
	if mtu := c.LAN.MTU(); tot > int(mtu) && hdr.Exceeds(ip, hdr.IPv6Len, tot, ip.NextHeader(), segmentSize(in, frame), mtu) {
		// Routers never fragment IPv6 (RFC 8200 5).
		c.stats.TooBig.Add(1)
		if f.errs != nil {
			f.errs.SendICMPv6Error(in, frame[:hdr.EthLen+tot], icmp.Type6PacketTooBig, 0, icmp.MTUWord(mtu))
		}
		return stage.Answer(stage.TooBig)
	}
	ip[7]-- // the hop limit
	return f.send(c, v, idx, mac, frame[:hdr.EthLen+tot], tot)
}

// send rewrites the Ethernet header in place and writes the frame to the LAN.
func (f *Forwarder) send(c *Cluster, v *View, idx int, mac [6]byte, frame []byte, ipLen int) stage.Verdict {
	copy(frame[0:6], mac[:])
	copy(frame[6:12], c.lanMAC[:])
	if err := c.LAN.WriteFrame(frame); err != nil {
		c.stats.WriteErrors.Add(1)
		return stage.Drop(stage.WriteError)
	}
	c.stats.Packets.Add(1)
	c.stats.Bytes.Add(uint64(ipLen))
	if idx < len(v.Stats) {
		v.Stats[idx].Packets.Add(1)
		v.Stats[idx].Bytes.Add(uint64(ipLen))
	}
	return stage.Consumed
}
