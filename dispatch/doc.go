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
// remainders, ties by a hash of the ID), so counts are exactly the floor or
// ceiling of B*w/W. Buckets are matched to servers within those capacities by
// rendezvous (highest-random-weight) hashing: each (bucket, server) pair has a
// score, a 64-bit hash of the two (with unequal weights, the weighted
// rendezvous score w/-ln(u)), and the table is the unique stable matching under
// the scores, found by bucket-proposing deferred acceptance: a bucket goes to
// its best-scoring server that does not prefer the buckets it already holds.
// Without capacities this would be plain rendezvous hashing, where a new server
// takes exactly the buckets that score it highest (1/(N+1) of them) and nothing
// else moves; the capacities turn rendezvous' random imbalance (about
// ±sqrt(B/N) per server) into exact balance at the price of a few more moves.
//
// Levels 1 and up hand on the buckets of servers that are down. Every bucket
// has a fixed preference list over the membership; the table gives it to the
// first live server on that list, so a server failing moves only the buckets
// it holds, recovery restores exactly the previous table, and the result does
// not depend on the order in which servers failed. The list of a bucket whose
// base owner is A continues with the buckets of A matched, as above, to the
// other members with capacities proportional to their weights; the buckets
// that land on a second server B likewise continue among the members other
// than A and B. Because these levels are computed over the membership, not
// over the live servers, one server failing spreads its buckets over the
// others in exact proportion (each gains the floor or ceiling of its share),
// and two failing still spread evenly up to rounding. Past cappedDepth levels
// a bucket's list is plain rendezvous order, which keeps builds fast when most
// servers are down at the cost of only statistical evenness for buckets whose
// first cappedDepth+1 choices are all down.
//
// Measured with equal weights (TestTableBalance, TestTableFailure,
// TestTableAdd): counts are floor or ceiling of B/N for every N; a single
// failure moves exactly the failed server's buckets and each survivor gains the
// floor or ceiling of its share; adding a server moves B/(N+1) plus about
// 0.8*sqrt(B) buckets (the capacities re-balancing rendezvous' per-server
// sampling noise), i.e. at most 1/(N+1) + 1% of the buckets from 16384 buckets
// up, and about 1/(N+1) + 1.5% at 4096. The exactly minimal 1/(N+1) would need
// each old server to give the newcomer exactly its quota drop, which no
// order-independent rendezvous construction does; plain mod N would move
// N/(N+1). Building a 65536-bucket table over 64 servers takes tens of
// milliseconds (BenchmarkNewTable).
//
// # The patent's function
//
// ModuloSelector is the patent's literal k = CA mod N with its failure rule;
// see its documentation for how the rule extends to several failures.
//
// # Concurrency
//
// Tables and selectors are immutable after construction and safe for
// concurrent use; the forwarding path reads them without locks and a change of
// membership or health builds a new one. Select, JHash4 and Bucket do not
// allocate.
package dispatch
