// Command demo is `make demo`, the showcase: it builds the standard two-armed topology in
// namespaces of its own (test/harness, the same builder as the end-to-end tests and the
// benchmarks), runs the appliance, sends real traffic through it and tells what happened:
//
//	client ── br-up ── up0 [ghostrouter] lan0 ── br-lan ──┬─ server s0 10.0.0.11 + ghost on lo
//	198.51.100.10      198.51.100.1   10.0.0.1            ├─ server s1 10.0.0.12 + ghost on lo
//	+ 8 client addresses (namespace "rtr")                └─ server s2 10.0.0.13 + ghost on lo
//
// 1. a plain router (ping, TTL exceeded); 2. routing mode: every client is answered, over
// HTTP and UDP, by exactly the server `ghostrouter lookup` predicts, and the LAN capture
// shows each ghost packet sent to that server's MAC; 3. a server fails: only its clients
// move; 4. broadcast mode with ghostnode run on the servers. A client answered by any other
// server than the predicted one ends the demo with status 1.
//
// Usage (as root, after `make build`): demo [-bin DIR]. Everything lives in namespaces
// named gr-demo-*-SUFFIX and is removed on exit; GHOSTROUTER_E2E_KEEP=1 (or DEMO_KEEP=1)
// keeps its files.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

const bcastAddr = "10.0.0.250"

type demo struct {
	h       *harness.H
	prog    *harness.Program
	topo    *harness.Topo
	bin     string
	dir     string // the run's files: configuration, key, control socket
	cfg     string
	sock    string
	peers   []*harness.Proc
	nodes   []*harness.Proc
	app     *harness.Proc
	clients []string
	// lastBuckets is each client's bucket as the last lookup printed it.
	lastBuckets map[string]string
}

func say(format string, args ...any) {
	fmt.Printf("\n\033[1m== %s\033[0m\n", fmt.Sprintf(format, args...))
}
func note(format string, args ...any) {
	fmt.Printf("   %s\n", fmt.Sprintf(format, args...))
}

func main() {
	bin := flag.String("bin", "bin", "`DIR` holding ghostrouter, ghostnode and peer (make build)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Println("make demo: run as root (it creates network namespaces)")
		os.Exit(1)
	}
	for _, tool := range []string{"ip", "tcpdump", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("make demo: %s is missing (apt-get install iproute2 tcpdump nftables)\n", tool)
			os.Exit(1)
		}
	}
	if os.Getenv("DEMO_KEEP") != "" {
		os.Setenv(harness.KeepEnv, "1")
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Println("demo:", err)
		os.Exit(1)
	}
	h, prog := harness.NewProgram("demo", os.Stderr)
	d := &demo{h: h, prog: prog, bin: abs, dir: h.ArtifactDir()}
	d.run()
	prog.Close()
	if prog.Failed() {
		os.Exit(1)
	}
}

// fail ends the demo: everything is removed, status 1.
func (d *demo) fail(format string, args ...any) { d.prog.Fatalf("demo: "+format, args...) }

