package main

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestControlSocketCreation: the control socket replaces only a stale
// socket; a live one, a regular file, a directory and a symbolic link are
// errors and stay as they were; the socket is mode 0600 as soon as it
// exists, and the umask is restored.
func TestControlSocketCreation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctl.sock")

	os.WriteFile(path, []byte("precious"), 0o644)
	if _, err := listenUnixSafely(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Errorf("the regular file became %q", b)
	}
	os.Remove(path)
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("precious"), 0o644)
	os.Symlink(target, path)
	if _, err := listenUnixSafely(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a symbolic link: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Errorf("the link's target became %q", b)
	}
	os.Remove(path)
	os.Mkdir(path, 0o755)
	if _, err := listenUnixSafely(path); err == nil {
		t.Error("over a directory: no error")
	}
	os.Remove(path)

	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	l, err := listenUnixSafely(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("new socket: %v, mode %v; want a socket, 0600", err, fi.Mode())
	}
	if u := syscall.Umask(0o022); u != 0o022 {
		t.Errorf("umask left at %#o", u)
	}
	if _, err := listenUnixSafely(path); err == nil || !strings.Contains(err.Error(), "another appliance is listening") {
		t.Errorf("over a live socket: %v", err)
	}
	l.Close() // leaves the file: a stale socket
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("no stale socket left to replace: %v", err)
	}
	l2, err := listenUnixSafely(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	created, _ := os.Lstat(path)
	closeUnixSafely(l2, path, created)
	if _, err := os.Lstat(path); err == nil {
		t.Error("closeUnixSafely left its socket")
	}
}

// acceptHelperEnv makes the test binary the server of
// TestAcceptSurvivesFDExhaustion.
const acceptHelperEnv = "GHOSTROUTER_TEST_ACCEPT_HELPER"

// TestAcceptHelper is not a test: run by TestAcceptSurvivesFDExhaustion in
// a child process, it serves the control socket's accept loop, fills its
// file-descriptor table, says "exhausted", waits for a line on stdin,
// frees the descriptors, says "freed", and serves until stdin closes.
func TestAcceptHelper(t *testing.T) {
	path := os.Getenv(acceptHelperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	l, err := listenUnixSafely(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	go acceptLoop(l, 4, log, "control socket", func(c net.Conn) {
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "ok %s", line)
	})
	var files []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		files = append(files, f)
	}
	fmt.Println("exhausted")
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n')
	for _, f := range files {
		f.Close()
	}
	fmt.Println("freed")
	io.Copy(io.Discard, in)
}

// TestAcceptSurvivesFDExhaustion: a child process serving the control
// socket runs out of file descriptors (its limit lowered with setrlimit):
// a connection waits in the backlog unanswered. Once the descriptors are
// freed, that connection and new ones are answered: the accept loop
// retried rather than ended.
func TestAcceptSurvivesFDExhaustion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), acceptHelperEnv+"="+path)
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	// The child inherits a low limit: exhausting it is quick.
	low := syscall.Rlimit{Cur: 64, Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Start()
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) // back at once for this process
	if err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	out := bufio.NewReader(stdout)
	expect := func(want string) {
		t.Helper()
		line, err := out.ReadString('\n')
		if strings.TrimSpace(line) != want {
			t.Fatalf("helper said %q (%v), want %q\nstderr:\n%s", line, err, want, stderr.String())
		}
	}
	expect("exhausted")

	ask := func(c net.Conn, msg string, wait time.Duration) (string, error) {
		fmt.Fprintln(c, msg)
		c.SetReadDeadline(time.Now().Add(wait))
		return bufio.NewReader(c).ReadString('\n')
	}
	waiting, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect while the server is out of descriptors: %v", err)
	}
	defer waiting.Close()
	if got, err := ask(waiting, "first", 300*time.Millisecond); err == nil {
		t.Fatalf("answered %q while out of descriptors: the test shows nothing", got)
	}
	fmt.Fprintln(stdin, "free")
	expect("freed")
	waiting.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := bufio.NewReader(waiting).ReadString('\n'); err != nil || got != "ok first\n" {
		t.Fatalf("the waiting connection after the descriptors were freed: %q, %v\nstderr:\n%s", got, err, stderr.String())
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := ask(c, "second", 5*time.Second); err != nil || got != "ok second\n" {
		t.Fatalf("a new connection: %q, %v", got, err)
	}
	stdin.Close()
	cmd.Wait()
	if log := stderr.String(); strings.Count(log, "accept failed") != 1 || !strings.Contains(log, "too many open files") || !strings.Contains(log, "accepting again") {
		t.Errorf("the helper's log should say once that accept failed (EMFILE) and then that it accepts again:\n%s", log)
	}
}

// TestLimitListener: at most n connections at once; the next is accepted
// when one closes.
func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limitListener(raw, 2)
	defer l.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection accepted while two are open")
	case <-time.After(200 * time.Millisecond):
	}
	first.Close()
	first.Close() // twice: one slot back, not two
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the third connection was not accepted after one closed")
	}
}

func TestHTTPServerBounds(t *testing.T) {
	s := newHTTPServer(nil)
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 {
		t.Errorf("unbounded metrics server: %+v", s)
	}
}
