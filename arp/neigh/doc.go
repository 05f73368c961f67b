// Package neigh owns the MACs of the servers of routing-mode clusters: the
// appliance resolves and refreshes them itself, and guards them against LAN
// hosts that claim a server's address. Its Resolver is a datapath stage (a
// stage.Stage, after the ARP and announce guards) and the dispatcher's source
// of MACs.
//
// # Resolution
//
// Each server address (per link) is an entry in a table the size of the
// membership, not a cache that can evict: a thousand servers all stay
// resolved. The appliance sends its own requests from its address on the
// link: ARP requests for IPv4, NDP neighbor solicitations (with its source
// link-layer address, to the solicited-node group) for IPv6. One token bucket
// over all links paces them (Params.Rate, Params.Burst), and the scan resumes
// where the bucket ran dry, so a large membership resolves in order, spread
// over time, with no burst beyond Burst.
//
//	unresolved ──answer to our broadcast request──> reachable
//	reachable ──Refresh (x0.75..1.25, by address) or a claim──> verifying
//	verifying ──the known MAC answers a unicast probe──> reachable
//	verifying ──Probes unicast probes, Probe apart, unanswered──> gone
//	gone ──answer to our broadcast request──> reachable (the MAC replaced, logged)
//
// A MAC is learned only from an answer to one of the appliance's own
// requests: an ARP reply or a solicited neighbor advertisement, unicast to
// the appliance's MAC and address, before the next request is due (a LAN
// host swamped by broadcasts may answer seconds late), or, for a unicast
// probe, within Probe. Gratuitous ARP, unsolicited advertisements, requests
// and answers to nothing teach nothing. Broadcast, multicast and zero MACs
// are never accepted (Unicast).
//
// # The guard
//
// Once a server's MAC is known, any frame stating another MAC for its
// address is a claim: counted, recorded for `status` (the same table as the
// appliance's other address conflicts, with the claiming MAC), logged at
// most once a second per address, dropped before netstack sees it, and not
// applied. A claim starts a verification (at most once per Cooldown): the
// known MAC keeps the address for as long as it answers unicast probes,
// which only the host holding that MAC receives. Only when Probes of them go
// unanswered (1.5 s with DefaultParams) is the MAC gone, and the first
// answer to a broadcast request then replaces it. While gone, the server is
// not dispatched to (its frames would go to a MAC nobody holds, which
// switches flood to every port); a server that merely missed the probes
// answers that request within a round trip, with the same MAC.
//
// A genuine change (a replaced NIC, which announces itself) is therefore
// accepted 1.5 s after its first announcement, plus a round trip; without an
// announcement, within Refresh plus that. The announcement's conflict record
// is cleared when its MAC is accepted. A `mac = "..."` in [[cluster.server]]
// pins the entry: nothing is sent or learned for it.
//
// The MACs are published as an immutable snapshot behind an atomic pointer
// (LinkAddress reads it), which the dispatcher copies into its per-cluster
// view: the packet path never takes a lock or allocates for them.
//
// # Netstack's table
//
// The appliance's own traffic to a server (health checks) goes through
// netstack, which keeps its own neighbor cache: a claim that rewrote it would
// send the health checks to the claimer, who could then keep a dead server
// "up" (its clients black-holed) or see the checks. So every MAC the
// resolver publishes is mirrored into netstack as a permanent entry
// (Statics), which received ARP and NDP never change, and the frames that
// would update it (answers, gratuitous ARP, advertisements, and requests
// stating another MAC) are consumed here. A server whose MAC is not
// published is not health-checked at all (Unresolved): it counts as failing
// until it is resolved, and netstack never resolves servers by itself.
//
// A server's own ARP request or solicitation stating its known MAC goes on
// to netstack, which answers it. Before a server is first resolved, netstack
// may learn from such a request (for its ordinary routed traffic to the
// server: never ghost traffic, never health checks) until the resolver's
// permanent entry replaces it; the request also makes the resolver ask at
// once.
package neigh
