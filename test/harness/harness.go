// Package harness is the end-to-end test tier (the third of `make test`, after unit tests
// and real fds without root; README.md, "Tests"): it builds real topologies out of network
// namespaces, veth pairs and Linux bridges, runs ghostrouter, ghostnode and the test peer
// (test/cmd/peer) inside them, and captures what crosses the wire with tcpdump so tests can
// assert on parsed packets. What crosses the wire is the evidence: each ghost packet seen
// once on the LAN, with the ghost as destination IP and the chosen server's MAC (routing
// mode) or ff:ff:ff:ff:ff:ff (broadcast mode) as destination MAC; exactly one server
// answering each client; no ICMP redirect for cluster traffic.
//
// Network hygiene, enforced here rather than left to each test:
//
//   - every namespace is named "gr-<base>-<suffix>", with a suffix unique to the run and
//     reserved atomically under /run/ghostrouter-e2e, so parallel runs never collide;
//   - veth pairs are created straight into namespaces; nothing is configured in, bridged
//     to or sent from the root namespace;
//   - the cleanup is registered before anything is created and runs on success, failure
//     and panic: captures stop, processes get SIGTERM then SIGKILL, whatever else still
//     runs in a namespace is killed, namespaces are deleted and their absence checked;
//   - a run that never cleaned up (test binary killed, go test -timeout) is reaped by the
//     next New: its namespaces are deleted once its owning process is gone;
//   - readiness is polled (WaitFor, Proc.WaitForLog, Capture's "listening on"), never
//     slept; the one fixed wait is Capture.Stop's short grace, see there;
//   - commands run through NS.Run are bounded by RunTimeout.
//
// Artifacts (pcaps, process logs) go to ArtifactDir; they are deleted when the test passes
// and kept, with their path logged, when it fails (or always, with GHOSTROUTER_E2E_KEEP=1).
//
// Unless noted, methods that report failure through t.Fatalf must be called from the test's
// own goroutine, as with testing.T.
package harness

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Tunables of the harness. They are constants, not package variables, so that tests
// cannot change them for each other.
const (
	// RunTimeout bounds one NS.Run / NS.MustRun command.
	RunTimeout = 60 * time.Second
	// StopGrace is how long a background process gets between SIGTERM and SIGKILL.
	StopGrace = 2 * time.Second
	// ReadyTimeout bounds waiting for tcpdump to listen.
	ReadyTimeout = 10 * time.Second
	// KeepEnv, set to 1, keeps artifacts of passing tests too.
	KeepEnv = "GHOSTROUTER_E2E_KEEP"

	nsPrefix = "gr-"
	ownerDir = "/run/ghostrouter-e2e" // suffix reservations: one file per live run, holding its pid
	netnsDir = "/run/netns"           // where iproute2 keeps named namespaces
)

// tb is the part of testing.TB the harness uses; tests of the harness itself substitute a
// recorder for it to exercise the failure paths.
type tb interface {
	Helper()
	Name() string
	Cleanup(func())
	Failed() bool
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

var _ tb = (*testing.T)(nil)

// H is one test's harness: the namespaces, processes and captures it created, the
// binaries it built, and its artifact directory. Safe for concurrent use, but methods that
// t.Fatalf belong on the test goroutine.
type H struct {
	t         tb
	suffix    string
	artifacts string
	ownerFile string

	buildMu sync.Mutex        // serializes Build; guards builds and binDir
	builds  map[string]string // package → binary path
	binDir  string

	mu     sync.Mutex // guards the fields below
	nss    []*NS
	procs  []*Proc
	caps   []*Capture
	files  map[string]bool // artifact file names handed out
	closed bool
}

// New returns a harness for t. Its cleanup is registered before anything is created. It
// fails the test if the run suffix cannot be reserved or the artifact directory made; it
// does not check for root: call RequireRoot first.
func New(t *testing.T) *H {
	t.Helper()
	return newH(t)
}

func newH(t tb) *H {
	t.Helper()
	h := &H{t: t, builds: map[string]string{}, files: map[string]bool{}}
	t.Cleanup(h.cleanup)
	reapStale(t)
	if err := h.reserveSuffix(); err != nil {
		t.Fatalf("harness: %v", err)
	}
	h.artifacts = filepath.Join(os.TempDir(), "ghostrouter-e2e", sanitize(t.Name())+"-"+h.suffix)
	if err := os.MkdirAll(h.artifacts, 0o755); err != nil {
		t.Fatalf("harness: artifact dir: %v", err)
	}
	return h
}

// Suffix is this run's unique suffix (5 hex digits), part of every namespace name.
func (h *H) Suffix() string { return h.suffix }

// ArtifactDir is where pcaps and process logs go. It is deleted after a passing test and
// kept, with its path logged, after a failing one.
func (h *H) ArtifactDir() string { return h.artifacts }

// reserveSuffix picks a random suffix and reserves it by creating its owner file with
// O_EXCL, so two runs can never share one, and no namespace may already carry it.
func (h *H) reserveSuffix() error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return fmt.Errorf("owner dir: %w", err)
	}
	existing, _ := listNS()
	for range 32 {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		s := hex.EncodeToString(b[:])[:5]
		if len(nsWithSuffix(existing, s)) > 0 {
			continue
		}
		p := filepath.Join(ownerDir, s)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reserve suffix: %w", err)
		}
		_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		h.suffix, h.ownerFile = s, p
		return err
	}
	return errors.New("no free run suffix after 32 tries")
}

