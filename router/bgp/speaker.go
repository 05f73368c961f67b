package bgp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	bgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Port is BGP's TCP port.
const Port = 179

// MaxMessage is the largest BGP message (RFC 4271 4.1; no extended messages).
const MaxMessage = 4096

// asTrans stands for a four-octet AS in two-octet fields (RFC 6793).
const asTrans = 23456

// Config is what a Speaker announces and to whom.
type Config struct {
	ASN      uint32
	RouterID netip.Addr    // IPv4
	HoldTime time.Duration // 0 or at least 3 s
	// Neighbors are the peers, by address.
	Neighbors []Neighbor
}

// Neighbor is one peer.
type Neighbor struct {
	Address netip.Addr
	ASN     uint32
	// NextHop6 is the appliance's IPv6 address on the link to this peer,
	// the next hop of IPv6 prefixes; without it IPv6 prefixes are not sent.
	NextHop6 netip.Addr
	// Port is the peer's TCP port; 0 means 179.
	Port uint16
}

// Dialer opens a TCP connection from the appliance to dst.
type Dialer func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)

// State is a session's state (RFC 4271 8.2.2; Idle covers Connect and
// Active, since the session only ever dials).
type State int

// The session states.
const (
	Idle State = iota
	OpenSent
	OpenConfirm
	Established
)

func (s State) String() string {
	switch s {
	case OpenSent:
		return "OpenSent"
	case OpenConfirm:
		return "OpenConfirm"
	case Established:
		return "Established"
	}
	return "Idle"
}

// Speaker keeps the sessions to every neighbor and what they announce. Its
// methods are safe for concurrent use.
type Speaker struct {
	dial Dialer
	log  *slog.Logger

	mu       sync.Mutex
	cfg      Config
	prefixes []netip.Prefix // the set to announce, sorted
	sessions map[netip.Addr]*session
	closed   bool
	wg       sync.WaitGroup
}

// New returns a Speaker; Start begins its sessions.
func New(cfg Config, dial Dialer, log *slog.Logger) *Speaker {
	return &Speaker{dial: dial, log: log, cfg: cfg, sessions: map[netip.Addr]*session{}}
}

// Start opens a session to every neighbor.
func (s *Speaker) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.cfg.Neighbors {
		s.startLocked(n)
	}
}

func (s *Speaker) startLocked(n Neighbor) {
	ctx, cancel := context.WithCancel(context.Background())
	ss := &session{sp: s, n: n, cancel: cancel, changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	s.sessions[n.Address] = ss
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ss.run(ctx)
	}()
}

// Announce sets the prefixes announced to every neighbor (/32 and /128
// ghosts). Established sessions send the difference at once.
func (s *Speaker) Announce(prefixes []netip.Prefix) {
	p := slices.Clone(prefixes)
	slices.SortFunc(p, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	p = slices.Compact(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Equal(p, s.prefixes) {
		return
	}
	s.prefixes = p
	for _, ss := range s.sessions {
		ss.poke()
	}
}

// Prefixes returns the set to announce.
func (s *Speaker) Prefixes() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.prefixes)
}

// Reconfigure applies a new configuration. Sessions to neighbors whose
// settings did not change stay up; others are closed (with Cease) or
// opened. A change of the AS, router ID or hold time restarts every session,
// since each is part of OPEN.
func (s *Speaker) Reconfigure(cfg Config) {
	s.mu.Lock()
	global := cfg.ASN != s.cfg.ASN || cfg.RouterID != s.cfg.RouterID || cfg.HoldTime != s.cfg.HoldTime
	s.cfg.ASN, s.cfg.RouterID, s.cfg.HoldTime = cfg.ASN, cfg.RouterID, cfg.HoldTime
	want := map[netip.Addr]Neighbor{}
	for _, n := range cfg.Neighbors {
		want[n.Address] = n
	}
	var stopping []*session
	for a, ss := range s.sessions {
		if n, ok := want[a]; !ok || n != ss.n || global {
			stopping = append(stopping, ss)
			delete(s.sessions, a)
		}
	}
	s.cfg.Neighbors = slices.Clone(cfg.Neighbors)
	s.mu.Unlock()
	for _, ss := range stopping {
		ss.shutdown()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, n := range cfg.Neighbors {
		if _, ok := s.sessions[n.Address]; !ok {
			s.startLocked(n)
		}
	}
}

// Close withdraws every prefix, sends Cease to every peer and waits for the
// sessions to end (at most a few seconds).
func (s *Speaker) Close() {
	s.mu.Lock()
	s.closed = true
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.sessions = map[netip.Addr]*session{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, ss := range all {
		wg.Go(ss.shutdown)
	}
	wg.Wait()
	s.wg.Wait()
}

// SessionStatus is one session as `status` shows it.
type SessionStatus struct {
	Neighbor    string   `json:"neighbor"`
	PeerASN     uint32   `json:"peer_asn"`
	State       string   `json:"state"`
	Since       string   `json:"since,omitempty"` // when Established was reached
	UptimeSec   float64  `json:"uptime_seconds"`
	HoldTime    float64  `json:"hold_time_seconds,omitempty"` // negotiated
	LocalAddr   string   `json:"local_address,omitempty"`
	Announced   []string `json:"announced"`
	Established uint64   `json:"established"` // times the session came up
	MsgIn       uint64   `json:"messages_in"`
	MsgOut      uint64   `json:"messages_out"`
	Updates     uint64   `json:"updates_sent"`
	Errors      uint64   `json:"errors"`
	LastError   string   `json:"last_error,omitempty"`
}

// Status reports every session, by neighbor address.
func (s *Speaker) Status() []SessionStatus {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b *session) int { return a.n.Address.Compare(b.n.Address) })
	out := make([]SessionStatus, 0, len(all))
	for _, ss := range all {
		out = append(out, ss.status())
	}
	return out
}

