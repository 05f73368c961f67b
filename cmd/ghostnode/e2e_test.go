package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/node"
	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/test/harness"
)

// Privileged tests (STYLE tier 3): the ghostnode binary run as root inside
// network namespaces the test creates, against the real kernel, ip(8) and
// nft(8). Without root or those tools they skip, and fail under CI=true.
//
//	 gr-lan-S (the appliance's side)            gr-srv-S (the server)
//	┌─────────────────────────────────┐  veth  ┌──────────────────────────────────┐
//	│ vs 10.0.0.1/24                  ├────────┤ eth0 10.0.0.12/24                │
//	│ lo 198.51.100.10-73/32 (clients)│        │ lo   (ghost 203.0.113.10 by setup)│
//	│ route 203.0.113.10/32 dev vs,   │        │ default via 10.0.0.1             │
//	│ neigh 203.0.113.10 = ff:ff:..:ff│        │ UDP listener on 203.0.113.10:9999│
//	└─────────────────────────────────┘        └──────────────────────────────────┘

const e2eGhost = "203.0.113.10"

// topo is the two namespaces and the built binary.
type topo struct {
	h        *harness.H
	srv, lan *harness.NS
	bin      string
	stateDir string
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	harness.RequireRoot(t, "nft")
	h := harness.New(t)
	tp := &topo{h: h, srv: h.NS("srv"), lan: h.NS("lan"), bin: h.Build("cmd/ghostnode"), stateDir: t.TempDir()}
	h.Veth(tp.lan, "vs", tp.srv, "eth0")
	tp.lan.AddrAdd("vs", "10.0.0.1/24")
	tp.srv.AddrAdd("eth0", "10.0.0.12/24")
	tp.srv.MustRun("ip", "route", "add", "default", "via", "10.0.0.1")
	// A namespace starts with rp_filter 0 on eth0; make it strict so that
	// setup has something to change and teardown something to restore.
	tp.srv.Sysctl("net.ipv4.conf.eth0.rp_filter", "1")
	return tp
}

// ghostnode runs the binary in the server's namespace with the test's state
// directory; extra environment (such as PATH) goes through env(1).
func (tp *topo) ghostnode(env []string, args ...string) (string, error) {
	cmd := []string{}
	if len(env) > 0 {
		cmd = append(append([]string{"env"}, env...), tp.bin)
	} else {
		cmd = []string{tp.bin}
	}
	cmd = append(cmd, args...)
	cmd = append(cmd, "--state-dir", tp.stateDir)
	return tp.srv.Run(cmd...)
}

