package main

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
	"github.com/ghostrouter/ghostrouter/test/harness"
)

// TestPrivilegedRunLANOnly: `ghostnode run` holds only the public key and
// hears announcements only on its LAN interface. The server gets a second
// interface (eth1, to another network): an authentic announcement
// claiming the appliance's source address, arriving there, is not even
// received; the same datagram arriving on the LAN is applied.
func TestPrivilegedRunLANOnly(t *testing.T) {
	tp := newTopo(t)
	out := tp.h.NS("out")
	tp.h.Veth(out, "o0", tp.srv, "eth1")
	out.AddrAdd("o0", "192.0.2.2/24")
	tp.srv.AddrAdd("eth1", "192.0.2.12/24")

	dir := t.TempDir()
	priv := filepath.Join(dir, "web.key")
	if _, err := keyfile.Generate(priv, keyfile.PublicPath(priv)); err != nil {
		t.Fatal(err)
	}
	key, _, err := keyfile.ReadPrivate(priv)
	if err != nil {
		t.Fatal(err)
	}
	run := tp.srv.Start("ghostnode-run", tp.bin, "run", "--cluster", "web", "--ghost", e2eGhost, "--id", "1",
		"--key-file", keyfile.PublicPath(priv), "--appliance", "10.0.0.1", "--lan", "eth0",
		"--buckets", "4096", "--seed", "0x5eed", "--state-dir", tp.stateDir)
	run.WaitForLog("listening for announcements on 0.0.0.0:9470 on eth0", 30*time.Second)

	a := &announcer{t: t, ns: tp.lan, epoch: announce.NewEpoch()}
	m := a.message(1, 0)
	b := a.marshal(m, key)
	// From the other network, claiming 10.0.0.1, to eth1's address.
	err = out.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_TRANSPARENT, 1) })
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "10.0.0.1:0")
		if err != nil {
			return err
		}
		defer pc.Close()
		for range 3 {
			if _, err := pc.(*net.UDPConn).WriteToUDPAddrPort(b, netip.MustParseAddrPort("192.0.2.12:9470")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The datagrams did arrive on eth1 (the kernel counts them as UDP
	// datagrams delivered to no socket), yet the run heard nothing.
	heard := func() uint64 {
		if r := tp.status(t, "web"); r.Run != nil {
			return r.Run.Counters.Received
		}
		return 0
	}
	harness.WaitFor(t, 5*time.Second, "the datagrams to reach the server's UDP layer", func() bool {
		return udpNoPorts(t, tp.srv) >= 3 || heard() > 0
	})
	time.Sleep(300 * time.Millisecond) // a run that heard them would report within a tick
	if r := tp.status(t, "web"); r.Run == nil || r.Run.Counters.Received != 0 {
		t.Fatalf("announcements arriving on another interface than the LAN were received: %+v", r.Run)
	}
	// The same bytes on the LAN are applied.
	a.send(b, "10.0.0.255:9470")
	want := ownedIn(t, m)
	harness.WaitFor(t, 10*time.Second, "the announcement from the LAN applied", func() bool {
		r := tp.status(t, "web")
		return r.Run != nil && r.Run.Applied != nil && len(r.Owned) == len(want)
	})
	if err := run.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	run.Wait(10 * time.Second)
}

// udpNoPorts is the kernel's count of UDP datagrams that arrived for no
// socket (/proc/net/snmp, Udp: NoPorts) in ns.
func udpNoPorts(t *testing.T, ns *harness.NS) int {
	t.Helper()
	out, err := ns.Run("cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "NoPorts" && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	t.Fatalf("no Udp NoPorts in /proc/net/snmp:\n%s", out)
	return 0
}
