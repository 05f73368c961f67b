package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// The operations tests: `ghostrouter capture` against the servers' own
// captures, /metrics against promtool and the servers' captures, and the
// systemd readiness protocol against the datapath.

// ghostUDP is the filter for the client datagrams to the ghost's UDP
// service: what the dispatch stage sends to the servers.
var ghostUDP = "udp and dst host " + ghostAddr + " and dst port 9000"

// startCapture runs `ghostrouter capture` in the router namespace and
// waits until it says it captures.
func (tp *topo) startCapture(name string, args ...string) *harness.Proc {
	tp.t.Helper()
	p := tp.rtr.Start(name, append([]string{tp.bin, "capture", "--socket", tp.sock}, args...)...)
	p.WaitForLog("capturing on", 10*time.Second)
	return p
}

// waitExit waits for p to end by itself and fails with its log otherwise.
func waitExit(t *testing.T, p *harness.Proc, timeout time.Duration, what string) {
	t.Helper()
	if err := p.Wait(timeout); err != nil && !p.Exited() {
		t.Fatalf("%s did not end within %v:\n%s", what, timeout, p.Log())
	}
}

// tcpdumpRead is `tcpdump -r FILE -n -e [FILTER]`, one line per frame.
func tcpdumpRead(t *testing.T, path string, filter ...string) []string {
	t.Helper()
	out, err := exec.Command("tcpdump", append([]string{"-r", path, "-n", "-e"}, filter...)...).Output()
	if err != nil {
		t.Fatalf("tcpdump -r %s: %v", path, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

var sampleRE = regexp.MustCompile(`(?m)^ghostrouter_server_packets_total\{([^}]*)\} (\S+)$`)

// serverPackets reads ghostrouter_server_packets_total by server id.
func serverPackets(t *testing.T, metrics string) map[int]float64 {
	t.Helper()
	out := map[int]float64{}
	for _, m := range sampleRE.FindAllStringSubmatch(metrics, -1) {
		id := regexp.MustCompile(`server="(\d+)"`).FindStringSubmatch(m[1])
		if id == nil {
			t.Fatalf("server packets sample without a server label: %s", m[0])
		}
		n, _ := strconv.Atoi(id[1])
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", m[0], err)
		}
		out[n] = v
	}
	return out
}

// TestCaptureAndMetricsRoutingMode: during UDP traffic from 24 clients to
// the ghost, `ghostrouter capture -i lan0 -c N -w FILE FILTER` ends by
// itself after exactly the N dispatched datagrams; tcpdump reads the file;
// each frame carries, as destination MAC, the MAC of the server whose own
// capture saw it, and per server the counts agree with the servers'
// captures and with /metrics' per-server packet counters. An unfiltered
// capture at the same time holds more (the servers' replies): the filter
// narrows. /metrics passes promtool, with the Go and process collectors.
// `capture -w - | tcpdump -r -` works.
func TestCaptureAndMetricsRoutingMode(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "curl", "promtool")
	const nClients, perClient = 24, 4
	tp := newTopo(t, topoOptions{servers: 3, clientAddrs: nClients})
	tp.startServers()
	cfg := strings.Replace(tp.baseConfig(), `metrics_address = ""`, `metrics_address = "127.0.0.1:9469"`, 1) +
		tp.clusterConfig("routing", "jhash", "\n  [cluster.health]\n  check = \"tcp\"\n  port = 80\n  interval = \"500ms\"\n  timeout = \"400ms\"\n")
	tp.writeConfig(cfg)
	tp.setupNodes()
	tp.start(cfg)
	clients := tp.clientSources(nClients)
	udp := func() {
		res := peerResults(tp.cli.MustRun(tp.peer, "udp", "-dst", ghostAddr+":9000", "-src", strings.Join(clients, ","), "-count", strconv.Itoa(perClient), "-parallel", "8"))
		for _, c := range clients {
			if !strings.HasPrefix(res[c], "s") {
				t.Fatalf("UDP from %s: %q", c, res[c])
			}
		}
	}
	// Every neighbor resolved, nothing left over from start-up.
	harness.WaitFor(t, 20*time.Second, "every client answered through the ghost", func() bool {
		res := peerResults(tp.cli.MustRun(tp.peer, "udp", "-dst", ghostAddr+":9000", "-src", strings.Join(clients, ","), "-parallel", "8", "-timeout", "500ms"))
		for _, c := range clients {
			if !strings.HasPrefix(res[c], "s") {
				return false
			}
		}
		return true
	})
	scrape := func() string { return tp.rtr.MustRun("curl", "-sf", "http://127.0.0.1:9469/metrics") }
	before := serverPackets(t, scrape())

	var srvCaps []*harness.Capture
	for _, s := range tp.servers {
		srvCaps = append(srvCaps, s.ns.Capture("e0", ghostUDP))
	}
	const n = nClients * perClient
	filtered := filepath.Join(tp.h.ArtifactDir(), "capture-ghost.pcap")
	all := filepath.Join(tp.h.ArtifactDir(), "capture-all.pcap")
	capF := tp.startCapture("capture-ghost", "-i", "lan0", "-c", strconv.Itoa(n), "-w", filtered, ghostUDP)
	capA := tp.startCapture("capture-all", "-i", "lan0", "-w", all)
	pipe := tp.rtr.Start("capture-pipe", "sh", "-c",
		fmt.Sprintf("%s capture --socket %s -i lan0 -c 5 -w - %q | tcpdump -n -e -r -", tp.bin, tp.sock, ghostUDP))
	pipe.WaitForLog("capturing on", 10*time.Second)

	udp()
	waitExit(t, capF, 15*time.Second, "capture -c N")
	waitExit(t, pipe, 15*time.Second, "capture -w - | tcpdump -r -")
	srvPkts := harness.StopAll(srvCaps...)
	if len(srvPkts[0]) == 0 {
		t.Fatal("server 0 saw no ghost datagram")
	}
	capA.Signal(syscall.SIGINT)
	waitExit(t, capA, 10*time.Second, "capture interrupted")
	after := serverPackets(t, scrape())

	if !regexp.MustCompile(`\d+ frames captured on lan0, \d+ dropped \(reader too slow\); stopped by the client`).MatchString(capA.Log()) {
		t.Errorf("the interrupted capture did not end with the appliance's account:\n%s", capA.Log())
	}
	if !strings.Contains(capF.Log(), fmt.Sprintf("%d frames captured on lan0, 0 dropped", n)) {
		t.Errorf("capture -c %d did not report %d frames and no drops:\n%s", n, n, capF.Log())
	}
	// tcpdump reads the file: N frames, every one to the ghost's port.
	lines := tcpdumpRead(t, filtered)
	if len(lines) != n {
		t.Fatalf("tcpdump -r reads %d frames from the capture, want %d:\n%s", len(lines), n, strings.Join(lines, "\n"))
	}
	pkts, err := harness.ReadPcap(filtered)
	if err != nil {
		t.Fatal(err)
	}
	ghost := netip.MustParseAddr(ghostAddr)
	// The appliance's MAC on the LAN, as the servers saw it.
	lanMAC := srvPkts[0][0].SrcMAC.String()
	byMAC := map[string]int{}
	for _, p := range pkts {
		if p.Dst != ghost || p.Proto != harness.ProtoUDP || p.DstPort != 9000 {
			t.Errorf("the filter let through %v", p)
		}
		if p.SrcMAC.String() != lanMAC {
			t.Errorf("frame from MAC %s, want the appliance's lan0 %s: %v", p.SrcMAC, lanMAC, p)
		}
		if p.Truncated() {
			t.Errorf("frame cut: %v", p)
		}
		byMAC[p.DstMAC.String()]++
	}
	for i, s := range tp.servers {
		got, theirs := byMAC[s.mac.String()], len(srvPkts[i])
		delete(byMAC, s.mac.String())
		if got != theirs || got == 0 {
			t.Errorf("server %d (%s): the appliance's capture holds %d frames to its MAC, its own capture saw %d", i, s.mac, got, theirs)
		}
		if d := after[i] - before[i]; d < float64(theirs) || d > float64(theirs)+2 {
			t.Errorf("server %d: ghostrouter_server_packets_total grew by %v, its capture saw %d", i, d, theirs)
		}
	}
	if len(byMAC) != 0 {
		t.Errorf("frames to MACs that are no server's: %v", byMAC)
	}
	// The unfiltered capture holds those and the servers' replies (inbound
	// on lan0, from the ghost): the filter narrowed.
	allPkts, err := harness.ReadPcap(all)
	if err != nil {
		t.Fatal(err)
	}
	toGhost, fromGhost := 0, 0
	for _, p := range allPkts {
		switch {
		case p.Dst == ghost && p.Proto == harness.ProtoUDP:
			toGhost++
		case p.Src == ghost && p.Proto == harness.ProtoUDP:
			fromGhost++
		}
	}
	if toGhost != n || fromGhost != n {
		t.Errorf("unfiltered capture: %d datagrams to the ghost and %d replies, want %d each", toGhost, fromGhost, n)
	}
	// The pipe: tcpdump decoded 5 frames to the ghost, each to a server's MAC.
	var piped int
	for _, l := range strings.Split(pipe.Log(), "\n") {
		if strings.Contains(l, "> "+ghostAddr+".9000: UDP") {
			piped++
		}
	}
	if piped != 5 {
		t.Errorf("capture -w - | tcpdump -r -: %d decoded frames, want 5:\n%s", piped, pipe.Log())
	}

	metrics := scrape()
	cmd := exec.Command("ip", "netns", "exec", tp.rtr.Name, "promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(metrics)
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	for i := range tp.servers {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^ghostrouter_health_check_duration_seconds_count\{cluster="web",result="ok",server="%d"\} (\d+)$`, i))
		if m := re.FindStringSubmatch(metrics); m == nil || m[1] == "0" {
			t.Errorf("no passed health checks of server %d in the latency histogram", i)
		}
	}
	for _, want := range []string{"go_goroutines ", "go_memstats_heap_alloc_bytes ", "process_cpu_seconds_total ", "process_resident_memory_bytes ",
		"ghostrouter_table_build_duration_seconds_count{cluster=\"web\"} ", "ghostrouter_capture_sessions_total 3"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Every family the appliance exports is in the README's metrics list.
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (ghostrouter_\S+) `).FindAllStringSubmatch(metrics, -1) {
		if !strings.Contains(string(readme), "`"+m[1]+"`") {
			t.Errorf("metric %s is not in README.md's metrics list", m[1])
		}
	}
	t.Logf("%d datagrams; the appliance's capture and the servers' agree per server: %v", n, srvCountStrings(srvPkts))
}

func srvCountStrings(pkts [][]harness.Packet) []int {
	out := make([]int, len(pkts))
	for i, p := range pkts {
		out[i] = len(p)
	}
	return out
}

// TestCaptureBroadcastMode: in broadcast mode the captured ghost frames go
// to ff:ff:ff:ff:ff:ff, as many as every server's own capture saw.
func TestCaptureBroadcastMode(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump")
	const nClients, perClient = 16, 3
	tp := broadcastTopo(t, 2, nClients)
	clients := tp.clientSources(nClients)
	want := tp.lookup(clients)
	tp.askAll(clients, want) // the filters are in place and neighbors resolved
	var srvCaps []*harness.Capture
	for _, s := range tp.servers {
		srvCaps = append(srvCaps, s.ns.Capture("e0", ghostUDP))
	}
	const n = nClients * perClient
	file := filepath.Join(tp.h.ArtifactDir(), "capture-ghost.pcap")
	capF := tp.startCapture("capture-ghost", "-i", "lan0", "-c", strconv.Itoa(n), "-w", file, ghostUDP)
	tp.cli.MustRun(tp.peer, "udp", "-dst", ghostAddr+":9000", "-src", strings.Join(clients, ","), "-count", strconv.Itoa(perClient), "-parallel", "8")
	waitExit(t, capF, 15*time.Second, "capture -c N")
	srvPkts := harness.StopAll(srvCaps...)

	lines := tcpdumpRead(t, file, "ether", "dst", "ff:ff:ff:ff:ff:ff")
	if len(lines) != n {
		t.Fatalf("tcpdump -r: %d frames to ff:ff:ff:ff:ff:ff in the capture, want %d", len(lines), n)
	}
	pkts, err := harness.ReadPcap(file)
	if err != nil {
		t.Fatal(err)
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}.String()
	for _, p := range pkts {
		if p.DstMAC.String() != bcast || p.Dst.String() != ghostAddr {
			t.Errorf("captured %v: want a ghost datagram to %s", p, bcast)
		}
	}
	for i, sp := range srvPkts {
		if len(sp) != len(pkts) {
			t.Errorf("server %d's capture saw %d broadcast ghost datagrams, the appliance's %d", i, len(sp), len(pkts))
		}
	}
}

// notifyListener is the systemd side of sd_notify: a unixgram socket the
// test reads, each datagram with the time it arrived.
type notifyListener struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T, dir string) *notifyListener {
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); os.Remove(path) })
	return &notifyListener{path: path, conn: conn}
}