// session is one neighbor's session; run owns the connection.
type session struct {
	sp      *Speaker
	n       Neighbor
	cancel  context.CancelFunc
	changed chan struct{} // the announced set changed
	stop    chan struct{} // closed by shutdown
	once    sync.Once
	done    chan struct{} // closed when run returns

	mu        sync.Mutex
	state     State
	since     time.Time
	hold      time.Duration
	local     netip.Addr
	announced []netip.Prefix
	ups       uint64
	in, out   uint64
	updates   uint64
	errs      uint64
	lastErr   string
}

func (ss *session) poke() {
	select {
	case ss.changed <- struct{}{}:
	default:
	}
}

// shutdown asks run to withdraw, send Cease and stop, and waits for it.
func (ss *session) shutdown() {
	ss.once.Do(func() { close(ss.stop) })
	select {
	case <-ss.done:
	case <-time.After(3 * time.Second):
		ss.cancel()
		<-ss.done
	}
}

func (ss *session) status() SessionStatus {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := SessionStatus{
		Neighbor: ss.n.Address.String(), PeerASN: ss.n.ASN, State: ss.state.String(),
		Established: ss.ups, MsgIn: ss.in, MsgOut: ss.out, Updates: ss.updates, Errors: ss.errs,
		LastError: ss.lastErr, Announced: []string{},
	}
	if ss.state == Established {
		st.Since = ss.since.UTC().Format(time.RFC3339)
		st.UptimeSec = time.Since(ss.since).Seconds()
		st.HoldTime = ss.hold.Seconds()
		st.LocalAddr = ss.local.String()
	}
	for _, p := range ss.announced {
		st.Announced = append(st.Announced, p.String())
	}
	return st
}

func (ss *session) setState(s State) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.state = s
	if s == Established {
		ss.since = time.Now()
		ss.ups++
	}
	if s != Established {
		ss.announced = nil
	}
}

func (ss *session) fail(err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.errs++
	ss.lastErr = err.Error()
}

// Back-off bounds between attempts.
const (
	minBackoff  = time.Second
	maxBackoff  = 10 * time.Second
	dialTimeout = 5 * time.Second
)

