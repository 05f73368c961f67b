package main

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"testing"
)

var streamLine = regexp.MustCompile(`^127\.0\.0\.1 sent (\d+) answered (\d+) dup (\d+) lost (\d+) foreign (\d+) servers (\S*)\n$`)

// udpstream over loopback: against the real serveUDP every request is
// answered once by the one server; against a server that answers twice,
// every answer after the first is counted as a duplicate.
func TestUDPStreamCounts(t *testing.T) {
	for _, twice := range []bool{false, true} {
		conn, err := listenUDPPktinfo("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if twice {
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := conn.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					seq, _ := seqOf(buf[:n])
					for range 2 {
						conn.WriteToUDPAddrPort([]byte(fmt.Sprintf("dup 127.0.0.1 seq %d\n", seq)), from)
					}
				}
			}()
		} else {
			go serveUDP(conn, "s7", &bytes.Buffer{})
		}
		var out, errb bytes.Buffer
		code := run([]string{"udpstream", "-dst", conn.LocalAddr().(*net.UDPAddr).AddrPort().String(), "-src", "127.0.0.1",
			"-duration", "300ms", "-interval", "20ms", "-timeout", "300ms"}, &out, &errb)
		conn.Close()
		m := streamLine.FindStringSubmatch(out.String())
		if code != 0 || m == nil {
			t.Fatalf("twice=%v: exit %d, output %q, stderr %q", twice, code, out.String(), errb.String())
		}
		sent, _ := strconv.Atoi(m[1])
		answered, _ := strconv.Atoi(m[2])
		dup, _ := strconv.Atoi(m[3])
		if sent < 10 || answered != sent {
			t.Errorf("twice=%v: %s", twice, out.String())
		}
		if twice && (dup != sent || m[6] != "dup="+strconv.Itoa(2*sent)) || !twice && (dup != 0 || m[6] != "s7="+m[1]) {
			t.Errorf("twice=%v: %s", twice, out.String())
		}
	}
}
