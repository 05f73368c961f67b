package arp

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"

	"github.com/ghostrouter/ghostrouter/test/kit"
)

func arpFrame(op uint16, sender, target netip.Addr) []byte {
	mac := []byte{2, 0, 0, 0, 0, 7}
	return kit.Ethernet(kit.Broadcast, mac, kit.TypeARP, kit.ARP(op, mac, sender, nil, target))
}

func TestGuard(t *testing.T) {
	ghost, second := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("10.0.0.250")
	me, server := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.11")
	g := NewGuard(map[netip.Addr]Role{
		ghost:                              {KindGhost, "web"},
		second:                             {KindSecondGhost, "web"},
		netip.MustParseAddr("2001:db8::1"): {KindGhost, "web6"},
	}, nil)
	for _, tc := range []struct {
		name  string
		frame []byte
		drop  bool
	}{
		{"gratuitous for the ghost", arpFrame(opRequest, ghost, ghost), true},
		{"reply from the ghost", arpFrame(opReply, ghost, me), true},
		{"request from the ghost", arpFrame(opRequest, ghost, me), true},
		{"reply claiming the second ghost", arpFrame(opReply, second, me), true},
		{"a server's own request", arpFrame(opRequest, server, me), false},
		{"a request for the ghost", arpFrame(opRequest, server, ghost), false},
		{"truncated", arpFrame(opReply, ghost, me)[:30], false},
	} {
		want := stage.Pass
		if tc.drop {
			want = stage.Drop(stage.AddressClaim)
		}
		if got := g.Inbound(nil, tc.frame); got != want {
			t.Errorf("%s: verdict %v, want %v", tc.name, got, want)
		}
	}
	s := g.Stats()
	if s.Gratuitous.Load() != 1 || s.Replies.Load() != 2 || s.Requests.Load() != 1 || s.Total() != 4 {
		t.Fatalf("counters: gratuitous %d replies %d requests %d", s.Gratuitous.Load(), s.Replies.Load(), s.Requests.Load())
	}
	g.Protect(nil)
	if g.Inbound(nil, arpFrame(opReply, ghost, me)).Taken() {
		t.Fatal("a claim dropped after the protected set was emptied")
	}
}

// FuzzGuard checks every outcome against the guard's contract, worked out
// here from the frame: consumed exactly when it is an Ethernet/IPv4 ARP
// packet whose sender address is protected; then exactly one counter rises,
// the one for its kind (gratuitous when sender == target, else reply or
// request by the opcode), and the address's conflict record gains one claim
// by the sender MAC; otherwise nothing is counted; the frame is never
// changed.
func FuzzGuard(f *testing.F) {
	ghost, second := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("10.0.0.250")
	me := netip.MustParseAddr("10.0.0.1")
	f.Add(arpFrame(opReply, ghost, me))
	f.Add(arpFrame(opRequest, ghost, ghost))
	f.Add(arpFrame(opRequest, second, me))
	f.Add(arpFrame(opRequest, me, ghost))       // a request for the ghost: not a claim
	f.Add(arpFrame(opReply, ghost, me)[:41])    // one byte short
	f.Add(append(arpFrame(3, ghost, me), 0, 0)) // an odd opcode, padded
	protected := map[[4]byte]bool{ghost.As4(): true, second.As4(): true}
	g := NewGuard(map[netip.Addr]Role{ghost: {KindGhost, "web"}, second: {KindSecondGhost, "web"}}, nil)
	claims := func(a [4]byte) (int, string) {
		for _, c := range g.Conflicts() {
			if c.Address == netip.AddrFrom4(a) {
				return int(c.Claims), c.MAC
			}
		}
		return 0, ""
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		s := g.Stats()
		req, rep, grat := s.Requests.Load(), s.Replies.Load(), s.Gratuitous.Load()
		claim := len(b) >= 42 && b[12] == 0x08 && b[13] == 0x06 &&
			bytes.Equal(b[14:20], []byte{0, 1, 0x08, 0, 6, 4}) && protected[[4]byte(b[28:32])]
		var sender [4]byte
		before := 0
		if claim {
			sender = [4]byte(b[28:32])
			before, _ = claims(sender)
		}
		got := g.Inbound(nil, in).Taken()
		if got != claim {
			t.Fatalf("consumed %v, want %v", got, claim)
		}
		if !bytes.Equal(in, b) {
			t.Fatal("the guard changed the frame")
		}
		dReq, dRep, dGrat := s.Requests.Load()-req, s.Replies.Load()-rep, s.Gratuitous.Load()-grat
		if !claim {
			if dReq+dRep+dGrat != 0 {
				t.Fatalf("a frame that is no claim was counted (%d %d %d)", dReq, dRep, dGrat)
			}
			return
		}
		op := binary.BigEndian.Uint16(b[20:22])
		want := [3]uint64{}
		switch {
		case sender == [4]byte(b[38:42]):
			want[2] = 1
		case op == opReply:
			want[1] = 1
		default:
			want[0] = 1
		}
		if [3]uint64{dReq, dRep, dGrat} != want {
			t.Fatalf("counted requests/replies/gratuitous %d/%d/%d, want %v (op %d)", dReq, dRep, dGrat, want, op)
		}
		after, mac := claims(sender)
		if after != before+1 || mac != net.HardwareAddr(b[22:28]).String() {
			t.Fatalf("conflict record: %d claims by %s, want %d by %s", after, mac, before+1, net.HardwareAddr(b[22:28]))
		}
	})
}

