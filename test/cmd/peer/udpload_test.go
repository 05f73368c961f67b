package main

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var loadLine = regexp.MustCompile(`^\d+ 127\.0\.0\.1 seq (\d+) tries (\d+) answers (\d+) servers (\S+) attempts-answered-twice (\d+)$`)

// udpload over loopback: against the real serveUDP every request is answered
// once by the one server; against a server that answers every datagram twice,
// each request shows two answers and one attempt answered twice; against a
// server that never answers, every request is tried -tries times and shows
// no answer.
func TestUDPLoadCounts(t *testing.T) {
	for _, kind := range []string{"once", "twice", "silent"} {
		conn, err := listenUDPPktinfo("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		switch kind {
		case "once":
			go serveUDP(conn, "s7", &bytes.Buffer{})
		case "twice":
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := conn.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					tok, _ := requestToken(buf[:n])
					for range 2 {
						conn.WriteToUDPAddrPort([]byte(fmt.Sprintf("dup 127.0.0.1 %s\n", tok)), from)
					}
				}
			}()
		}
		// Answered requests are tried once (no retry to race a slow answer);
		// the silent server's are retried once, 50 ms apart.
		retry, tries := "500ms", "1"
		if kind == "silent" {
			retry, tries = "50ms", "2"
		}
		var out, errb bytes.Buffer
		code := run([]string{"udpload", "-dst", conn.LocalAddr().(*net.UDPAddr).AddrPort().String(), "-src", "127.0.0.1",
			"-duration", "300ms", "-interval", "20ms", "-retry", retry, "-tries", tries}, &out, &errb)
		conn.Close()
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if code != 0 || len(lines) < 10 {
			t.Fatalf("%s: exit %d, output %q, stderr %q", kind, code, out.String(), errb.String())
		}
		for i, l := range lines {
			m := loadLine.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("%s: line %q", kind, l)
			}
			seq, _ := strconv.Atoi(m[1])
			tries, _ := strconv.Atoi(m[2])
			answers, _ := strconv.Atoi(m[3])
			twice, _ := strconv.Atoi(m[5])
			var ok bool
			switch kind {
			case "once":
				ok = tries == 1 && answers == 1 && m[4] == "s7" && twice == 0
			case "twice":
				ok = tries == 1 && answers == 2 && m[4] == "dup" && twice == 1
			case "silent":
				ok = tries == 2 && answers == 0 && m[4] == "-" && twice == 0
			}
			if seq != i || !ok {
				t.Errorf("%s: line %d: %q", kind, i, l)
			}
		}
	}
}
