// Package tune chooses a cluster's dispatch hash settings from the access logs
// its servers already write: the patent's claims 7, 14 and 21 ("the hash
// function is determined based on an analysis of a distribution of client IP
// addresses in an access log").
//
// The pipeline has four stages, each usable on its own:
//
//	access logs ──ParseLine──> Population (per-client requests and bytes)
//	            ──Evaluator.Search──> per-candidate max/mean and CV
//	            ──Report / WriteSVG──> text report, bar charts, SVG
//	            ──RewriteConfig──> seed/buckets/hash lines of one cluster
//
// Reading streams: memory is bounded by the number of distinct clients, not
// by the number of log lines. The search aggregates per distinct client once,
// then for each candidate seed hashes every distinct client once and adds its
// weight to the owner of its bucket through a table built once per bucket
// count, so a seed costs O(distinct clients). Results are deterministic for
// the same input: the seed sequence is fixed (0..N-1 and the current seed)
// and the order is total: max/mean, then CV, then the current hash, the
// current bucket count, fewer buckets, the smaller seed.
//
// Main is the entry point behind `ghostrouter tune`.
package tune
