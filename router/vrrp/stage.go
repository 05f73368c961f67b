package vrrp

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// The datapath side of a Set: what every inbound frame of a link with
// virtual routers passes through, on the link's receive goroutines.

// Name implements stage.Stage.
func (s *Set) Name() string { return "vrrp" }

// Inbound implements stage.Stage: VRRP advertisements are Consumed (handed
// to the state machines), ARP requests and neighbor solicitations for a
// virtual address are answered with the virtual MAC while master
// (Consumed) and dropped while backup; unicast IP in a link-layer broadcast
// and IP to a virtual address this router does not own are dropped;
// everything else passes.
func (s *Set) Inbound(ep *tap.Endpoint, frame []byte) stage.Verdict {
	var li *linkInsts
	for i := range s.links {
		if s.links[i].ep == ep {
			li = &s.links[i]
		}
	}
	if li == nil || len(frame) < hdr.EthLen {
		return stage.Pass
	}
	insts := li.insts
	switch hdr.EtherType(frame) {
	case hdr.EtherIPv4:
		if !hdr.IsIPv4(frame) {
			return stage.Pass
		}
		ip := hdr.IP4(frame[hdr.EthLen:])
		if hdr.IsBroadcast(frame) && s.unicastInBroadcast4(li, ip.Dst()) {
			return stage.Drop(stage.UnicastInGroupFrame)
		}
		if ip.Protocol() != Protocol {
			return s.toVirtual4(insts, ip.Dst())
		}
		s.advert4(insts, ip)
		return stage.Consumed
	case hdr.EtherARP:
		return s.arp(ep, insts, frame)
	case hdr.EtherIPv6:
		if !hdr.IsIPv6(frame) {
			return stage.Pass
		}
		ip := hdr.IP6(frame[hdr.EthLen:])
		if hdr.IsBroadcast(frame) && ip.Dst()[0] != 0xff {
			s.stats.BcastUnicast.Add(1) // IPv6 has no broadcast: a unicast destination
			return stage.Drop(stage.UnicastInGroupFrame)
		}
		switch ip.NextHeader() {
		case Protocol:
			s.advert6(insts, ip)
			return stage.Consumed
		case hdr.ProtoICMPv6:
			if v := s.solicit(ep, insts, frame); v.Taken() {
				return v
			}
		}
		return s.toVirtual6(insts, ip.Dst())
	}
	return stage.Pass
}

// unicastInBroadcast4 drops an IPv4 packet for a unicast destination that
// arrived in a link-layer broadcast; limited, subnet-directed and multicast
// destinations pass.
func (s *Set) unicastInBroadcast4(li *linkInsts, dst [4]byte) bool {
	if dst[0] >= 224 || dst == [4]byte{255, 255, 255, 255} {
		return false
	}
	for _, b := range li.bcasts {
		if b == dst {
			return false
		}
	}
	s.stats.BcastUnicast.Add(1)
	return true
}

// toVirtual4 drops an IPv4 packet addressed to a virtual address that is
// not this router's own: RFC 5798's Accept_Mode is false, so the master
// neither answers nor forwards it (the owner, priority 255, holds the
// address as an interface address and netstack answers).
func (s *Set) toVirtual4(insts []*instance, dst [4]byte) stage.Verdict {
	for _, in := range insts {
		if in.cfg.Priority == config.VRRPOwnerPriority {
			continue
		}
		for _, v := range in.vip4 {
			if v == dst {
				s.stats.ToVirtual.Add(1)
				return stage.Drop(stage.VirtualAddress)
			}
		}
	}
	return stage.Pass
}

// toVirtual6 is toVirtual4 for IPv6.
func (s *Set) toVirtual6(insts []*instance, dst [16]byte) stage.Verdict {
	for _, in := range insts {
		if in.cfg.Priority == config.VRRPOwnerPriority {
			continue
		}
		for _, v := range in.vip6 {
			if v == dst {
				s.stats.ToVirtual.Add(1)
				return stage.Drop(stage.VirtualAddress)
			}
		}
	}
	return stage.Pass
}

func (s *Set) advert4(insts []*instance, ip hdr.IP4) {
	body, ok := ipv4Payload(ip)
	if !ok {
		s.stats.BadHeader.Add(1)
		return
	}
	if ip.TTL() != TTL {
		s.stats.BadTTL.Add(1)
		return
	}
	src := netip.AddrFrom4(ip.Src())
	dst := netip.AddrFrom4(ip.Dst())
	s.advert(insts, false, body, src, dst)
}

func (s *Set) advert6(insts []*instance, ip hdr.IP6) {
	body, ok := ipv6Payload(ip)
	if !ok {
		s.stats.BadHeader.Add(1)
		return
	}
	if ip.HopLimit() != TTL {
		s.stats.BadTTL.Add(1)
		return
	}
	src := netip.AddrFrom16(ip.Src())
	dst := netip.AddrFrom16(ip.Dst())
	s.advert(insts, true, body, src, dst)
}