func (ss *session) run(ctx context.Context) {
	defer close(ss.done)
	log := ss.sp.log.With("neighbor", ss.n.Address)
	backoff := minBackoff
	for {
		select {
		case <-ss.stop:
			return
		default:
		}
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		port := ss.n.Port
		if port == 0 {
			port = Port
		}
		conn, err := ss.sp.dial(dctx, netip.AddrPortFrom(ss.n.Address, port))
		cancel()
		if err == nil {
			var wasUp bool
			wasUp, err = ss.speak(conn, log)
			conn.Close()
			if wasUp {
				backoff = minBackoff
			}
		}
		ss.setState(Idle)
		if err == nil { // a clean stop
			return
		}
		ss.fail(err)
		log.Warn("bgp session down", "err", err, "retry_in", backoff)
		select {
		case <-ss.stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// errStop ends speak cleanly.
var errStop = errors.New("stopped")

// speak runs one connection through OPEN to Established and on, until an
// error or a stop. wasUp reports whether it reached Established. A nil
// error means the session was stopped by shutdown.
func (ss *session) speak(conn net.Conn, log *slog.Logger) (wasUp bool, err error) {
	sp := ss.sp
	sp.mu.Lock()
	cfg := sp.cfg
	sp.mu.Unlock()
	w := &writer{conn: conn, ss: ss}
	if err := w.send(openMessage(cfg)); err != nil {
		return false, err
	}
	ss.setState(OpenSent)

	msgs := make(chan *bgp.BGPMessage)
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	defer close(readDone)
	go func() {
		for {
			m, err := readMessage(conn)
			if err != nil {
				readErr <- err
				return
			}
			ss.mu.Lock()
			ss.in++
			ss.mu.Unlock()
			select {
			case msgs <- m:
			case <-readDone:
				return
			}
		}
	}()

	// OPEN, then KEEPALIVE, within the hold time we offered (or 90 s).
	setup := cfg.HoldTime
	if setup == 0 {
		setup = 90 * time.Second
	}
	deadline := time.NewTimer(setup)
	defer deadline.Stop()
	var peer peerInfo
	for state := OpenSent; state != Established; {
		select {
		case <-ss.stop:
			w.send(bgp.NewBGPNotificationMessage(bgp.BGP_ERROR_CEASE, bgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN, nil))
			return false, nil
		case err := <-readErr:
			return false, err
		case <-deadline.C:
			w.send(bgp.NewBGPNotificationMessage(bgp.BGP_ERROR_HOLD_TIMER_EXPIRED, 0, nil))
			return false, fmt.Errorf("bgp: no OPEN and KEEPALIVE within %s", setup)
		case m := <-msgs:
			switch body := m.Body.(type) {
			case *bgp.BGPOpen:
				if state != OpenSent {
					return false, ss.protocolError(w, bgp.BGP_ERROR_FSM_ERROR, 0, "a second OPEN")
				}
				p, code, sub, err := checkOpen(body, ss.n.ASN, cfg.RouterID)
				if err != nil {
					w.send(bgp.NewBGPNotificationMessage(code, sub, nil))
					return false, err
				}
				peer = p
				if err := w.send(bgp.NewBGPKeepAliveMessage()); err != nil {
					return false, err
				}
				state = OpenConfirm
				ss.setState(OpenConfirm)
			case *bgp.BGPKeepAlive:
				if state != OpenConfirm {
					return false, ss.protocolError(w, bgp.BGP_ERROR_FSM_ERROR, 0, "KEEPALIVE before OPEN")
				}
				state = Established
			case *bgp.BGPNotification:
				return false, fmt.Errorf("bgp: peer sent NOTIFICATION %d/%d", body.ErrorCode, body.ErrorSubcode)
			default:
				return false, ss.protocolError(w, bgp.BGP_ERROR_FSM_ERROR, 0, "UPDATE before Established")
			}
		}
	}

	hold := min(cfg.HoldTime, peer.hold)
	if cfg.HoldTime == 0 || peer.hold == 0 {
		hold = 0
	}
	local := netip.Addr{}
	if ta, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		local, _ = netip.AddrFromSlice(ta.IP)
		local = local.Unmap()
	}
	ss.mu.Lock()
	ss.hold, ss.local = hold, local
	ss.mu.Unlock()
	ss.setState(Established)
	log.Info("bgp session established", "peer_as", ss.n.ASN, "hold", hold, "local", local)

	// Established: keepalives, hold timer, announcements.
	var keepalive, holdTimer <-chan time.Time
	resetHold := func() {}
	if hold > 0 {
		kt := time.NewTicker(hold / 3)
		defer kt.Stop()
		keepalive = kt.C
		ht := time.NewTimer(hold)
		defer ht.Stop()
		holdTimer = ht.C
		resetHold = func() { ht.Reset(hold) }
	}
	var sent []netip.Prefix
	resync := func() error {
		want := ss.sp.Prefixes()
		add, del := diff(sent, want)
		for _, m := range updates(add, del, cfg, ss.n, local, peer) {
			if err := w.send(m); err != nil {
				return err
			}
			ss.mu.Lock()
			ss.updates++
			ss.mu.Unlock()
		}
		sent = want
		ss.mu.Lock()
		ss.announced = slices.Clone(sent)
		ss.mu.Unlock()
		return nil
	}
	if err := resync(); err != nil {
		return true, err
	}
	for {
		select {
		case <-ss.stop:
			if len(sent) > 0 {
				for _, m := range updates(nil, sent, cfg, ss.n, local, peer) {
					w.send(m)
				}
			}
			w.send(bgp.NewBGPNotificationMessage(bgp.BGP_ERROR_CEASE, bgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN, nil))
			log.Info("bgp session closed", "reason", "shutdown")
			return true, nil
		case <-ss.changed:
			if err := resync(); err != nil {
				return true, err
			}
		case <-keepalive:
			if err := w.send(bgp.NewBGPKeepAliveMessage()); err != nil {
				return true, err
			}
		case <-holdTimer:
			w.send(bgp.NewBGPNotificationMessage(bgp.BGP_ERROR_HOLD_TIMER_EXPIRED, 0, nil))
			return true, fmt.Errorf("bgp: hold timer expired (%s)", hold)
		case err := <-readErr:
			return true, err
		case m := <-msgs:
			resetHold()
			switch body := m.Body.(type) {
			case *bgp.BGPKeepAlive, *bgp.BGPUpdate, *bgp.BGPRouteRefresh:
				// Routes offered to us are not used: this speaker only announces.
			case *bgp.BGPNotification:
				return true, fmt.Errorf("bgp: peer sent NOTIFICATION %d/%d", body.ErrorCode, body.ErrorSubcode)
			default:
				return true, ss.protocolError(w, bgp.BGP_ERROR_FSM_ERROR, 0, "OPEN while Established")
			}
		}
	}
}

func (ss *session) protocolError(w *writer, code, sub uint8, what string) error {
	w.send(bgp.NewBGPNotificationMessage(code, sub, nil))
	return fmt.Errorf("bgp: protocol error: %s", what)
}

// writer sends messages with a deadline and counts them.
type writer struct {
	conn net.Conn
	ss   *session
}

const writeTimeout = 5 * time.Second

func (w *writer) send(m *bgp.BGPMessage) error {
	b, err := m.Serialize()
	if err != nil {
		return fmt.Errorf("bgp: encode: %w", err)
	}
	w.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := w.conn.Write(b); err != nil {
		return fmt.Errorf("bgp: send: %w", err)
	}
	w.ss.mu.Lock()
	w.ss.out++
	w.ss.mu.Unlock()
	return nil
}

// readMessage reads one message, bounded by MaxMessage, and decodes it.
func readMessage(r io.Reader) (*bgp.BGPMessage, error) {
	var hdr [bgp.BGP_HEADER_LENGTH]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("bgp: read: %w", err)
	}
	return decode(hdr[:], r)
}

// decode checks a header and reads and decodes the rest of its message.
func decode(hdr []byte, r io.Reader) (*bgp.BGPMessage, error) {
	for _, b := range hdr[:16] {
		if b != 0xff {
			return nil, errors.New("bgp: bad marker")
		}
	}
	n := int(binary.BigEndian.Uint16(hdr[16:18]))
	if n < bgp.BGP_HEADER_LENGTH || n > MaxMessage {
		return nil, fmt.Errorf("bgp: bad message length %d", n)
	}
	buf := make([]byte, n)
	copy(buf, hdr)
	if _, err := io.ReadFull(r, buf[bgp.BGP_HEADER_LENGTH:]); err != nil {
		return nil, fmt.Errorf("bgp: read: %w", err)
	}
	m, err := bgp.ParseBGPMessage(buf)
	if err != nil {
		return nil, fmt.Errorf("bgp: decode: %w", err)
	}
	return m, nil
}

// peerInfo is what the peer's OPEN said.
type peerInfo struct {
	hold      time.Duration
	fourOctet bool
	v4, v6    bool // multiprotocol unicast offered (v4 assumed without capabilities)
}

// checkOpen validates the peer's OPEN (RFC 4271 6.2) and returns what it
// offered, or the NOTIFICATION code and subcode to answer with.
func checkOpen(o *bgp.BGPOpen, wantAS uint32, ourID netip.Addr) (p peerInfo, code, sub uint8, err error) {
	if o.Version != 4 {
		return p, bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_UNSUPPORTED_VERSION_NUMBER, fmt.Errorf("bgp: peer speaks version %d", o.Version)
	}
	if o.HoldTime == 1 || o.HoldTime == 2 {
		return p, bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_UNACCEPTABLE_HOLD_TIME, fmt.Errorf("bgp: peer hold time %d s", o.HoldTime)
	}
	if !o.ID.Is4() || o.ID.IsUnspecified() || o.ID == ourID {
		return p, bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_BAD_BGP_IDENTIFIER, fmt.Errorf("bgp: peer router ID %v", o.ID)
	}
	p.hold = time.Duration(o.HoldTime) * time.Second
	as := uint32(o.MyAS)
	caps := false
	for _, op := range o.OptParams {
		pc, ok := op.(*bgp.OptionParameterCapability)
		if !ok {
			continue
		}
		for _, c := range pc.Capability {
			switch c := c.(type) {
			case *bgp.CapFourOctetASNumber:
				p.fourOctet = true
				as = c.CapValue
			case *bgp.CapMultiProtocol:
				caps = true
				switch c.CapValue {
				case bgp.RF_IPv4_UC:
					p.v4 = true
				case bgp.RF_IPv6_UC:
					p.v6 = true
				}
			}
		}
	}
	if !caps {
		p.v4 = true
	}
	if as != wantAS {
		return p, bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_BAD_PEER_AS, fmt.Errorf("bgp: peer AS %d, want %d", as, wantAS)
	}
	return p, 0, 0, nil
}

// openMessage is our OPEN.
func openMessage(cfg Config) *bgp.BGPMessage {
	as16 := uint16(asTrans)
	if cfg.ASN <= 0xffff {
		as16 = uint16(cfg.ASN)
	}
	caps := []bgp.ParameterCapabilityInterface{
		bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC),
		bgp.NewCapMultiProtocol(bgp.RF_IPv6_UC),
		bgp.NewCapFourOctetASNumber(cfg.ASN),
	}
	m, err := bgp.NewBGPOpenMessage(as16, uint16(cfg.HoldTime/time.Second), cfg.RouterID, []bgp.OptionParameterInterface{bgp.NewOptionParameterCapability(caps)})
	if err != nil {
		// RouterID is validated as IPv4 by the configuration.
		panic(fmt.Sprintf("bgp: OPEN with router ID %v: %v", cfg.RouterID, err))
	}
	return m
}

