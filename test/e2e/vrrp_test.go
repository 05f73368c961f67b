package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// vrrpState is what the tests read of `ghostrouter status --json`'s
// virtual routers.
type vrrpState struct {
	Name           string `json:"name"`
	State          string `json:"state"`
	Priority       int    `json:"priority"`
	Master         string `json:"master"`
	MasterPriority int    `json:"master_priority"`
	Transitions    []struct {
		At     time.Time `json:"at"`
		From   string    `json:"from"`
		To     string    `json:"to"`
		Reason string    `json:"reason"`
	} `json:"transitions"`
	Counters map[string]uint64 `json:"counters"`
}

// appliance is one ghostrouter process in a namespace, with its files.
type appliance struct {
	name, cfg, sock string
	ns              *harness.NS
	proc            *harness.Proc
	bin             string
	t               *testing.T
}

// start runs the appliance and waits for its control socket.
func (a *appliance) start() {
	a.t.Helper()
	a.proc = a.ns.Start("ghostrouter-"+a.name+"-"+fmt.Sprint(time.Now().UnixNano()), a.bin, "run", "-c", a.cfg)
	harness.WaitFor(a.t, 15*time.Second, a.name+"'s control socket", func() bool {
		if a.proc.Exited() {
			a.t.Fatalf("appliance %s exited:\n%s", a.name, a.proc.Log())
		}
		_, err := a.ns.Run(a.bin, "status", "--socket", a.sock)
		return err == nil
	})
}

