package bgp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	bgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// peer is a test BGP peer on loopback: it accepts one connection at a time,
// answers OPEN and KEEPALIVE, and hands every message it receives to the test.
type peer struct {
	t    *testing.T
	ln   net.Listener
	as   uint32
	hold uint16
	msgs chan *bgp.BGPMessage
	conn chan net.Conn
}

func newPeer(t *testing.T, as uint32, hold uint16) *peer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, ln: ln, as: as, hold: hold, msgs: make(chan *bgp.BGPMessage, 64), conn: make(chan net.Conn, 4)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conn <- c
			go p.serve(c)
		}
	}()
	return p
}

func (p *peer) serve(c net.Conn) {
	defer c.Close()
	open, _ := bgp.NewBGPOpenMessage(uint16(p.as), p.hold, netip.MustParseAddr("192.0.2.254"),
		[]bgp.OptionParameterInterface{bgp.NewOptionParameterCapability([]bgp.ParameterCapabilityInterface{
			bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC), bgp.NewCapMultiProtocol(bgp.RF_IPv6_UC), bgp.NewCapFourOctetASNumber(p.as)})})
	write := func(m *bgp.BGPMessage) {
		b, _ := m.Serialize()
		c.Write(b)
	}
	for {
		m, err := readMessage(c)
		if err != nil {
			return
		}
		switch m.Body.(type) {
		case *bgp.BGPOpen:
			write(open)
			write(bgp.NewBGPKeepAliveMessage())
		}
		p.msgs <- m
	}
}

// next returns the next message that is not a KEEPALIVE.
func (p *peer) next(timeout time.Duration) *bgp.BGPMessage {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-p.msgs:
			if _, ka := m.Body.(*bgp.BGPKeepAlive); ka {
				continue
			}
			return m
		case <-deadline:
			p.t.Fatalf("no message within %s", timeout)
			return nil
		}
	}
}

func (p *peer) port() uint16 { return uint16(p.ln.Addr().(*net.TCPAddr).Port) }

func dialer(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", dst.String())
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func nlris(u *bgp.BGPUpdate) (add, del []netip.Prefix, nh netip.Addr, path []uint32) {
	for _, n := range u.NLRI {
		add = append(add, n.NLRI.(*bgp.IPAddrPrefix).Prefix)
	}
	for _, n := range u.WithdrawnRoutes {
		del = append(del, n.NLRI.(*bgp.IPAddrPrefix).Prefix)
	}
	for _, a := range u.PathAttributes {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			nh = a.Value
		case *bgp.PathAttributeAsPath:
			for _, seg := range a.Value {
				if s, ok := seg.(*bgp.As4PathParam); ok {
					path = append(path, s.AS...)
				}
			}
		case *bgp.PathAttributeMpReachNLRI:
			for _, n := range a.Value {
				add = append(add, n.NLRI.(*bgp.IPAddrPrefix).Prefix)
			}
			nh = a.Nexthop
		case *bgp.PathAttributeMpUnreachNLRI:
			for _, n := range a.Value {
				del = append(del, n.NLRI.(*bgp.IPAddrPrefix).Prefix)
			}
		}
	}
	return add, del, nh, path
}

func TestSpeakerAnnounces(t *testing.T) {
	p := newPeer(t, 65000, 9)
	ghost := netip.MustParsePrefix("203.0.113.10/32")
	ghost2 := netip.MustParsePrefix("203.0.113.20/32")
	v6 := netip.MustParsePrefix("2001:db8:10::1/128")
	cfg := Config{ASN: 4200000010, RouterID: netip.MustParseAddr("198.51.100.1"), HoldTime: 30 * time.Second,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: p.port(), NextHop6: netip.MustParseAddr("2001:db8::1")}}}
	s := New(cfg, dialer, quiet())
	s.Announce([]netip.Prefix{ghost, v6})
	s.Start()

	open, ok := p.next(5 * time.Second).Body.(*bgp.BGPOpen)
	if !ok || open.MyAS != asTrans || open.HoldTime != 30 || open.ID != cfg.RouterID {
		t.Fatalf("first message %+v, want OPEN with AS_TRANS, hold 30, router id", open)
	}
	var got4, got6 bool
	for range 2 {
		u := p.next(5 * time.Second).Body.(*bgp.BGPUpdate)
		add, del, nh, path := nlris(u)
		switch {
		case slices.Equal(add, []netip.Prefix{ghost}):
			got4 = nh == netip.MustParseAddr("127.0.0.1") && slices.Equal(path, []uint32{4200000010}) && del == nil
		case slices.Equal(add, []netip.Prefix{v6}):
			got6 = nh == netip.MustParseAddr("2001:db8::1")
		}
	}
	if !got4 || !got6 {
		t.Fatalf("announcements: IPv4 %v, IPv6 %v", got4, got6)
	}
	// The status follows once the speaker has sent both (the peer may read
	// them first).
	var st []SessionStatus
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if st = s.Status(); len(st) == 1 && len(st[0].Announced) == 2 {
			break
		}
	}
	if len(st) != 1 || st[0].State != "Established" || st[0].HoldTime != 9 || len(st[0].Announced) != 2 {
		t.Errorf("status %+v", st)
	}

	// A change sends the difference only, on the same session.
	s.Announce([]netip.Prefix{ghost2, v6})
	var sawAdd, sawDel bool
	for range 2 {
		add, del, _, _ := nlris(p.next(5 * time.Second).Body.(*bgp.BGPUpdate))
		sawAdd = sawAdd || slices.Equal(add, []netip.Prefix{ghost2})
		sawDel = sawDel || slices.Equal(del, []netip.Prefix{ghost})
		if slices.Contains(add, v6) || slices.Contains(del, v6) {
			t.Errorf("the unchanged prefix was sent again")
		}
	}
	if !sawAdd || !sawDel {
		t.Errorf("change: add %v, withdraw %v", sawAdd, sawDel)
	}
	if n := s.Status()[0].Established; n != 1 {
		t.Errorf("session came up %d times, want once", n)
	}

	// Close withdraws everything and sends Cease.
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	var withdrawn []netip.Prefix
	for {
		m := p.next(5 * time.Second)
		if n, ok := m.Body.(*bgp.BGPNotification); ok {
			if n.ErrorCode != bgp.BGP_ERROR_CEASE || n.ErrorSubcode != bgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN {
				t.Errorf("NOTIFICATION %d/%d, want Cease/administrative shutdown", n.ErrorCode, n.ErrorSubcode)
			}
			break
		}
		_, del, _, _ := nlris(m.Body.(*bgp.BGPUpdate))
		withdrawn = append(withdrawn, del...)
	}
	slices.SortFunc(withdrawn, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if !slices.Equal(withdrawn, []netip.Prefix{ghost2, v6}) {
		t.Errorf("withdrawn on close: %v", withdrawn)
	}
	<-done
}

