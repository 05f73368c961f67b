// Package bgp announces the appliance's ghost addresses to upstream routers
// with BGP-4 (RFC 4271), so that several active appliances can share a
// cluster behind equal-cost multipath (ECMP) in the upstream routers.
//
// It speaks from the appliance's own netstack address, over netstack's TCP,
// through the same TAP device that carries the clients' traffic: a session
// is up only while the appliance's datapath on that link works, and dies
// with the process (its hold timer expires at the peer) whatever kills it.
// The messages are encoded and decoded by GoBGP's codec
// (github.com/osrg/gobgp/v4/pkg/packet/bgp), the codec of a BGP
// implementation in production use; this package adds only an
// announce-only session: it never installs a route it receives.
//
// # The session
//
// A Speaker keeps one session per configured neighbor. Each session dials
// the neighbor's port 179 (the appliance is always the active side, so a
// restart is not held up by a stale passive session), sends OPEN (version 4,
// its AS, the hold time, the router ID, and the capabilities multiprotocol
// IPv4 and IPv6 unicast and four-octet AS numbers, RFC 6793), checks the
// peer's OPEN (its AS must be the configured one; a hold time of 0 or at
// least 3 s), confirms with KEEPALIVE and, once established, sends one
// UPDATE per change of the announced set. The negotiated hold time is the
// smaller of the two; KEEPALIVE is sent every third of it; a session that
// receives nothing for the hold time sends NOTIFICATION (hold timer expired)
// and starts over. Errors restart the session after a back-off that
// doubles from one second up to ten.
//
// Announcements: each prefix is sent with ORIGIN IGP, AS_PATH holding the
// appliance's AS on an eBGP session (empty on iBGP, with LOCAL_PREF 100),
// and the session's own local address as NEXT_HOP, so upstream routers
// forward straight to the appliance. IPv6 prefixes go in MP_REACH_NLRI with
// the appliance's IPv6 address on the same link as next hop, and only to a
// peer that offered IPv6 unicast. A change of the set sends only the
// difference; the session is never reset for it.
//
// Shutdown: Close withdraws every prefix and sends NOTIFICATION Cease
// (administrative shutdown, RFC 8203), so the peer removes the routes at
// once rather than after the hold time.
//
// Everything a peer sends is bounded: a message longer than 4096 bytes,
// a bad marker or length, or one that does not decode is a protocol error
// (NOTIFICATION, session restarted, counted).
package bgp
