// Package filter is the text of a broadcast-mode server's kernel filter (the
// patent's FIG. 5) and the reading of it back: it turns a cluster's
// parameters and the buckets this server owns into an nftables script, and
// parses what `nft -j list table` reports (owned buckets, counters, the shape
// of the rules) so that ghostnode can compare, update and show it. It runs no
// command itself; package node feeds its scripts to `nft -f -`.
//
// # Why the nft binary and a generated script
//
// ghostnode drives nftables by piping a generated ruleset into `nft -f -`
// rather than through a netlink library (google/nftables, knftables):
//
//   - no cgo and no new dependency: nft is the tool this filter's shape was
//     verified with on a real kernel (every client answered by its
//     predicted server, over TCP and UDP), and it is on every server that
//     has nftables at all;
//   - the ruleset is plain text: golden-tested here (testdata/), printed by
//     `ghostnode ruleset` for an operator to read or load by hand, and what
//     `nft list table` shows back;
//   - one `nft -f` script is one kernel transaction: creating or replacing
//     the table, and swapping the owned set (`flush set` + `add element`), are
//     each atomic, so no packet ever sees a half-built filter or an empty set.
//
// # The table
//
// One table per cluster, family ip (ip6 for an IPv6 ghost), named
// "ghost_<cluster>" so that several clusters coexist:
//
//	table ip ghost_web {
//	  set owned { typeof meta length; flags interval; comment "..."; elements = { 0-3, 7, ... } }
//	  set unowned { typeof meta length; flags interval; elements = { ... } }
//	  chain pre {
//	    type filter hook prerouting priority mangle; policy accept;
//	    ip daddr GHOST meta l4proto tcp ct state established counter meta pkttype set host accept comment "established"
//	    ip daddr GHOST ct state related counter meta pkttype set host accept comment "related"
//	    ip daddr GHOST meta l4proto tcp ct state new jhash ip saddr mod B seed S @owned counter meta pkttype set host accept comment "new"
//	    ip daddr GHOST meta l4proto != tcp jhash ip saddr mod B seed S @owned counter meta pkttype set host accept comment "datagram"
//	    ip daddr GHOST ct state new jhash ip saddr mod B seed S @unowned counter drop comment "unowned"
//	    ip daddr GHOST counter drop comment "dropped"
//	  }
//	}
//
// A cluster with pins ([[cluster.pin]], or the pins of an announcement) has
// two more sets, "pinned" (the clients pinned to this server) and
// "pinned_away" (those pinned to others, or to nobody while a pin moves),
// typeof ip saddr (ip6 saddr), and three rules after "foreign-error",
// ahead of the hash: "pinned-new" and "pinned-datagram" accept a pinned
// client's new TCP connections and other packets, "pinned-away" drops the
// others' pinned clients. Without pins neither the sets nor the rules exist,
// so such a filter is exactly as described above.
//
// TCP connections known here stay here whatever the owned set says (a
// drained server finishes them); new TCP connections follow the owned set.
// Everything else follows the owned set alone, not conntrack, so that after
// a change exactly one server answers each UDP datagram. The unowned set
// holds the buckets no server owns while a change is in progress (break
// before make); their new connections are counted apart and wait for a
// retransmission.
//
// The sets differ from the obvious declaration in two ways, both found on
// the stock nftables 1.0.6:
//
//   - The set is declared `typeof meta length`, not `typeof jhash ip saddr
//     mod B seed S`. nft 1.0.6 loads the latter but segfaults whenever it
//     prints the set (`nft list ruleset`, `nft list table`, `nft list set`),
//     which would break every operator's `nft list ruleset` on the server.
//     `meta length` has exactly jhash's key type (a 32-bit host-order
//     integer), so the lookup is the same; the set's comment names the hash.
//   - The set has `flags interval`, so owned buckets are stored as ranges
//     (0-3, 7, 9-12): a server owning half of 4096 buckets needs a few
//     hundred elements, not 2048. nft converts both the elements and the
//     jhash result to network byte order for the interval lookup
//     (`byteorder reg 1 = hton(...)` in `nft --debug=netlink`), so ranges
//     match numerically.
//
// Counters sit on every rule and the rules carry comments, which is how
// [ParseTable] finds them in the JSON listing.
package filter