func TestSpeakerRejectsWrongAS(t *testing.T) {
	p := newPeer(t, 65001, 9)
	s := New(Config{ASN: 65010, RouterID: netip.MustParseAddr("198.51.100.1"), HoldTime: 9 * time.Second,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: p.port()}}}, dialer, quiet())
	s.Start()
	defer s.Close()
	p.next(5 * time.Second) // OPEN
	n, ok := p.next(5 * time.Second).Body.(*bgp.BGPNotification)
	if !ok || n.ErrorCode != bgp.BGP_ERROR_OPEN_MESSAGE_ERROR || n.ErrorSubcode != bgp.BGP_ERROR_SUB_BAD_PEER_AS {
		t.Fatalf("want NOTIFICATION bad peer AS, got %+v", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st := s.Status()[0]; st.Errors > 0 && st.State == "Idle" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("status after a bad AS: %+v", s.Status())
}

// TestSpeakerHoldTimer: a peer that falls silent is declared dead after the
// negotiated hold time.
func TestSpeakerHoldTimer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *bgp.BGPMessage, 16)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		readMessage(c) // OPEN
		open, _ := bgp.NewBGPOpenMessage(65000, 3, netip.MustParseAddr("192.0.2.254"), nil)
		b, _ := open.Serialize()
		c.Write(b)
		b, _ = bgp.NewBGPKeepAliveMessage().Serialize()
		c.Write(b)
		for {
			m, err := readMessage(c)
			if err != nil {
				return
			}
			got <- m
		}
	}()
	s := New(Config{ASN: 65010, RouterID: netip.MustParseAddr("198.51.100.1"), HoldTime: 90 * time.Second,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: uint16(ln.Addr().(*net.TCPAddr).Port)}}}, dialer, quiet())
	start := time.Now()
	s.Start()
	defer s.Close()
	for {
		select {
		case m := <-got:
			if n, ok := m.Body.(*bgp.BGPNotification); ok {
				if n.ErrorCode != bgp.BGP_ERROR_HOLD_TIMER_EXPIRED {
					t.Fatalf("NOTIFICATION %d/%d, want hold timer expired", n.ErrorCode, n.ErrorSubcode)
				}
				if el := time.Since(start); el < 3*time.Second || el > 6*time.Second {
					t.Errorf("hold timer expired after %s, want about 3 s", el)
				}
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no hold timer expiry")
		}
	}
}

// FuzzDecode: whatever a peer sends, decode either rejects it or returns a
// message whose header it checked; it never reads past the stated length.
func FuzzDecode(f *testing.F) {
	for _, m := range []*bgp.BGPMessage{bgp.NewBGPKeepAliveMessage(), bgp.NewBGPNotificationMessage(6, 2, nil), openMessage(Config{ASN: 65010, RouterID: netip.MustParseAddr("192.0.2.1"), HoldTime: 9 * time.Second})} {
		b, _ := m.Serialize()
		f.Add(b)
	}
	for _, u := range updates([]netip.Prefix{netip.MustParsePrefix("203.0.113.10/32")}, nil, Config{ASN: 1}, Neighbor{ASN: 2}, netip.MustParseAddr("198.51.100.1"), peerInfo{v4: true, fourOctet: true}) {
		b, _ := u.Serialize()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < bgp.BGP_HEADER_LENGTH {
			return
		}
		r := bytes.NewReader(data[bgp.BGP_HEADER_LENGTH:])
		m, err := decode(data[:bgp.BGP_HEADER_LENGTH], r)
		if err != nil {
			return
		}
		n := int(data[16])<<8 | int(data[17])
		if n < bgp.BGP_HEADER_LENGTH || n > MaxMessage || !bytes.Equal(data[:16], bytes.Repeat([]byte{0xff}, 16)) {
			t.Fatalf("accepted a message with length %d / bad marker", n)
		}
		if consumed := len(data) - bgp.BGP_HEADER_LENGTH - r.Len(); consumed != n-bgp.BGP_HEADER_LENGTH {
			t.Fatalf("read %d body bytes, the header says %d", consumed, n-bgp.BGP_HEADER_LENGTH)
		}
		if m.Header.Type != data[18] {
			t.Fatalf("type %d, header says %d", m.Header.Type, data[18])
		}
	})
}