// vrrp returns the appliance's virtual routers, nil when it does not answer.
func (a *appliance) vrrp() []vrrpState {
	out, err := a.ns.Run(a.bin, "status", "--socket", a.sock, "--json")
	if err != nil {
		return nil
	}
	var st struct {
		VRRP []vrrpState `json:"vrrp"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		a.t.Fatalf("%s: status --json: %v\n%s", a.name, err, out)
	}
	return st.VRRP
}

// waitState waits until every virtual router of the appliance is in state;
// it returns when that was first seen.
func (a *appliance) waitState(state string, timeout time.Duration) time.Time {
	a.t.Helper()
	harness.WaitFor(a.t, timeout, a.name+" "+state, func() bool {
		vs := a.vrrp()
		for _, v := range vs {
			if v.State != state {
				return false
			}
		}
		return len(vs) > 0
	})
	return time.Now()
}

// writeFile writes text to dir/name.
func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// keepalived runs keepalived (VRRP only) in ns with a configuration of one
// VRRPv3 instance in the test's directory: its pid files there too, logging
// to the console, so nothing on the host is touched.
func startKeepalived(t *testing.T, h *harness.H, ns *harness.NS, tag string, priority int, ifname, vip string) *harness.Proc {
	t.Helper()
	dir := h.ArtifactDir()
	conf := writeFile(t, dir, "keepalived-"+tag+".conf", fmt.Sprintf(`global_defs {
    router_id ka_%s
    vrrp_version 3
    vrrp_garp_master_delay 0
}
vrrp_instance VI_51 {
    state BACKUP
    interface %s
    virtual_router_id 51
    priority %d
    advert_int 0.1
    virtual_ipaddress {
        %s/24 dev %s
    }
}
`, tag, ifname, priority, vip, ifname))
	p := ns.Start("keepalived-"+tag, "keepalived", "-n", "-l", "-D", "-P", "-f", conf,
		"-p", filepath.Join(dir, "ka-"+tag+".pid"), "-r", filepath.Join(dir, "ka-"+tag+"-vrrp.pid"),
		"-c", filepath.Join(dir, "ka-"+tag+"-checkers.pid"))
	return p
}

// hasAddr reports whether ifname in ns carries addr.
func hasAddr(ns *harness.NS, ifname, addr string) bool {
	out, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", ifname)
	return err == nil && strings.Contains(out, " "+addr+"/")
}

// TestVRRPKeepalivedInterop: ghostrouter and keepalived (Debian's) share
// one VRRPv3 virtual router on a namespace LAN. The higher priority becomes
// master either way round, preempting the lower; tcpdump decodes every
// advertisement of both as VRRPv3 with a good checksum.
func TestVRRPKeepalivedInterop(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "keepalived")
	h := harness.New(t)
	bin := h.Build("cmd/ghostrouter")
	sw, ka, obs := h.NS("sw"), h.NS("ka"), h.NS("obs")
	h.Veth(ka, "e0", sw, "p-ka")
	h.Veth(obs, "e0", sw, "p-obs")
	sw.Bridge("br0", "p-ka", "p-obs")
	ka.AddrAdd("e0", "198.51.100.3/24")
	obs.AddrAdd("e0", "198.51.100.9/24")
	const vip, grAddr, kaAddr = "198.51.100.1", "198.51.100.2", "198.51.100.3"
	dir := h.ArtifactDir()
	gr := &appliance{name: "gr", ns: sw, bin: bin, t: t, sock: filepath.Join(dir, "gr.sock")}
	grConfig := func(priority int) string {
		return writeFile(t, dir, fmt.Sprintf("gr-%d.toml", priority), fmt.Sprintf(`[router]
control_socket = %q
metrics_address = ""

[[interface]]
name = "up0"
addresses = ["%s/24"]
bridge = "br0"

[[vrrp]]
interface = "up0"
vrid = 51
priority = %d
interval = "100ms"
addresses = [%q]
`, gr.sock, grAddr, priority, vip))
	}
	capture := sw.Capture("br0", "ip proto 112")
	vmac := "00:00:5e:00:01:33"

	// 1. keepalived alone becomes master; ghostrouter (150) joins and
	// preempts it.
	kaProc := startKeepalived(t, h, ka, "100", 100, "e0", vip)
	harness.WaitFor(t, 10*time.Second, "keepalived master (the VIP on its interface)", func() bool { return hasAddr(ka, "e0", vip) })
	gr.cfg = grConfig(150)
	gr.start()
	gr.waitState("master", 5*time.Second)
	harness.WaitFor(t, 5*time.Second, "keepalived backup (the VIP gone)", func() bool { return !hasAddr(ka, "e0", vip) })
	v := gr.vrrp()[0]
	if v.Master != grAddr || v.MasterPriority != 150 {
		t.Errorf("ghostrouter master: status says master %s priority %d, want %s 150", v.Master, v.MasterPriority, grAddr)
	}
	if v.Counters["adverts_in"] == 0 {
		t.Errorf("ghostrouter heard no advertisement from keepalived: %v", v.Counters)
	}
	// A third host resolves the VIP to the virtual MAC, answered by
	// ghostrouter (the ping itself is not answered: Accept_Mode is false).
	obs.Run("ping", "-c", "1", "-W", "1", vip)
	if out := obs.MustRun("ip", "neigh", "show", vip, "dev", "e0"); !strings.Contains(out, vmac) {
		t.Errorf("the LAN's neighbor entry for %s with ghostrouter master: %q, want %s", vip, out, vmac)
	}
	if !strings.Contains(kaProc.Log(), "Entering BACKUP STATE") {
		t.Errorf("keepalived did not log entering BACKUP after ghostrouter joined:\n%s", kaProc.Log())
	}
	// A reload that changes the virtual router is rejected; the running one
	// stays.
	orig, _ := os.ReadFile(gr.cfg)
	os.WriteFile(gr.cfg, []byte(strings.Replace(string(orig), "priority = 150", "priority = 50", 1)), 0o644)
	if out, err := sw.Run(bin, "reload", "--socket", gr.sock); err == nil || !strings.Contains(out, "[[vrrp]] changed") {
		t.Errorf("reload with a changed [[vrrp]]: %v\n%s", err, out)
	}
	os.WriteFile(gr.cfg, orig, 0o644)
	if v := gr.vrrp()[0]; v.State != "master" || v.Priority != 150 {
		t.Errorf("after the rejected reload: %s priority %d", v.State, v.Priority)
	}

	// 2. keepalived restarted with priority 200 preempts ghostrouter.
	kaProc.Signal(os.Interrupt)
	kaProc.Wait(10 * time.Second)
	kaProc = startKeepalived(t, h, ka, "200", 200, "e0", vip)
	harness.WaitFor(t, 10*time.Second, "keepalived (200) master", func() bool { return hasAddr(ka, "e0", vip) })
	gr.waitState("backup", 5*time.Second)
	v = gr.vrrp()[0]
	if v.Master != kaAddr || v.MasterPriority != 200 {
		t.Errorf("ghostrouter backup: status says master %s priority %d, want %s 200", v.Master, v.MasterPriority, kaAddr)
	}
	// The backup sends nothing for the VIP: keepalived's MAC answers.
	obs.MustRun("ip", "neigh", "flush", "dev", "e0")
	obs.Run("ping", "-c", "1", "-W", "1", vip)
	// (keepalived without use_vmac answers with its interface's MAC; an
	// answer from ghostrouter would carry the virtual MAC).
	if out := obs.MustRun("ip", "neigh", "show", vip, "dev", "e0"); !strings.Contains(out, ka.MAC("e0").String()) {
		t.Errorf("neighbor entry for %s with keepalived master: %q, want keepalived's %s", vip, out, ka.MAC("e0"))
	}

	// 3. ghostrouter stopped gracefully sends priority 0: keepalived (100
	// again) takes over at once.
	kaProc.Signal(os.Interrupt)
	kaProc.Wait(10 * time.Second)
	gr.waitState("master", 5*time.Second)
	kaProc = startKeepalived(t, h, ka, "100b", 100, "e0", vip)
	harness.WaitFor(t, 10*time.Second, "keepalived (100) running as backup", func() bool {
		return strings.Contains(kaProc.Log(), "Entering BACKUP STATE")
	})
	gr.proc.Signal(os.Interrupt)
	stopAt := time.Now()
	harness.WaitFor(t, 5*time.Second, "keepalived master after ghostrouter's priority 0", func() bool { return hasAddr(ka, "e0", vip) })
	took := time.Since(stopAt)
	if !strings.Contains(kaProc.Log(), "received priority 0 advertisement") {
		t.Errorf("keepalived did not see ghostrouter's priority 0 (took over %v after the stop):\n%s", took, kaProc.Log())
	}
	gr.proc.Wait(10 * time.Second)

	// 4. tcpdump's decoder: every advertisement is VRRPv3 with a valid
	// checksum, from both routers.
	capture.Stop()
	text := sw.MustRun("tcpdump", "-n", "-vv", "-r", capture.Path())
	from := map[string]int{}
	adv := regexp.MustCompile(`(?m)^\s+(\S+) > 224\.0\.0\.18: VRRPv3, Advertisement, vrid 51, prio (\d+)`)
	for _, m := range adv.FindAllStringSubmatch(text, -1) {
		from[m[1]]++
	}
	if strings.Contains(text, "bad vrrp cksum") {
		t.Errorf("tcpdump reports a bad VRRP checksum:\n%s", grep(text, "bad vrrp cksum"))
	}
	if from[grAddr] < 5 || from[kaAddr] < 5 {
		t.Errorf("tcpdump decoded VRRPv3 advertisements from %v; want several from %s and %s:\n%s", from, grAddr, kaAddr, head(text, 20))
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "proto VRRP") && !strings.Contains(line, "ttl 255") {
			t.Errorf("advertisement without TTL 255: %s", line)
		}
	}
	// The oracle can fail: the same decoder flags one of ghostrouter's
	// advertisements with its checksum changed.
	checkDecoderFlags(t, sw, capture.Packets(), grAddr, filepath.Join(dir, "corrupted.pcap"))
	fmt.Printf("INTEROP: tcpdump decoded %d VRRPv3 advertisements from ghostrouter, %d from keepalived, no bad checksum; keepalived took over %v after ghostrouter's priority 0\n",
		from[grAddr], from[kaAddr], took.Round(time.Millisecond))
}

// checkDecoderFlags writes one advertisement from src in pkts, its VRRP
// checksum changed, to a pcap file and checks that tcpdump -vv reports it.
func checkDecoderFlags(t *testing.T, ns *harness.NS, pkts []harness.Packet, src, path string) {
	t.Helper()
	for _, pk := range pkts {
		if pk.Proto != 112 || pk.Src.String() != src || pk.Truncated() {
			continue
		}
		frame := append([]byte(nil), pk.Raw...)
		ihl := int(frame[14]&0xf) * 4
		frame[14+ihl+7] ^= 0x01 // the VRRP checksum's low byte
		var b []byte
		b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
		b = binary.LittleEndian.AppendUint16(b, 2)
		b = binary.LittleEndian.AppendUint16(b, 4)
		b = binary.LittleEndian.AppendUint64(b, 0)
		b = binary.LittleEndian.AppendUint32(b, 65535)
		b = binary.LittleEndian.AppendUint32(b, 1) // Ethernet
		b = binary.LittleEndian.AppendUint64(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(frame)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(frame)))
		b = append(b, frame...)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if out := ns.MustRun("tcpdump", "-n", "-vv", "-r", path); !strings.Contains(out, "bad vrrp cksum") {
			t.Errorf("tcpdump does not flag a corrupted VRRP checksum, so its silence proves nothing:\n%s", out)
		}
		return
	}
	t.Errorf("no advertisement from %s captured", src)
}

func grep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func head(text string, n int) string {
	ls := strings.Split(text, "\n")
	if len(ls) > n {
		ls = ls[:n]
	}
	return strings.Join(ls, "\n")
}

// pair is the standard topology (newTopo) with two appliances in place of
// one, each in its own namespace whose bridges are joined to the router
// namespace's by veths: the same cluster configuration, their own
// addresses and MACs, and two VRRP virtual routers in one sync group
// holding the addresses the clients (198.51.100.1) and the servers
// (10.0.0.1) use as their gateway.
//
//	cli ── br-up ─┬─ a-up ── [apa: br-up ── up0 ghostrouter A lan0 ── br-lan] ── a-lan ─┬─ br-lan ── servers
//	              └─ b-up ── [apb: br-up ── up0 ghostrouter B lan0 ── br-lan] ── b-lan ─┘
type pair struct {
	tp   *topo
	a, b *appliance
}

// startBroadcastPair builds a broadcast-mode pair with three servers: B
// starts first and becomes master, then A (the higher priority) preempts it,
// so A is master and B backup. The servers' agents take announcements from
// either appliance (both LAN addresses) and are in step with A; nClients
// client addresses each got their answer from the server lookup predicts.
func startBroadcastPair(t *testing.T, nClients int) (p *pair, clients []string, want map[string]int) {
	t.Helper()
	p = newPair(t, 3, nClients, "broadcast", broadcastExtra(fastHealth))
	tp := p.tp
	tp.startServers()
	p.b.start()
	p.b.waitState("master", 10*time.Second)
	p.a.start()
	p.a.waitState("master", 10*time.Second)
	p.b.waitState("backup", 5*time.Second)
	tp.sock = p.a.sock
	tp.runNodes(p.a.cfg, 0, 3, "--appliance", "10.0.0.2,10.0.0.3")
	tp.waitInStep(3, "with A master")
	clients = tp.clientSources(nClients)
	want = tp.lookup(clients)
	tp.askAll(clients, want)
	return p, clients, want
}

const vrrpInterval = 100 * time.Millisecond

func newPair(t *testing.T, servers, clients int, mode, extra string) *pair {
	t.Helper()
	tp := newTopo(t, topoOptions{servers: servers, clientAddrs: clients})
	p := &pair{tp: tp}
	tp.ensureAnnounceKey() // both appliances sign with the one key pair its configs name
	dir := tp.h.ArtifactDir()
	for i, name := range []string{"a", "b"} {
		ns := tp.h.NS("ap" + name)
		tp.h.Veth(ns, "x-up", tp.rtr, name+"-up")
		tp.h.Veth(ns, "x-lan", tp.rtr, name+"-lan")
		for _, port := range []string{name + "-up", name + "-lan"} {
			br := "br-up"
			if strings.HasSuffix(port, "lan") {
				br = "br-lan"
			}
			tp.rtr.MustRun("ip", "link", "set", port, "master", br)
			tp.rtr.MustRun("ip", "link", "set", port, "up")
		}
		ns.Bridge("br-up", "x-up")
		ns.Bridge("br-lan", "x-lan")
		a := &appliance{name: strings.ToUpper(name), ns: ns, bin: tp.bin, t: t, sock: filepath.Join(dir, name+".sock")}
		prio := 150 - 50*i
		a.cfg = writeFile(t, dir, "ghostrouter-"+name+".toml", fmt.Sprintf(`[router]
log_level = "debug"
control_socket = %q
metrics_address = "127.0.0.1:9469"

[[interface]]
name = "up0"
addresses = ["198.51.100.%d/24"]
mac = "02:00:00:00:%02x:01"
bridge = "br-up"

[[interface]]
name = "lan0"
addresses = ["10.0.0.%d/24"]
mac = "02:00:00:00:%02x:02"
bridge = "br-lan"

[[vrrp]]
interface = "up0"
vrid = 51
priority = %d
interval = %q
addresses = [%q]
group = "edge"

[[vrrp]]
interface = "lan0"
vrid = 52
priority = %d
interval = %q
addresses = [%q]
group = "edge"
`, a.sock, 2+i, 10+i, 2+i, 10+i, prio, vrrpInterval.String(), upAddr, prio, vrrpInterval.String(), lanAddr)+
			tp.clusterConfig(mode, "jhash", extra))
		if i == 0 {
			p.a = a
			tp.cfgPath = a.cfg
		} else {
			p.b = a
		}
	}
	return p
}

// becameMaster is when the appliance's virtual router on up0 last became
// master, by its own record.
func (a *appliance) becameMaster() time.Time {
	a.t.Helper()
	for _, v := range a.vrrp() {
		if v.Name != "up0/51" {
			continue
		}
		for i := len(v.Transitions) - 1; i >= 0; i-- {
			if v.Transitions[i].To == "master" {
				return v.Transitions[i].At
			}
		}
	}
	a.t.Fatalf("%s never became master", a.name)
	return time.Time{}
}

// skewed is 3 x interval + skew for a backup of priority prio: the longest
// a backup waits after the master's last advertisement (RFC 5798 6.1).
func skewed(prio int, interval time.Duration) time.Duration {
	return 3*interval + time.Duration(256-prio)*interval/256
}

// lastAdvert is when the master's last advertisements were captured (on
// its two ports, from its two addresses): the earlier of the two, since the
// backup's sync group takes over when the first of its virtual routers
// times out.
func lastAdvert(up, lan []harness.Packet) time.Time {
	last := func(pkts []harness.Packet, src string) time.Time {
		var l time.Time
		for _, pk := range pkts {
			if pk.Proto == 112 && pk.Src.String() == src && pk.Time.After(l) {
				l = pk.Time
			}
		}
		return l
	}
	u, l := last(up, "198.51.100.2"), last(lan, "10.0.0.2")
	if u.IsZero() || l.IsZero() {
		return time.Time{}
	}
	if l.Before(u) {
		return l
	}
	return u
}

// checkTakeover checks that the backup took over Master_Down_Interval after
// the master's last advertisement (as captured on the wire), not earlier
// and not much later.
func checkTakeover(t *testing.T, what string, lastA, took time.Time, bound time.Duration) time.Duration {
	t.Helper()
	if lastA.IsZero() {
		t.Fatalf("%s: no advertisement from the master captured", what)
	}
	d := took.Sub(lastA)
	if d < bound-10*time.Millisecond || d > bound+60*time.Millisecond {
		t.Errorf("%s: the backup took over %v after the master's last advertisement; RFC 5798 says 3 x interval + skew = %v", what, d, bound)
	}
	return d
}

// checkLoad checks load results: every answer from the server lookup
// names; failures only inside [from, to]; it returns the failures and the
// first and last of them.
func checkLoad(t *testing.T, what string, results []result, want map[string]int, from, to time.Time) (failed int, first, last time.Time) {
	t.Helper()
	for _, r := range results {
		if !r.ok {
			failed++
			if first.IsZero() || r.at.Before(first) {
				first = r.at
			}
			if r.at.After(last) {
				last = r.at
			}
			if r.at.Before(from) || r.at.After(to) {
				t.Errorf("%s: %s failed at %s, outside the takeover window %s..%s: %s", what, r.src,
					r.at.Format("15:04:05.000"), from.Format("15:04:05.000"), to.Format("15:04:05.000"), r.text)
			}
			continue
		}
		if r.server != want[r.src] {
			t.Errorf("%s: %s was answered by server %d, want %d (the table changed hands?)", what, r.src, r.server, want[r.src])
		}
	}
	return failed, first, last
}

// checkReporting checks what the appliance, now master, reports: the text
// status's virtual router section, the metrics, and one log line per
// transition (at least min per virtual router).
func (a *appliance) checkReporting(min int) {
	a.t.Helper()
	text := a.ns.MustRun(a.bin, "status", "--socket", a.sock)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`virtual routers \(VRRPv3\)`),
		regexp.MustCompile(`(?m)^\s+up0/51\s+master\s+100\s+100ms\s+198\.51\.100\.3\s+100\s+00:00:5e:00:01:33\s+198\.51\.100\.1\s+edge`),
		regexp.MustCompile(`(?m)^\s+lan0/52\s+master\s+100\s+100ms\s+10\.0\.0\.3\s+100\s+00:00:5e:00:01:34\s+10\.0\.0\.1\s+edge`),
		regexp.MustCompile(`up0/51: \S+ backup -> master \(master down: nothing heard for 360\.9375ms\)`),
	} {
		if !want.MatchString(text) {
			a.t.Errorf("%s status lacks %s:\n%s", a.name, want, text)
		}
	}
	metrics := a.ns.MustRun("curl", "-s", "http://127.0.0.1:9469/metrics")
	for _, want := range []string{
		`ghostrouter_vrrp_state{interface="up0",state="master",vrid="51",vrrp="up0/51"} 1`,
		`ghostrouter_vrrp_state{interface="up0",state="backup",vrid="51",vrrp="up0/51"} 0`,
		`ghostrouter_vrrp_master_priority{interface="lan0",master="10.0.0.3",vrid="52",vrrp="lan0/52"} 100`,
	} {
		if !strings.Contains(metrics, want) {
			a.t.Errorf("%s metrics lack %s", a.name, want)
		}
	}
	logged := strings.Count(a.proc.Log(), "vrrp transition")
	recorded := 0
	for _, v := range a.vrrp() {
		if len(v.Transitions) < min {
			a.t.Errorf("%s %s: %d transitions recorded, want at least %d", a.name, v.Name, len(v.Transitions), min)
		}
		recorded += len(v.Transitions)
	}
	if logged != recorded {
		a.t.Errorf("%s: %d transitions recorded, %d logged: each must be logged once", a.name, recorded, logged)
	}
}

// TestVRRPFailoverRouting: two appliances with the same cluster, clients
// requesting through the virtual address without pause. SIGKILL of the
// master: the backup is master within 3 x interval + skew, requests fail
// only around that window, every client keeps its server, and long-lived
// TCP connections opened before the kill carry on (the table is stateless:
// nothing to synchronise). The killed appliance restarts, preempts again
// without loss, and a graceful SIGTERM hands over with no failed request.
func TestVRRPFailoverRouting(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "curl")
	const nClients, nLong = 16, 4
	p := newPair(t, 3, nClients+nLong, "routing", fastHealth)
	tp := p.tp
	tp.startServers()
	p.a.start()
	p.a.waitState("master", 10*time.Second)
	p.b.start()
	p.b.waitState("backup", 10*time.Second)
	tp.setupNodes()
	all := tp.clientSources(nClients + nLong)
	clients, long := all[:nClients], all[nClients:]
	want := tp.lookup(all)
	tp.askAll(all, want)

	// SIGKILL.
	advUp, advLan := tp.rtr.Capture("a-up", "ip proto 112"), tp.rtr.Capture("a-lan", "ip proto 112")
	waitShort := tp.runLoad(clients, 5*time.Second, "-interval", "50ms", "-timeout", "300ms")
	waitLong := tp.runLoad(long, 5*time.Second, "-reuse", "-interval", "100ms", "-timeout", "5s")
	time.Sleep(1500 * time.Millisecond) // load through A
	kill := time.Now()
	p.a.proc.Signal(syscall.SIGKILL)
	p.b.waitState("master", 5*time.Second)
	took := p.b.becameMaster()
	window := took.Sub(kill)
	bound := skewed(100, vrrpInterval)
	if window > bound+100*time.Millisecond {
		t.Errorf("SIGKILL: B became master %v after the kill; want within 3 x interval + skew = %v (+100ms scheduling)", window, bound)
	}
	sinceLast := checkTakeover(t, "SIGKILL", lastAdvert(advUp.Stop(), advLan.Stop()), took, bound)
	short, longRes := waitShort(), waitLong()
	failed, first, last := checkLoad(t, "SIGKILL", short, want, kill.Add(-300*time.Millisecond), took.Add(300*time.Millisecond))
	if n, _, _ := checkLoad(t, "SIGKILL, long-lived connections", longRes, want, time.Time{}, time.Time{}); n != 0 {
		t.Errorf("SIGKILL: %d requests on long-lived connections failed (a connection broke)", n)
	}
	if failed == 0 {
		t.Errorf("SIGKILL: no request failed: the kill did not cut anything, the test proves nothing")
	}
	p.b.checkReporting(2)
	fmt.Printf("FAILOVER (SIGKILL): backup master %v after the kill, %v after A's last advertisement (3 x %v + skew = %v); %d of %d requests failed, sent from %+v to %+v after the kill (each request times out after 300ms); %d requests on %d long-lived connections, none failed\n",
		window.Round(time.Millisecond), sinceLast.Round(time.Millisecond), vrrpInterval, bound, failed, len(short), first.Sub(kill).Round(time.Millisecond),
		last.Sub(kill).Round(time.Millisecond), len(longRes), nLong)

	// A comes back and preempts (its priority is higher) once it can
	// dispatch.
	p.a.start()
	p.a.waitState("master", 10*time.Second)
	p.b.waitState("backup", 5*time.Second)
	tp.askAll(all, want)

	// SIGTERM: priority 0, and A keeps forwarding until B is heard.
	waitShort = tp.runLoad(clients, 4*time.Second, "-interval", "50ms", "-timeout", "300ms")
	waitLong = tp.runLoad(long, 4*time.Second, "-reuse", "-interval", "100ms", "-timeout", "5s")
	time.Sleep(1500 * time.Millisecond)
	term := time.Now()
	p.a.proc.Signal(syscall.SIGTERM)
	p.b.waitState("master", 5*time.Second)
	took = p.b.becameMaster()
	short, longRes = waitShort(), waitLong()
	failed, _, _ = checkLoad(t, "SIGTERM", short, want, time.Time{}, time.Time{})
	n, _, _ := checkLoad(t, "SIGTERM, long-lived connections", longRes, want, time.Time{}, time.Time{})
	failed += n
	if failed != 0 {
		t.Errorf("SIGTERM: %d requests failed; a graceful handover loses none", failed)
	}
	if err := p.a.proc.Wait(10 * time.Second); err != nil {
		t.Errorf("A after SIGTERM: %v\n%s", err, p.a.proc.Log())
	}
	fmt.Printf("FAILOVER (SIGTERM): backup master %v after the signal; %d requests + %d on long-lived connections, %d failed\n",
		took.Sub(term).Round(time.Millisecond), len(short), len(longRes), failed)
}

// TestVRRPSplitBrain: VRRP between the two appliances is cut (an nftables
// bridge filter drops IP protocol 112 to and from B's ports): both become
// master and both forward, with the same table. When the cut heals, exactly
// one master remains, the higher priority, and the clients' neighbor entry
// for the virtual address is the virtual MAC.
func TestVRRPSplitBrain(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "nft")
	p := newPair(t, 2, 8, "routing", fastHealth)
	tp := p.tp
	tp.startServers()
	p.a.start()
	p.a.waitState("master", 10*time.Second)
	p.b.start()
	p.b.waitState("backup", 10*time.Second)
	tp.setupNodes()
	clients := tp.clientSources(8)
	want := tp.lookup(clients)
	tp.askAll(clients, want)

	rules := `table bridge vrrpcut {
  chain cut {
    type filter hook forward priority 0; policy accept;
    iifname { "b-up", "b-lan" } ip protocol 112 drop
    oifname { "b-up", "b-lan" } ip protocol 112 drop
  }
}
`
	rf := writeFile(t, tp.h.ArtifactDir(), "vrrpcut.nft", rules)
	tp.rtr.MustRun("nft", "-f", rf)
	cut := time.Now()
	p.b.waitState("master", 5*time.Second)
	if vs := p.a.vrrp(); len(vs) == 0 || vs[0].State != "master" {
		t.Fatalf("A during the split: %+v", vs)
	}
	split := time.Since(cut)
	// Both masters forward the same table: clients keep their servers.
	tp.askAll(clients, want)

	tp.rtr.MustRun("nft", "delete", "table", "bridge", "vrrpcut")
	heal := time.Now()
	p.b.waitState("backup", 5*time.Second)
	healed := time.Since(heal)
	// Exactly one master, and it stays so.
	for i := 0; i < 10; i++ {
		a, b := p.a.vrrp(), p.b.vrrp()
		for j := range a {
			if a[j].State != "master" || b[j].State != "backup" || b[j].Master != a[j].Master {
				t.Fatalf("after healing: A %s %s, B %s (master %s)", a[j].Name, a[j].State, b[j].State, b[j].Master)
			}
		}
		time.Sleep(2 * vrrpInterval)
	}
	tp.askAll(clients, want)
	vmac := "00:00:5e:00:01:33"
	if out := tp.cli.MustRun("ip", "neigh", "show", upAddr, "dev", "c0"); !strings.Contains(out, vmac) {
		t.Errorf("after healing, the clients' neighbor entry for %s is %q, want the virtual MAC %s", upAddr, out, vmac)
	}
	// Resolved afresh, it is the virtual MAC again (answered by A).
	tp.cli.MustRun("ip", "neigh", "flush", "dev", "c0")
	tp.askAll(clients, want)
	if out := tp.cli.MustRun("ip", "neigh", "show", upAddr, "dev", "c0"); !strings.Contains(out, vmac) {
		t.Errorf("re-resolved, the clients' neighbor entry for %s is %q, want %s", upAddr, out, vmac)
	}
	fmt.Printf("SPLIT BRAIN: both master %v after the cut; one master (A, priority 150) %v after healing; clients resolve %s to %s\n",
		split.Round(time.Millisecond), healed.Round(time.Millisecond), upAddr, vmac)
}

// counter reads one of the appliance's router counters from status --json.
func (a *appliance) counter(name string) uint64 {
	a.t.Helper()
	out := a.ns.MustRun(a.bin, "status", "--socket", a.sock, "--json")
	var st struct {
		Counters map[string]uint64 `json:"counters"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		a.t.Fatal(err)
	}
	return st.Counters[name]
}

