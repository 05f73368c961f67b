// Package sdnotify owns the binaries' side of systemd's service readiness
// protocol (sd_notify(3)): datagrams of newline-separated VAR=VALUE
// assignments sent to the unix socket named by $NOTIFY_SOCKET, a path or an
// abstract name (leading '@'). Without $NOTIFY_SOCKET (not started by
// systemd as Type=notify) every call does nothing.
package sdnotify

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// The states a service reports.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Notifier sends to one notification socket.
type Notifier struct {
	addr *unix.SockaddrUnix // nil: not under systemd
	// fd is a datagram socket connected to addr when FromEnv ran (valid
	// when connected). Connected then, it keeps working after the process
	// gives up the privileges the socket's permissions asked for.
	fd        int
	connected bool
}

// FromEnv returns a notifier for $NOTIFY_SOCKET (one that does nothing when
// it is unset), and unsets it so child processes do not inherit it.
func FromEnv() (*Notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	if path == "" {
		return &Notifier{}, nil
	}
	if path[0] != '/' && path[0] != '@' {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: neither a path nor an abstract name", path)
	}
	if len(path) > 107 {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: too long for a unix socket address", path)
	}
	name := path
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	n := &Notifier{addr: &unix.SockaddrUnix{Name: name}}
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		if unix.Connect(fd, n.addr) == nil {
			n.fd, n.connected = fd, true
		} else {
			unix.Close(fd)
		}
	}
	return n, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Send sends one notification made of the given assignments.
func (n *Notifier) Send(assignments ...string) error {
	if !n.Enabled() {
		return nil
	}
	msg := ""
	for i, a := range assignments {
		if i > 0 {
			msg += "\n"
		}
		msg += a
	}
	if n.connected {
		if _, err := unix.Write(n.fd, []byte(msg)); err != nil {
			return fmt.Errorf("sd_notify %q: %w", msg, err)
		}
		return nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, []byte(msg), 0, n.addr); err != nil {
		return fmt.Errorf("sd_notify %q: %w", msg, err)
	}
	return nil
}

// Reloading sends RELOADING=1 with the CLOCK_MONOTONIC timestamp systemd
// requires with it (MONOTONIC_USEC, since systemd 253); READY=1 ends the
// reload.
func (n *Notifier) Reloading() error {
	if !n.Enabled() {
		return nil
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("clock_gettime: %w", err)
	}
	return n.Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(ts.Nano()/1000, 10))
}

// Status is a STATUS= assignment: a line of text systemctl status shows.
func Status(text string) string { return "STATUS=" + text }
