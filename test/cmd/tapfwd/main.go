// Command tapfwd is the benchmark's bare TAP forwarder: the least a router over TAP devices
// must do, and nothing else, to measure what a TAP allows on a machine (test/bench, the
// "bare TAP" column). It opens one TAP per link with router/tap's Open (no virtio-net header,
// no offload), in a bridge; its per-frame loop is its own, not the appliance's. It answers ARP for its own address on each link, and forwards IPv4 between the
// links: one goroutine per link reads a frame, rewrites the Ethernet header and the TTL,
// and writes it to the other link. A frame for the ghost goes to the MAC of the server
// jhash(client address) picks (dispatch/core's hash contract, as the kernel reference's
// nftables rule); any other destination in a link's /24 to the MAC last seen sending from
// that address on that link. No netstack, no ICMP, no fragments, no options: a frame it
// cannot forward this way is dropped. Not part of the appliance and not for production.
//
//	tapfwd -link up0=198.51.100.1/24@br-up -link lan0=192.0.2.1/24@br-lan \
//	    -ghost 203.0.113.10 -server 192.0.2.11=MAC -server ... -seed 0x5eed
//
// It prints "ready" once its TAPs are up, and runs until SIGINT or SIGTERM.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

type link struct {
	name   string
	addr   netip.Prefix
	bridge string
	mac    [6]byte
	file   *os.File
	fd     int
	// neigh holds the MAC last seen sending from each host address of the /24, packed
	// in the low 48 bits, bit 48 set when known.
	neigh [256]atomic.Uint64
}

type fwd struct {
	links   []*link
	ghost   [4]byte
	servers [][6]byte
	seed    uint32
	dropped atomic.Uint64
}

type linkFlags []string

func (l *linkFlags) String() string     { return strings.Join(*l, ",") }
func (l *linkFlags) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var links, servers linkFlags
	ghost := flag.String("ghost", "", "the ghost address")
	seed := flag.Uint("seed", 0, "the jhash seed")
	flag.Var(&links, "link", "NAME=ADDR/24@BRIDGE (repeat: two links)")
	flag.Var(&servers, "server", "ADDR=MAC of a server, in server order (repeat)")
	flag.Parse()
	f, err := parse(links, servers, *ghost, uint32(*seed))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tapfwd:", err)
		os.Exit(2)
	}
	for _, l := range f.links {
		if err := l.open(); err != nil {
			fmt.Fprintln(os.Stderr, "tapfwd:", err)
			os.Exit(1)
		}
	}
	for i, l := range f.links {
		go f.run(l, f.links[1-i])
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Printf("dropped %d\n", f.dropped.Load())
}

// parse makes the forwarder the flags describe; its links are not open yet.
func parse(links, servers []string, ghost string, seed uint32) (*fwd, error) {
	if len(links) != 2 {
		return nil, errors.New("want two -link")
	}
	g, err := netip.ParseAddr(ghost)
	if err != nil || !g.Is4() {
		return nil, fmt.Errorf("-ghost %q: want an IPv4 address", ghost)
	}
	f := &fwd{ghost: g.As4(), seed: seed}
	for _, s := range servers {
		_, m, ok := strings.Cut(s, "=")
		hw, err := net.ParseMAC(m)
		if !ok || err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("-server %q: want ADDR=MAC", s)
		}
		f.servers = append(f.servers, [6]byte(hw))
	}
	if len(f.servers) == 0 {
		return nil, errors.New("want at least one -server")
	}
	for i, s := range links {
		name, rest, ok1 := strings.Cut(s, "=")
		pfx, br, ok2 := strings.Cut(rest, "@")
		p, err := netip.ParsePrefix(pfx)
		if !ok1 || !ok2 || err != nil || !p.Addr().Is4() || p.Bits() != 24 {
			return nil, fmt.Errorf("-link %q: want NAME=ADDR/24@BRIDGE", s)
		}
		l := &link{name: name, addr: p, bridge: br, mac: [6]byte{0x02, 0x7a, 0x70, 0, 0, byte(1 + i)}}
		f.links = append(f.links, l)
	}
	return f, nil
}