func (tp *topo) mustGhostnode(t *testing.T, args ...string) string {
	t.Helper()
	out, err := tp.ghostnode(nil, args...)
	if err != nil {
		t.Fatalf("ghostnode %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// watchedSysctls are every sysctl ghostnode may touch in the server's
// namespace, on all interfaces.
func watchedSysctls() []string {
	var ks []string
	for _, dev := range []string{"all", "default", "lo", "eth0"} {
		for _, k := range []string{"arp_ignore", "arp_announce", "rp_filter"} {
			ks = append(ks, "net.ipv4.conf."+dev+"."+k)
		}
	}
	return append(ks, "net.netfilter.nf_conntrack_tcp_loose")
}

// snapshot is the server's addresses, watched sysctls and whole nftables
// ruleset, as text.
func (tp *topo) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	// IPv6 duplicate address detection may still be running on the
	// link-local address when the first snapshot is taken: its
	// "tentative" flag is the kernel's, not something ghostnode changes.
	b.WriteString(strings.ReplaceAll(tp.srv.MustRun("ip", "-o", "addr", "show"), " tentative", ""))
	for _, k := range watchedSysctls() {
		v, err := tp.srv.ReadSysctl(k)
		if err != nil {
			t.Fatalf("reading %s: %v", k, err)
		}
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	b.WriteString(tp.srv.MustRun("nft", "list", "ruleset"))
	return b.String()
}

func (tp *topo) status(t *testing.T, cluster string) node.Report {
	t.Helper()
	out := tp.mustGhostnode(t, "status", "--json", "--cluster", cluster)
	var reps []node.Report
	if err := json.Unmarshal([]byte(out), &reps); err != nil || len(reps) != 1 {
		t.Fatalf("ghostnode status --json: %v\n%s", err, out)
	}
	return reps[0]
}

func (tp *topo) stateFile(t *testing.T, cluster string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tp.stateDir, cluster+".json"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var d []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			d = append(d, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			d = append(d, "+ "+l)
		}
	}
	return strings.Join(d, "\n")
}

// TestPrivilegedSetupTeardown: setup in both modes changes what it prints,
// a second setup changes nothing, teardown leaves addresses, sysctls and
// the nftables ruleset exactly as they were.
func TestPrivilegedSetupTeardown(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "ghost.toml")
	cfgText := strings.ReplaceAll(broadcastConfig, "MODE", "broadcast")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	arp := []string{
		"added 203.0.113.10/32 to lo",
		"set net.ipv4.conf.all.arp_ignore 0 -> 1",
		"set net.ipv4.conf.eth0.arp_ignore 0 -> 1",
		"set net.ipv4.conf.all.arp_announce 0 -> 2",
		"set net.ipv4.conf.eth0.arp_announce 0 -> 2",
		"set net.ipv4.conf.eth0.rp_filter 1 -> 2",
	}
	const loose = "set net.netfilter.nf_conntrack_tcp_loose 1 -> 0"
	for _, tc := range []struct {
		name   string
		setup  []string
		prints []string // lines setup must print
		ghost  string   // as `ip -o addr` shows it on lo
	}{
		{"routing", []string{"setup", "--cluster", "web", "--ghost", e2eGhost, "--address", "10.0.0.12"}, arp, "inet 203.0.113.10/32 scope global lo"},
		{"broadcast flags", []string{"setup", "--cluster", "web", "--ghost", e2eGhost, "--mode", "broadcast", "--buckets", "4096", "--seed", "0x5eed", "--owned", "0-99,101,4095", "--lan", "eth0"},
			append(slices.Clone(arp), "added nftables table ip ghost_web: 102 of 4096 buckets, jhash ip saddr mod 4096 seed 0x5eed", loose), "inet 203.0.113.10/32 scope global lo"},
		{"broadcast config", []string{"setup", "-c", cfgPath, "--cluster", "web", "--id", "1"}, append(slices.Clone(arp), loose), "inet 203.0.113.10/32 scope global lo"},
		{"broadcast ipv6", []string{"setup", "--cluster", "web", "--ghost", "2001:db8::10", "--buckets", "4096", "--seed", "0x5eed", "--owned", "0-99,101,4095", "--lan", "eth0"},
			[]string{"added 2001:db8::10/128 to lo", "added nftables table ip6 ghost_web: 102 of 4096 buckets, jhash ip6 saddr mod 4096 seed 0x5eed", loose}, "inet6 2001:db8::10/128 scope global"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopo(t)
			before := tp.snapshot(t)

			out := tp.mustGhostnode(t, tc.setup...)
			t.Logf("setup:\n%s", out)
			for _, want := range tc.prints {
				if !strings.Contains(out, want+"\n") {
					t.Errorf("setup did not print %q", want)
				}
			}
			set := tp.snapshot(t)
			if !strings.Contains(set, tc.ghost) {
				t.Errorf("ghost not on lo after setup:\n%s", set)
			}
			if tc.name != "routing" {
				r := tp.status(t, "web")
				want, _ := filter.ParseList("0-99,101,4095", 4096)
				if tc.name == "broadcast config" {
					cfg, err := config.Load(cfgPath)
					if err != nil {
						t.Fatal(err)
					}
					spec, err := node.FromConfig(cfg, "web", 1, nil)
					if err != nil {
						t.Fatal(err)
					}
					want = spec.Filter.Owned
				}
				if !r.FilterOK || !slices.Equal(r.Owned, want) || r.Counters == nil {
					t.Errorf("status after setup: ok %v (%s), %d owned, want %d; counters %v", r.FilterOK, r.FilterNote, len(r.Owned), len(want), r.Counters)
				}
			}
			state := tp.stateFile(t, "web")

			out = tp.mustGhostnode(t, tc.setup...)
			if out != "cluster web: already set up, nothing changed\n" {
				t.Errorf("second setup printed:\n%s", out)
			}
			if again := tp.snapshot(t); again != set {
				t.Errorf("second setup changed the host:\n%s", diffLines(set, again))
			}
			if s2 := tp.stateFile(t, "web"); string(s2) != string(state) {
				t.Errorf("second setup rewrote the state file:\n%s\nwas\n%s", s2, state)
			}
			if text := tp.mustGhostnode(t, "status"); !strings.Contains(text, "cluster web: ") {
				t.Errorf("status printed:\n%s", text)
			}
			if tc.name == "broadcast config" {
				// Server 0 fails: the table hands its buckets on, and
				// update installs server 1's share of them.
				cfg, _ := config.Load(cfgPath)
				spec, err := node.FromConfig(cfg, "web", 1, map[int]bool{0: true})
				if err != nil {
					t.Fatal(err)
				}
				out := tp.mustGhostnode(t, "update", "-c", cfgPath, "--cluster", "web", "--id", "1", "--down", "0")
				if r := tp.status(t, "web"); !strings.HasPrefix(out, "updated set owned of ip ghost_web: 1365 -> ") || !slices.Equal(r.Owned, spec.Filter.Owned) {
					t.Errorf("update --down 0 printed %q; owned %d buckets, want %d", out, len(r.Owned), len(spec.Filter.Owned))
				}
			}

			out = tp.mustGhostnode(t, "teardown", "--cluster", "web")
			t.Logf("teardown:\n%s", out)
			if after := tp.snapshot(t); after != before {
				t.Errorf("teardown left the host different from before setup:\n%s", diffLines(before, after))
			}
			if b := tp.stateFile(t, "web"); b != nil {
				t.Errorf("state file left after teardown:\n%s", b)
			}
			if out := tp.mustGhostnode(t, "teardown", "--cluster", "web"); out != "cluster web: not set up, nothing to undo\n" {
				t.Errorf("second teardown printed:\n%s", out)
			}
		})
	}
}

