// Command peer is the traffic end of the end-to-end tests (test/harness): run inside a
// network namespace, it is a server that tells each client which server answered and
// which client address it saw, or a client that sends one request per source address and
// prints one parseable line per request. Standard library only; every loop is bounded in
// count and time.
//
//	peer serve -name NAME [-http ADDR:PORT] [-udp ADDR:PORT] [-lifetime 10m]
//	    HTTP GET and each UDP datagram are answered with "NAME CLIENTIP\n". An empty ADDR
//	    listens on 0.0.0.0. UDP replies leave from the address the datagram was sent to
//	    (IP_PKTINFO), so a server holding a ghost address answers from the ghost. Prints
//	    "ready" once every listener is open, and "NAME PROTO CLIENTIP" per request.
//	peer http -url URL (-src A,B,C | -src-range FIRST-LAST) [-count 1] [-timeout 2s] [-parallel 8]
//	peer udp  -dst ADDR:PORT (-src ... | -src-range ...) [-count 1] [-timeout 1s] [-parallel 8]
//	    For each source address (which must already be on an interface), count requests
//	    bound to it; one line each, in source order: "SRC OK BODY" or "SRC FAIL reason".
//	    Exit status 0 whatever the requests' outcome; 2 on a usage error.
//	peer udpload -dst ADDR:PORT (-src ... | -src-range ...) -duration 10s [-interval 100ms] [-retry 250ms] [-tries 8]
//	    One UDP flow per source (one socket, one port, for the whole run) sending "seq N try T"
//	    every -interval, retried without an answer (-tries 1: never); the server answers
//	    "NAME CLIENTIP seq N try T". One line per request at the end (see udpLoad).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Bounds on one client run.
const (
	maxSources  = 4096
	maxRequests = 65536
	maxTimeout  = time.Minute
	maxParallel = 64
	maxBody     = 4096
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stdout, stderr)
	case "http":
		err = client(args[1:], "http", stdout, stderr)
	case "udp":
		err = client(args[1:], "udp", stdout, stderr)
	case "load":
		err = load(args[1:], stdout, stderr)
	case "udpload":
		err = udpLoad(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	default:
		err = usageError{fmt.Errorf("unknown subcommand %q", args[0])}
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "peer: %v\n", err)
		usage(stderr)
		return 2
	default:
		fmt.Fprintf(stderr, "peer: %v\n", err)
		return 1
	}
}

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  peer serve -name NAME [-http ADDR:PORT] [-udp ADDR:PORT] [-lifetime 10m]
  peer http -url URL (-src A,B,C | -src-range FIRST-LAST) [-count 1] [-timeout 2s] [-parallel 8]
  peer udp  -dst ADDR:PORT (-src A,B,C | -src-range FIRST-LAST) [-count 1] [-timeout 1s] [-parallel 8]
  peer load -url URL (-src A,B,C | -src-range FIRST-LAST) -duration 10s [-interval 100ms] [-timeout 1s] [-reuse]
  peer udpload -dst ADDR:PORT (-src A,B,C | -src-range FIRST-LAST) -duration 10s [-interval 100ms] [-retry 250ms] [-tries 8]
