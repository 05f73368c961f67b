// Package dispatch puts the dispatcher on the appliance's datapath and runs
// its clusters. The hash, the bucket table and the selectors (the contracts
// that servers and scripts rely on) are package core's; this package uses
// them:
//
//   - the Forwarder (forwarder.go) is the dispatch stage of the router's
//     datapath: for a routing-mode cluster it picks each packet's server
//     from the published View and sends the frame to that server's MAC with
//     the IP packet unchanged but for its TTL; ICMP errors about a client's
//     flow follow that flow (icmperr.go); a transition window keeps moved
//     connections on their old servers (transition.go, flowmem.go);
//   - the Manager (manager.go) owns the clusters of a running appliance:
//     their membership and health (health checks from package health), the
//     tables it builds from them and publishes to the Forwarder, the
//     servers' MACs it polls from the appliance's neighbour tables
//     (macs.go), the announcements of broadcast clusters (announcing.go),
//     the transition windows (window.go) and the state it reports as data
//     (state.go); the appliance renders that state for its operators.
//
// The packet path reads only immutable snapshots published atomically; the
// Manager's lock is never taken per packet.
//
// # A table build does not slow the datapath
//
// The forwarding stage's per-packet cost is unchanged while a table is
// built on another goroutine: in BenchmarkForwarderDuringBuild its CPU time
// per packet during a 1000-server build is 0.97-1.14 of that without
// (cpu-ratio, loaded). Its wall time per packet was 1.2-2.3 times that without
// (ratio) because on the loaded machine the build's thread and the
// forwarding thread share their process's slice of two busy cores; an
// appliance with a core to spare does not see that.
//
// # Planned changes in routing mode
//
// While buckets change owner in a planned change, the forwarding stage keeps
// the moved buckets' established connections on their old servers with a
// bounded flow memory; transition.go documents the rules, the counters and
// the cost per packet beside the stateless path.
package dispatch
