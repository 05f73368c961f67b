// Package bench measures ghostrouter against the Linux kernel: the same two-armed topology built twice in
// one run, once with a Linux router namespace (kernel forwarding, kernel dispatching with
// nftables) and once with ghostrouter, measured alternately, and printed side by side
// with the ratio ghostrouter/kernel for every figure. A third build of the topology runs
// test/cmd/tapfwd, a bare TAP loop (a read, a header rewrite and a write per frame), through
// the UDP and web workloads: what any router over TAPs starts from on the machine.
//
// The measuring runs as a privileged test, TestBench (bench_test.go), which skips unless
// GHOSTROUTER_BENCH=1, so `go test ./...` never runs it; see README.md for the command,
// the figures and a table from one run. This file's package holds the parts that need no
// root: the figures, medians and percentiles, the parsers of iperf3, ping and /proc output,
// and the table; report_test.go tests them in every `go test ./...`.
//
//	cli ── c0 ─── u-c ┐                                         ┌ l-s0 ─── e0 ── srv0 10.0.0.11
//	198.51.100.10/24  br-up ── up0 [ghostrouter] lan0 ── br-lan ┤ l-s1 ─── e0 ── srv1 10.0.0.12
//	+ 16 client /32s  │   198.51.100.1        10.0.0.1          └ l-s2 ─── e0 ── srv2 10.0.0.13
//	                  └──────────── (rtr namespace) ────────────┘
//	kernel reference: no TAPs; 198.51.100.1 on br-up, 10.0.0.1 on br-lan, ip_forward=1,
//	and the ghost dispatched by nftables (see topo_test.go).
//	every server: ghost 203.0.113.10/32 on lo, arp_ignore=1, arp_announce=2, rp_filter=0.
package bench
