package main

import (
	"bytes"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// Tier 1: argument handling and control-message building, no sockets. The peer's traffic
// paths are exercised in namespaces by test/harness's self-test.

func TestParseSources(t *testing.T) {
	for _, tc := range []struct {
		list, rng string
		want      []string // nil: an error is expected
	}{
		{"198.51.100.10, 198.51.100.12", "", []string{"198.51.100.10", "198.51.100.12"}},
		{"", "10.1.0.254-10.1.1.1", []string{"10.1.0.254", "10.1.0.255", "10.1.1.0", "10.1.1.1"}},
		{"", "2001:db8::ffff-2001:db8::1:0", []string{"2001:db8::ffff", "2001:db8::1:0"}},
		{"", "203.0.113.7-203.0.113.7", []string{"203.0.113.7"}},
		{"", "", nil},
		{"10.0.0.1", "10.0.0.1-10.0.0.2", nil},
		{"10.0.0.300", "", nil},
		{"", "10.0.0.2-10.0.0.1", nil},
		{"", "10.0.0.1-2001:db8::1", nil},
		{"", "10.0.0.0-10.1.0.0", nil}, // more than maxSources
		{"", "10.0.0.1", nil},
	} {
		got, err := parseSources(tc.list, tc.rng)
		var gotS []string
		for _, a := range got {
			gotS = append(gotS, a.String())
		}
		if tc.want == nil {
			if err == nil {
				t.Errorf("parseSources(%q, %q) = %v, want an error", tc.list, tc.rng, gotS)
			}
			continue
		}
		if err != nil || strings.Join(gotS, ",") != strings.Join(tc.want, ",") {
			t.Errorf("parseSources(%q, %q) = %v, %v; want %v", tc.list, tc.rng, gotS, err, tc.want)
		}
	}
}

func TestUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"bogus"}, 2},
		{[]string{"help"}, 0},
		{[]string{"serve"}, 2},
		{[]string{"serve", "-name", "s0"}, 2},
		{[]string{"serve", "-name", "s0", "-http", "nonsense"}, 2},
		{[]string{"http", "-src", "10.0.0.1"}, 2},
		{[]string{"http", "-url", "http://10.0.0.11/", "-src", "10.0.0.1", "-count", "0"}, 2},
		{[]string{"http", "-url", "http://10.0.0.11/", "-src", "10.0.0.1", "-timeout", "2h"}, 2},
		{[]string{"udp", "-dst", "10.0.0.11", "-src", "10.0.0.1"}, 2},
		{[]string{"udp", "-dst", "10.0.0.11:9", "-src", "10.0.0.1", "extra"}, 2},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != tc.code {
			t.Errorf("peer %q: exit %d, want %d (stderr %q)", tc.args, code, tc.code, errb.String())
		}
	}
}

// TestUDPFamilyMismatch: a per-request failure is a FAIL line and exit 0, not a usage error.
func TestUDPFamilyMismatch(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"udp", "-dst", "[2001:db8::1]:9000", "-src", "198.51.100.10,198.51.100.11"}, &out, &errb)
	want := "198.51.100.10 FAIL source and destination are of different families\n" +
		"198.51.100.11 FAIL source and destination are of different families\n"
	if code != 0 || out.String() != want {
		t.Errorf("peer udp, v6 dst, v4 sources: exit %d, output %q; want 0, %q", code, out.String(), want)
	}
}

// TestReplyControl: the IP_PKTINFO / IPV6_PKTINFO received becomes the one sent back, with
// the received local address as the reply's source.
func TestReplyControl(t *testing.T) {
	in4 := syscall.Inet4Pktinfo{Ifindex: 3, Spec_dst: [4]byte{203, 0, 113, 10}, Addr: [4]byte{203, 0, 113, 10}}
	oob := cmsg(syscall.IPPROTO_IP, syscall.IP_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&in4)), syscall.SizeofInet4Pktinfo))
	msgs, err := syscall.ParseSocketControlMessage(replyControl(oob))
	if err != nil || len(msgs) != 1 || msgs[0].Header.Type != syscall.IP_PKTINFO {
		t.Fatalf("replyControl(IP_PKTINFO) parses as %v, %v", msgs, err)
	}
	got := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&msgs[0].Data[0]))
	if got.Spec_dst != in4.Spec_dst || got.Ifindex != 0 {
		t.Errorf("reply pktinfo %+v, want spec_dst %v and ifindex 0", *got, in4.Spec_dst)
	}

	in6 := syscall.Inet6Pktinfo{Addr: netip.MustParseAddr("2001:db8::10").As16(), Ifindex: 3}
	oob = cmsg(syscall.IPPROTO_IPV6, syscall.IPV6_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&in6)), syscall.SizeofInet6Pktinfo))
	msgs, err = syscall.ParseSocketControlMessage(replyControl(oob))
	if err != nil || len(msgs) != 1 || msgs[0].Header.Type != syscall.IPV6_PKTINFO {
		t.Fatalf("replyControl(IPV6_PKTINFO) parses as %v, %v", msgs, err)
	}
	got6 := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&msgs[0].Data[0]))
	if got6.Addr != in6.Addr || got6.Ifindex != 0 {
		t.Errorf("reply pktinfo6 %+v, want addr %v and ifindex 0", *got6, in6.Addr)
	}

	if c := replyControl(nil); c != nil {
		t.Errorf("replyControl(nil) = %v, want nil", c)
	}
	if c := replyControl([]byte{1, 2, 3}); c != nil {
		t.Errorf("replyControl(garbage) = %v, want nil", c)
	}
}

func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, syscall.CmsgSpace(len(data)))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(syscall.CmsgLen(len(data)))
	copy(b[syscall.CmsgLen(0):], data)
	return b
}

// TestRequestToken: only udpload's "seq N try T" requests are echoed in the
// answer; the plain client's request keeps the plain answer.
func TestRequestToken(t *testing.T) {
	for in, want := range map[string]string{
		"seq 12 try 3\n":        "seq 12 try 3",
		"seq 0 try 1":           "seq 0 try 1",
		"peer 198.51.100.100\n": "",
		"seq x try 1":           "",
		"seq 1 try 300":         "",
		"seq 1 try 1 extra":     "",
	} {
		got, ok := requestToken([]byte(in))
		if got != want || ok != (want != "") {
			t.Errorf("requestToken(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}