// next returns the next notification, or fails after timeout.
func (l *notifyListener) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	l.conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := l.conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification within %v: %v", timeout, err)
	}
	return string(buf[:n])
}

// unitCapabilities returns the capabilities configs/ghostrouter.service
// bounds the appliance to, as setpriv(1) names them ("net_admin").
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(filepath.Join(root, "configs", "ghostrouter.service"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CapabilityBoundingSet=(.+)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("configs/ghostrouter.service has no CapabilityBoundingSet")
	}
	var caps []string
	for _, c := range strings.Fields(string(m[1])) {
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return caps
}

// TestSystemdNotify starts the appliance as systemd would a Type=notify
// service, with NOTIFY_SOCKET naming a socket the test reads, and with the
// privileges the unit leaves it: the capability bounding set of
// configs/ghostrouter.service and no_new_privs (setpriv). The first
// notification is READY=1, and at the moment it arrives the appliance
// already forwards: the TAPs are up and every client's first datagram to
// the ghost (routing mode, which needs the servers' MACs) is answered.
// SIGHUP brings RELOADING=1 with MONOTONIC_USEC, then READY=1; SIGTERM
// brings STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "setpriv")
	tp := newTopo(t, topoOptions{servers: 3, clientAddrs: 12})
	tp.startServers()
	cfg := tp.baseConfig() + tp.clusterConfig("routing", "jhash", "")
	tp.writeConfig(cfg)
	tp.setupNodes()
	nl := listenNotify(t, tp.h.ArtifactDir())
	caps := "-all"
	for _, c := range unitCapabilities(t) {
		caps += ",+" + c
	}
	tp.app = tp.rtr.Start("ghostrouter", "setpriv", "--bounding-set", caps, "--no-new-privs", "--",
		"env", "NOTIFY_SOCKET="+nl.path, tp.bin, "run", "-c", tp.cfgPath)

	started := time.Now()
	msg := nl.next(t, 30*time.Second)
	t.Logf("READY after %v", time.Since(started))
	// Right now, before anything else happens: the links are up and
	// ghost traffic is dispatched.
	clients := tp.clientSources(12)
	res := peerResults(tp.cli.MustRun(tp.peer, "udp", "-dst", ghostAddr+":9000", "-src", strings.Join(clients, ","), "-parallel", "12", "-timeout", "2s"))
	links := tp.rtr.MustRun("ip", "-o", "link", "show", "up")
	if !strings.HasPrefix(msg, "READY=1\n") && msg != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", msg)
	}
	for _, l := range []string{"up0", "lan0"} {
		if !regexp.MustCompile(`\d+: ` + l + `[:@]`).MatchString(links) {
			t.Errorf("READY=1 arrived with %s not up:\n%s", l, links)
		}
	}
	for _, c := range clients {
		if !strings.HasPrefix(res[c], "s") {
			t.Errorf("READY=1 arrived, but the first datagram from %s to the ghost got %q", c, res[c])
		}
	}
	if t.Failed() {
		t.Fatalf("appliance log:\n%s", tp.app.Log())
	}

	// Reload by SIGHUP, as ExecReload does.
	var mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		t.Fatal(err)
	}
	tp.app.Signal(syscall.SIGHUP)
	msg = nl.next(t, 10*time.Second)
	m := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=(\d+)$`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("after SIGHUP: %q, want RELOADING=1 and MONOTONIC_USEC", msg)
	}
	us, _ := strconv.ParseInt(m[1], 10, 64)
	if lo := mono.Nano() / 1000; us < lo || us > lo+10e6 {
		t.Errorf("MONOTONIC_USEC=%d is not CLOCK_MONOTONIC at the reload (%d)", us, lo)
	}
	if msg = nl.next(t, 10*time.Second); !strings.HasPrefix(msg, "READY=1\nSTATUS=reloaded") {
		t.Errorf("after the reload: %q, want READY=1 and the reload's status", msg)
	}
	tp.app.Signal(syscall.SIGTERM)
	if msg = nl.next(t, 10*time.Second); msg != "STOPPING=1" {
		t.Errorf("after SIGTERM: %q, want STOPPING=1", msg)
	}
	if err := tp.app.Wait(15 * time.Second); err != nil && !tp.app.Exited() {
		t.Errorf("the appliance did not stop: %v", err)
	}
}

// TestCaptureSuperFrames: during TCP transfers to and from the ghost, the
// links carry 64 KiB super-frames (segmentation offload); `ghostrouter
// capture` keeps them whole, and holds the same frames, of the same
// lengths, as the kernel's own capture on the TAP device.
func TestCaptureSuperFrames(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump")
	tp := newTopo(t, topoOptions{servers: 1})
	tp.start(tp.baseConfig() + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	transferServer(t, tp.servers[0].ns)
	filter := fmt.Sprintf("tcp port %d", transferPort)
	kernel := tp.rtr.Capture("lan0", filter)
	file := filepath.Join(tp.h.ArtifactDir(), "capture-tcp.pcap")
	ours := tp.startCapture("capture-tcp", "-i", "lan0", "-w", file, filter)
	ghost := netip.MustParseAddr(ghostAddr)
	transfer(t, tp.cli, ghost, true, 11)
	transfer(t, tp.cli, ghost, false, 12)
	kpkts := kernel.Stop()
	ours.Signal(syscall.SIGINT)
	waitExit(t, ours, 10*time.Second, "capture interrupted")
	if !strings.Contains(ours.Log(), " 0 dropped") {
		t.Errorf("the capture lost frames:\n%s", ours.Log())
	}
	pkts, err := harness.ReadPcap(file)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tcpdumpRead(t, file)); n != len(pkts) {
		t.Errorf("tcpdump -r reads %d frames, the file holds %d", n, len(pkts))
	}
	biggest, super := 0, 0
	lengths := map[int]int{}
	for _, p := range pkts {
		if p.Truncated() {
			t.Fatalf("frame cut at %d of %d bytes: %v", len(p.Raw), p.Len, p)
		}
		biggest = max(biggest, p.Len)
		if p.Len > ethMTUFrame {
			super++
		}
		lengths[p.Len]++
	}
	if super == 0 || biggest > 14+65535 {
		t.Fatalf("largest captured frame %d bytes, %d above the MTU: want super-frames kept whole", biggest, super)
	}
	for _, p := range kpkts {
		lengths[p.Len]--
	}
	diff := 0
	for _, n := range lengths {
		diff += max(n, -n)
	}
	if diff > len(kpkts)/100 {
		t.Errorf("the appliance's capture (%d frames) and the kernel's on the TAP (%d) differ in %d frame lengths", len(pkts), len(kpkts), diff)
	}
	t.Logf("%d frames, %d super-frames, the largest %d bytes; kernel capture %d frames", len(pkts), super, biggest, len(kpkts))
}