// open creates the TAP (router/tap: in its bridge, up) and keeps its queue's descriptor
// for the writes of the other link's loop.
func (l *link) open() error {
	d, err := tap.Open(tap.DeviceConfig{Name: l.name, Bridge: l.bridge, NoOffload: true})
	if err != nil {
		return err
	}
	l.file = d.Files()[0]
	rc, err := l.file.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s: %w", l.name, err)
	}
	return rc.Control(func(fd uintptr) { l.fd = int(fd) })
}

// run forwards what in receives, to out or back to in (ARP replies).
func (f *fwd) run(in, out *link) {
	buf := make([]byte, 65536)
	for {
		n, err := in.file.Read(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tapfwd: read", in.name+":", err)
			os.Exit(1)
		}
		f.frame(in, out, buf[:n])
	}
}

func (f *fwd) frame(in, out *link, b []byte) {
	if len(b) >= hdr.EthLen && hdr.EtherType(b) == hdr.EtherARP {
		f.arp(in, b)
		return
	}
	if !hdr.IsIPv4(b) {
		f.dropped.Add(1)
		return
	}
	ip := hdr.IP4(b[hdr.EthLen:])
	if ip[0] != 0x45 || ip.TTL() <= 1 || ip.TotalLen() > len(ip) {
		f.dropped.Add(1)
		return
	}
	src, dst := ip.Src(), ip.Dst()
	in.learn(src, hdr.SrcMAC(b))
	var mac [6]byte
	switch {
	case dst == f.ghost:
		if out != f.links[1] {
			f.dropped.Add(1)
			return
		}
		mac = f.servers[core.Bucket(core.JHash4(src, f.seed), uint32(len(f.servers)))]
	case out.on(dst):
		v := out.neigh[dst[3]].Load()
		if v>>48 == 0 {
			f.dropped.Add(1)
			return
		}
		for i := range 6 {
			mac[i] = byte(v >> (8 * (5 - i)))
		}
	default:
		f.dropped.Add(1)
		return
	}
	copy(b[0:6], mac[:])
	copy(b[6:12], out.mac[:])
	hdr.DecTTL(ip)
	if _, err := unix.Write(out.fd, b); err != nil {
		f.dropped.Add(1)
	}
}

func (l *link) on(a [4]byte) bool { return l.addr.Contains(netip.AddrFrom4(a)) }

func (l *link) learn(a [4]byte, mac [6]byte) {
	if !l.on(a) {
		return
	}
	var v uint64 = 1 << 48
	for i := range 6 {
		v |= uint64(mac[i]) << (8 * (5 - i))
	}
	if l.neigh[a[3]].Load() != v {
		l.neigh[a[3]].Store(v)
	}
}

// arp learns the sender of every ARP frame and answers requests for the link's address.
func (f *fwd) arp(l *link, b []byte) {
	a := b[hdr.EthLen:]
	if len(a) < hdr.ARPLen || binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != hdr.EtherIPv4 || a[4] != 6 || a[5] != 4 {
		f.dropped.Add(1)
		return
	}
	l.learn([4]byte(a[14:18]), [6]byte(a[8:14]))
	if binary.BigEndian.Uint16(a[6:]) != 1 || [4]byte(a[24:28]) != l.addr.Addr().As4() {
		return
	}
	var r [hdr.EthLen + hdr.ARPLen]byte
	copy(r[0:6], a[8:14])
	copy(r[6:12], l.mac[:])
	binary.BigEndian.PutUint16(r[12:], hdr.EtherARP)
	ra := r[hdr.EthLen:]
	copy(ra[0:6], a[0:6])
	binary.BigEndian.PutUint16(ra[6:], 2)
	copy(ra[8:14], l.mac[:])
	copy(ra[14:18], a[24:28])
	copy(ra[18:24], a[8:14])
	copy(ra[24:28], a[14:18])
	if _, err := unix.Write(l.fd, r[:]); err != nil {
		f.dropped.Add(1)
	}
}
