package main

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/router"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// announceSender sends broadcast clusters' table announcements from the
// appliance's own address on the cluster's LAN to that LAN's subnet
// broadcast address, or on an IPv6-only LAN to the all-nodes group ff02::1
// (config.Interface.AnnounceTo), one UDP socket per interface. The servers
// acknowledge to that socket: one reader goroutine per socket hands what
// arrives to onAck (announce.Announcer.HandleAck), until close.
//
// It also listens, on each broadcast cluster's LAN and announce port, to
// what another appliance announces there (listen): a backup hands that to
// onHeard (announceGate.hear), so that it can continue the master's
// announcements when it takes over.
type announceSender struct {
	r       *router.Router
	onAck   func(b []byte, from netip.AddrPort)
	onHeard func(ifname string, from netip.Addr, b []byte)
	mu      sync.Mutex // guards socks and ears
	socks   map[string]*router.UDPSender
	ears    map[earKey]*router.UDPSender
	wg      sync.WaitGroup
}

// earKey names one listening socket: an interface, a family, a port.
type earKey struct {
	ifname string
	v6     bool
	port   int
}

func newAnnounceSender(r *router.Router) *announceSender {
	return &announceSender{r: r, socks: map[string]*router.UDPSender{}, ears: map[earKey]*router.UDPSender{}}
}

// listen makes sure a socket hears cl's announce port on its LAN. A failure
// is returned (the caller logs it once per cluster): that appliance then
// takes over starting afresh.
func (s *announceSender) listen(cl *config.Cluster) error {
	l, ok := s.r.Link(cl.Interface)
	if !ok {
		return fmt.Errorf("no interface %s", cl.Interface)
	}
	_, dst, ok := l.Config.AnnounceTo()
	if !ok {
		return fmt.Errorf("interface %s has nothing to hear announcements on", cl.Interface)
	}
	k := earKey{ifname: cl.Interface, v6: dst.Is6(), port: cl.AnnouncePort}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ears == nil || s.ears[k] != nil {
		return nil
	}
	sock, err := s.r.ListenUDP(cl.Interface, dst, uint16(cl.AnnouncePort))
	if err != nil {
		return err
	}
	s.ears[k] = sock
	s.wg.Add(1)
	go s.hear(k.ifname, sock)
	return nil
}

// hear reads one listening socket until it is closed. A datagram longer
// than any announcement is cut short and then refused by its signature.
// A large announcement arrives in segments: they are reassembled, with the
// servers' bounds, before onHeard sees the whole announcement.
func (s *announceSender) hear(ifname string, sock *router.UDPSender) {
	defer s.wg.Done()
	buf := make([]byte, announce.MaxDatagram)
	re := announce.NewReassembler(announce.DefaultReassemblyTimeout, announce.DefaultReassemblies)
	for {
		n, from, err := sock.Recv(buf)
		if err != nil {
			return
		}
		if body, ok := heardAnnouncement(re, from.Addr().Unmap(), buf[:n], time.Now()); ok && s.onHeard != nil {
			s.onHeard(ifname, from.Addr().Unmap(), body)
		}
	}
}

// heardAnnouncement returns the announcement a datagram heard from another
// appliance completes: the datagram itself when it is not a segment, the
// reassembled announcement when it is the segment that completes one, and
// false while segments are still missing (or were refused by re's bounds).
func heardAnnouncement(re *announce.Reassembler, from netip.Addr, b []byte, now time.Time) ([]byte, bool) {
	if !announce.IsSegment(b) {
		return b, true
	}
	return re.Add(from, b, now)
}

// readAcks reads one socket's incoming datagrams until it is closed. A
// datagram longer than any acknowledgement is cut short by the buffer and
// then refused by HandleAck's length check.
func (s *announceSender) readAcks(sock *router.UDPSender) {
	defer s.wg.Done()
	buf := make([]byte, announce.MaxAck+1)
	for {
		n, from, err := sock.Recv(buf)
		if err != nil {
			return
		}
		if s.onAck != nil {
			s.onAck(buf[:n], from)
		}
	}
}

// send implements announce.Sender: an announcement longer than one
// datagram carries goes out as its segments (announce.Segments), back to
// back.
func (s *announceSender) send(cl *config.Cluster, body []byte) error {
	segs, err := announce.Segments(body)
	if err != nil {
		return err
	}
	l, ok := s.r.Link(cl.Interface)
	if !ok {
		return fmt.Errorf("no interface %s", cl.Interface)
	}
	p, dst, ok := l.Config.AnnounceTo()
	if !ok {
		return fmt.Errorf("interface %s has no IPv4 subnet broadcast address and no IPv6 address to announce from", cl.Interface)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sock := s.socks[cl.Interface]
	if sock == nil {
		var err error
		if sock, err = s.r.NewUDPSender(cl.Interface, p.Addr()); err != nil {
			return err
		}
		s.socks[cl.Interface] = sock
		s.wg.Add(1)
		go s.readAcks(sock)
	}
	to := netip.AddrPortFrom(dst, uint16(cl.AnnouncePort))
	for k, seg := range segs {
		if err := sock.Send(seg, to); err != nil {
			if len(segs) > 1 {
				return fmt.Errorf("segment %d of %d: %w", k+1, len(segs), err)
			}
			return err
		}
	}
	return nil
}

func (s *announceSender) close() {
	s.mu.Lock()
	for name, sock := range s.socks {
		sock.Close()
		delete(s.socks, name)
	}
	for k, sock := range s.ears {
		sock.Close()
		delete(s.ears, k)
	}
	s.ears = nil // no more listening
	s.mu.Unlock()
	s.wg.Wait()
}

// announcePortRules are the PortGuard rules of cfg: for every broadcast
// cluster, UDP to its announce port at its LAN's subnets, its ghost and its
// second ghost is accepted only from the LAN.
func announcePortRules(r *router.Router, cfg *config.Config) []router.PortRule {
	var rules []router.PortRule
	for _, cl := range cfg.Clusters {
		if cl.Mode != config.ModeBroadcast {
			continue
		}
		ep, ok := r.Endpoint(cl.Interface)
		if !ok {
			continue
		}
		rule := router.PortRule{LAN: ep, Port: uint16(cl.AnnouncePort),
			Dst: []netip.Prefix{netip.PrefixFrom(cl.Address, cl.Address.BitLen()), netip.PrefixFrom(cl.BroadcastAddress, cl.BroadcastAddress.BitLen())}}
		if ifc, ok := cfg.Interface(cl.Interface); ok {
			for _, p := range ifc.Addresses {
				rule.Dst = append(rule.Dst, p.Masked())
			}
		}
		rules = append(rules, rule)
	}
	return rules
}
