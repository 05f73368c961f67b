// Package node is the server side of a cluster (the `ghostnode` agent):
// it makes a Linux server accept the packets the appliance dispatches to it
// and undoes that exactly.
//
//	Setup:    ghost/32 on lo ── sysctls (arp_ignore, arp_announce, rp_filter)
//	          ── broadcast mode: nftables filter (package filter) ── nf_conntrack_tcp_loose = 0
//	Update:   owned set swapped in one nft transaction (flush set + add element)
//	Teardown: filter deleted ── sysctls restored ── ghost removed
//	Apply:    for `ghostnode run`: Update when the hash is unchanged, else Setup
//
// In routing mode (the patent's FIG. 4) the appliance sends each packet to
// the chosen server's MAC with the IP header untouched, so the server needs
// the ghost as a local address (the patent's `ifconfig alias`, on lo so
// that it is never a LAN address), must never answer or announce ARP for it
// (only the appliance may attract ghost traffic), and must not drop the
// packets by reverse-path filtering. Broadcast mode (FIG. 5) adds the kernel
// filter that accepts only this server's buckets.
//
// # Undo information
//
// Every change is recorded before it is made in a state file per cluster
// (State, under StateDir, JSON), with the value found before the first
// setup: setup again changes nothing and keeps those values; teardown
// restores them and removes only what setup added. Clusters on one server
// share the host-wide sysctls: a cluster's teardown hands a changed sysctl
// (or a shared ghost address) over to another cluster that still needs it,
// so the last one restores it. A failed setup rolls back what it changed and
// leaves the state file as it was. Commands that change the host hold an
// exclusive lock on the state directory, so the CLI and a long-running
// `ghostnode run` never interleave. A run also holds its cluster's run lock
// for its lifetime and reports in RunDir (RunStatus).
//
// # The host
//
// Everything node does to the machine goes through Host: System reads and
// writes /proc/sys, lists interfaces with the standard library, and runs
// ip(8) and nft(8); tests substitute a fake.
package node