const broadcastConfig = `
[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "MODE"
broadcast_address = "10.0.0.250"
seed = 0x5eed
buckets = 4096

  [[cluster.server]]
  id = 0
  address = "10.0.0.11"

  [[cluster.server]]
  id = 1
  address = "10.0.0.12"

  [[cluster.server]]
  id = 2
  address = "10.0.0.13"
`

// TestPrivilegedToolErrors: with nft missing (PATH without it) broadcast
// setup stops with a clear message before changing anything; with an nft
// that fails to load the ruleset, setup rolls back what it had changed; as
// a non-root user nothing is attempted.
func TestPrivilegedToolErrors(t *testing.T) {
	tp := newTopo(t)
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("env"); err != nil {
		t.Skipf("env(1) not in PATH: %v", err)
	}
	noNFT := t.TempDir()
	if err := os.Symlink(ipPath, filepath.Join(noNFT, "ip")); err != nil {
		t.Fatal(err)
	}
	badNFT := t.TempDir()
	if err := os.Symlink(ipPath, filepath.Join(badNFT, "ip")); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nif [ \"$1\" = -j ]; then echo 'Error: No such file or directory' >&2; exit 1; fi\necho 'Error: injected failure' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(badNFT, "nft"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	setup := []string{"setup", "--cluster", "web", "--ghost", e2eGhost, "--buckets", "16", "--seed", "1", "--owned", "1-3", "--lan", "eth0"}
	before := tp.snapshot(t)

	out, err := tp.ghostnode([]string{"PATH=" + noNFT}, setup...)
	if err == nil || !strings.Contains(out, "ghostnode setup: nft not found: install the nftables package") {
		t.Errorf("setup without nft: %v\n%s", err, out)
	}
	if after := tp.snapshot(t); after != before {
		t.Errorf("setup without nft changed the host:\n%s", diffLines(before, after))
	}

	out, err = tp.ghostnode([]string{"PATH=" + badNFT}, setup...)
	if err == nil || !strings.Contains(out, "injected failure") || !strings.Contains(out, "rolled back") {
		t.Errorf("setup with a failing nft: %v\n%s", err, out)
	}
	if after := tp.snapshot(t); after != before {
		t.Errorf("failed setup left changes behind:\n%s", diffLines(before, after))
	}
	if b := tp.stateFile(t, "web"); b != nil {
		t.Errorf("failed setup left a state file:\n%s", b)
	}

	// Not root: a copy of the binary that user "nobody" can run.
	dir, err := os.MkdirTemp("", "ghostnode-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin, err := os.ReadFile(tp.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ghostnode"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "ghostnode"), append(setup, "--state-dir", dir)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "ghostnode setup: must run as root") {
		t.Errorf("setup as nobody: %v\n%s", err, b)
	}
}

