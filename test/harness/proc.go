package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a background process started by NS.Start.
type Proc struct {
	name    string
	ns      *NS
	args    []string
	cmd     *exec.Cmd
	logPath string

	done chan struct{} // closed once the process has been reaped
	err  error         // cmd.Wait's result; read only after done is closed
}

// Pid is the process id (the command's own: ip netns exec execs it).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return fmt.Errorf("harness: %s: signal %v: process already exited", p.name, sig)
	}
	return p.cmd.Process.Signal(sig)
}

// Exited reports whether the process has exited (and been reaped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ErrStillRunning is returned by Proc.Wait when the process outlives the timeout.
var ErrStillRunning = errors.New("harness: process still running")

// Wait waits up to timeout for the process to exit and returns its exit error (nil for
// status 0, *exec.ExitError otherwise), or an error wrapping ErrStillRunning.
func (p *Proc) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("%w: %s after %v", ErrStillRunning, p.name, timeout)
	}
}

// Log returns what the process has written to stdout and stderr so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// LogPath is the file holding the process's stdout and stderr.
func (p *Proc) LogPath() string { return p.logPath }

// WaitForLog polls the process's log until it contains substr (e.g. the peer's "ready").
// It fails the test with the log if the process exits first or timeout passes.
func (p *Proc) WaitForLog(substr string, timeout time.Duration) {
	t := p.ns.h.t
	t.Helper()
	var exited bool
	ok := poll(timeout, func() bool {
		exited = p.Exited() // read before the log, so a final write is not missed
		return strings.Contains(p.Log(), substr) || exited
	})
	if ok && strings.Contains(p.Log(), substr) {
		return
	}
	state := "still running"
	if exited {
		state = fmt.Sprintf("exited: %v", p.err)
	}
	t.Fatalf("harness: %s in %s: %q not in its log after %v (%s); command: %s\nlog %s:\n%s",
		p.name, p.ns.Name, substr, timeout, state, strings.Join(p.args, " "), p.logPath, p.Log())
}

// stop ends the process: SIGTERM to its process group, SIGKILL to the group after grace,
// then waits (bounded) for it to be reaped.
func (p *Proc) stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid // Setpgid: the group id is the pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	if p.Wait(grace) == nil || p.Exited() {
		return nil
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if err := p.Wait(5 * time.Second); errors.Is(err, ErrStillRunning) {
		return fmt.Errorf("%s (pid %d) in %s survived SIGKILL: %w", p.name, pgid, p.ns.Name, err)
	}
	return nil
}