// TestVRRPFailoverBroadcast: the pair in broadcast mode with `ghostnode run`
// on the servers. Only the master announces; the backup listens to it. B
// starts first (it begins afresh: nobody to hear), A preempts. SIGKILL of A:
// B takes over within 3 x interval + skew, requests fail only inside that
// window, and B continues A's announcements under its own epoch: the
// servers keep their filters (every table of B's gives each server the
// buckets it had), no connection is answered by two servers, clients keep
// their servers, and afterwards the servers follow B's announcements (a
// server failure detected by B reaches their filters). A returns and
// preempts; a graceful SIGTERM of A hands back to B under load with no
// failed request, each connection answered by exactly one server.
func TestVRRPFailoverBroadcast(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "nft", "curl")
	const nClients = 16
	p, clients, want := startBroadcastPair(t, nClients)
	tp := p.tp
	// A joined the election only once it had heard B's announcements long
	// enough to continue them, and did.
	if tk := p.a.takeover(); tk.Continued != 1 || tk.Fresh != 0 {
		t.Errorf("A preempting B: %d takeovers continued B's announcements, %d afresh (%s); want 1, 0", tk.Continued, tk.Fresh, tk.LastFreshReason)
	}

	// The backup announces nothing.
	sentB, suppB := p.b.counter("announcements_sent"), p.b.counter("announcements_suppressed_backup")
	time.Sleep(time.Second) // three announce intervals
	if s := p.b.counter("announcements_sent"); s != sentB {
		t.Errorf("backup B sent %d announcements while backup", s-sentB)
	}
	if s := p.b.counter("announcements_suppressed_backup"); s <= suppB {
		t.Errorf("backup B suppressed no announcement (%d, %d): is it asked to announce at all?", suppB, s)
	}

	capCli := tp.cli.Capture("c0", "tcp")
	advUp, advLan := tp.rtr.Capture("a-up", "ip proto 112"), tp.rtr.Capture("a-lan", "ip proto 112")
	wait := tp.runLoad(clients, 5*time.Second, "-interval", "50ms", "-timeout", "300ms")
	time.Sleep(1500 * time.Millisecond)
	nodeLog := func(s *server) []byte {
		b, _ := os.ReadFile(filepath.Join(tp.h.ArtifactDir(), "ghostnode-"+s.name+".log"))
		return b
	}
	logAt := map[string]int{}
	for _, s := range tp.servers {
		logAt[s.name] = len(nodeLog(s))
	}
	tk0 := p.b.takeover() // B began once already, afresh: it started first, with nobody to hear
	kill := time.Now()
	p.a.proc.Signal(syscall.SIGKILL)
	p.b.waitState("master", 5*time.Second)
	took := p.b.becameMaster()
	sinceLast := checkTakeover(t, "broadcast SIGKILL", lastAdvert(advUp.Stop(), advLan.Stop()), took, skewed(100, vrrpInterval))
	results := wait()
	failed, first, last := checkLoad(t, "broadcast SIGKILL", results, want, kill.Add(-300*time.Millisecond), took.Add(300*time.Millisecond))
	pkts := capCli.Stop()
	isns := map[string]map[uint32]bool{}
	for _, pk := range pkts {
		if c, ok := synackOf(pk); ok {
			if isns[c] == nil {
				isns[c] = map[uint32]bool{}
			}
			isns[c][pk.TCPSeq] = true
		}
	}
	for c, seqs := range isns {
		if len(seqs) != 1 {
			t.Errorf("connection %s was answered by %d servers", c, len(seqs))
		}
	}
	if len(isns) == 0 {
		t.Fatalf("no SYN-ACK captured")
	}

	// B announced at once under a new epoch, continuing A's announcements
	// (it heard them while backup): every server applied B's table, and
	// every table of B's gives each server exactly the buckets it had under
	// A; none grants nothing (the gap of a takeover that starts afresh).
	applied := regexp.MustCompile(`applied: owns (\d+) buckets \(was (\d+)\)" from=10\.0\.0\.3:`)
	checkFollowed := func(what string) {
		t.Helper()
		for _, s := range tp.servers {
			harness.WaitFor(t, 3*time.Second, s.name+" applying B's table after the "+what, func() bool {
				ms := applied.FindAllSubmatch(nodeLog(s)[logAt[s.name]:], -1)
				if len(ms) == 0 {
					return false
				}
				before := string(ms[0][2])
				for _, m := range ms {
					if string(m[1]) != before {
						t.Errorf("%s: %s: B's tables moved buckets: %s (had %s under A)", what, s.name, m[0], before)
					}
				}
				return string(ms[len(ms)-1][1]) == before
			})
		}
	}
	checkFollowed("kill")
	tkB := p.b.takeover()
	if tkB.Continued != tk0.Continued+1 || tkB.Fresh != tk0.Fresh {
		t.Errorf("SIGKILL: B's takeovers: %d continued A's announcements, %d afresh (%s); before the kill %d, %d: want one more continued",
			tkB.Continued, tkB.Fresh, tkB.LastFreshReason, tk0.Continued, tk0.Fresh)
	}
	// The servers follow B now: a failure B detects reaches their filters.
	tp.sock = p.b.sock
	tp.waitInStep(3, "right after the takeover")
	vs := tp.servers[1]
	vs.peer.Signal(syscall.SIGKILL)
	vs.peer.Wait(5 * time.Second)
	tp.waitServerState(1, false, 5*time.Second)
	tp.waitInStep(3, "after a failure B detected")
	if n := tp.ownedCount(1); n != 0 {
		t.Errorf("the failed server still owns %d buckets in its filter", n)
	}
	fmt.Printf("BROADCAST FAILOVER (SIGKILL): B master %v after the kill, %v after A's last advertisement; %d of %d requests failed, sent %+v..%+v after the kill; %d connections, each answered by one server; the servers then followed B's table change\n",
		took.Sub(kill).Round(time.Millisecond), sinceLast.Round(time.Millisecond), failed, len(results), first.Sub(kill).Round(time.Millisecond), last.Sub(kill).Round(time.Millisecond), len(isns))

	// A returns: it joins once its own health checks have taken s1 down,
	// preempts, and announces the same table; then a graceful SIGTERM
	// hands back to B under load. A stops announcing and repeats its table
	// once more before it sends priority 0; B, which heard A's
	// announcements, continues them under its own epoch: its first table
	// grants every server what it holds, so no request fails, and every
	// connection is answered by exactly one server.
	for _, s := range tp.servers {
		logAt[s.name] = len(nodeLog(s))
	}
	p.a.start()
	p.a.waitState("master", 10*time.Second)
	p.b.waitState("backup", 5*time.Second)
	tp.sock = p.a.sock
	tp.waitInStep(3, "with A master again")
	// A heard B before it joined, and continued B's announcements: no table
	// of A's left a server without its buckets.
	if tk := p.a.takeover(); tk.Continued != 1 || tk.Fresh != 0 {
		t.Errorf("A preempting B again: %d takeovers continued B's announcements, %d afresh (%s); want 1, 0", tk.Continued, tk.Fresh, tk.LastFreshReason)
	}
	fromA := regexp.MustCompile(`applied: owns (\d+) buckets \(was (\d+)\)" from=10\.0\.0\.2:`)
	for _, s := range tp.servers {
		for _, m := range fromA.FindAllSubmatch(nodeLog(s)[logAt[s.name]:], -1) {
			if string(m[1]) != string(m[2]) {
				t.Errorf("A's preemption changed %s's buckets: %s", s.name, m[0])
			}
		}
	}
	if n := tp.ownedCount(1); n != 0 {
		t.Errorf("A announced a table giving the dead s1 %d buckets", n)
	}
	wantNow := tp.lookupDown(clients, "1")
	for _, s := range tp.servers {
		logAt[s.name] = len(nodeLog(s))
	}
	capCli = tp.cli.Capture("c0", "tcp")
	wait = tp.runLoad(clients, 4*time.Second, "-interval", "50ms", "-timeout", "300ms")
	time.Sleep(1500 * time.Millisecond)
	term := time.Now()
	p.a.proc.Signal(syscall.SIGTERM)
	p.b.waitState("master", 5*time.Second)
	tookT := p.b.becameMaster()
	tp.sock = p.b.sock
	tp.waitInStep(3, "with B master after the graceful handover")
	stepped := time.Now()
	results = wait()
	failed, _, _ = checkLoad(t, "broadcast SIGTERM", results, wantNow, time.Time{}, time.Time{})
	if failed != 0 {
		t.Errorf("broadcast SIGTERM: %d of %d requests failed; a graceful handover loses none", failed, len(results))
	}
	inWindow := 0
	for _, r := range results {
		if !r.at.Before(term.Add(-300*time.Millisecond)) && !r.at.After(stepped) {
			inWindow++
		}
	}
	if inWindow == 0 {
		t.Errorf("broadcast SIGTERM: no request was sent between the SIGTERM and the servers being in step with B: the test proves nothing")
	}
	isns = map[string]map[uint32]bool{}
	for _, pk := range capCli.Stop() {
		if c, ok := synackOf(pk); ok {
			if isns[c] == nil {
				isns[c] = map[uint32]bool{}
			}
			isns[c][pk.TCPSeq] = true
		}
	}
	twice := 0
	for c, seqs := range isns {
		if len(seqs) != 1 {
			twice++
			t.Errorf("SIGTERM: connection %s was answered by %d servers", c, len(seqs))
		}
	}
	if len(isns) < len(results)/2 {
		t.Errorf("SIGTERM: %d connections captured for %d requests", len(isns), len(results))
	}
	checkFollowed("SIGTERM")
	tkB2 := p.b.takeover()
	if tkB2.Continued != tkB.Continued+1 || tkB2.Fresh != tkB.Fresh {
		t.Errorf("SIGTERM: B's takeovers: %d continued, %d afresh (%s); want one more continued", tkB2.Continued, tkB2.Fresh, tkB2.LastFreshReason)
	}
	if err := p.a.proc.Wait(10 * time.Second); err != nil {
		t.Errorf("A after SIGTERM: %v\n%s", err, p.a.proc.Log())
	}
	// The text status and the metrics say how B's takeovers began.
	text := p.b.ns.MustRun(p.b.bin, "status", "--socket", p.b.sock)
	if want := fmt.Sprintf("announcement takeovers: %d continued the previous master's, %d afresh", tkB2.Continued, tkB2.Fresh); !strings.Contains(text, want) {
		t.Errorf("B's status lacks %q:\n%s", want, text)
	}
	metrics := p.b.ns.MustRun("curl", "-s", "http://127.0.0.1:9469/metrics")
	for _, want := range []string{fmt.Sprintf("ghostrouter_announce_takeovers_continued_total %d", tkB2.Continued),
		fmt.Sprintf("ghostrouter_announce_takeovers_fresh_total %d", tkB2.Fresh)} {
		if !strings.Contains(metrics, want) {
			t.Errorf("B's metrics lack %q", want)
		}
	}
	tp.waitInStep(3, "after the graceful handover")
	fmt.Printf("BROADCAST FAILOVER (SIGTERM): B master %v after the signal, servers in step with B %v after it (window); %d requests, %d sent in that window, %d failed; %d connections, %d answered by more than one server; B continued A's announcements (takeovers: %d continued, %d afresh)\n",
		tookT.Sub(term).Round(time.Millisecond), stepped.Sub(term).Round(time.Millisecond), len(results), inWindow, failed, len(isns), twice, tkB2.Continued, tkB2.Fresh)
}