// TestPrivilegedFilter proves the filter: the lan namespace sends UDP to
// the ghost from 64 client addresses with destination MAC
// ff:ff:ff:ff:ff:ff, and exactly the clients whose bucket
// (core.Bucket(core.JHash(src, seed), buckets)) the server owns
// reach the listener, which answers them; their second datagrams pass by
// their bucket too (UDP follows the bucket, not conntrack). After an update
// that hands the owned buckets to someone else, the old flows no longer
// get through (their conntrack entries here do not keep them: their new
// owner answers them now), and new flows follow the new set.
func TestPrivilegedFilter(t *testing.T) {
	const (
		buckets = 8
		seed    = 0x5eed
		clients = 64
	)
	tp := newTopo(t)
	var srcs []netip.Addr
	for i := range clients {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)})
		srcs = append(srcs, a)
		tp.lan.AddrAdd("lo", a.String()+"/32")
	}
	tp.lan.MustRun("ip", "route", "add", e2eGhost+"/32", "dev", "vs")
	tp.lan.MustRun("ip", "neigh", "replace", e2eGhost, "lladdr", "ff:ff:ff:ff:ff:ff", "dev", "vs", "nud", "permanent")

	owned := []uint32{1, 2, 5} // a range (1-2) and a single element
	rest := []uint32{0, 3, 4, 6, 7}
	bucketOf := func(a netip.Addr) uint32 { return core.Bucket(core.JHash(a, seed), buckets) }
	in := func(set []uint32, a netip.Addr) bool { return slices.Contains(set, bucketOf(a)) }
	var mine []netip.Addr
	for _, a := range srcs {
		if in(owned, a) {
			mine = append(mine, a)
		}
	}
	if len(mine) == 0 || len(mine) == clients {
		t.Fatalf("%d of %d clients in owned buckets: pick other addresses", len(mine), clients)
	}
	t.Logf("%d of %d clients fall into buckets %v", len(mine), clients, owned)

	tp.mustGhostnode(t, "setup", "--cluster", "web", "--ghost", e2eGhost, "--buckets", fmt.Sprint(buckets),
		"--seed", fmt.Sprint(seed), "--owned", filter.FormatList(owned), "--address", "10.0.0.12")
	t.Cleanup(func() { tp.ghostnode(nil, "teardown", "--cluster", "web") })

	l := listen(t, tp.srv, e2eGhost+":9999")

	// Round 1: one datagram per client, each a new flow.
	first := dial(t, tp.lan, srcs, e2eGhost+":9999")
	send(t, first, "one")
	harness.WaitFor(t, 10*time.Second, "the filter to see 64 first datagrams", func() bool {
		c := tp.status(t, "web").Counters
		return c != nil && c.Datagram.Packets+c.Dropped.Packets >= clients
	})
	harness.WaitFor(t, 10*time.Second, "the listener to get the owned clients' datagrams", func() bool {
		return len(l.from("one")) >= len(mine)
	})
	if got := l.from("one"); !slices.Equal(got, mine) {
		t.Fatalf("listener got datagrams from %v\nwant exactly the owned clients %v", got, mine)
	}
	c := tp.status(t, "web").Counters
	if c.Datagram.Packets != uint64(len(mine)) || c.Dropped.Packets != uint64(clients-len(mine)) || c.Established.Packets != 0 || c.New.Packets != 0 {
		t.Errorf("counters after round 1: %+v; want datagram %d, dropped %d, established and new (TCP) 0", *c, len(mine), clients-len(mine))
	}
	// The owned clients got their echo (the reply made the flow established).
	for _, a := range mine {
		if msg := recv(t, first[a]); msg != "one" {
			t.Errorf("client %v: reply %q, want \"one\"", a, msg)
		}
	}

	// Round 2 on the same sockets: the owned flows pass by their bucket, the others stay dropped.
	send(t, first, "two")
	harness.WaitFor(t, 10*time.Second, "round 2", func() bool {
		c := tp.status(t, "web").Counters
		return len(l.from("two")) >= len(mine) && c.Dropped.Packets >= 2*uint64(clients-len(mine))
	})
	if got := l.from("two"); !slices.Equal(got, mine) {
		t.Errorf("round 2 reached the listener from %v, want %v", got, mine)
	}
	c = tp.status(t, "web").Counters
	if c.Established.Packets != 0 || c.Datagram.Packets != 2*uint64(len(mine)) || c.Dropped.Packets != 2*uint64(clients-len(mine)) {
		t.Errorf("counters after round 2: %+v; want established 0, datagram %d, dropped %d", *c, 2*len(mine), 2*(clients-len(mine)))
	}

	// Hand the buckets over: the set becomes the others' buckets in one
	// transaction. The old owner's open UDP flows are dropped from now on
	// (their new owner answers them); new flows follow the new set.
	out := tp.mustGhostnode(t, "update", "--cluster", "web", "--owned", filter.FormatList(rest))
	if !strings.Contains(out, fmt.Sprintf("updated set owned of ip ghost_web: 3 -> 5 of %d buckets (+5 -3)", buckets)) {
		t.Errorf("update printed:\n%s", out)
	}
	if r := tp.status(t, "web"); !slices.Equal(r.Owned, rest) || r.Counters.Datagram.Packets != 2*uint64(len(mine)) {
		t.Errorf("after update: owned %v (want %v), counters %+v (kept?)", r.Owned, rest, *r.Counters)
	}
	oldFlows := map[netip.Addr]*net.UDPConn{}
	for _, a := range mine {
		oldFlows[a] = first[a]
	}
	send(t, oldFlows, "three")
	second := dial(t, tp.lan, srcs, e2eGhost+":9999") // new source ports: new flows
	send(t, second, "four")
	var others []netip.Addr
	for _, a := range srcs {
		if !in(owned, a) {
			others = append(others, a)
		}
	}
	harness.WaitFor(t, 10*time.Second, "rounds 3 and 4", func() bool {
		c := tp.status(t, "web").Counters
		return len(l.from("four")) >= len(others) && c.Dropped.Packets >= 2*uint64(clients-len(mine))+uint64(2*len(mine))
	})
	if got := l.from("three"); len(got) != 0 {
		t.Errorf("after the update, the old owner's UDP flows still reached its listener from %v, want none", got)
	}
	if got := l.from("four"); !slices.Equal(got, others) {
		t.Errorf("after the update, new flows reached the listener from %v, want the new owner's clients %v", got, others)
	}
}

