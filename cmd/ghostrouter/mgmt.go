package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// The management plane (control socket, metrics endpoint) must stay up
// whatever its clients do: its accept loops survive errors such as running
// out of file descriptors, the HTTP server bounds how long and how many
// connections it holds, and the control socket is created so that it never
// removes anything but a stale socket and is never, even briefly,
// reachable by other users.

// Bounds of the management plane.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second

	maxControlConns = 16 // requests served at once on the control socket
	maxMetricsConns = 32 // connections held at once by the metrics server

	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	metricsWriteTimeout      = 10 * time.Second
	metricsIdleTimeout       = 60 * time.Second
	metricsMaxHeaderBytes    = 16 << 10
)

// acceptLoop accepts connections on l and hands each to serve on its own
// goroutine, at most max at once (the next accept waits for a slot). It
// returns when l is closed, after closing the connections still open and
// waiting for their serve calls to return: it owns every goroutine it
// starts. Any other accept error (EMFILE, ENFILE, ENOBUFS...) is logged
// once per run of failures and retried after a back-off that doubles from
// 5 ms to 1 s: a full file-descriptor table pauses the loop, it never ends
// it.
func acceptLoop(l net.Listener, max int, log *slog.Logger, what string, serve func(net.Conn)) {
	slots := make(chan struct{}, max)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open = map[net.Conn]struct{}{}
	)
	defer func() {
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	var backoff time.Duration
	for {
		slots <- struct{}{}
		c, err := l.Accept()
		if err != nil {
			<-slots
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if backoff == 0 {
				backoff = acceptBackoffMin
				log.Warn(what+": accept failed; retrying with back-off", "err", err)
			} else {
				backoff = min(2*backoff, acceptBackoffMax)
			}
			time.Sleep(backoff)
			continue
		}
		if backoff != 0 {
			log.Info(what + ": accepting again")
			backoff = 0
		}
		mu.Lock()
		open[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer func() {
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				<-slots
				wg.Done()
			}()
			serve(c)
		}()
	}
}

// listenUnixSafely listens on a unix stream socket at path, mode 0600 from
// the moment it exists (the umask is 0177 around bind; nothing else of
// the appliance creates files then). Whatever is at path already is
// replaced only if it is a socket nobody answers on (a dead appliance's);
// a live socket, or anything else (a regular file, a directory, a
// symbolic link), is an error and left alone.
func listenUnixSafely(path string) (net.Listener, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("control socket %s: exists and is not a socket (%s): refusing to replace it", path, fi.Mode().Type())
	default:
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another appliance is listening", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("control socket %s: removing the stale socket: %w", path, err)
		}
	}
	l, err := listenWithUmask(path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false) // closeUnixSafely removes it, if still ours
	return l, nil
}

// listenWithUmask binds with umask 0177. The umask is process-wide: this
// runs once, at start, before anything else of the appliance creates files.
func listenWithUmask(path string) (net.Listener, error) {
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}

// closeUnixSafely closes l and removes its socket file if the file at its
// path is still the socket l created (not one a later appliance made).
// Removing it may fail once the appliance has dropped its privileges;
// the next start replaces a stale socket.
func closeUnixSafely(l net.Listener, path string, created fs.FileInfo) {
	l.Close()
	if fi, err := os.Lstat(path); err == nil && created != nil && os.SameFile(fi, created) {
		os.Remove(path)
	}
}

// newHTTPServer is the metrics endpoint's server: bounded time to send
// headers, a request and a response, and to idle between requests, and
// bounded header size. limitListener bounds the connections.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    metricsMaxHeaderBytes,
	}
}

// limitListener accepts at most n connections at once: the next Accept
// waits until one of them is closed.
func limitListener(l net.Listener, n int) net.Listener {
	return &limited{Listener: l, slots: make(chan struct{}, n)}
}

type limited struct {
	net.Listener
	slots chan struct{}
}

func (l *limited) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