func (s *Set) advert(insts []*instance, v6 bool, body []byte, src, dst netip.Addr) {
	a, err := Parse(body, src, dst)
	oldUnicast := false
	if group := Group4(); err == ErrChecksum && !dst.IsMulticast() {
		// keepalived before 1.3.8 (and with old_unicast_checksum) put the
		// group in the pseudo-header of its unicast advertisements.
		if v6 {
			group = Group6()
		}
		if a, err = Parse(body, src, group); err == nil {
			oldUnicast = true
		}
	}
	switch err {
	case nil:
	case ErrChecksum:
		s.stats.BadChecksum.Add(1)
		return
	default:
		s.stats.Malformed.Add(1)
		return
	}
	var in *instance
	for _, c := range insts {
		if c.cfg.VRID == a.VRID && c.v6 == v6 {
			in = c
		}
	}
	if in == nil || in.cfg.Priority == config.VRRPOwnerPriority {
		s.stats.UnknownVRID.Add(1)
		return
	}
	if src == in.src {
		s.stats.OwnLooped.Add(1)
		return
	}
	in.ctr.AdvertsIn.Add(1)
	if a.Priority == 0 {
		in.ctr.ShutdownsIn.Add(1)
	}
	if a.Checksum == MessageOnly {
		in.ctr.ChecksumOld.Add(1)
	}
	if oldUnicast {
		in.ctr.ChecksumOldUnicast.Add(1)
	}
	if a.Interval != uint16(in.cfg.Interval/(10*time.Millisecond)) {
		in.ctr.IntervalDiffer.Add(1)
	}
	if !sameAddrs(in, &a) {
		in.ctr.AddrMismatch.Add(1)
	}
	select {
	case s.events <- event{in: in, src: src, priority: a.Priority, interval: a.IntervalDuration()}:
	default:
		s.stats.QueueFull.Add(1)
	}
}

// sameAddrs reports whether a lists exactly in's virtual addresses (in any
// order).
func sameAddrs(in *instance, a *Advert) bool {
	if int(a.Count) != len(in.cfg.Addresses) {
		return false
	}
	for i := 0; i < int(a.Count); i++ {
		if !containsAddr(in.cfg.Addresses, a.Addr(i)) {
			return false
		}
	}
	return true
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, b := range as {
		if a == b {
			return true
		}
	}
	return false
}

// arp answers an ARP request for a virtual IPv4 address while master and
// drops it while backup. Other ARP passes.
func (s *Set) arp(ep *tap.Endpoint, insts []*instance, frame []byte) stage.Verdict {
	if len(frame) < hdr.EthLen+arpLen {
		return stage.Pass
	}
	p := frame[hdr.EthLen:]
	if binary.BigEndian.Uint16(p[0:2]) != 1 || binary.BigEndian.Uint16(p[2:4]) != 0x0800 || p[4] != 6 || p[5] != 4 ||
		binary.BigEndian.Uint16(p[6:8]) != 1 {
		return stage.Pass
	}
	tpa := [4]byte(p[24:28])
	for _, in := range insts {
		for _, v := range in.vip4 {
			if v != tpa {
				continue
			}
			// Sender = target is another router's gratuitous ARP (a second
			// master during a partition): taken, not answered.
			if in.master.Load() && [4]byte(p[14:18]) != tpa {
				var buf [hdr.EthLen + arpLen]byte
				out := appendARP(buf[:0], [6]byte(p[8:14]), in.vmac, 2, in.vmac, v, [6]byte(p[8:14]), [4]byte(p[14:18]))
				if ep.WriteFrame(out) == nil {
					in.ctr.ARPReplies.Add(1)
				}
			}
			if !in.master.Load() {
				return stage.Drop(stage.Backup)
			}
			return stage.Consumed
		}
	}
	return stage.Pass
}

// solicit answers a neighbor solicitation for a virtual IPv6 address while
// master and drops it while backup. Other ICMPv6 passes.
func (s *Set) solicit(ep *tap.Endpoint, insts []*instance, frame []byte) stage.Verdict {
	ip := hdr.IP6(frame[hdr.EthLen:])
	body, ok := ipv6Payload(ip)
	if !ok || len(body) < 24 || body[0] != 135 || body[1] != 0 || ip.HopLimit() != TTL {
		return stage.Pass
	}
	target := [16]byte(body[8:24])
	for _, in := range insts {
		for _, v := range in.vip6 {
			if v != target {
				continue
			}
			if in.master.Load() {
				src := netip.AddrFrom16(ip.Src())
				dst, ethDst := src, hdr.SrcMAC(frame)
				if src.IsUnspecified() { // duplicate address detection: tell everyone
					dst, ethDst = allNodes(), multicastMAC(allNodes())
				}
				var buf [hdr.EthLen + hdr.IPv6Len + naLen]byte
				out := appendNA(buf[:0], ethDst, in.vmac, in.src, dst, netip.AddrFrom16(v), !src.IsUnspecified())
				if ep.WriteFrame(out) == nil {
					in.ctr.ARPReplies.Add(1)
				}
			}
			if !in.master.Load() {
				return stage.Drop(stage.Backup)
			}
			return stage.Consumed
		}
	}
	return stage.Pass
}
