package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NS is a network namespace created by H.NS. Name is the full name ("gr-<base>-<suffix>"),
// usable with `ip -n NAME` and `ip netns exec NAME`.
type NS struct {
	Name string
	h    *H
}

// Run runs args inside the namespace (ip netns exec NAME args...) and returns the combined
// output. The command is killed after RunTimeout. The error names the command.
func (n *NS) Run(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("harness: Run: no command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), RunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
	cmd.WaitDelay = time.Second // a child that keeps the output pipe open must not hang Run
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (killed after %v)", err, RunTimeout)
		}
		return string(out), fmt.Errorf("ns %s: %s: %w", n.Name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// MustRun is Run that fails the test, quoting the command and its output, on error.
func (n *NS) MustRun(args ...string) string {
	n.h.t.Helper()
	out, err := n.Run(args...)
	if err != nil {
		n.h.t.Fatalf("harness: %v\n%s", err, out)
	}
	return out
}

// Bridge creates a Linux bridge inside the namespace with STP off and forward delay 0 (so
// ports forward at once, no listening/learning wait), enslaves ports and sets everything
// up. When br_netfilter is loaded, a new namespace starts with bridge-nf-call-iptables=1,
// so bridged frames would also cross the namespace's ip/ip6/arp netfilter hooks (and
// conntrack); Bridge turns that off so the bridge stays a plain wire. It does so only on
// kernels 5.3 and later, where those sysctls are per namespace: on older ones writing
// them would change the root namespace.
func (n *NS) Bridge(name string, ports ...string) {
	n.h.t.Helper()
	n.MustRun("ip", "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
	for _, p := range ports {
		n.MustRun("ip", "link", "set", p, "master", name)
		n.MustRun("ip", "link", "set", p, "up")
	}
	n.MustRun("ip", "link", "set", name, "up")
	if !kernelAtLeast(5, 3) {
		return
	}
	for _, k := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		// Only present when br_netfilter is loaded; absent is fine.
		_ = n.Do(func() error { return writeSysctl("net/bridge/"+k, "0") })
	}
}

// kernelAtLeast reports whether the running kernel's release is major.minor or later.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// Sysctl sets a sysctl of this namespace, e.g. Sysctl("net.ipv4.ip_forward", "1"). Keys
// are dotted as for sysctl(8) or written as paths ("net/ipv4/conf/eth0.100/rp_filter").
func (n *NS) Sysctl(key, val string) {
	n.h.t.Helper()
	p := key
	if !strings.Contains(p, "/") {
		p = strings.ReplaceAll(p, ".", "/")
	}
	if err := n.Do(func() error { return writeSysctl(p, val) }); err != nil {
		n.h.t.Fatalf("harness: ns %s: sysctl %s=%s: %v", n.Name, key, val, err)
	}
}

// writeSysctl writes /proc/sys/PATH. /proc/sys/net resolves against the calling thread's
// network namespace, so under NS.Do it sets the namespace's value.
func writeSysctl(path, val string) error {
	return os.WriteFile(filepath.Join("/proc/sys", filepath.Clean("/"+path)), []byte(val+"\n"), 0)
}

// ReadSysctl reads a sysctl of this namespace (dotted key or path), trimmed.
func (n *NS) ReadSysctl(key string) (string, error) {
	p := key
	if !strings.Contains(p, "/") {
		p = strings.ReplaceAll(p, ".", "/")
	}
	var val string
	err := n.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", filepath.Clean("/"+p)))
		val = strings.TrimSpace(string(b))
		return err
	})
	return val, err
}

// Do runs fn on a goroutine locked to an OS thread that has entered the namespace, and
// returns fn's error. Sockets fn opens live in the namespace and stay there after Do
// returns; goroutines fn starts do not inherit the namespace (they may run on any thread).
// A panic in fn is re-raised on the caller's goroutine. If the thread cannot return to its
// original namespace it stays locked, so the Go runtime discards it with the goroutine.
func (n *NS) Do(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var res result
		func() {
			orig, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				res.err = fmt.Errorf("harness: ns %s: %w", n.Name, err)
				return
			}
			defer orig.Close()
			target, err := os.Open(filepath.Join(netnsDir, n.Name))
			if err != nil {
				runtime.UnlockOSThread()
				res.err = fmt.Errorf("harness: ns %s: %w", n.Name, err)
				return
			}
			defer target.Close()
			if err := setns(target); err != nil {
				runtime.UnlockOSThread()
				res.err = fmt.Errorf("harness: setns %s: %w", n.Name, err)
				return
			}
			defer func() {
				if err := setns(orig); err != nil {
					res.err = errors.Join(res.err, fmt.Errorf("harness: setns back from %s: %w", n.Name, err))
					return // leave the thread locked: it dies with this goroutine
				}
				runtime.UnlockOSThread()
			}()
			defer func() {
				if v := recover(); v != nil {
					res.panicked, res.value = true, v
				}
			}()
			res.err = fn()
		}()
		ch <- res
	}()
	res := <-ch
	if res.panicked {
		panic(res.value)
	}
	return res.err
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// MAC returns the hardware address of interface ifname in the namespace. Read it after
// the interface's configuration is final: a bridge takes a port's address when ports join.
func (n *NS) MAC(ifname string) net.HardwareAddr {
	n.h.t.Helper()
	out := n.MustRun("ip", "-j", "link", "show", "dev", ifname)
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		n.h.t.Fatalf("harness: ns %s: ip -j link show dev %s: unexpected output (%v): %s", n.Name, ifname, err, out)
	}
	mac, err := net.ParseMAC(links[0].Address)
	if err != nil {
		n.h.t.Fatalf("harness: ns %s: %s: %v", n.Name, ifname, err)
	}
	return mac
}

// AddrAdd adds addresses (prefixes such as "198.51.100.10/24" or "2001:db8::1/64") to
// ifname. IPv6 addresses are added with nodad so they are usable at once.
func (n *NS) AddrAdd(ifname string, prefixes ...string) {
	n.h.t.Helper()
	for _, p := range prefixes {
		args := []string{"ip", "addr", "add", p, "dev", ifname}
		if strings.Contains(p, ":") {
			args = append(args, "nodad")
		}
		n.MustRun(args...)
	}
}

// Start runs args in the background inside the namespace; stdout and stderr go to
// ArtifactDir/<name>.log. The process gets its own process group and is stopped at cleanup
// (SIGTERM to the group, SIGKILL after StopGrace); it is also SIGKILLed if the thread that
// started it exits, which covers a test binary that dies without cleaning up.
func (n *NS) Start(name string, args ...string) *Proc {
	n.h.t.Helper()
	p, err := n.start(name, args...)
	if err != nil {
		n.h.t.Fatalf("harness: %v", err)
	}
	return p
}

func (n *NS) start(name string, args ...string) (*Proc, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("ns %s: start %s: no command", n.Name, name)
	}
	h := n.h
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("ns %s: start %s after cleanup", n.Name, name)
	}
	logPath := h.artifactPath(name, ".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ns %s: start %s: %w", n.Name, name, err)
	}
	// ip netns exec execs the command after setns, so the pid is the command's own.
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("ns %s: start %s (%s): %w", n.Name, name, strings.Join(args, " "), err)
	}
	p := &Proc{name: name, ns: n, args: args, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.err = err
		close(p.done)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, nil
}
