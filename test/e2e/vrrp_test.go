package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
	if out := obs.MustRun("ip", "neigh", "show", vip, "dev", "e0"); !strings.Contains(out, ka.MAC("e0").String()) && !strings.Contains(out, vmac) {
		t.Errorf("neighbor entry for %s with keepalived master: %q", vip, out)
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
	fmt.Printf("INTEROP: tcpdump decoded %d VRRPv3 advertisements from ghostrouter, %d from keepalived, no bad checksum; keepalived took over %v after ghostrouter's priority 0\n",
		from[grAddr], from[kaAddr], took.Round(time.Millisecond))
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