// listener is a UDP echo server in a namespace that records who sent what.
type listener struct {
	mu  sync.Mutex
	got map[string][]netip.Addr // message → sources, in arrival order
}

func listen(t *testing.T, ns *harness.NS, addr string) *listener {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.Name, err)
	}
	l := &listener{got: map[string][]netip.Addr{}}
	done := make(chan struct{})
	go func() { // owned by the test: stops when Cleanup closes pc
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			src := from.(*net.UDPAddr).AddrPort().Addr().Unmap()
			l.mu.Lock()
			l.got[msg] = append(l.got[msg], src)
			l.mu.Unlock()
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return l
}

// from returns the sources of msg, sorted.
func (l *listener) from(msg string) []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.got[msg])
	slices.SortFunc(s, netip.Addr.Compare)
	return s
}

// dial opens one UDP socket per source address in ns, connected to dst.
func dial(t *testing.T, ns *harness.NS, srcs []netip.Addr, dst string) map[netip.Addr]*net.UDPConn {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp4", dst)
	if err != nil {
		t.Fatal(err)
	}
	conns := map[netip.Addr]*net.UDPConn{}
	err = ns.Do(func() error {
		for _, a := range srcs {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)), raddr)
			if err != nil {
				return err
			}
			conns[a] = c
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	if err != nil {
		t.Fatalf("dial from %s: %v", ns.Name, err)
	}
	return conns
}

func send(t *testing.T, conns map[netip.Addr]*net.UDPConn, msg string) {
	t.Helper()
	for a, c := range conns {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("send from %v: %v", a, err)
		}
	}
}

func recv(t *testing.T, c *net.UDPConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(buf[:n])
}
