package main

import (
	"crypto/ed25519"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/node"
	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/test/harness"
)

// announcer sends announcements from the lan namespace, the appliance's
// side of the veth (10.0.0.1), the way the appliance does: UDP broadcast to
// port 9470.
type announcer struct {
	t     *testing.T
	ns    *harness.NS
	epoch uint64
	tx    uint64
	src   string // the source address; default 10.0.0.1
}

// message is an announcement of the test cluster (as broadcastConfig
// describes it) at seq, with the servers in down failed.
func (a *announcer) message(seq uint64, down ...int) *announce.Message {
	a.tx++
	m := &announce.Message{Cluster: "web", Epoch: a.epoch, Seq: seq, Tx: a.tx, Interval: time.Second, Hash: config.HashJhash,
		Seed: 0x5eed, Buckets: 4096, Ghost: netip.MustParseAddr(e2eGhost)}
	for id := range 3 {
		m.Members = append(m.Members, announce.Member{ID: id, Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + id)}), Weight: 1, Up: !slices.Contains(down, id)})
	}
	return m
}

func (a *announcer) marshal(m *announce.Message, key ed25519.PrivateKey) []byte {
	a.t.Helper()
	b, err := m.Marshal(key)
	if err != nil {
		a.t.Fatal(err)
	}
	return b
}

// send broadcasts b to dst (10.0.0.255:9470 or 255.255.255.255:9470) from
// 10.0.0.1.
func (a *announcer) send(b []byte, dst string) {
	a.t.Helper()
	a.exchange(b, dst, 0)
}

// exchange broadcasts b to dst from 10.0.0.1 and, when wait > 0, reads the
// acknowledgements that come back to the sending socket until wait has
// passed, decoded with the test key.
func (a *announcer) exchange(b []byte, dst string, wait time.Duration) []*announce.Ack {
	a.t.Helper()
	var acks []*announce.Ack
	src := a.src
	if src == "" {
		src = "10.0.0.1"
	}
	err := a.ns.Do(func() error {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err = c.WriteToUDPAddrPort(b, netip.MustParseAddrPort(dst)); err != nil { // Go sockets may broadcast by default
			return err
		}
		if wait <= 0 {
			return nil
		}
		c.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return nil // the deadline
			}
			ack, err := announce.UnmarshalAck(buf[:n])
			if err != nil || from.Addr() != netip.MustParseAddr("10.0.0.12") {
				return fmt.Errorf("from %v: not an acknowledgement of server 1's address: %v", from, err)
			}
			acks = append(acks, ack)
		}
	})
	if err != nil {
		a.t.Fatalf("sending an announcement to %s from %s: %v", dst, a.ns.Name, err)
	}
	return acks
}

// ownedIn is server 1's buckets in the table of m.
func ownedIn(t *testing.T, m *announce.Message) []uint32 {
	t.Helper()
	tb, err := m.Table()
	if err != nil {
		t.Fatal(err)
	}
	return tb.Owned(1)
}

