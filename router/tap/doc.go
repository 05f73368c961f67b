// Package tap owns the appliance's Ethernet links: opening or creating Linux
// TAP devices, configuring them (MTU, up, bridge, segmentation offload), and
// the netstack link endpoint that moves frames between a TAP file descriptor
// and gVisor's stack. The endpoint also offers the hook that the dispatcher,
// the guards and the router's fast path use to take frames before netstack
// sees them.
//
// # Why our own endpoint
//
// gVisor ships a link endpoint for file descriptors, link/fdbased. Read in
// the gVisor version this module requires (go.mod) and tried on real TAP
// devices in namespaces, it has three properties a router cannot live with:
//
//   - One frame addressed to a foreign unicast MAC stops its receive loop
//     for good: the header parser rejects the frame and the dispatch loop
//     treats that as the end, so the link is dead from then on. A Linux
//     bridge flooding unknown unicast sends such frames in normal operation.
//     (Fixed upstream after the version we use.) Here a foreign frame is
//     counted (Stats.RxForeign) and dropped, and the loop goes on; the
//     additional MACs of accept.go (a VRRP virtual MAC while master) are
//     taken in.
//   - A link write error other than "no buffer space", "message too long"
//     or "closed" panics the whole process while netstack forwards: its
//     forwarding error handler knows no other error. A TAP whose interface
//     is down returns EIO on write, so an operator's `ip link set down`
//     would crash the router. Here every write error is counted
//     (Stats.TxErrors) and the packet dropped; WritePackets never reports
//     an error to netstack.
//   - On a TAP file descriptor it uses readv, one system call per received
//     frame, and one writev per sent frame (recvmmsg, packet mmap and GSO
//     apply to sockets only), and it cannot carry the virtio-net header:
//     opened with IFF_VNET_HDR it would not strip it. Measured under load,
//     netstack forwarding over fdbased spent about 46% of its time in those
//     per-frame system calls, and the large gap to the kernel on TCP is segmentation
//     offload: the kernel moves 64 KB super-frames, a plain TAP 1500-byte
//     frames. So the devices are opened with IFF_VNET_HDR and the kernel is
//     told with TUNSETOFFLOAD which offloads the endpoint takes; a system
//     call then moves a whole TCP super-frame of up to 64 KiB, which the
//     fast paths forward whole (offload.go). Anything for netstack is
//     segmented first.
//
// # Batches
//
// A receive loop reads every frame its queue holds before it handles any
// (bounded: BatchFrames, BatchBytes, BatchDelay), hands them to the hook in arrival order, and writes what
// the hooks forwarded at the end of the batch, in order: through io_uring, the
// frames for one egress queue in one system call, so frames that arrived
// together reach the far side's host together (a response and its FIN: the
// client reads both before it closes, as behind a Linux router); with plain
// write(2)s where the kernel refuses io_uring (batch.go, uring.go). Within a
// batch each flow's frames are written one after the other; a batch cut by a
// bound hands its last small TCP data segments to the next, and a batch whose
// queue runs empty behind one may be held open a few microseconds for what
// follows, while that pays (hold.go).
//
// A receive loop that does stop (a read error) is a fault, reported through
// EndpointConfig.OnFault, never silence.
//
// The kernel's own TAP MAC filter (TUNSETTXFILTER, the device's MAC plus
// all-multicast) would also keep foreign unicast away from fdbased. This
// package does not set it: the endpoint filters in its receive loop, which
// counts what it drops and can take in additional MACs without an ioctl.
//
// The devices are opened with TUNSETIFF directly (not github.com/songgao/water):
// water cannot set IFF_VNET_HDR nor TUNSETOFFLOAD, cannot set the TAP's MAC
// filter, and always issues TUNSETPERSIST.
//
// # Netstack facts the rest of the datapath relies on
//
//   - netstack's IPv4 forwarding sends ICMP time exceeded only for packets
//     that arrive with TTL 0; a packet that arrives with TTL 1 is forwarded
//     with TTL 0. So the appliance handles TTL <= 1 itself before netstack:
//     the router's TTL guard (package router) answers IPv4 packets in
//     transit with TTL <= 1 with time exceeded, the router's fast path
//     leaves them to that guard, and the dispatcher, a stage that runs
//     before the guard, answers ghost packets with TTL (hop limit) <= 1
//     itself.
//   - A hook runs on the receive goroutines, one per queue, so it must be
//     safe for concurrent use and must not block (see Hook).
package tap
