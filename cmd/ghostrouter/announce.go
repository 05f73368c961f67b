package main

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/ghostrouter/ghostrouter/router"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// announceSender sends broadcast clusters' table announcements from the
// appliance's own address on the cluster's LAN to that LAN's subnet
// broadcast address, or on an IPv6-only LAN to the all-nodes group ff02::1
// (config.Interface.AnnounceTo), one UDP socket per interface.
type announceSender struct {
	r     *router.Router
	mu    sync.Mutex // guards socks
	socks map[string]*router.UDPSender
}

func newAnnounceSender(r *router.Router) *announceSender {
	return &announceSender{r: r, socks: map[string]*router.UDPSender{}}
}

// send implements announce.Sender.
func (s *announceSender) send(cl *config.Cluster, datagram []byte) error {
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
	}
	return sock.Send(datagram, netip.AddrPortFrom(dst, uint16(cl.AnnouncePort)))
}

func (s *announceSender) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, sock := range s.socks {
		sock.Close()
		delete(s.socks, name)
	}
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