// diff returns what is in want and not in had, and what is in had and not
// in want; both are sorted.
func diff(had, want []netip.Prefix) (add, del []netip.Prefix) {
	for _, p := range want {
		if !slices.Contains(had, p) {
			add = append(add, p)
		}
	}
	for _, p := range had {
		if !slices.Contains(want, p) {
			del = append(del, p)
		}
	}
	return add, del
}

// updates builds the UPDATE messages that announce add and withdraw del.
func updates(add, del []netip.Prefix, cfg Config, n Neighbor, local netip.Addr, peer peerInfo) []*bgp.BGPMessage {
	var out []*bgp.BGPMessage
	var add4, add6, del4, del6 []bgp.PathNLRI
	for _, p := range add {
		nlri, _ := bgp.NewIPAddrPrefix(p)
		switch {
		case p.Addr().Is4() && peer.v4 && local.Is4():
			add4 = append(add4, bgp.PathNLRI{NLRI: nlri})
		case p.Addr().Is6() && peer.v6 && n.NextHop6.IsValid():
			add6 = append(add6, bgp.PathNLRI{NLRI: nlri})
		}
	}
	for _, p := range del {
		nlri, _ := bgp.NewIPAddrPrefix(p)
		switch {
		case p.Addr().Is4() && peer.v4 && local.Is4():
			del4 = append(del4, bgp.PathNLRI{NLRI: nlri})
		case p.Addr().Is6() && peer.v6 && n.NextHop6.IsValid():
			del6 = append(del6, bgp.PathNLRI{NLRI: nlri})
		}
	}
	if len(del4) > 0 {
		out = append(out, bgp.NewBGPUpdateMessage(del4, nil, nil))
	}
	if len(del6) > 0 {
		unreach, _ := bgp.NewPathAttributeMpUnreachNLRI(bgp.RF_IPv6_UC, del6)
		out = append(out, bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{unreach}, nil))
	}
	common := func() []bgp.PathAttributeInterface {
		attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
		if cfg.ASN == n.ASN { // iBGP
			attrs = append(attrs, bgp.NewPathAttributeAsPath(nil), bgp.NewPathAttributeLocalPref(100))
			return attrs
		}
		if peer.fourOctet {
			attrs = append(attrs, bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{
				bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{cfg.ASN})}))
		} else {
			as16 := uint16(asTrans)
			if cfg.ASN <= 0xffff {
				as16 = uint16(cfg.ASN)
			}
			attrs = append(attrs, bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{
				bgp.NewAsPathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint16{as16})}))
			if cfg.ASN > 0xffff {
				attrs = append(attrs, bgp.NewPathAttributeAs4Path([]*bgp.As4PathParam{
					bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{cfg.ASN})}))
			}
		}
		return attrs
	}
	if len(add4) > 0 {
		nh, _ := bgp.NewPathAttributeNextHop(local)
		out = append(out, bgp.NewBGPUpdateMessage(nil, append(common(), nh), add4))
	}
	if len(add6) > 0 {
		reach, _ := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, add6, n.NextHop6)
		out = append(out, bgp.NewBGPUpdateMessage(nil, append(common(), reach), nil))
	}
	return out
}
