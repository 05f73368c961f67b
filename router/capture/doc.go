// Package capture owns the appliance's packet capture: sessions that copy
// the frames of one link (both directions, as on the wire, Ethernet header
// included) into a bounded queue for a reader, filtered by a classic BPF
// program; the pcap format they are written in; and the compilation of a
// tcpdump filter expression into that program.
//
// A session is attached to a link's endpoint as its tap (router/tap). The
// datapath goroutines run the filter and copy matching frames; they never
// wait: when the queue is full, or holds more than its byte budget, the
// frame is dropped and counted, so a slow reader loses frames and never
// slows forwarding. With no session on a link, the datapath pays one atomic
// load per frame and allocates nothing.
package capture