// TestCaptureSlowReaderDoesNotStall: a capture whose reader never reads
// (its output piped into sleep) fills its queue; the datapath drops and
// counts the frames the capture cannot take and keeps forwarding: TCP
// transfers through the dispatch stage complete intact while it runs, at
// a rate comparable to the same transfers without it.
func TestCaptureSlowReaderDoesNotStall(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump")
	tp := newTopo(t, topoOptions{servers: 1})
	tp.start(tp.baseConfig() + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	transferServer(t, tp.servers[0].ns)
	ghost := netip.MustParseAddr(ghostAddr)
	// 24 MiB each way in total: more than a capture's 16 MiB budget.
	timed := func(seed uint64) time.Duration {
		start := time.Now()
		for i := range uint64(3) {
			transfer(t, tp.cli, ghost, true, seed+2*i)
			transfer(t, tp.cli, ghost, false, seed+2*i+1)
		}
		return time.Since(start)
	}
	without := timed(31)
	stuck := tp.rtr.Start("capture-stuck", "sh", "-c", fmt.Sprintf("%s capture --socket %s -i lan0 -w - | sleep 120", tp.bin, tp.sock))
	stuck.WaitForLog("capturing on", 10*time.Second)
	with := timed(41)
	// The reader is gone: the appliance ends the session and says what
	// it dropped.
	syscall.Kill(-stuck.Pid(), syscall.SIGKILL) // the pipeline's process group
	stuck.Wait(5 * time.Second)
	harness.WaitFor(t, 45*time.Second, "the appliance to end the capture", func() bool {
		return strings.Contains(tp.app.Log(), "capture ended")
	})
	m := regexp.MustCompile(`capture ended.*matched=(\d+) dropped=(\d+)`).FindStringSubmatch(tp.app.Log())
	if m == nil {
		t.Fatalf("no capture account in the appliance's log:\n%s", tp.app.Log())
	}
	matched, _ := strconv.Atoi(m[1])
	dropped, _ := strconv.Atoi(m[2])
	if dropped == 0 || dropped >= matched {
		t.Errorf("the stuck capture matched %d frames and dropped %d: want some, not all, dropped", matched, dropped)
	}
	if with > 3*without+2*time.Second {
		t.Errorf("transfers took %v with a stuck capture, %v without", with, without)
	}
	t.Logf("transfers: %v without a capture, %v with a stuck one (matched %d frames, dropped %d)", without, with, matched, dropped)
}
