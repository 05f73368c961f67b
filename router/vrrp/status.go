package vrrp

import (
	"net"
	"net/netip"
	"time"
)

// Status is one virtual router as `ghostrouter status` shows it.
type Status struct {
	Name           string            `json:"name"` // IFACE/VRID
	Interface      string            `json:"interface"`
	VRID           uint8             `json:"vrid"`
	Family         string            `json:"family"`
	State          string            `json:"state"`
	Priority       uint8             `json:"priority"`
	Interval       time.Duration     `json:"interval"`
	Group          string            `json:"group,omitempty"`
	Addresses      []netip.Addr      `json:"addresses"`
	VirtualMAC     string            `json:"virtual_mac"`
	Master         string            `json:"master"` // the current master's address ("" while unknown)
	MasterPriority uint8             `json:"master_priority"`
	MasterInterval time.Duration     `json:"master_interval"` // Master_Adver_Interval
	Transitions    []Transition      `json:"transitions"`
	Counters       map[string]uint64 `json:"counters"`
}

// Status reports every virtual router, in configuration order. The state
// and master are those of the last event the run goroutine handled.
func (s *Set) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.insts))
	for _, in := range s.insts {
		st := Status{
			Name: in.cfg.Name(), Interface: in.cfg.Interface, VRID: in.cfg.VRID, Family: "IPv4",
			Priority: in.cfg.Priority, Interval: in.cfg.Interval, Group: in.cfg.Group,
			Addresses:   append([]netip.Addr(nil), in.cfg.Addresses...),
			VirtualMAC:  net.HardwareAddr(in.vmac[:]).String(),
			Transitions: append([]Transition(nil), in.transitions...),
			Counters: map[string]uint64{
				"adverts_in": in.ctr.AdvertsIn.Load(), "adverts_out": in.ctr.AdvertsOut.Load(),
				"shutdowns_in": in.ctr.ShutdownsIn.Load(), "checksum_message_only": in.ctr.ChecksumOld.Load(),
				"checksum_old_unicast": in.ctr.ChecksumOldUnicast.Load(),
				"address_mismatch":     in.ctr.AddrMismatch.Load(), "interval_differs": in.ctr.IntervalDiffer.Load(),
				"send_errors": in.ctr.SendErrors.Load(), "neighbor_replies": in.ctr.ARPReplies.Load(),
				"gratuitous": in.ctr.Gratuitous.Load(), "transitions": in.ctr.Transitions.Load(),
			},
		}
		if in.v6 {
			st.Family = "IPv6"
		}
		st.State, st.Master, st.MasterPriority, st.MasterInterval = in.view.state, in.view.master, in.view.prio, in.view.mai
		out = append(out, st)
	}
	return out
}

// Counters returns the stage's drop counters by name.
func (s *Set) Counters() map[string]uint64 {
	return map[string]uint64{
		"vrrp_bad_header": s.stats.BadHeader.Load(), "vrrp_bad_ttl": s.stats.BadTTL.Load(),
		"vrrp_malformed": s.stats.Malformed.Load(), "vrrp_bad_checksum": s.stats.BadChecksum.Load(),
		"vrrp_unknown_vrid": s.stats.UnknownVRID.Load(), "vrrp_own_looped": s.stats.OwnLooped.Load(),
		"vrrp_queue_full": s.stats.QueueFull.Load(), "vrrp_to_virtual_dropped": s.stats.ToVirtual.Load(),
		"vrrp_unicast_in_broadcast_dropped": s.stats.BcastUnicast.Load(),
	}
}