// TestVRRPBroadcastHealthDisagreement: the two appliances disagree about a
// server's health at the moment of a graceful takeover. B's health checks of
// s2 are cut (an nftables bridge filter drops B's SYNs to s2:80), so B holds
// s2 down while A, the master, holds it up. A hands over (SIGTERM): B
// continues A's table, then moves s2's buckets break-before-make as on any
// health change (released at once, acquired once s2 acknowledged). The
// cost is bounded: only s2's clients may fail, only between B's takeover
// and the servers being in step with B (at most the acknowledgement bound),
// every other client keeps its server with no failure, and no connection
// is answered by two servers.
func TestVRRPBroadcastHealthDisagreement(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "nft")
	const nClients = 16
	p, clients, want := startBroadcastPair(t, nClients)
	tp := p.tp
	wantDown := tp.lookupDown(clients, "2")
	moved := 0
	for _, c := range clients {
		if want[c] == 2 {
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("no client is s2's: the test proves nothing")
	}

	s2 := tp.servers[2].addr.String()
	rules := fmt.Sprintf(`table bridge hccut {
  chain cut {
    type filter hook forward priority 0; policy accept;
    iifname "b-lan" ip saddr 10.0.0.3 ip daddr %s tcp dport 80 drop
  }
}
`, s2)
	tp.rtr.MustRun("nft", "-f", writeFile(t, tp.h.ArtifactDir(), "hccut.nft", rules))
	tp.sock = p.b.sock
	tp.waitServerState(2, false, 5*time.Second)
	tp.sock = p.a.sock
	tp.waitServerState(2, true, time.Second) // A still holds it up: they disagree

	capCli := tp.cli.Capture("c0", "tcp")
	wait := tp.runLoad(clients, 4*time.Second, "-interval", "50ms", "-timeout", "300ms")
	time.Sleep(1500 * time.Millisecond)
	tk0 := p.b.takeover()
	term := time.Now()
	p.a.proc.Signal(syscall.SIGTERM)
	p.b.waitState("master", 5*time.Second)
	took := p.b.becameMaster()
	tp.sock = p.b.sock
	tp.waitInStep(3, "with B master, s2 down in its view")
	stepped := time.Now()
	results := wait()
	if n := tp.ownedCount(2); n != 0 {
		t.Errorf("s2 still owns %d buckets after B's table", n)
	}
	failed, failedOthers := 0, 0
	var first, last time.Time
	for _, r := range results {
		if !r.ok {
			failed++
			if want[r.src] != 2 {
				failedOthers++
				t.Errorf("%s (server %d, not s2's) failed at %s: %s", r.src, want[r.src], r.at.Format("15:04:05.000"), r.text)
				continue
			}
			if first.IsZero() || r.at.Before(first) {
				first = r.at
			}
			last = r.at
			if r.at.Before(took.Add(-300*time.Millisecond)) || r.at.After(stepped) {
				t.Errorf("%s failed at %s, outside B's takeover %s .. servers in step %s", r.src, r.at.Format("15:04:05.000"),
					took.Format("15:04:05.000"), stepped.Format("15:04:05.000"))
			}
			continue
		}
		switch {
		case r.server == want[r.src]:
			if want[r.src] == 2 && r.at.After(stepped) {
				t.Errorf("%s answered by s2 after B's table took it out", r.src)
			}
		case r.server == wantDown[r.src] && want[r.src] == 2:
			if r.at.Before(term) {
				t.Errorf("%s moved off s2 before the takeover", r.src)
			}
		default:
			t.Errorf("%s answered by server %d; want %d (or %d once s2 is out)", r.src, r.server, want[r.src], wantDown[r.src])
		}
	}
	isns := map[string]map[uint32]bool{}
	for _, pk := range capCli.Stop() {
		if c, ok := synackOf(pk); ok {
			if isns[c] == nil {
				isns[c] = map[uint32]bool{}
			}
			isns[c][pk.TCPSeq] = true
		}
	}
	twice := 0
	for c, seqs := range isns {
		if len(seqs) != 1 {
			twice++
			t.Errorf("connection %s was answered by %d servers", c, len(seqs))
		}
	}
	gap := stepped.Sub(took)
	if bound := 1 * time.Second; gap > bound+time.Second {
		t.Errorf("the servers were in step with B %v after its takeover; want within the acknowledgement bound %v (+1s under load)", gap, bound)
	}
	if tk := p.b.takeover(); tk.Continued != tk0.Continued+1 {
		t.Errorf("B did not continue A's announcements: %+v (before %+v)", tk, tk0)
	}
	fmt.Printf("HEALTH DISAGREEMENT AT TAKEOVER: B holds s2 down, A up; SIGTERM: B master %v after it, servers in step with B's table %v after B's takeover; %d requests, %d failed from s2's %d clients, %d from the others, sent %v..%v after B's takeover; %d connections, %d answered by more than one server\n",
		took.Sub(term).Round(time.Millisecond), gap.Round(time.Millisecond), len(results), failed, moved, failedOthers,
		first.Sub(took).Round(time.Millisecond), last.Sub(took).Round(time.Millisecond), len(isns), twice)
}

