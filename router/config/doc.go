// Package config owns ghostrouter's configuration file: its TOML schema, its
// strict decoding, its defaults and its validation. The schema is a
// contract: ghostrouter, the server agent ghostnode (which reads the same
// file to learn its cluster) and operators' files rely on it. README.md in
// this directory is its reference, every table and key with its type,
// default and example; reference_test.go asks the decoder which keys it
// knows in every table and fails when the reference and the decoder
// disagree.
//
// The rules every file follows: unknown keys and wrong types are errors;
// every error names the file, the line and the key; durations are strings
// in Go's syntax ("500ms"); a reload with a bad file keeps the running
// configuration.
//
// It is the first stage of the appliance's life: [Load] (or [Parse]) turns a
// file into a [Config] that is complete and consistent, or into [Problems],
// before any TAP device opens or any packet flows. Nothing downstream
// (router/, dispatch/, arp/, icmp/, cmd/) re-validates what this package
// guarantees:
//
//   - every key is known and has the right TOML type;
//   - every default is filled in (see the Default constants);
//   - addresses are netip values; interface addresses keep their host bits
//     (198.51.100.1/24 is the address 198.51.100.1 on the subnet
//     198.51.100.0/24); route destinations are canonical;
//   - every route has an interface (resolved from its next hop when not
//     given), every neighbor, cluster, server and broadcast address lies on
//     a connected subnet of the interface it names;
//   - names (interfaces, clusters), ghost addresses, server ids and server
//     addresses do not collide;
//   - every cluster is within the appliance's limits, the constants of
//     package dispatch/limits that the bucket table, the modulo selector and
//     the announcement codec use too (see [ServerLimit]): at most
//     [MaxBuckets] buckets, weights up to [MaxWeight], at most [MaxServers]
//     servers, [MaxModuloServers] with hash = "modulo", and
//     [MaxAnnounceMembers] (the same as MaxServers: an announcement longer
//     than a datagram is sent in segments) in a broadcast cluster with an
//     announce_key. A
//     cluster over its server limit is reported at the first server too
//     many. So a file that validates never fails to start on a limit;
//   - a server's mac (routing mode only; it pins the server's MAC, which the
//     appliance otherwise resolves and guards itself) is a unicast MAC;
//   - enumerated keys are typed values, never strings: mode is a [Mode],
//     hash a [Hash] (its zero value is jhash, the default), check a [Check]
//     (its zero value is none, also what a cluster without [cluster.health]
//     gets), each with the file's word as its String and text form; MACs
//     are [MAC] values ([6]byte: comparable, a map key; the zero MAC means
//     none, which no file can write).
//
// The decoded types record where each table was written (their Line
// fields) for problem reports. Code that compares configurations (a reload
// deciding what changed) compares what they do, not where the file wrote
// them: the dispatcher, for one, runs a line-free spec of each cluster.
//
// [[vrrp]] tables (vrrp.go) are the appliance's VRRPv3 virtual routers:
// interface (a configured one, with an address to send from: IPv4, or
// IPv6 link-local), vrid (1..255, once per interface and family), priority (1..254,
// default 100; 255 = the addresses are the interface's own), interval
// (default "1s"; 0.01s..40.95s in whole centiseconds), addresses (one
// family, on the interface's subnets or link-local, not the appliance's own
// unless priority is 255, each in one virtual router), preempt (default
// true), group (sync group name), checksum ("rfc5798", the default, or
// "rfc9568") and unicast_peers (same family, on the interface's subnets).
//
// A broadcast cluster's announce_key_file names the Ed25519 private key
// that signs its table announcements (a relative path is relative to the
// file's directory). Load checks it is a regular file its group and others
// cannot access and reads it; [Reload] keeps the running configuration's
// key when the file is unchanged (an appliance that dropped its privileges
// may not read it again); [LoadWithoutKeys] (the server agent) only records
// the path. Durations have floors and ceilings: announce_interval 100ms to
// 1h, health interval 10ms to 1h, health timeout at least 100µs.
//
// [router] user names who the appliance runs as once its devices are open
// (default nobody, resolved to ids when the file is loaded); icmp_rate,
// icmp_burst and icmp_ratemask set the per-link, per-type budgets of the
// ICMP errors the datapath sends (defaults 1000/s, 50, 0x1838: Linux's
// icmp_msgs_per_sec, icmp_msgs_burst and icmp_ratemask 0x1818, plus
// redirects).
//
// Validation is one pass that collects every problem rather than stopping at
// the first: an operator fixing a file sees all of it at once, each problem as
// "FILE:LINE: KEY: MESSAGE", which is what `ghostrouter check` prints.
//
// BurntSushi/toml does the TOML syntax; it records one position per dotted
// key, without array indices, and keeps it private, so this package locates
// lines itself (locate.go): a small scanner over the already-validated text
// that maps every key path, array indices included, to its line.
//
// Two cluster keys bound what a routing-mode cluster remembers while a
// planned change (a server added, drained, reweighted or recovered; a
// reload) moves buckets: drain_timeout (a duration, "0s" to "24h", default
// "5m"; "0s" moves connections at once) is the longest the connections of
// moved buckets stay on their old server, and flow_memory (64 to 4194304,
// default 65536, about 5 MB, allocated only while buckets move) is how
// many flows it remembers meanwhile.
//
// The package has no state: a Config is a plain value, safe to share once
// built and never modified by this package after Parse returns.
package config