func (d *demo) run() {
	say("Building the network (namespaces gr-demo-*-%s)", d.h.Suffix())
	d.topo = d.h.TwoArmed(harness.TopoOptions{Prefix: "demo-", Servers: 3, ClientAddrs: 8})
	for _, c := range d.topo.Clients {
		d.clients = append(d.clients, c.String())
	}
	d.peers = make([]*harness.Proc, len(d.topo.Servers))
	d.nodes = make([]*harness.Proc, len(d.topo.Servers))
	for i := range d.topo.Servers {
		d.startPeer(i)
	}
	note("client %s (+ %d client addresses %s-%s), servers s0 s1 s2 on 10.0.0.0/24",
		harness.ClientAddr, len(d.clients), d.clients[0], d.clients[len(d.clients)-1])

	say("1. A plain router: the client pings server s0 through the appliance")
	d.startAppliance("routing")
	out, _ := d.topo.Cli.Run("ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.11")
	printMatching(out, regexp.MustCompile(`bytes from|packet loss`))
	note("TTL 1 gets ICMP time exceeded from the appliance, as from any router:")
	out, _ = d.topo.Cli.Run("ping", "-c", "1", "-t", "1", "-W", "2", "10.0.0.11")
	printMatching(out, regexp.MustCompile(`(?i)exceeded`))

	say("2. Routing mode: ghost %s, each client hashed to one server, sent to that server's MAC", harness.GhostAddr)
	d.setupServers("routing")
	var macs []string
	for _, s := range d.topo.Servers {
		macs = append(macs, s.Name+" "+s.MAC.String())
	}
	note("server MACs: %s", strings.Join(macs, "  "))
	before := d.dispatchRound("routing", nil)
	say("ghostrouter status")
	st := d.status()
	if i := strings.Index(st, "\ncluster"); i >= 0 {
		st = st[i+1:]
		if j := strings.Index(st, "counters"); j >= 0 {
			st = st[:j+strings.Index(st[j:]+"\n", "\n")]
		}
	}
	printIndented(st)

	say("3. Server s1 fails: only its clients move, evenly, to the others")
	d.peers[1].Signal(syscall.SIGKILL)
	d.peers[1].Wait(5 * time.Second)
	note("s1's service is stopped; the appliance's health checks (tcp/80 every 250ms, fall 3) notice:")
	d.waitStatus(regexp.MustCompile(`(?m)^  1 .* down`), "server 1 down")
	note("%s", lastEvent(d.status()))
	down := d.lookup("--down", "1")
	d.dispatchRound("failover", down)
	note("before -> after the failure:")
	for _, c := range d.clients {
		moved := ""
		if before[c] != down[c] {
			moved = "   (moved)"
		}
		fmt.Printf("     %-15s s%s -> s%s%s\n", c, before[c], down[c], moved)
	}
	d.startPeer(1)
	d.waitStatus(regexp.MustCompile(`(?m)^  1 .* up`), "server 1 up again")
	note("s1 is back: %s", strings.TrimPrefix(lastEvent(d.status()), "event: "))
	d.stopAppliance()
	d.teardownServers()

	if help, _ := exec.Command(filepath.Join(d.bin, "ghostnode"), "help").CombinedOutput(); strings.Contains(string(help), "broadcast") {
		say("4. Broadcast mode: ghost routed via second ghost %s = ff:ff:ff:ff:ff:ff; each server's filter keeps its share", bcastAddr)
		d.startAppliance("broadcast")
		d.setupServers("broadcast")
		note("each server's ghostnode run applied the appliance's announced table:")
		for i, n := range d.nodes {
			owns := regexp.MustCompile(`applied: owns [1-9]`)
			for deadline := time.Now().Add(10 * time.Second); !owns.MatchString(n.Log()); time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					d.fail("s%d's ghostnode applied no table with buckets of its own:\n%s", i, n.Log())
				}
			}
			last := ""
			for _, line := range strings.Split(n.Log(), "\n") {
				if strings.Contains(line, "applied") {
					last = line
					if m := regexp.MustCompile(`msg="([^"]*)"`).FindStringSubmatch(line); m != nil {
						last = m[1]
					}
				}
			}
			fmt.Printf("     s%d: %s\n", i, last)
		}
		d.dispatchRound("broadcast", nil)
		note("the appliance's permanent entry for the second ghost:")
		printMatching(d.status(), regexp.MustCompile(`(?i)permanent`))
		note("filter counters on each server (accepted = its own clients, dropped = the others'):")
		for i, s := range d.topo.Servers {
			out, _ := s.NS.Run(filepath.Join(d.bin, "ghostnode"), "status", "--cluster", "web", "--state-dir", d.stateDir(i))
			n := 0
			for _, line := range strings.Split(out, "\n") {
				if n < 4 && regexp.MustCompile(`(?i)owned|accept|drop`).MatchString(line) {
					fmt.Printf("   s%d: %s\n", i, line)
					n++
				}
			}
		}
		d.stopAppliance()
		d.teardownServers()
	}
	say("Done: every client was answered by the server the hash predicts; the network is being removed.")
}

func (d *demo) stateDir(i int) string { return filepath.Join(d.dir, fmt.Sprintf("node%d", i)) }

// startPeer runs the HTTP (80) and UDP (9000) service on server i.
func (d *demo) startPeer(i int) {
	s := d.topo.Servers[i]
	d.peers[i] = s.NS.Start("peer-"+s.Name, filepath.Join(d.bin, "peer"), "serve", "-name", s.Name, "-http", ":80", "-udp", ":9000", "-lifetime", "10m")
	d.peers[i].WaitForLog("ready", 10*time.Second)
}

