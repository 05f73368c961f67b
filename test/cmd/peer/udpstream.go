package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxStream bounds the datagrams of one udpstream flow.
const maxStream = 100000

// seqOf reads a udpstream request, "seq N".
func seqOf(b []byte) (int, bool) {
	f := strings.Fields(string(b))
	if len(f) != 2 || f[0] != "seq" {
		return 0, false
	}
	n, err := strconv.Atoi(f[1])
	return n, err == nil && n >= 0 && n < maxStream
}

// udpStream runs one UDP request/response flow per source: a single socket
// (so a single 5-tuple) for the whole run, a numbered request every interval,
// and a count of the answers to each number.
func udpStream(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("udpstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dstS := fs.String("dst", "", "server ADDR:PORT (required)")
	src := fs.String("src", "", "comma-separated source addresses to bind")
	srcRange := fs.String("src-range", "", "source address range FIRST-LAST, inclusive")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between requests of one flow")
	timeout := fs.Duration("timeout", time.Second, "how long to wait for the last answers")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	srcs, err := parseSources(*src, *srcRange)
	if err != nil {
		return usageError{fmt.Errorf("udpstream: %w", err)}
	}
	dst, err := netip.ParseAddrPort(*dstS)
	switch {
	case err != nil:
		return usageError{fmt.Errorf("udpstream: -dst %q: want ADDR:PORT", *dstS)}
	case *duration <= 0 || *duration > maxLoad:
		return usageError{fmt.Errorf("udpstream: -duration %v: want (0, %v]", *duration, maxLoad)}
	case *interval < 10*time.Millisecond || int64(*duration / *interval) >= maxStream:
		return usageError{fmt.Errorf("udpstream: -interval %v: want at least 10ms and fewer than %d requests", *interval, maxStream)}
	case *timeout <= 0 || *timeout > maxTimeout:
		return usageError{fmt.Errorf("udpstream: -timeout %v: want (0, %v]", *timeout, maxTimeout)}
	}
	lines := make([]string, len(srcs))
	var wg sync.WaitGroup
	for i, s := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lines[i] = s.String() + " " + streamOne(dst, s, *duration, *interval, *timeout)
		}()
	}
	wg.Wait()
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return nil
}

func streamOne(dst netip.AddrPort, src netip.Addr, duration, interval, timeout time.Duration) string {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		return "FAIL " + oneLine(err.Error())
	}
	defer conn.Close()
	var mu sync.Mutex
	answers := map[int]int{}
	servers := map[string]int{}
	foreign := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxBody)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // the deadline or the close ends the run
			}
			f := strings.Fields(string(buf[:n]))
			mu.Lock()
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			if from != dst || len(f) != 4 || f[2] != "seq" {
				foreign++
			} else if seq, err := strconv.Atoi(f[3]); err == nil {
				answers[seq]++
				servers[f[0]]++
			}
			mu.Unlock()
		}
	}()
	sent := 0
	end := time.Now().Add(duration)
	for next := time.Now(); next.Before(end); next = next.Add(interval) {
		time.Sleep(time.Until(next))
		if _, err := conn.WriteToUDPAddrPort([]byte("seq "+strconv.Itoa(sent)+"\n"), dst); err != nil && !errors.Is(err, net.ErrClosed) {
			continue // counted as lost: never answered
		}
		sent++
	}
	conn.SetReadDeadline(time.Now().Add(timeout))
	<-done
	mu.Lock()
	defer mu.Unlock()
	answered, dup := 0, 0
	for seq, n := range answers {
		if seq >= sent {
			foreign += n
			continue
		}
		answered++
		dup += n - 1
	}
	names := make([]string, 0, len(servers))
	for name, n := range servers {
		names = append(names, name+"="+strconv.Itoa(n))
	}
	sort.Strings(names)
	return fmt.Sprintf("sent %d answered %d dup %d lost %d foreign %d servers %s", sent, answered, dup, sent-answered, foreign, strings.Join(names, ","))
}