// TestVRRPBroadcastSplitBrain: in broadcast mode, VRRP between the two
// appliances is cut while clients make requests: both become master and
// both announce, each under its own epoch, so every server applies each
// appliance's datagrams in turn. B continued A's announcements and both
// compute the same table, so no request fails, no connection is answered by
// two servers and the filters keep their buckets throughout. When the cut
// heals, B falls silent and the servers follow A alone again.
func TestVRRPBroadcastSplitBrain(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "nft")
	const nClients = 16
	p, clients, want := startBroadcastPair(t, nClients)
	tp := p.tp
	nodeLog := func(s *server) []byte {
		b, _ := os.ReadFile(filepath.Join(tp.h.ArtifactDir(), "ghostnode-"+s.name+".log"))
		return b
	}
	logAt := map[string]int{}
	owned := map[int]int{}
	for i, s := range tp.servers {
		logAt[s.name] = len(nodeLog(s))
		owned[i] = tp.ownedCount(i)
	}

	capCli := tp.cli.Capture("c0", "tcp")
	wait := tp.runLoad(clients, 6*time.Second, "-interval", "50ms", "-timeout", "300ms")
	time.Sleep(time.Second)
	rules := `table bridge vrrpcut {
  chain cut {
    type filter hook forward priority 0; policy accept;
    iifname { "b-up", "b-lan" } ip protocol 112 drop
    oifname { "b-up", "b-lan" } ip protocol 112 drop
  }
}
`
	tp.rtr.MustRun("nft", "-f", writeFile(t, tp.h.ArtifactDir(), "vrrpcut.nft", rules))
	cut := time.Now()
	p.b.waitState("master", 5*time.Second)
	split := time.Now()
	// Both announce: every server applies B's epoch and A's in turn.
	fromB := regexp.MustCompile(`applied: owns (\d+) buckets \(was (\d+)\)" from=10\.0\.0\.3:`)
	fromA := regexp.MustCompile(`applied: owns (\d+) buckets \(was (\d+)\)" from=10\.0\.0\.2:`)
	flips := 0
	for _, s := range tp.servers {
		harness.WaitFor(t, 3*time.Second, s.name+" applying both appliances' tables", func() bool {
			l := nodeLog(s)[logAt[s.name]:]
			return len(fromB.FindAll(l, -1)) > 0 && len(fromA.FindAll(l, -1)) > 0
		})
	}
	time.Sleep(time.Second) // both announcing, under load
	tp.rtr.MustRun("nft", "delete", "table", "bridge", "vrrpcut")
	heal := time.Now()
	p.b.waitState("backup", 5*time.Second)
	results := wait()
	failed, _, _ := checkLoad(t, "broadcast split brain", results, want, time.Time{}, time.Time{})
	if failed != 0 {
		t.Errorf("broadcast split brain: %d of %d requests failed", failed, len(results))
	}
	for i, s := range tp.servers {
		l := nodeLog(s)[logAt[s.name]:]
		for _, re := range []*regexp.Regexp{fromA, fromB} {
			for _, m := range re.FindAllSubmatch(l, -1) {
				flips++
				if string(m[1]) != strconv.Itoa(owned[i]) {
					t.Errorf("%s applied %s (owned %d before the split)", s.name, m[0], owned[i])
				}
			}
		}
	}
	isns := map[string]map[uint32]bool{}
	for _, pk := range capCli.Stop() {
		if c, ok := synackOf(pk); ok {
			if isns[c] == nil {
				isns[c] = map[uint32]bool{}
			}
			isns[c][pk.TCPSeq] = true
		}
	}
	twice := 0
	for c, seqs := range isns {
		if len(seqs) != 1 {
			twice++
			t.Errorf("split brain: connection %s was answered by %d servers", c, len(seqs))
		}
	}
	// After healing the servers follow A alone: a change A makes reaches
	// their filters.
	tp.sock = p.a.sock
	tp.waitInStep(3, "after healing")
	if tk := p.b.takeover(); tk.Continued < 1 {
		t.Errorf("B did not continue A's announcements when the cut made it master: %+v", tk)
	}
	fmt.Printf("BROADCAST SPLIT BRAIN: both master %v after the cut, for %v; %d tables applied by the servers meanwhile, each with the buckets they had; %d requests, %d failed; %d connections, %d answered by more than one server; B backup again after healing\n",
		split.Sub(cut).Round(time.Millisecond), heal.Sub(split).Round(time.Millisecond), flips, len(results), failed, len(isns), twice)
}

