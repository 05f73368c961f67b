// Package vrrp owns the appliance's virtual routers: VRRP version 3
// (RFC 5798, with RFC 9568's checksum variant) run as a datapath stage on
// the appliance's own links, so that a second appliance can take over the
// addresses clients and servers use as their gateway.
//
// The master of a virtual router owns its addresses and its virtual MAC
// (00:00:5e:00:01:VRID, or 00:00:5e:00:02:VRID for IPv6) on its link: the
// stage answers ARP requests and neighbor solicitations for the addresses
// with that MAC, the link endpoint takes in frames addressed to it (as if
// addressed to the link's own MAC), and on becoming master the appliance
// sends gratuitous ARPs / unsolicited neighbor advertisements, three times.
// A backup sends nothing for the addresses: it drops the ARP requests and
// solicitations for them, and the endpoint drops frames to the virtual MAC
// as foreign.
//
// Advertisements go to 224.0.0.18 / ff02::12 (or to the configured unicast
// peers) with TTL / hop limit 255, IP protocol 112, from the virtual MAC.
// Received ones must have TTL 255, a valid IP header (no fragments) and a
// valid checksum of either style: over the IP pseudo-header and the message
// (RFC 5798 as keepalived and tcpdump read it) or, for IPv4, over the
// message alone (RFC 9568's variant). Anything else is counted and dropped.
//
// The state machine (Machine) is RFC 5798 section 6.4 with explicit times:
// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time, Skew_Time =
// ((256 - priority) * Master_Adver_Interval) / 256. A backup adopts the
// master's advertised interval; a master that hears a higher priority (or
// an equal one from a higher address) becomes backup; a backup with preempt
// on ignores lower priorities, so it takes over when their master-down
// timer runs out. On shutdown a master sends priority 0, and its backup
// takes over after Skew_Time. Virtual routers in one sync group change
// state together: one that becomes master takes the others with it, one
// that becomes backup takes them back.
//
// A Set's datapath side (Inbound) runs on the links' receive goroutines,
// allocates nothing on frames it passes, and hands advertisements to one
// goroutine that runs every machine, sends the advertisements and records
// the transitions (Status). VRRPv3 has no authentication: the segment must
// be trusted (see README).
package vrrp