// TestPrivilegedRun: `ghostnode run` in broadcast mode, in the server's
// namespace (topology: newTopo), listening on 0.0.0.0:9470.
//
//  1. It sets the cluster up from the configuration (all servers up).
//  2. An authentic, newer announcement broadcast from the appliance's side
//     (server 0 failed) replaces the nft set with exactly server 1's buckets
//     of that membership's table, and is logged once.
//  3. A forged announcement (signed with another key) that would hand
//     server 1 every bucket, an exact replay of the first, and an authentic
//     one from another LAN address than the appliance's change nothing and
//     are counted; a repeat sent to 255.255.255.255 is counted as a repeat.
//  4. SIGTERM stops it cleanly, leaving the filter; `ghostnode status`
//     shows the counters. `teardown` is refused while a run is active.
//  5. A second run with --teardown-on-exit keeps the last table, restores the
//     replay state (the first announcement, replayed again, is still stale),
//     takes a restarted appliance's table (a new epoch, numerically smaller:
//     epochs are random, not times) and, on SIGTERM, leaves the host as it
//     was before the first setup.
func TestPrivilegedRun(t *testing.T) {
	tp := newTopo(t)
	cfgPath := filepath.Join(t.TempDir(), "ghost.toml")
	cfgText := strings.ReplaceAll(broadcastConfig, "MODE", "broadcast")
	privPath := filepath.Join(filepath.Dir(cfgPath), "web.key")
	if _, err := keyfile.Generate(privPath, keyfile.PublicPath(privPath)); err != nil {
		t.Fatal(err)
	}
	e2eKey, _, err := keyfile.ReadPrivate(privPath)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	cfgText = strings.Replace(cfgText, "buckets = 4096\n", "buckets = 4096\nannounce_key_file = \"web.key\"\n", 1)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	if _, err := node.FromConfig(cfg, "web", 1, nil); err != nil {
		t.Fatal(err)
	}
	before := tp.snapshot(t)
	runArgs := []string{tp.bin, "run", "-c", cfgPath, "--cluster", "web", "--id", "1", "--state-dir", tp.stateDir, "--log-level", "debug"}

	// 1. Setup from the configuration, owning nothing until the appliance
	// has spoken: the file may be ahead of the appliance.
	run := tp.srv.Start("ghostnode-run", runArgs...)
	run.WaitForLog("listening for announcements on 0.0.0.0:9470", 30*time.Second)
	if r := tp.status(t, "web"); len(r.Owned) != 0 || !r.RunActive || r.Run == nil || r.Run.Listen != "0.0.0.0:9470" {
		t.Fatalf("after run started: owned %d buckets (want none before the first announcement), run active %v, run %+v", len(r.Owned), r.RunActive, r.Run)
	}

	// 2. An authentic, newer announcement: server 0 failed.
	a := &announcer{t: t, ns: tp.lan, epoch: announce.NewEpoch() | 1<<63}
	first := a.message(1, 0)
	firstBytes := a.marshal(first, e2eKey)
	want := ownedIn(t, first)
	// The run acknowledges the table it applied, unicast to the sender.
	if acks := a.exchange(firstBytes, "10.0.0.255:9470", 3*time.Second); len(acks) != 1 ||
		*acks[0] != (announce.Ack{Cluster: "web", Server: 1, Epoch: a.epoch, Seq: 1}) {
		t.Errorf("acknowledgements of the first table: %+v, want one of seq 1 from server 1", acks)
	}
	harness.WaitFor(t, 10*time.Second, "the announced table in the nft set", func() bool {
		r := tp.status(t, "web")
		return r.Run != nil && r.Run.Applied != nil && slices.Equal(r.Owned, want)
	})
	wantLine := fmt.Sprintf("cluster web: table epoch %d seq 1 applied: owns %d buckets (was %d)", a.epoch, len(want), 0)
	run.WaitForLog(wantLine, 5*time.Second)

	// 3. A forged one, a replay, and a repeat to the limited broadcast address.
	forged := a.message(2, 0, 2) // would give server 1 every bucket
	a.send(a.marshal(forged, otherKey), "10.0.0.255:9470")
	a.send(firstBytes, "10.0.0.255:9470")
	if acks := a.exchange(a.marshal(a.message(1, 0), e2eKey), "255.255.255.255:9470", 2*time.Second); len(acks) != 1 || acks[0].Seq != 1 {
		t.Errorf("acknowledgements of a repeat: %+v, want one of seq 1", acks)
	}
	tp.lan.AddrAdd("vs", "10.0.0.99/24")
	rogue := &announcer{t: t, ns: tp.lan, epoch: a.epoch + 1, src: "10.0.0.99"}
	rogue.send(rogue.marshal(forged, e2eKey), "10.0.0.255:9470") // authentic bytes, wrong source
	var r node.Report
	harness.WaitFor(t, 10*time.Second, "5 announcements counted", func() bool {
		r = tp.status(t, "web")
		return r.Run != nil && r.Run.Counters.Received >= 5
	})
	wantCounters := announce.Counters{Received: 5, Newer: 1, Applied: 1, Repeats: 1, Stale: 1, BadMAC: 1, Foreign: 1, Acks: 2}
	if r.Run.Counters != wantCounters || !slices.Equal(r.Owned, want) {
		t.Errorf("after a forged announcement, a replay and a repeat: counters %+v (want %+v), owned %d buckets (want the first announcement's %d)",
			r.Run.Counters, wantCounters, len(r.Owned), len(want))
	}
	if a := r.Run.Applied; a.Seq != 1 || a.Owned != len(want) || a.Live != 2 || !strings.HasPrefix(a.From, "10.0.0.1:") {
		t.Errorf("applied %+v", a)
	}
	text := tp.mustGhostnode(t, "status", "--cluster", "web")
	t.Logf("ghostnode status:\n%s", text)
	for _, s := range []string{"announcements received 5: applied 1, repeats 1, stale 1, bad signature 1,", "foreign 1", fmt.Sprintf("table    epoch %d seq 1", a.epoch)} {
		if !strings.Contains(text, s) {
			t.Errorf("status does not show %q:\n%s", s, text)
		}
	}
	if out, err := tp.ghostnode(nil, "teardown", "--cluster", "web"); err == nil || !strings.Contains(out, "ghostnode run is already serving it") {
		t.Errorf("teardown during run: %v\n%s", err, out)
	}

	// 4. SIGTERM: a clean exit; the filter stays.
	if err := run.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := run.Wait(10 * time.Second); err != nil {
		t.Fatalf("ghostnode run after SIGTERM: %v\n%s", err, run.Log())
	}
	if r := tp.status(t, "web"); r.RunActive || r.Run == nil || r.Run.Stopped.IsZero() || !slices.Equal(r.Owned, want) {
		t.Errorf("after SIGTERM: run active %v, run %+v, owned %d buckets (want %d kept)", r.RunActive, r.Run, len(r.Owned), len(want))
	}
	if log := run.Log(); strings.Count(log, "applied: owns") != 1 {
		t.Errorf("applied changes logged %d times, want once:\n%s", strings.Count(log, "applied: owns"), log)
	}

	// 5. Again with --teardown-on-exit: the last table and the floor stay.
	run2 := tp.srv.Start("ghostnode-run-2", append(runArgs, "--teardown-on-exit")...)
	run2.WaitForLog("listening for announcements on 0.0.0.0:9470", 30*time.Second)
	if r := tp.status(t, "web"); !slices.Equal(r.Owned, want) {
		t.Errorf("a restarted run changed the set: %d buckets, want the last table's %d", len(r.Owned), len(want))
	}
	a.send(firstBytes, "10.0.0.255:9470")
	harness.WaitFor(t, 10*time.Second, "the replay counted by the second run", func() bool {
		r := tp.status(t, "web")
		return r.Run != nil && r.Run.Counters.Received >= 1
	})
	if r := tp.status(t, "web"); r.Run.Counters.Stale != 1 || r.Run.Counters.Applied != 0 || !slices.Equal(r.Owned, want) {
		t.Errorf("replay to a restarted run: counters %+v, owned %d buckets", r.Run.Counters, len(r.Owned))
	}
	// The appliance restarts (with its clock, were it used, set back: the
	// new epoch is smaller) and announces all servers up at seq 1.
	restarted := &announcer{t: t, ns: tp.lan, epoch: a.epoch >> 32}
	again := restarted.message(1)
	wantAgain := ownedIn(t, again)
	restarted.send(restarted.marshal(again, e2eKey), "10.0.0.255:9470")
	harness.WaitFor(t, 10*time.Second, "the restarted appliance's table in the nft set", func() bool {
		r := tp.status(t, "web")
		return r.Run != nil && r.Run.Applied != nil && r.Run.Applied.Epoch == restarted.epoch && slices.Equal(r.Owned, wantAgain)
	})
	if slices.Equal(want, wantAgain) {
		t.Fatal("the restarted appliance's table is the same as the first: the test shows nothing")
	}
	if err := run2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := run2.Wait(30 * time.Second); err != nil {
		t.Fatalf("ghostnode run --teardown-on-exit after SIGTERM: %v\n%s", err, run2.Log())
	}
	if after := tp.snapshot(t); after != before {
		t.Errorf("run --teardown-on-exit left the host different from before:\n%s", diffLines(before, after))
	}
	if b := tp.stateFile(t, "web"); b != nil {
		t.Errorf("state file left after teardown:\n%s", b)
	}
}