// takeover reads the appliance's announcement takeovers from status --json.
func (a *appliance) takeover() (tk struct {
	Continued       uint64 `json:"continued"`
	Fresh           uint64 `json:"fresh"`
	LastFreshReason string `json:"last_fresh_reason"`
}) {
	a.t.Helper()
	out := a.ns.MustRun(a.bin, "status", "--socket", a.sock, "--json")
	var st struct {
		Takeover *struct {
			Continued       uint64 `json:"continued"`
			Fresh           uint64 `json:"fresh"`
			LastFreshReason string `json:"last_fresh_reason"`
		} `json:"takeover"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		a.t.Fatal(err)
	}
	if st.Takeover == nil {
		a.t.Fatalf("%s status --json has no takeover section", a.name)
	}
	tk.Continued, tk.Fresh, tk.LastFreshReason = st.Takeover.Continued, st.Takeover.Fresh, st.Takeover.LastFreshReason
	return tk
}

// TestVRRPKeepalivedInteropIPv6: the same with an IPv6 virtual router
// (advertisements from link-local addresses to ff02::12): the higher
// priority wins either way round, a LAN host resolves the virtual address
// to 00:00:5e:00:02:VRID by NDP while ghostrouter is master, and tcpdump
// decodes both routers' advertisements as VRRPv3.
func TestVRRPKeepalivedInteropIPv6(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "keepalived")
	h := harness.New(t)
	bin := h.Build("cmd/ghostrouter")
	sw, ka, obs := h.NS("sw"), h.NS("ka"), h.NS("obs")
	h.Veth(ka, "e0", sw, "p-ka")
	h.Veth(obs, "e0", sw, "p-obs")
	sw.Bridge("br0", "p-ka", "p-obs")
	for _, ns := range []*harness.NS{ka, obs} {
		ns.Sysctl("net.ipv6.conf.e0.accept_dad", "0")
	}
	ka.AddrAdd("e0", "2001:db8::3/64")
	obs.AddrAdd("e0", "2001:db8::9/64")
	// keepalived sends from the link-local address: wait until duplicate
	// address detection is over (the kernel refuses a tentative source).
	for _, ns := range []*harness.NS{ka, obs} {
		harness.WaitFor(t, 10*time.Second, ns.Name+" link-local address usable", func() bool {
			out, err := ns.Run("ip", "-6", "-o", "addr", "show", "dev", "e0", "scope", "link")
			return err == nil && strings.Contains(out, "fe80::") && !strings.Contains(out, "tentative")
		})
	}
	const vip = "2001:db8::1"
	dir := h.ArtifactDir()
	gr := &appliance{name: "gr", ns: sw, bin: bin, t: t, sock: filepath.Join(dir, "gr.sock")}
	gr.cfg = writeFile(t, dir, "gr.toml", fmt.Sprintf(`[router]
control_socket = %q
metrics_address = ""

[[interface]]
name = "up0"
addresses = ["2001:db8::2/64", "fe80::2/64"]
bridge = "br0"

[[vrrp]]
interface = "up0"
vrid = 61
priority = 150
interval = "100ms"
addresses = [%q]
`, gr.sock, vip))
	kaConf := func(tag string, prio int) *harness.Proc {
		conf := writeFile(t, dir, "keepalived6-"+tag+".conf", fmt.Sprintf(`global_defs {
    router_id ka6_%s
    vrrp_version 3
}
vrrp_instance VI_61 {
    state BACKUP
    interface e0
    virtual_router_id 61
    priority %d
    advert_int 0.1
    virtual_ipaddress {
        %s/64 dev e0
    }
}
`, tag, prio, vip))
		return ka.Start("keepalived6-"+tag, "keepalived", "-n", "-l", "-D", "-P", "-f", conf,
			"-p", filepath.Join(dir, "ka6-"+tag+".pid"), "-r", filepath.Join(dir, "ka6-"+tag+"-vrrp.pid"),
			"-c", filepath.Join(dir, "ka6-"+tag+"-checkers.pid"))
	}
	has6 := func() bool {
		out, err := ka.Run("ip", "-6", "-o", "addr", "show", "dev", "e0")
		return err == nil && strings.Contains(out, " "+vip+"/")
	}
	capture := sw.Capture("br0", "ip6 proto 112")
	kaProc := kaConf("100", 100)
	harness.WaitFor(t, 10*time.Second, "keepalived master (IPv6)", has6)
	gr.start()
	gr.waitState("master", 5*time.Second)
	harness.WaitFor(t, 5*time.Second, "keepalived backup (IPv6)", func() bool { return !has6() })
	if v := gr.vrrp()[0]; v.Master != "fe80::2" || v.Counters["adverts_in"] == 0 {
		t.Errorf("ghostrouter: master %s, counters %v\n%s", v.Master, v.Counters, sw.MustRun(bin, "status", "--socket", gr.sock))
	}
	obs.Run("ping", "-6", "-c", "1", "-W", "1", vip)
	if out := obs.MustRun("ip", "-6", "neigh", "show", vip, "dev", "e0"); !strings.Contains(out, "00:00:5e:00:02:3d") {
		t.Errorf("the LAN's neighbor entry for %s with ghostrouter master: %q, want 00:00:5e:00:02:3d", vip, out)
	}
	kaProc.Signal(os.Interrupt)
	kaProc.Wait(10 * time.Second)
	kaProc = kaConf("200", 200)
	harness.WaitFor(t, 10*time.Second, "keepalived (200) master (IPv6)", has6)
	gr.waitState("backup", 5*time.Second)
	if v := gr.vrrp()[0]; v.MasterPriority != 200 || !strings.HasPrefix(v.Master, "fe80::") {
		t.Errorf("ghostrouter backup: master %s priority %d", v.Master, v.MasterPriority)
	}
	capture.Stop()
	text := sw.MustRun("tcpdump", "-n", "-vv", "-r", capture.Path())
	from := map[string]int{}
	adv := regexp.MustCompile(`(?m)(fe80::\S+) > ff02::12: .*VRRPv3, Advertisement, vrid 61, prio (\d+)`)
	for _, m := range adv.FindAllStringSubmatch(text, -1) {
		from[m[1]]++
	}
	if strings.Contains(text, "bad vrrp cksum") || from["fe80::2"] < 5 || len(from) != 2 {
		t.Errorf("tcpdump decoded IPv6 VRRPv3 advertisements from %v:\n%s", from, head(text, 12))
	}
	fmt.Printf("INTEROP (IPv6): tcpdump decoded VRRPv3 advertisements %v\n", from)
}

// TestVRRPKeepalivedUnicast: unicast_peers against keepalived's
// unicast_peer (where multicast is not available): the advertisements go to
// the peer's address, the checksum's pseudo-header carries that address
// (keepalived since 1.3.8, and tcpdump, verify it), and the election works
// both ways.
func TestVRRPKeepalivedUnicast(t *testing.T) {
	harness.RequireRoot(t, "ip", "tcpdump", "keepalived")
	h := harness.New(t)
	bin := h.Build("cmd/ghostrouter")
	sw, ka := h.NS("sw"), h.NS("ka")
	h.Veth(ka, "e0", sw, "p-ka")
	sw.Bridge("br0", "p-ka")
	ka.AddrAdd("e0", "198.51.100.3/24")
	const vip, grAddr, kaAddr = "198.51.100.1", "198.51.100.2", "198.51.100.3"
	dir := h.ArtifactDir()
	gr := &appliance{name: "gr", ns: sw, bin: bin, t: t, sock: filepath.Join(dir, "gr.sock")}
	gr.cfg = writeFile(t, dir, "gr.toml", fmt.Sprintf(`[router]
control_socket = %q
metrics_address = ""

[[interface]]
name = "up0"
addresses = ["%s/24"]
bridge = "br0"

[[vrrp]]
interface = "up0"
vrid = 51
priority = 150
interval = "100ms"
addresses = [%q]
unicast_peers = [%q]
`, gr.sock, grAddr, vip, kaAddr))
	conf := writeFile(t, dir, "keepalived-unicast.conf", fmt.Sprintf(`global_defs {
    router_id ka_unicast
    vrrp_version 3
}
vrrp_instance VI_51 {
    state BACKUP
    interface e0
    virtual_router_id 51
    priority 100
    advert_int 0.1
    unicast_src_ip %s
    unicast_peer {
        %s
    }
    virtual_ipaddress {
        %s/24 dev e0
    }
}
`, kaAddr, grAddr, vip))
	capture := sw.Capture("br0", "ip proto 112")
	kaProc := ka.Start("keepalived-unicast", "keepalived", "-n", "-l", "-D", "-P", "-f", conf,
		"-p", filepath.Join(dir, "ka.pid"), "-r", filepath.Join(dir, "ka-vrrp.pid"), "-c", filepath.Join(dir, "ka-checkers.pid"))
	harness.WaitFor(t, 10*time.Second, "keepalived master", func() bool { return hasAddr(ka, "e0", vip) })
	gr.start()
	gr.waitState("master", 5*time.Second)
	harness.WaitFor(t, 5*time.Second, "keepalived backup", func() bool { return !hasAddr(ka, "e0", vip) })
	if v := gr.vrrp()[0]; v.Counters["adverts_in"] == 0 {
		t.Errorf("ghostrouter counted no unicast advertisement from keepalived: %v", v.Counters)
	}
	time.Sleep(time.Second) // ten advertisements: keepalived must stay backup
	if hasAddr(ka, "e0", vip) {
		t.Errorf("keepalived took the VIP back while ghostrouter (150) was master: it did not accept the unicast advertisements\n%s", kaProc.Log())
	}
	gr.proc.Signal(os.Interrupt)
	harness.WaitFor(t, 5*time.Second, "keepalived master after ghostrouter's priority 0", func() bool { return hasAddr(ka, "e0", vip) })
	if !strings.Contains(kaProc.Log(), "received priority 0 advertisement") {
		t.Errorf("keepalived did not see priority 0:\n%s", kaProc.Log())
	}
	gr.proc.Wait(10 * time.Second)
	capture.Stop()
	text := sw.MustRun("tcpdump", "-n", "-vv", "-r", capture.Path())
	adv := regexp.MustCompile(`(?m)^\s+(\S+) > (\S+): VRRPv3, Advertisement, vrid 51, prio (\d+)`)
	n := 0
	for _, m := range adv.FindAllStringSubmatch(text, -1) {
		if m[1] == grAddr {
			n++
			if m[2] != kaAddr {
				t.Errorf("ghostrouter advertised to %s, want the unicast peer %s", m[2], kaAddr)
			}
		}
	}
	if n < 5 || strings.Contains(text, "bad vrrp cksum") {
		t.Errorf("%d unicast advertisements from ghostrouter decoded; bad checksum: %v\n%s", n, strings.Contains(text, "bad vrrp cksum"), head(text, 10))
	}
	fmt.Printf("INTEROP (unicast): %d unicast advertisements from ghostrouter to %s, checksums good; keepalived stayed backup, then took over on priority 0\n", n, kaAddr)
}
