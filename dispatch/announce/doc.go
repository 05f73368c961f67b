// Package announce carries a broadcast-mode cluster's table from the
// appliance to the server agents (ghostnode run), so that every server's
// kernel filter changes in step with the appliance when a server fails,
// recovers, is drained or added (the patent: all servers are notified), and
// makes every change break before make: a bucket changes owner only after
// its old owner has stopped accepting new connections for it.
//
//	appliance: dispatch.Manager ──Announce──> Announcer ──Transition──> Marshal+Ed25519 ──> Sender (UDP broadcast)
//	           Sender's socket <──acknowledgements── HandleAck ──> Transition.Ack ──> the acquisition
//	server:    UDP :9470 ──datagram──> Receiver.HandleFrom ──Apply(owned, unowned)──> ghostnode: one nft transaction
//	                                                  ├─> Receiver.Ack ──unicast──> the announcement's source
//	                                                  └─ Repeat / Ignore*: counted, nothing changes
//
// What is sent is the cluster's membership, not its per-bucket table: the
// table is a pure function of the membership, so a receiver computes
// exactly the appliance's table with core.NewTable and keeps its own
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
// One UDP datagram per announcement, by default to port 9470 (DefaultPort),
// when it is at most SegmentPayload (1200) bytes long; a longer one (more
// than about 80 members, or a transition's further tables) is split into
// segments, one datagram each, that the servers reassemble before anything
// else (see "Segments" below). Integers are big-endian and unsigned. Offsets are in
// bytes.
//
//	offset  size  field
//	     0     4  magic "GHRT"
//	     4     1  format version: 3, or 4 when the announcement carries pins
//	              (1 was authenticated with a shared HMAC key)
//	     5     1  hash: 1 = jhash, 2 = modulo
//	     6     2  N, the number of members (0..4096, the table's limit)
//	     8     8  epoch: a random number drawn when the appliance starts (or takes over)
//	    16     8  seq: the announcement's number, +1 on every change of what is granted
//	    24     8  tx: the datagram number in the epoch, +1 on every datagram sent (repeats too)
//	    32     4  seed of the hash
//	    36     4  buckets (1..65536, the configuration's limit)
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
//	     .        format 4 only, the pins ([[cluster.pin]]):
//	           1    P, the number of pins (1..64)
//	                P pins, by strictly ascending client address, each:
//	           1    A, the length of the client's address: the ghost's (4 or 16)
//	           A    the client's address
//	           4    the id of its server
//	     .    64  Ed25519 signature of every byte before it, by the
//	              private key of the cluster's announce_key_file
//
// The datagram ends with the signature: a datagram with trailing bytes, a field
// out of range, reserved bits set, or members out of order is malformed, so
// the encoding is canonical (Marshal(Unmarshal(b)) == b). A settled
// announcement is 115 + L bytes with an IPv4 ghost, plus 14 per IPv4
// member (26 per IPv6 member): 64 servers take 1014 bytes for cluster
// "web". The acknowledgement's format is in ack.go.
//
// # Segments
//
// An announcement longer than SegmentPayload bytes goes out as n segments
// (2..MaxSegments, 1024), each a datagram of at most SegmentDatagram (1232)
// bytes, a 32-byte header and a slice of the announcement, so that no
// segment is ever fragmented by IP: a lost fragment, or two datagrams whose
// fragments share an IP identification, would otherwise spoil a receiver's
// reassembly queue for the datagrams that follow.
//
//	offset  size  field
//	     0     4  magic "GHRS"
//	     4     1  segment format version: 1
//	     5     1  reserved, zero
//	     6     2  k, the segment's index (0..n-1)
//	     8     2  n, the number of segments
//	    10     2  reserved, zero
//	    12     8  the announcement's epoch
//	    20     8  the announcement's tx (epoch and tx identify it)
//	    28     4  total, the announcement's length (at most MaxBody, 1.2 MB)
//	    32     .  the announcement's bytes [k*total/n, (k+1)*total/n)
//
// The segments carry no signature of their own: a server's Reassembler
// (ghostnode run) holds one incomplete announcement per sender (at most
// DefaultReassemblies senders, each at most MaxBody bytes), drops it when it
// is still incomplete after DefaultReassemblyTimeout, when a newer one from
// the same sender begins or when a segment contradicts it, ignores
// duplicates, and counts every segment by outcome (ReassemblyCounters); a
// complete announcement is then checked exactly like a single datagram,
// signature over the whole of it first. A lost segment loses the
// announcement, and the appliance's next repetition heals it, as for a lost
// datagram.
//
// A receiver checks the source address first (HandleFrom: the appliance's
// LAN addresses only), then the header up to the cluster name (an
// announcement of another cluster is ignored without its signature being
// checked), then the signature, and only then decodes the rest; nothing
// over the configuration's limits is ever built.
//
// # Pins
//
// A pinned client goes, in each table of an announcement, to its pinned
// server when that server is live there (a member, up, with a positive
// weight), else to its bucket's owner; it is granted to the server every
// table agrees on, or to nobody (Message.PinGrants). ghostnode puts the
// pins ahead of the hash: the server granted a pinned client accepts it,
// every other server drops it. The Transition treats each pin like a
// bucket (a pinned server's failure or recovery is released before it is
// granted), and the pins themselves like the seed: a change of pins
// releases every bucket and pin, then acquires once every server has
// acknowledged.
//
// # Order, freshness and replays
//
// Each run of the appliance announces under its own epoch, a random number
// (NewEpoch), never a time: an appliance that boots with its clock behind
// is not "older", and no number a sender picks is "later" than every
// genuine one. Within an epoch, seq counts table changes and tx every
// datagram; the appliance repeats its current table every interval (1s by
// default) with the same seq and a new tx, so that a lost datagram heals
// itself, while an exact replay (or a late duplicate) is recognisably not
// fresh. A Receiver remembers the last tx heard in each of the MaxEpochs
// epochs heard last, and:
//
//   - ignores a datagram from another source than the appliance's
//     (IgnoreForeign), another cluster's announcement (IgnoreOtherCluster),
//     a bad signature (IgnoreBadMAC), and what it cannot read
//     (IgnoreMalformed);
//   - ignores an authentic datagram whose tx is not after the last one heard
//     in its epoch (IgnoreStale): replays change nothing and do not count as
//     the appliance being alive; a datagram of an epoch not remembered is
//     fresh;
//   - applies a fresh one of another epoch than the applied table's, or of
//     the same epoch with a larger seq (Apply): the appliance that speaks now
//     is in charge; counts one with the same epoch and seq as a Repeat, and
//     ignores an older seq of the same epoch (IgnoreStale);
//   - keeps the last table applied for as long as nothing newer arrives.
//
// An agent that restarts loses its replay state unless it saves it
// (ghostnode run keeps Floors in its state directory and restores them with
// SetFloors). Two appliances should not announce one cluster at once: each
// one's fresh datagrams would be applied in turn. An appliance that takes
// over from another continues its announcements (Follower, Transition.Adopt)
// instead of starting with an announcement that grants nothing.
//
// # Security
//
// The signature authenticates the sender as the holder of the cluster's
// private key and the content as unmodified; servers hold only the public
// key, so a compromised server cannot forge. Replays of anything heard in
// the remembered epochs are stale; even the key holder cannot block the
// appliance's next run (its epoch is new), so the replay state cannot be
// poisoned past a restart. Nothing is secret: the membership is visible to
// anyone on the LAN. The cluster name is signed, so one key pair for two
// clusters still cannot move one's announcement to the other.
//
// Acknowledgements are not signed: a server holds no secret. The appliance
// takes one only from the server's own address, on the cluster's LAN, for
// the epoch in force; the appliance never routes outside traffic to the
// announce port, and the epoch is random. A LAN host that sees the
// announcements can still forge one: at worst the appliance then grants a
// moved bucket before its old owner released it, the duplicate answers
// break before make otherwise prevents; it can never steer traffic, since
// the filters follow only signed tables.
package announce
