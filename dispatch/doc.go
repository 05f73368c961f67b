// Package dispatch is the appliance's dispatcher (EP 0 865 180 A2): the stage
// of the forwarding path that picks, for a packet sent to a cluster's ghost
// address, the server that handles the client. This file documents the pure
// core: the hash, the bucket table and the selectors built on them; the
// forwarding hook and membership handling sit on top of it.
//
//	client address ──JHash(addr, seed)──> h ──Bucket(h, buckets)──> bucket ──Table──> server
//	client address ──ModuloSelector (the patent's CA mod N)──────────────────────────> server
//
// # The hash (DESIGN.md contract 1)
//
// JHash is the Linux kernel's lookup3 jhash() over the address bytes in
// network order, and Bucket is the kernel's reciprocal_scale, so
// Bucket(JHash(a, S), B) is the bucket nftables computes for
// `jhash ip saddr mod B seed S` (`ip6 saddr` for IPv6) in a server's kernel.
// The appliance and a server's broadcast-mode filter therefore agree on every
// client; TestKernelJHashAgrees checks it against the running kernel.
//
// # The table (DESIGN.md contract 2)
//
// A Table maps each of B buckets to a server. It is a pure function of the set
// of servers (ID, weight, up) and B: servers are sorted by ID first, and every
// pseudo-random choice is a hash of server IDs and bucket numbers, never of
// positions, input order or time, so a backup appliance computes the same
// table. It is built in two steps.
//
// Level 0, the base table, covers the membership: every server with
// Weight > 0, up or down. Each server's capacity is its share of B by the
// largest-remainder method (floor(B*w/W), the seats left to the largest
// remainders, ties by a hash of the ID), so its count is exactly the floor or
// the ceiling of B*w/W. Buckets are matched to servers within those capacities
// by rendezvous (highest-random-weight) hashing: each (bucket, server) pair has
// a score, a 64-bit hash of the two (with unequal weights, the weighted
// rendezvous score w/-log2(u)), and the table is the unique stable matching
// under the scores, found by bucket-proposing deferred acceptance: each bucket
// gets the best-scoring server that does not hold its capacity in buckets that
// score it higher. Without capacities this would be plain rendezvous hashing,
// where a new server takes exactly the buckets that score it highest, 1/(N+1)
// of them, and nothing else moves; the capacities turn rendezvous' random
// imbalance (about ±sqrt(B/N) per server) into exact balance at the price of a
// few more moves.
//
// Levels 1 and up hand on the buckets of servers that are down. Every bucket
// has a fixed preference list over the membership, and the table gives it to
// the first live server on that list: a server failing moves only the buckets
// it holds, recovery restores exactly the previous table, and the result does
// not depend on the order in which servers failed. The lists are built level
// by level with the same capacity-capped matching: the buckets whose base
// owner is A continue over the other members, each taking its weight's share
// of A's buckets; those that land on a second server B continue over the
// members other than A and B; and so on. The lists are computed over the
// membership, not over the live servers, so one server failing spreads its
// buckets over the others in exact proportion (each gains the floor or ceiling
// of its share) and two failing spread them to within a few buckets. Beyond
// level cappedDepth (2) a list continues in plain rendezvous order, which keeps
// a build with most servers down fast at the cost of only statistical evenness
// for buckets whose first three choices are all down.
//
// Measured with equal weights (TestTableBalance, TestTableFailure,
// TestTableMultipleFailures, TestTableAdd; B = 4096 unless said):
//   - counts are the floor or ceiling of B/N for every N from 1 to 64;
//   - one failure moves exactly the failed server's buckets and each survivor
//     gains the floor or ceiling of its share; two failures leave survivors
//     within 2 buckets of B/live; many (20 of 33 down) within about 7% of it;
//   - adding a server moves B/(N+1) plus about 0.8*sqrt(B) buckets: the
//     capacities re-balance rendezvous' per-server sampling noise. That is at
//     most 1/(N+1) + 1.5% of the buckets at B = 4096 (N = 1..64), and about
//     1/(N+1) + 0.8% at 16384 and 1/(N+1) + 0.4% at 65536. The exact minimum would
//     need each old server to hand the newcomer exactly its quota drop;
//     rendezvous hashing hands it a random number of buckets from each, and
//     the capacities then even that out. Plain mod N moves N/(N+1).
//
// A build is O(B*N) hash evaluations: about 20 ms for 65536 buckets over 64
// servers (50 ms weighted, 80 ms with 62 of them down; BenchmarkNewTable).
//
// # The patent's function
//
// ModuloSelector is the patent's literal k = CA mod N with its failure rule;
// see its documentation for how the rule extends to several failures.
//
// # Planned changes in routing mode
//
// While buckets change owner in a planned change, the forwarding stage keeps
// the moved buckets' established connections on their old servers with a
// bounded flow memory; transition.go documents the rules, the counters and
// the cost per packet beside the stateless path.
//
// # Concurrency
//
// Tables and selectors are immutable after construction and safe for
// concurrent use; the forwarding path reads them without locks and a change of
// membership or health builds a new one. Select, JHash4 and Bucket do not
// allocate.
package dispatch