// reapStale deletes namespaces of runs whose owning process is gone (killed before its
// cleanup ran). A run whose owner file holds a live pid, or no pid yet, is left alone.
func reapStale(t tb) {
	ents, err := os.ReadDir(ownerDir)
	if err != nil {
		return
	}
	var names []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(ownerDir, e.Name()))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if names == nil {
			if names, err = listNS(); err != nil {
				return
			}
		}
		for _, ns := range nsWithSuffix(names, e.Name()) {
			killInNS(ns)
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Logf("harness: reaping stale namespace %s of dead pid %d: %v: %s", ns, pid, err, out)
				continue
			}
			t.Logf("harness: reaped stale namespace %s of dead pid %d", ns, pid)
		}
		os.Remove(filepath.Join(ownerDir, e.Name()))
	}
}

// listNS returns the names of all named network namespaces.
func listNS() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %v: %s", err, out)
	}
	var names []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// nsWithSuffix selects the harness namespaces ("gr-...-SUFFIX") of one run.
func nsWithSuffix(names []string, suffix string) []string {
	var r []string
	for _, n := range names {
		if strings.HasPrefix(n, nsPrefix) && strings.HasSuffix(n, "-"+suffix) {
			r = append(r, n)
		}
	}
	return r
}

// killInNS SIGKILLs every process in namespace ns (except this test process, whose
// thread may be inside it through NS.Do) and waits, bounded, until none is left.
func killInNS(ns string) []int {
	var killed []int
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			return killed
		}
		left := 0
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid == os.Getpid() {
				continue
			}
			left++
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
		if left == 0 || time.Now().After(deadline) {
			return killed
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanup undoes everything in reverse order of dependency: captures (so their files are
// complete), processes, namespaces; then checks no namespace of the run is left and keeps
// or deletes the artifacts.
func (h *H) cleanup() {
	h.mu.Lock()
	h.closed = true
	caps, procs, nss := h.caps, h.procs, h.nss
	h.mu.Unlock()

	var running []*Capture
	for _, c := range caps {
		if !c.proc.Exited() {
			running = append(running, c)
		}
	}
	if len(running) > 0 {
		time.Sleep(StopGraceCapture) // once for all: see StopGraceCapture
		for _, c := range running {
			c.halt(false)
		}
	}
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(StopGrace); err != nil {
			h.t.Errorf("harness: %v", err)
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if pids := killInNS(nss[i].Name); len(pids) > 0 {
			h.t.Logf("harness: killed leftover processes %v in %s", pids, nss[i].Name)
		}
		if out, err := exec.Command("ip", "netns", "del", nss[i].Name).CombinedOutput(); err != nil {
			h.t.Errorf("harness: ip netns del %s: %v: %s", nss[i].Name, err, out)
		}
	}
	if h.suffix != "" {
		if names, err := listNS(); err != nil {
			h.t.Errorf("harness: %v", err)
		} else if left := nsWithSuffix(names, h.suffix); len(left) > 0 {
			h.t.Errorf("harness: namespaces left after cleanup: %v", left)
		}
	}
	if h.ownerFile != "" {
		os.Remove(h.ownerFile)
	}
	if h.binDir != "" {
		os.RemoveAll(h.binDir)
	}
	if h.artifacts == "" {
		return
	}
	if h.t.Failed() || os.Getenv(KeepEnv) == "1" {
		var names []string
		if ents, err := os.ReadDir(h.artifacts); err == nil {
			for _, e := range ents {
				names = append(names, e.Name())
			}
		}
		h.t.Logf("harness: artifacts kept in %s: %s", h.artifacts, strings.Join(names, " "))
		return
	}
	os.RemoveAll(h.artifacts)
}

// artifactPath returns a fresh file path in ArtifactDir for base+ext, adding "-2", "-3"…
// when the name was already handed out.
func (h *H) artifactPath(base, ext string) string {
	base = sanitize(base)
	h.mu.Lock()
	defer h.mu.Unlock()
	name := base + ext
	for i := 2; h.files[name]; i++ {
		name = fmt.Sprintf("%s-%d%s", base, i, ext)
	}
	h.files[name] = true
	return filepath.Join(h.artifacts, name)
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`) // read-only after init

func sanitize(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

var nsBase = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`) // read-only after init

// NS creates the namespace "gr-<base>-<suffix>" with lo up. base is lower-case letters,
// digits and dashes. The namespace is deleted at cleanup, after every process in it is
// killed.
func (h *H) NS(base string) *NS {
	h.t.Helper()
	if !nsBase.MatchString(base) {
		h.t.Fatalf("harness: namespace base %q: want [a-z0-9-], at most 32", base)
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		h.t.Fatalf("harness: NS(%q) after cleanup", base)
	}
	n := &NS{Name: nsPrefix + base + "-" + h.suffix, h: h}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		h.t.Fatalf("harness: ip netns add %s: %v: %s", n.Name, err, out)
	}
	h.mu.Lock()
	h.nss = append(h.nss, n)
	h.mu.Unlock()
	n.MustRun("ip", "link", "set", "lo", "up")
	return n
}

// Veth creates a veth pair with end aIf in a and end bIf in b (a and b may be the same
// namespace), and sets both up. The pair is created straight into the namespaces and never
// exists in the root namespace; deleting either namespace removes it.
func (h *H) Veth(a *NS, aIf string, b *NS, bIf string) {
	h.t.Helper()
	for _, n := range []string{aIf, bIf} {
		if n == "" || len(n) > 15 || strings.ContainsAny(n, "/ \t") {
			h.t.Fatalf("harness: interface name %q: want 1 to 15 characters, no '/' or space", n)
		}
	}
	args := []string{"link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		h.t.Fatalf("harness: ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	a.MustRun("ip", "link", "set", aIf, "up")
	b.MustRun("ip", "link", "set", bIf, "up")
}

// Build compiles the repository package pkg (repo-relative, e.g. "cmd/ghostrouter") once
// per H and returns the binary's path. The repository root is found by walking up from the
// working directory to go.mod.
func (h *H) Build(pkg string) string {
	h.t.Helper()
	h.buildMu.Lock()
	defer h.buildMu.Unlock()
	pkg = strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+pkg), "/"), "/")
	if p, ok := h.builds[pkg]; ok {
		return p
	}
	root, err := RepoRoot()
	if err != nil {
		h.t.Fatalf("harness: build %s: %v", pkg, err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil && os.Getenv("GOROOT") != "" {
		goBin, err = filepath.Join(os.Getenv("GOROOT"), "bin", "go"), nil
	}
	if err != nil {
		h.t.Fatalf("harness: build %s: no go command in PATH: %v", pkg, err)
	}
	if h.binDir == "" {
		if h.binDir, err = os.MkdirTemp("", "ghostrouter-e2e-bin-"); err != nil {
			h.t.Fatalf("harness: build %s: %v", pkg, err)
		}
	}
	dir := filepath.Join(h.binDir, strconv.Itoa(len(h.builds)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		h.t.Fatalf("harness: build %s: %v", pkg, err)
	}
	out := filepath.Join(dir, path.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./"+pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("harness: go build ./%s (in %s): %v\n%s", pkg, root, err, b)
	}
	h.builds[pkg] = out
	return out
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// RequireRoot skips the test with a clear message when it does not run as root or one of
// the tools (always "ip", plus those named, e.g. "tcpdump", "nft") is not in PATH, and in
// -short mode (`make unit`). With CI=true in the environment it fails the test instead of
// skipping for root or tools, and ignores -short: privileged tests must run in CI.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if testing.Short() && !ci {
		t.Skipf("privileged end-to-end test: skipped in -short mode")
	}
	var why []string
	if euid := os.Geteuid(); euid != 0 {
		why = append(why, fmt.Sprintf("needs root (euid %d)", euid))
	}
	var missing []string
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		why = append(why, "missing tools in PATH: "+strings.Join(missing, ", "))
	}
	if len(why) == 0 {
		return
	}
	msg := "privileged end-to-end test: " + strings.Join(why, "; ")
	if ci {
		t.Fatalf("%s (CI=true: privileged tests must run in CI, not skip)", msg)
	}
	t.Skipf("%s; skipped (run as root to include it)", msg)
}

// WaitFor polls cond with a small growing backoff (5 ms up to 100 ms) until it returns
// true, and fails the test with "timed out waiting for WHAT" when timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// poll is WaitFor without the test: it reports whether cond became true in time.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(wait, left))
		wait = min(2*wait, 100*time.Millisecond)
	}
}
