package sdnotify

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen binds a unixgram socket as systemd would and returns its path and
// a function reading one datagram.
func listen(t *testing.T, abstract bool) (string, func() string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	path := filepath.Join(t.TempDir(), "notify")
	name := path
	if abstract {
		path = "@ghostrouter-sdnotify-test-" + strconv.Itoa(unix.Getpid())
		name = "\x00" + path[1:]
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return path, func() string {
		buf := make([]byte, 4096)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		path, recv := listen(t, abstract)
		t.Setenv("NOTIFY_SOCKET", path)
		n, err := FromEnv()
		if err != nil || !n.Enabled() {
			t.Fatalf("FromEnv(%q) = %v, %v", path, n, err)
		}
		if err := n.Send(Ready, Status("up")); err != nil {
			t.Fatal(err)
		}
		if got := recv(); got != "READY=1\nSTATUS=up" {
			t.Errorf("got %q", got)
		}
		var before unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
		if err := n.Reloading(); err != nil {
			t.Fatal(err)
		}
		got := recv()
		lines := strings.Split(got, "\n")
		if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
			t.Fatalf("reloading sent %q", got)
		}
		us, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
		if err != nil || us < before.Nano()/1000 || us > before.Nano()/1000+int64(time.Second/time.Microsecond) {
			t.Errorf("MONOTONIC_USEC %q is not the monotonic clock now (%d us)", lines[1], before.Nano()/1000)
		}
	}
}

func TestWithoutSocketDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := FromEnv()
	if err != nil || n.Enabled() {
		t.Fatalf("FromEnv() = %v, %v", n, err)
	}
	if err := n.Send(Ready); err != nil {
		t.Fatal(err)
	}
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if _, err := FromEnv(); err == nil {
		t.Error("a relative NOTIFY_SOCKET was accepted")
	}
}
