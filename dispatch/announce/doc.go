// Package announce carries a broadcast-mode cluster's table from the
// appliance to the server agents (ghostnode run), so that every server's
// kernel filter changes in step with the appliance when a server fails,
// recovers, is drained or added (the patent: all servers are notified), and
// makes every change break before make: a bucket changes owner only after
// its old owner has stopped accepting new connections for it.
//
//	appliance: dispatch.Manager ──Announce──> Announcer ──Transition──> Marshal+HMAC ──> Sender (UDP broadcast)
//	           Sender's socket <──acknowledgements── HandleAck ──> Transition.Ack ──> the acquisition
//	server:    UDP :9470 ──datagram──> Receiver.Handle ──Apply(owned, unowned)──> ghostnode: one nft transaction
//	                                                  └─> Receiver.Ack ──unicast──> the announcement's source
//
// What is sent is the cluster's membership, not its per-bucket table: the
// table is a pure function of the membership, so a receiver computes
// exactly the appliance's table with dispatch.NewTable and keeps its own
// buckets. The package does no I/O: the appliance supplies a Sender and
// hands acknowledgements to HandleAck; the agent reads datagrams, passes
// them to a Receiver and sends what Receiver.Ack returns.
//
// # Break before make
//
// A change is announced as a release, then an acquisition. The release
// carries the table in force together with the next one (Message.Also); a
// server owns a bucket only when every table of the announcement gives it
// that bucket (Message.Grants), so a moved bucket has no owner. Each server
// acknowledges every table it installs, and again on every repetition.
// The Transition gives a bucket to a server only when no other server may
// still hold it: when every server that an announcement issued since its
// last acknowledgement gave the bucket to has acknowledged a later one.
// Servers only move to newer tables, so no loss, duplication, delay,
// reordering or replay of announcements or acknowledgements can make two
// servers accept new connections for one bucket. A server that does not
// acknowledge within AckTimeout is excused (counted, shown late) and the
// acquisition goes out: the one place where safety yields to availability.
// New connections to a bucket in the gap are dropped (and counted by the
// servers' filters) and wait for a SYN retransmission. The first
// announcement of an epoch grants nothing, as servers may hold anything from
// before the appliance started.
//
// # The wire format
//
// One UDP datagram per announcement, by default to port 9470 (DefaultPort).
// Integers are big-endian and unsigned. Offsets are in bytes.
//
//	offset  size  field
//	     0     4  magic "GHRT"
//	     4     1  format version: 2
//	     5     1  hash: 1 = jhash, 2 = modulo
//	     6     2  N, the number of members (0..2048)
//	     8     8  epoch: the appliance's start time, unix nanoseconds
//	    16     8  seq: the announcement's number, +1 on every change of what is granted
//	    24     8  tx: the datagram number in the epoch, +1 on every datagram sent (repeats too)
//	    32     4  seed of the hash
//	    36     4  buckets (1..1048576)
//	    40     4  interval: how often the appliance repeats, in milliseconds (0: unknown)
//	    44     1  L, the length of the cluster name (1..63)
//	    45     L  cluster name: letters, digits, '_', '.', '-', starting with a letter or digit
//	     .     1  A, the length of the ghost address: 4 (IPv4) or 16 (IPv6)
//	     .     A  ghost (cluster) address
//	     .        N members, by strictly ascending id, each (the target table):
//	           4    id
//	           4    weight (0..1048576; 0 = drained: owns no bucket)
//	           1    flags: bit 0 = up; bit 1 = absent (not a member of this
//	                table: weight 0, not up); the other bits are zero
//	           1    A, the length of the server's address: 4 or 16
//	           A    the server's primary address
//	     .     1  K, the number of further tables (0..3)
//	     .        K tables of N shares in the members' order, each:
//	           4    weight
//	           1    flags, as above
//	     .    32  HMAC-SHA256 of every byte before it, keyed with the
//	              cluster's announce_key (at least 16 bytes)
//
// The datagram ends with the MAC: a datagram with trailing bytes, a field
// out of range, reserved bits set, or members out of order is malformed, so
// the encoding is canonical (Marshal(Unmarshal(b)) == b). A settled
// announcement is 83 + L bytes with an IPv4 ghost, plus 14 per IPv4 member
// (26 per IPv6 member): 64 servers take 982 bytes for cluster "web". The
// acknowledgement's format is in ack.go.
//
// A receiver checks the header up to the cluster name first (an
// announcement of another cluster is ignored without its MAC being
// checked), then the MAC, and only then decodes the rest.
//
// # Order, freshness and replays
//
// Tables are ordered by (epoch, seq), lexicographically: a restarted
// appliance has a later epoch, so its first announcement wins over the old
// one whatever their seqs; within an epoch, seq counts announcements.
// Datagrams are ordered by (epoch, tx): the appliance repeats the
// announcement in force every interval (1s by default; a quarter of it
// while a change is in progress) with the same seq and a new tx, so that a
// lost datagram heals itself, while an exact replay (or a late duplicate)
// is recognisably not fresh. A Receiver:
//
//   - ignores another cluster's announcement (IgnoreOtherCluster), a bad MAC
//     (IgnoreBadMAC), and what it cannot read (IgnoreMalformed);
//   - ignores an authentic datagram whose (epoch, tx) is not after the last
//     authentic one it heard (IgnoreStale): replays change nothing and do
//     not count as the appliance being alive;
//   - applies a fresh one whose (epoch, seq) is newer than the table
//     applied (Apply), counts one with the same (epoch, seq) as a Repeat,
//     and ignores an older table (IgnoreStale);
//   - keeps the last table applied for as long as nothing newer arrives.
//
// An agent that restarts loses its floor unless it saves it (ghostnode run
// keeps it in its state directory and restores it with SetFloor). Two
// appliances announcing one cluster must not run at once: the later
// epoch's tables win and the other's are counted as stale.
//
// # Security
//
// The HMAC authenticates the sender as a holder of the cluster's key and
// the content as unmodified; the (epoch, tx) floor defeats replays of
// announcements, and a replayed acknowledgement only repeats what was true.
// Nothing is secret: the membership is visible to anyone on the LAN. The
// key is per cluster, and the cluster name is inside the MAC, so a key
// shared by two clusters still cannot move one's announcement to the other.
package announce