func TestConflictsRecordedAndKeptAcrossProtect(t *testing.T) {
	ghost, second := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("10.0.0.250")
	me := netip.MustParseAddr("10.0.0.1")
	roles := map[netip.Addr]Role{ghost: {KindGhost, "web"}, second: {KindSecondGhost, "web"}, me: {KindInterface, "lan0"}}
	var logged strings.Builder
	g := NewGuard(roles, slog.New(slog.NewTextHandler(&logged, nil)))
	if c := g.Conflicts(); len(c) != 0 {
		t.Fatalf("conflicts before any claim: %v", c)
	}
	before := time.Now()
	for range 3 {
		g.Inbound(nil, arpFrame(opReply, second, me)).Taken()
	}
	g.Inbound(nil, arpFrame(opRequest, me, netip.MustParseAddr("10.0.0.7"))).Taken()
	c := g.Conflicts()
	if len(c) != 2 {
		t.Fatalf("conflicts %+v, want the second ghost and the interface address", c)
	}
	if c[0].Address != me || c[0].Claims != 1 || c[0].Role != "address of interface lan0" {
		t.Fatalf("first conflict %+v", c[0])
	}
	sg := c[1]
	if sg.Address != second || sg.Claims != 3 || sg.MAC != "02:00:00:00:00:07" || sg.Role != "second ghost of cluster web" ||
		sg.First.Before(before) || sg.Last.Before(sg.First) || !strings.Contains(sg.Hint, "free LAN address") {
		t.Fatalf("second ghost conflict %+v", sg)
	}
	// Three claims of one address by one MAC within a second: one log line each address.
	if n := strings.Count(logged.String(), "address conflict"); n != 2 {
		t.Fatalf("%d log lines, want 2 (one per address, rate-limited):\n%s", n, logged.String())
	}
	if !strings.Contains(logged.String(), "address=10.0.0.250") || !strings.Contains(logged.String(), "mac=02:00:00:00:00:07") {
		t.Fatalf("log does not name the address and the claimer:\n%s", logged.String())
	}
	// A reload keeping the address with its role keeps the record; a new role starts afresh.
	g.Protect(map[netip.Addr]Role{second: {KindSecondGhost, "web"}, me: {KindInterface, "lan1"}})
	c = g.Conflicts()
	if len(c) != 1 || c[0].Address != second || c[0].Claims != 3 {
		t.Fatalf("after reload: %+v, want the second ghost's record kept and the renamed interface's dropped", c)
	}
}

func TestAppendProbe(t *testing.T) {
	target := netip.MustParseAddr("10.0.0.250")
	var buf [ProbeSize]byte
	f := AppendProbe(buf[:0], [6]byte{2, 0, 0, 0, 0, 1}, target)
	if len(f) != 60 || f[0] != 0xff || f[12] != 0x08 || f[13] != 0x06 {
		t.Fatalf("probe frame % x", f)
	}
	p := f[ethHeader:]
	if binary.BigEndian.Uint16(p[6:8]) != opRequest || [4]byte(p[14:18]) != [4]byte{} || netip.AddrFrom4([4]byte(p[24:28])) != target ||
		[6]byte(p[8:14]) != [6]byte{2, 0, 0, 0, 0, 1} {
		t.Fatalf("probe ARP payload % x: want a request from 0.0.0.0 for %s (RFC 5227)", p[:28], target)
	}
	// A probe names nobody as sender: the guard never takes one for a claim.
	g := NewGuard(map[netip.Addr]Role{target: {KindSecondGhost, "web"}}, nil)
	if g.Inbound(nil, f).Taken() {
		t.Fatal("the guard dropped a probe")
	}
}

func TestOwnLoopedBackARPIsNoClaim(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	me := netip.MustParseAddr("10.0.0.1")
	// arpFrame's sender MAC is 02:00:00:00:00:07: make it the endpoint's own.
	ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: "lan0", Files: []*os.File{null}, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	g := NewGuard(map[netip.Addr]Role{me: {KindInterface, "lan0"}}, nil)
	if g.Inbound(ep, arpFrame(opRequest, me, me)).Taken() || len(g.Conflicts()) != 0 {
		t.Fatal("the appliance's own gratuitous ARP, looped back, was taken for a claim")
	}
	other, err := tap.NewEndpoint(tap.EndpointConfig{Name: "lan1", Files: []*os.File{null}, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	if !g.Inbound(other, arpFrame(opRequest, me, me)).Taken() || len(g.Conflicts()) != 1 || g.Conflicts()[0].Interface != "lan1" {
		t.Fatalf("a claim from another MAC: conflicts %+v", g.Conflicts())
	}
}