`)
}

// ---- serve ----

func serve(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "server name, the first word of every answer (required)")
	httpAddr := fs.String("http", "", "HTTP listen ADDR:PORT (empty ADDR: 0.0.0.0)")
	udpAddr := fs.String("udp", "", "UDP listen ADDR:PORT (empty ADDR: 0.0.0.0)")
	lifetime := fs.Duration("lifetime", 10*time.Minute, "exit after this long, so a leaked server ends")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	switch {
	case fs.NArg() > 0:
		return usageError{fmt.Errorf("serve: unexpected arguments %q", fs.Args())}
	case *name == "" || strings.ContainsAny(*name, " \n"):
		return usageError{errors.New("serve: -name is required, without spaces")}
	case *httpAddr == "" && *udpAddr == "":
		return usageError{errors.New("serve: give -http and/or -udp")}
	case *lifetime <= 0:
		return usageError{errors.New("serve: -lifetime must be positive")}
	}
	out := &lockedWriter{w: stdout}

	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	errc := make(chan error, 2)
	if *httpAddr != "" {
		network, addr, err := listenAddr("tcp", *httpAddr)
		if err != nil {
			return usageError{fmt.Errorf("serve: -http: %w", err)}
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		srv := &http.Server{
			Handler:           answerHandler(*name, out),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       10 * time.Second,
			ErrorLog:          nil,
		}
		closers = append(closers, srv)
		go func() { errc <- fmt.Errorf("serve: http: %w", srv.Serve(ln)) }()
	}
	if *udpAddr != "" {
		network, addr, err := listenAddr("udp", *udpAddr)
		if err != nil {
			return usageError{fmt.Errorf("serve: -udp: %w", err)}
		}
		conn, err := listenUDPPktinfo(network, addr)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		closers = append(closers, conn)
		go func() { errc <- fmt.Errorf("serve: udp: %w", serveUDP(conn, *name, out)) }()
	}
	fmt.Fprintln(out, "ready")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	life := time.NewTimer(*lifetime)
	defer life.Stop()
	select {
	case s := <-sig:
		fmt.Fprintf(out, "stopping on %v\n", s)
		return nil
	case <-life.C:
		fmt.Fprintf(out, "stopping: lifetime %v over\n", *lifetime)
		return nil
	case err := <-errc:
		return err
	}
}

// listenAddr maps "ADDR:PORT" to a network and address; an empty ADDR is 0.0.0.0 (IPv4).
func listenAddr(proto, s string) (network, addr string, err error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", "", err
	}
	if host == "" {
		if proto == "tcp" { // HTTP: IPv4 and IPv6 on one dual-stack socket
			return "tcp", ":" + port, nil
		}
		return proto + "4", net.JoinHostPort("0.0.0.0", port), nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return "", "", fmt.Errorf("address %q: %w", host, err)
	}
	return proto, s, nil
}

func answerHandler(name string, out io.Writer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := "unknown"
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			client = ap.Addr().Unmap().String()
		}
		fmt.Fprintf(out, "%s http %s\n", name, client)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s\n", name, client)
	})
}

// listenUDPPktinfo opens a UDP socket that learns each datagram's destination address, so
// serveUDP can answer from it: a socket bound to 0.0.0.0 would otherwise answer from the
// route's preferred source, not from a ghost address the client talked to.
func listenUDPPktinfo(network, addr string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			ap, err := netip.ParseAddrPort(address)
			if err == nil && ap.Addr().Is4() {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1)
				return
			}
			// An IPv6 (possibly dual-stack) socket: IPV6_PKTINFO also covers IPv4 datagrams
			// as v4-mapped addresses.
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func serveUDP(conn *net.UDPConn, name string, out io.Writer) error {
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	for {
		n, oobn, _, from, err := conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		client := from.Addr().Unmap()
		fmt.Fprintf(out, "%s udp %s\n", name, client)
		reply := []byte(fmt.Sprintf("%s %s\n", name, client))
		if tok, ok := requestToken(buf[:n]); ok { // udpload: the answer names the request
			reply = []byte(fmt.Sprintf("%s %s %s\n", name, client, tok))
		}
		ctl := replyControl(oob[:oobn])
		if _, _, err := conn.WriteMsgUDPAddrPort(reply, ctl, from); err != nil && ctl != nil {
			// The destination was not a local unicast address (e.g. a broadcast):
			// let the kernel choose the source.
			_, _, err = conn.WriteMsgUDPAddrPort(reply, nil, from)
			if err != nil {
				fmt.Fprintf(out, "%s udp reply to %s: %v\n", name, from, err)
			}
		}
	}
}

// replyControl turns the received IP_PKTINFO / IPV6_PKTINFO into the control message that
// makes the reply leave from the same local address; nil if there is none.
func replyControl(oob []byte) []byte {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet4Pktinfo:
			in := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet4Pktinfo))
			h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
			h.Level, h.Type = syscall.IPPROTO_IP, syscall.IP_PKTINFO
			h.SetLen(syscall.CmsgLen(syscall.SizeofInet4Pktinfo))
			outInfo := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
			outInfo.Spec_dst = in.Spec_dst
			return b
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet6Pktinfo:
			in := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet6Pktinfo))
			h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
			h.Level, h.Type = syscall.IPPROTO_IPV6, syscall.IPV6_PKTINFO
			h.SetLen(syscall.CmsgLen(syscall.SizeofInet6Pktinfo))
			outInfo := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
			outInfo.Addr = in.Addr
			return b
		}
	}
	return nil
}

// lockedWriter serializes lines from concurrent handlers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// ---- clients ----

func client(args []string, kind string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var target *string
	defTimeout := 2 * time.Second
	if kind == "http" {
		target = fs.String("url", "", "URL to GET (required)")
	} else {
		target = fs.String("dst", "", "server ADDR:PORT (required)")
		defTimeout = time.Second
	}
	src := fs.String("src", "", "comma-separated source addresses to bind")
	srcRange := fs.String("src-range", "", "source address range FIRST-LAST, inclusive")
	count := fs.Int("count", 1, "requests per source")
	timeout := fs.Duration("timeout", defTimeout, "per-request timeout")
	parallel := fs.Int("parallel", 8, "requests in flight at once")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected arguments %q", kind, fs.Args())}
	}
	srcs, err := parseSources(*src, *srcRange)
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", kind, err)}
	}
	switch {
	case *count < 1 || len(srcs)**count > maxRequests:
		return usageError{fmt.Errorf("%s: -count %d: want 1 or more, at most %d requests in all", kind, *count, maxRequests)}
	case *timeout <= 0 || *timeout > maxTimeout:
		return usageError{fmt.Errorf("%s: -timeout %v: want (0, %v]", kind, *timeout, maxTimeout)}
	case *parallel < 1 || *parallel > maxParallel:
		return usageError{fmt.Errorf("%s: -parallel %d: want 1 to %d", kind, *parallel, maxParallel)}
	}

	var do func(src netip.Addr) string
	switch kind {
	case "http":
		if *target == "" {
			return usageError{errors.New("http: -url is required")}
		}
		url := *target
		do = func(src netip.Addr) string { return httpOnce(url, src, *timeout) }
	default:
		dst, err := netip.ParseAddrPort(*target)
		if err != nil {
			return usageError{fmt.Errorf("udp: -dst %q: want ADDR:PORT: %v", *target, err)}
		}
		do = func(src netip.Addr) string { return udpOnce(dst, src, *timeout) }
	}

	// Requests run -parallel at a time; lines are printed in source order as they finish.
	n := len(srcs) * *count
	lines := make([]chan string, n)
	for i := range lines {
		lines[i] = make(chan string, 1)
	}
	sem := make(chan struct{}, *parallel)
	go func() {
		for i := range n {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				s := srcs[i / *count]
				lines[i] <- s.String() + " " + do(s)
			}()
		}
	}()
	for i := range n {
		fmt.Fprintln(stdout, <-lines[i])
	}
	return nil
}

// parseSources reads -src or -src-range (exactly one).
func parseSources(list, rng string) ([]netip.Addr, error) {
	switch {
	case list != "" && rng != "":
		return nil, errors.New("give -src or -src-range, not both")
	case list == "" && rng == "":
		return nil, errors.New("give -src A,B,C or -src-range FIRST-LAST")
	}
	var out []netip.Addr
	if list != "" {
		for _, f := range strings.Split(list, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(f))
			if err != nil {
				return nil, fmt.Errorf("-src: %w", err)
			}
			out = append(out, a)
		}
	} else {
		first, last, ok := strings.Cut(rng, "-")
		if !ok {
			return nil, fmt.Errorf("-src-range %q: want FIRST-LAST", rng)
		}
		a, err := netip.ParseAddr(strings.TrimSpace(first))
		if err != nil {
			return nil, fmt.Errorf("-src-range: %w", err)
		}
		b, err := netip.ParseAddr(strings.TrimSpace(last))
		if err != nil {
			return nil, fmt.Errorf("-src-range: %w", err)
		}
		if a.Is4() != b.Is4() || b.Less(a) {
			return nil, fmt.Errorf("-src-range %q: want FIRST <= LAST of one family", rng)
		}
		for x := a; ; x = x.Next() {
			out = append(out, x)
			if x == b || len(out) > maxSources {
				break
			}
		}
	}
	if len(out) > maxSources {
		return nil, fmt.Errorf("more than %d source addresses", maxSources)
	}
	return out, nil
}

// httpOnce does one GET bound to src on a fresh connection; "OK BODY" or "FAIL reason".
func httpOnce(url string, src netip.Addr, timeout time.Duration) string {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: timeout}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return "FAIL " + oneLine(err.Error())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return "FAIL reading body: " + oneLine(err.Error())
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("FAIL status %d: %s", resp.StatusCode, oneLine(string(body)))
	}
	return "OK " + oneLine(string(body))
}

// udpOnce sends one datagram from src and waits for the answer. The socket is not
// connected, so an answer from any other address is reported as a failure naming that
// address (a connected client would silently drop it and time out).
func udpOnce(dst netip.AddrPort, src netip.Addr, timeout time.Duration) string {
	if src.Is4() != dst.Addr().Is4() {
		return "FAIL source and destination are of different families"
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		return "FAIL " + oneLine(err.Error())
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	conn.SetDeadline(deadline)
	if _, err := conn.WriteToUDPAddrPort([]byte("peer "+src.String()+"\n"), dst); err != nil {
		return "FAIL " + oneLine(err.Error())
	}
	buf := make([]byte, maxBody)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Sprintf("FAIL timeout after %v", timeout)
		}
		return "FAIL " + oneLine(err.Error())
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if from != dst {
		return fmt.Sprintf("FAIL reply from %s, not %s: %s", from, dst, oneLine(string(buf[:n])))
	}
	return "OK " + oneLine(string(buf[:n]))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// ---- load ----

// maxLoad bounds a load run.
const maxLoad = 5 * time.Minute

// load runs, from every source at once, one GET per -interval until
// -duration has passed, and prints a line per request as it completes:
// "UNIXMILLI SRC OK BODY" or "UNIXMILLI SRC FAIL reason". With -reuse each
// source keeps one TCP connection open for the whole run; if it ever has to
// dial again, that request's line says "FAIL redial" (the connection broke).
func load(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "URL to GET (required)")
	src := fs.String("src", "", "comma-separated source addresses to bind")
	srcRange := fs.String("src-range", "", "source address range FIRST-LAST, inclusive")
	duration := fs.Duration("duration", 10*time.Second, "how long to run")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between requests of one source")
	timeout := fs.Duration("timeout", time.Second, "per-request timeout")
	reuse := fs.Bool("reuse", false, "one long-lived connection per source")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	srcs, err := parseSources(*src, *srcRange)
	switch {
	case err != nil:
		return usageError{fmt.Errorf("load: %w", err)}
	case *url == "":
		return usageError{errors.New("load: -url is required")}
	case *duration <= 0 || *duration > maxLoad:
		return usageError{fmt.Errorf("load: -duration %v: want (0, %v]", *duration, maxLoad)}
	case *interval < 10*time.Millisecond:
		return usageError{fmt.Errorf("load: -interval %v: want at least 10ms", *interval)}
	case *timeout <= 0 || *timeout > maxTimeout:
		return usageError{fmt.Errorf("load: -timeout %v: want (0, %v]", *timeout, maxTimeout)}
	}
	out := &lockedWriter{w: stdout}
	end := time.Now().Add(*duration)
	done := make(chan struct{})
	for _, s := range srcs {
		go func() {
			defer func() { done <- struct{}{} }()
			loadOne(*url, s, end, *interval, *timeout, *reuse, out)
		}()
	}
	for range srcs {
		<-done
	}
	return nil
}

func loadOne(url string, src netip.Addr, end time.Time, interval, timeout time.Duration, reuse bool, out io.Writer) {
	dials := 0
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: timeout}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials++
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives:   !reuse,
		MaxIdleConnsPerHost: 1,
		Proxy:               nil,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: timeout}
	for next := time.Now(); next.Before(end); next = next.Add(interval) {
		time.Sleep(time.Until(next))
		t0 := time.Now()
		before := dials
		res := "OK "
		resp, err := c.Get(url)
		if err != nil {
			res = "FAIL " + oneLine(err.Error())
		} else {
			body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
			resp.Body.Close()
			switch {
			case err != nil:
				res = "FAIL reading body: " + oneLine(err.Error())
			case resp.StatusCode != http.StatusOK:
				res = fmt.Sprintf("FAIL status %d", resp.StatusCode)
			default:
				res += oneLine(string(body))
			}
		}
		if reuse && before > 0 && dials > before {
			res = "FAIL redial (the long-lived connection broke); then " + res
		}
		fmt.Fprintf(out, "%d %s %s\n", t0.UnixMilli(), src, res)
	}
}
