package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// TestTTLFloodKeepsPathMTUErrors: ICMP errors are budgeted per link and
// per type. Client A floods TTL 1 datagrams through the appliance (far
// over the 1000/s time-exceeded budget); meanwhile client B sends DF
// datagrams larger than the LAN's MTU to the ghost. Every one of B's
// draws ICMP fragmentation needed, while A's time-exceeded errors are
// visibly limited. With one budget for everything, the flood would starve
// B's path-MTU discovery.
func TestTTLFloodKeepsPathMTUErrors(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 2, clientAddrs: 2})
	for i, s := range tp.servers {
		s.ns.MustRun("ip", "link", "set", "e0", "mtu", strconv.Itoa(lanMTU))
		tp.rtr.MustRun("ip", "link", "set", fmt.Sprintf("l-s%d", i), "mtu", strconv.Itoa(lanMTU))
	}
	base := strings.Replace(tp.baseConfig(), "name = \"lan0\"\n", fmt.Sprintf("name = \"lan0\"\nmtu = %d\n", lanMTU), 1)
	tp.start(base + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	a, b := tp.clientSource(0), tp.clientSource(1)
	capCli := tp.cli.Capture("c0", "icmp")

	const floodPackets, pings = 40000, 30
	flooded := make(chan error, 1)
	go func() {
		flooded <- tp.cli.Do(func() error {
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, 1) })
				return serr
			}}
			pc, err := lc.ListenPacket(context.Background(), "udp4", a+":0")
			if err != nil {
				return err
			}
			defer pc.Close()
			dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ghostAddr + ":9000"))
			start := time.Now()
			for i := range floodPackets {
				pc.WriteTo([]byte("ttl one"), dst) // errors (a full queue) only thin the flood
				if i%200 == 199 {
					time.Sleep(10 * time.Millisecond) // about 20000/s, for about 2 s
				}
				if time.Since(start) > 5*time.Second {
					break
				}
			}
			return nil
		})
	}()
	time.Sleep(200 * time.Millisecond) // the flood has drained the time-exceeded budget
	// B's datagrams: 1500 bytes with DF, sent whatever path MTU the kernel
	// learnt (IP_PMTUDISC_PROBE), 50 ms apart.
	err := tp.cli.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_PROBE)
			})
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", b+":0")
		if err != nil {
			return err
		}
		defer pc.Close()
		dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ghostAddr + ":9000"))
		for range pings {
			if _, err := pc.WriteTo(make([]byte, 1472), dst); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("client B's DF datagrams: %v", err)
	}
	if err := <-flooded; err != nil {
		t.Fatal(err)
	}
	pkts := capCli.Stop()
	fragNeeded, timeExceeded := 0, 0
	for _, p := range pkts {
		if p.Src.String() != upAddr || p.Proto != harness.ProtoICMP {
			continue
		}
		switch {
		case p.ICMPType == 3 && p.ICMPCode == 4 && p.Dst.String() == b:
			fragNeeded++
		case p.ICMPType == 11 && p.Dst.String() == a:
			timeExceeded++
		}
	}
	limited := counter(t, tp.status(), "icmp_rate_limited")
	t.Logf("during a flood of %d TTL 1 datagrams: %d time exceeded sent, %d limited; %d of %d DF datagrams drew fragmentation needed",
		floodPackets, timeExceeded, limited, fragNeeded, pings)
	if limited < floodPackets/4 || timeExceeded > floodPackets/2 {
		t.Fatalf("the flood was not limited (%d time exceeded sent, %d limited): the test shows nothing", timeExceeded, limited)
	}
	if fragNeeded != pings {
		t.Errorf("%d of %d DF datagrams over the LAN MTU drew fragmentation needed during the flood, want all", fragNeeded, pings)
	}
}
