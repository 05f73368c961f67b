// Package core is the dispatcher's pure core (EP 0 865 180 A2): the function
// that maps a client of a cluster's ghost address to the server that handles
// it. It owns the hash, the bucket table and the selectors built on them, and
// depends on no network stack, so the server agent computes the very tables
// the appliance does; package dispatch puts it on the forwarding path.
//
//	client address ──JHash(addr, seed)──> h ──Bucket(h, buckets)──> bucket ──Table──> server
//	client address ──ModuloSelector (the patent's CA mod N)──────────────────────────> server
//
// # The hash contract
//
// This section and the next are contracts: server agents, operators'
// scripts and tests outside the appliance rely on them, and a change here
// breaks every server's filter.
//
// A client's bucket is
//
//	bucket(client) = (jhash(client address bytes in network order, seed) * buckets) >> 32
//
// in 32-bit arithmetic with a 64-bit product. JHash is the Linux kernel's
// lookup3 jhash() (include/linux/jhash.h, initial value 0xdeadbeef plus the
// length plus the seed) over the address bytes in network order (4 for
// IPv4, 16 for IPv6), and Bucket is the kernel's reciprocal_scale, the
// multiply and shift above, so Bucket(JHash(a, S), B) is bit for bit the
// bucket nftables computes for `jhash ip saddr mod B seed S` (`ip6 saddr`
// for IPv6) in a server's kernel. The appliance and a server's
// broadcast-mode filter therefore agree on every client;
// TestKernelJHashAgrees checks it against the running kernel, on hundreds of
// random IPv4 and IPv6 clients.
//
// Worked example, seed 0x5eed and 3 buckets (TestJHashWorkedExample, and the
// kernel in TestKernelJHashAgrees):
//
//	198.51.100.12 → 1    198.51.100.13 → 0    198.51.100.14 → 1    198.51.100.15 → 2
//
// hash = "modulo" is instead the patent's literal function k = CA mod N
// (ModuloSelector, routing mode only; see "The patent's function" below).
//
// The contract holds for every appliance of a cluster: appliances with the
// same membership send every client to the same server, which is what a
// backup's takeover and ECMP scale-out over several active appliances rest
// on.
//
// # The table contract
//
// Each cluster has a table of `buckets` entries, each naming a server. Its
// properties, each one tested (the measurements are below):
//   - balance: with equal weights every server owns the floor or the ceiling
//     of buckets/N (unequal weights scale its share);
//   - a server failing moves only its own buckets, spread evenly over the
//     live servers, and its recovery moves exactly those back;
//   - adding a server moves close to 1/(N+1) of the buckets, not the
//     N/(N+1) of plain mod N;
//   - the table depends only on the membership (server IDs, weights, health)
//     and the number of buckets, never on the order of the configuration or
//     on start time, so a backup appliance, a second active appliance and a
//     server agent that receives an announcement all compute the same table;
//   - a new table is published atomically; the packet path never takes a
//     lock to read it.
//
// # How the table is built
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
// # Changes in proportion to what changed
//
// The lists up to level cappedDepth are a function of the membership (IDs
// and weights) and B only, never of health, so the tables of one membership
// share them (a plan). Level 0 is computed by NewTable; a level-1 group (the
// buckets of one base owner) or level-2 group (those of one base owner and
// one level-1 server) is computed the first time a table needs it, that is
// when those servers are down, and kept. Table.Update derives the table of
// new health from an old one: a server failing re-resolves only the buckets
// it owns (found through the lists that name it at the capped levels, and
// the table's list of buckets resolved past them), a server recovering only
// the buckets whose lists name it before their owner; both are O(B/N)
// buckets, plus the computation of one level-1 group of B/N buckets the
// first time a server fails. The new table's owner array is a copy of the
// old one (a 4-byte-per-bucket memory copy); the old table is untouched and
// keeps serving until the new one is published. A change of membership or
// weights is a new plan and a full build, which the Manager runs outside its
// lock while the datapath reads the published table; health that changes
// meanwhile is applied to the new table incrementally before it is
// published. Update's result is NewTable's for the same servers, bucket for
// bucket (TestTableUpdateEqualsFreshBuild checks thousands of random
// changes).
//
// A full build is about B*N hash evaluations, one pass over each bucket's
// candidates that keeps its best few (deferred acceptance then rarely needs
// another pass). The pass hashes four candidates per step, so that the
// processor overlaps their multiplications, and tests each against the
// window's worst with one integer compare. With unequal weights the
// candidates are grouped by weight, heaviest first: for one weight the
// weighted score falls with the hash, so a hash below one bound (recomputed
// when the window changes) cannot enter the window, and the logarithm is
// computed only for the few above it. The grouping changes only the order
// in which candidates are looked at, never the window (it orders by score,
// then server index), so the table is the same bit for bit (the golden
// fingerprints include two weighted 1000-server tables computed before).
//
// Measured on a 2-core build machine shared with several other builds
// and tests (AMD EPYC): "CPU" is the benchmark thread's own CPU time, which
// the load changes only through cache and core sharing (the 64-server
// baseline takes 21 ms alone and 26-34 ms under load); wall times include
// waiting for a CPU. B = 65536, equal weights unless said; ranges are over
// runs at load averages 0.7-5 ("quiet") and 11-19 ("loaded") (go test
// ./dispatch/core ./dispatch -run X -bench 'TableBuild|TableFailure|ManagerHealthChange|DuringBuild'
// -count 3, and -bench 'TableBuild/servers=(64|1000)/down=0'):
//
//	what (benchmark)                              CPU           wall          target
//	one failure among 1000 servers, derived       0.23-0.29 ms  0.44-0.97 ms  <= 5 ms
//	  and published (TableFailure/fail), loaded
//	its recovery (TableFailure/recover), loaded   0.09-0.14 ms  0.19-0.48 ms
//	one failure or recovery through the manager,  -             2.4-4.1 ms    <= 5 ms
//	  event and snapshot included (ManagerHealthChange), loaded
//	full build, 64 servers (TableBuild), quiet    21-25 ms      21-63 ms      baseline
//	                                     loaded   26-34 ms      78-265 ms
//	full build, 1000 servers, quiet               105-124 ms    114-216 ms    <= 250 ms
//	                          loaded              108-167 ms    342-690 ms
//	  ratio to the 64-server build of the run     x4.6-7.5      x5.1-16       (x15.6 the work)
//	full build, 1000 servers, weights 1..4, quiet 160-186 ms    160-187 ms    <= 250 ms
//	                                        loaded 158-243 ms   0.70-1.74 s
//	  ratio to the 64-server build of the run     x3.6-5.6      x3.4-13
//	full build, 1000 servers, 1 down, loaded      114-168 ms    0.36-1.1 s
//	full build, 1000 servers, 500 down, loaded    269-341 ms    0.60-1.7 s
//	full build, 4096 servers (the limit), loaded  418-547 ms    1.6-2.6 s
//	full build, 4096 servers, 4000 down, loaded   1.5-1.9 s     4.0-9.8 s
//
// The weighted 1000-server build took 311-436 ms of CPU (0.4-2.9 s wall)
// before its candidates were grouped by weight, the equal-weight one
// 150-197 ms before the four-at-a-time pass (the same machine, loaded).
// Both now meet 250 ms in CPU time even loaded (the weighted one with a
// margin of 3% at the worst loaded run, 26-36% quiet), and in wall time
// when the machine is quiet; loaded, the build's thread gets about a third
// of a core and its wall time is 3 to 7 times its CPU time. Before this
// design a full build took 2.2 s for 1000 servers and 91 s for 4096 with
// 4000 down, wall time on the same machine, and every failure was a full
// build under the manager's lock.
//
// Memory: a table holds 4 bytes per bucket, its server list and its list of
// buckets past the capped levels (65536 buckets: 265 KB at 64 servers,
// 311 KB at 1000, 352 KB at 1000 with 500 down, 459 KB at 4096, 737 KB at
// 4096 with 4000 down); the plan that the tables derived from it share
// holds about 17 to 75 bytes per bucket (1.14 MB at 64 servers, 1.46 MB at
// 1000, 1.31 MB at 1000 weighted, 2.42 MB at 1000 with 500 down, 1.66 MB at
// 4096, 4.9 MB at 4096 with 4000 down; TableBuild's table-B and plan-B).
//
// # Limits
//
// A cluster has at most MaxBuckets buckets, weights up to MaxWeight and at
// most MaxServers servers (MaxModuloServers with the modulo function), the
// constants of package limits, which the configuration's validation enforces
// too, so `ghostrouter check` accepts only what the appliance can run.
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
// membership or health makes a new one (Table.Update, which may run while the
// old table serves; tables sharing a plan serialize their updates on its
// lock). Select, JHash4 and Bucket do not allocate.
package core
