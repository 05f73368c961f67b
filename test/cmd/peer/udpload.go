package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// requestToken recognises a udpload request, "seq N try T", and returns it
// for the answer to repeat.
func requestToken(b []byte) (string, bool) {
	s := strings.TrimSpace(string(b))
	f := strings.Fields(s)
	if len(f) != 4 || f[0] != "seq" || f[2] != "try" {
		return "", false
	}
	if _, err := strconv.ParseUint(f[1], 10, 32); err != nil {
		return "", false
	}
	if _, err := strconv.ParseUint(f[3], 10, 8); err != nil {
		return "", false
	}
	return s, true
}

// udpLoad is a UDP request/response stream per source: one socket (one
// flow, a fixed source port) per source for the whole run, a request
// "seq N try T" every -interval, retried after -retry without an answer
// (as a DNS client would), at most -tries times. Every answer is read and
// attributed to the attempt it names. At the end it prints one line per
// request, in source order:
//
//	UNIXMILLI SRC seq N tries T answers A servers S1,S2 attempts-answered-twice D
//
// A is the number of answers to all attempts of the request; the request
// was answered exactly once by exactly one server when A == 1 and one
// server is listed. A request answered after a retry has T > 1.
func udpLoad(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("udpload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dstFlag := fs.String("dst", "", "server ADDR:PORT (required)")
	src := fs.String("src", "", "comma-separated source addresses to bind")
	srcRange := fs.String("src-range", "", "source address range FIRST-LAST, inclusive")
	duration := fs.Duration("duration", 10*time.Second, "how long to send new requests")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between requests of one source")
	retry := fs.Duration("retry", 250*time.Millisecond, "resend a request unanswered for this long")
	tries := fs.Int("tries", 8, "attempts per request")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	srcs, err := parseSources(*src, *srcRange)
	dst, derr := netip.ParseAddrPort(*dstFlag)
	switch {
	case err != nil:
		return usageError{fmt.Errorf("udpload: %w", err)}
	case derr != nil:
		return usageError{fmt.Errorf("udpload: -dst %q: %v", *dstFlag, derr)}
	case *duration <= 0 || *duration > maxLoad:
		return usageError{fmt.Errorf("udpload: -duration %v: want (0, %v]", *duration, maxLoad)}
	case *interval < 10*time.Millisecond:
		return usageError{fmt.Errorf("udpload: -interval %v: want at least 10ms", *interval)}
	case *retry < 10*time.Millisecond || *retry > maxTimeout:
		return usageError{fmt.Errorf("udpload: -retry %v: want 10ms to %v", *retry, maxTimeout)}
	case *tries < 1 || *tries > 20:
		return usageError{fmt.Errorf("udpload: -tries %d: want 1 to 20", *tries)}
	case int(*duration / *interval)*len(srcs) > maxRequests*4:
		return usageError{errors.New("udpload: too many requests")}
	}
	results := make([][]string, len(srcs))
	var wg sync.WaitGroup
	for i, s := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = udpLoadFlow(s, dst, *duration, *interval, *retry, *tries)
		}()
	}
	wg.Wait()
	for _, lines := range results {
		for _, l := range lines {
			fmt.Fprintln(stdout, l)
		}
	}
	return nil
}

// request is one request of a stream and what answered it.
type request struct {
	sent    time.Time
	tries   int
	answers int
	servers map[string]bool
	per     map[int]int // answers per attempt
}

func udpLoadFlow(src netip.Addr, dst netip.AddrPort, duration, interval, retry time.Duration, tries int) []string {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		return []string{fmt.Sprintf("%d %s FAIL %s", time.Now().UnixMilli(), src, oneLine(err.Error()))}
	}
	defer conn.Close()
	var mu sync.Mutex
	var reqs []*request
	var strays int
	done := make(chan struct{})
	go func() { // the reader: every answer, attributed to the attempt it names
		defer close(done)
		buf := make([]byte, maxBody)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			f := strings.Fields(string(buf[:n]))
			// "NAME CLIENT seq N try T"
			if len(f) != 6 || netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != dst {
				mu.Lock()
				strays++
				mu.Unlock()
				continue
			}
			seq, err1 := strconv.Atoi(f[3])
			try, err2 := strconv.Atoi(f[5])
			mu.Lock()
			if err1 != nil || err2 != nil || seq < 0 || seq >= len(reqs) {
				strays++
			} else {
				r := reqs[seq]
				r.answers++
				r.servers[f[0]] = true
				r.per[try]++
			}
			mu.Unlock()
		}
	}()
	send := func(seq, try int) {
		conn.WriteToUDPAddrPort([]byte(fmt.Sprintf("seq %d try %d\n", seq, try)), dst)
	}
	end := time.Now().Add(duration)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	next := time.Now()
	for {
		now := time.Now()
		mu.Lock()
		if now.Before(end) && !now.Before(next) {
			reqs = append(reqs, &request{sent: now, tries: 1, servers: map[string]bool{}, per: map[int]int{}})
			send(len(reqs)-1, 1)
			next = next.Add(interval)
		}
		pending := false
		for seq, r := range reqs {
			if r.answers > 0 || r.tries >= tries {
				continue
			}
			pending = true
			if now.Sub(r.sent) >= time.Duration(r.tries)*retry {
				r.tries++
				send(seq, r.tries)
			}
		}
		mu.Unlock()
		if !now.Before(end) && !pending {
			break
		}
		<-tick.C
	}
	time.Sleep(retry) // late answers, and late second answers, still count
	conn.Close()
	<-done
	mu.Lock()
	defer mu.Unlock()
	var lines []string
	for seq, r := range reqs {
		var servers []string
		for s := range r.servers {
			servers = append(servers, s)
		}
		twice := 0
		for _, n := range r.per {
			if n > 1 {
				twice++
			}
		}
		sv := strings.Join(servers, ",")
		if sv == "" {
			sv = "-"
		}
		lines = append(lines, fmt.Sprintf("%d %s seq %d tries %d answers %d servers %s attempts-answered-twice %d",
			r.sent.UnixMilli(), src, seq, r.tries, r.answers, sv, twice))
	}
	if strays > 0 {
		lines = append(lines, fmt.Sprintf("%d %s STRAY %d answers that name no request", time.Now().UnixMilli(), src, strays))
	}
	return lines
}