// config is the appliance's file for mode.
func (d *demo) config(mode string) string {
	var b strings.Builder
	b.WriteString(harness.TwoArmedConfig(d.sock, "info"))
	fmt.Fprintf(&b, `
[[cluster]]
name = "web"
address = %q
interface = "lan0"
mode = %q
`, harness.GhostAddr, mode)
	if mode == "broadcast" {
		fmt.Fprintf(&b, "broadcast_address = %q\nannounce_key_file = %q\nannounce_interval = \"500ms\"\n", bcastAddr, filepath.Join(d.dir, "announce.key"))
	}
	b.WriteString("hash = \"jhash\"\nseed = 0x5eed\nbuckets = 4096\n")
	for i, s := range d.topo.Servers {
		fmt.Fprintf(&b, "\n  [[cluster.server]]\n  id = %d\n  address = %q\n", i, s.Addr)
	}
	b.WriteString("\n  [cluster.health]\n  check = \"tcp\"\n  port = 80\n  interval = \"250ms\"\n  timeout = \"200ms\"\n  rise = 2\n  fall = 3\n")
	return b.String()
}

// startAppliance writes the file for mode and runs the appliance until it answers.
func (d *demo) startAppliance(mode string) {
	d.sock = filepath.Join(d.dir, "ctl.sock")
	d.cfg = filepath.Join(d.dir, "ghostrouter.toml")
	// The pair that signs the table announcements: the appliance holds the private key,
	// every server's ghostnode run the public one (announce.pub).
	key := filepath.Join(d.dir, "announce.key")
	if _, err := os.Stat(key); err != nil {
		if out, err := exec.Command(filepath.Join(d.bin, "ghostrouter"), "keygen", "--private", key).CombinedOutput(); err != nil {
			d.fail("keygen: %v\n%s", err, out)
		}
	}
	if err := os.WriteFile(d.cfg, []byte(d.config(mode)), 0o644); err != nil {
		d.fail("%v", err)
	}
	d.app = d.topo.Rtr.Start("ghostrouter-"+mode, filepath.Join(d.bin, "ghostrouter"), "run", "-c", d.cfg)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := d.topo.Rtr.Run(filepath.Join(d.bin, "ghostrouter"), "status", "--socket", d.sock); err == nil {
			return
		}
		if d.app.Exited() || time.Now().After(deadline) {
			d.fail("the appliance did not start:\n%s", d.app.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *demo) stopAppliance() {
	d.app.Signal(syscall.SIGTERM)
	d.app.Wait(20 * time.Second)
}

func (d *demo) status() string {
	out, err := d.topo.Rtr.Run(filepath.Join(d.bin, "ghostrouter"), "status", "--socket", d.sock)
	if err != nil {
		d.fail("status: %v\n%s", err, out)
	}
	return out
}

// waitStatus polls status until re matches (at most 10s).
func (d *demo) waitStatus(re *regexp.Regexp, what string) {
	deadline := time.Now().Add(10 * time.Second)
	for !re.MatchString(d.status()) {
		if time.Now().After(deadline) {
			d.fail("timed out waiting for %s:\n%s", what, d.status())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setupServers prepares the servers for mode: ghostnode setup (routing) or ghostnode run
// (broadcast: it also follows the appliance's table announcements).
func (d *demo) setupServers(mode string) {
	node := filepath.Join(d.bin, "ghostnode")
	for i, s := range d.topo.Servers {
		args := []string{node, "-c", d.cfg, "--cluster", "web", "--id", fmt.Sprint(i), "--state-dir", d.stateDir(i)}
		if mode == "broadcast" {
			d.nodes[i] = s.NS.Start("ghostnode-"+s.Name, append([]string{node, "run"}, args[1:]...)...)
			continue
		}
		if out, err := s.NS.Run(append([]string{node, "setup"}, args[1:]...)...); err != nil {
			d.fail("ghostnode setup on %s: %v\n%s", s.Name, err, out)
		}
	}
}

func (d *demo) teardownServers() {
	for i, s := range d.topo.Servers {
		if n := d.nodes[i]; n != nil {
			n.Signal(syscall.SIGTERM)
			n.Wait(10 * time.Second)
			d.nodes[i] = nil
		}
		s.NS.Run(filepath.Join(d.bin, "ghostnode"), "teardown", "--cluster", "web", "--state-dir", d.stateDir(i))
	}
}

// lookup is `ghostrouter lookup` for every client: client -> server id, and the rows as
// printed (client, bucket, id).
func (d *demo) lookup(extra ...string) map[string]string {
	args := append(append([]string{"lookup", "-c", d.cfg}, extra...), d.clients...)
	out, err := exec.Command(filepath.Join(d.bin, "ghostrouter"), args...).CombinedOutput()
	if err != nil {
		d.fail("lookup: %v\n%s", err, out)
	}
	m := map[string]string{}
	d.lastBuckets = map[string]string{}
	for _, line := range strings.Split(string(out), "\n")[1:] {
		if f := strings.Fields(line); len(f) == 4 {
			m[f[0]] = f[2]
			d.lastBuckets[f[0]] = f[1]
		}
	}
	return m
}

// answers runs the peer client (http or udp) from every client address: client -> the
// server that answered ("" when none did).
func (d *demo) answers(kind string) map[string]string {
	args := []string{filepath.Join(d.bin, "peer"), kind}
	if kind == "http" {
		args = append(args, "-url", "http://"+harness.GhostAddr+"/")
	} else {
		args = append(args, "-dst", harness.GhostAddr+":9000")
	}
	out, _ := d.topo.Cli.Run(append(args, "-src", strings.Join(d.clients, ","))...)
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[1] == "OK" {
			m[f[0]] = f[2]
		}
	}
	return m
}

// dispatchRound: each client asks the ghost over HTTP and UDP; the answers are compared
// with what `ghostrouter lookup` predicts (or predicted, when given); the LAN capture shows
// what crossed. A mismatch ends the demo with status 1.
func (d *demo) dispatchRound(mode string, predicted map[string]string) map[string]string {
	capture := d.topo.Rtr.Capture("br-lan", "ip dst "+harness.GhostAddr)
	httpFrom, udpFrom := d.answers("http"), d.answers("udp")
	buckets := map[string]string{}
	if predicted == nil {
		predicted = d.lookup()
	}
	for k, v := range d.lastBuckets {
		buckets[k] = v
	}
	capture.Stop()
	fmt.Printf("   %-15s %-8s %-10s %-10s %s\n", "CLIENT", "BUCKET", "PREDICTED", "HTTP FROM", "UDP FROM")
	ok := 0
	for _, c := range d.clients {
		want := "s" + predicted[c]
		mark := "MISMATCH"
		if httpFrom[c] == want && udpFrom[c] == want {
			mark, ok = "ok", ok+1
		}
		fmt.Printf("   %-15s %-8s %-10s %-10s %-10s %s\n", c, buckets[c], want, orNone(httpFrom[c]), orNone(udpFrom[c]), mark)
	}
	note("%d of %d clients answered over HTTP and UDP by exactly the predicted server", ok, len(d.clients))
	note("what crossed the LAN (tcpdump -e on br-lan, first packets to the ghost):")
	lines := tcpdumpRead(capture.Path())
	for i, l := range lines {
		if i == 6 {
			break
		}
		if len(l) > 150 {
			l = l[:150]
		}
		fmt.Printf("     %s\n", l)
	}
	note("%d packets to the ghost on the LAN in all; ICMP redirects seen: %d", len(lines), len(tcpdumpRead(capture.Path(), "icmp[0] == 5")))
	if ok != len(d.clients) {
		d.fail("dispatch mismatch in %s mode", mode)
	}
	return predicted
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// tcpdumpRead is `tcpdump -r FILE -n -e [FILTER]`, one line per frame.
func tcpdumpRead(path string, filter ...string) []string {
	out, _ := exec.Command("tcpdump", append([]string{"-r", path, "-n", "-e"}, filter...)...).Output()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func printMatching(text string, re *regexp.Regexp) {
	for _, l := range strings.Split(text, "\n") {
		if re.MatchString(l) {
			fmt.Printf("   %s\n", l)
		}
	}
}

func printIndented(text string) {
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Printf("   %s\n", l)
	}
}

// lastEvent is the last "event:" line of a status text.
func lastEvent(status string) string {
	last := ""
	for _, l := range strings.Split(status, "\n") {
		if strings.Contains(l, "event:") {
			last = strings.TrimSpace(l)
		}
	}
	return last
}
