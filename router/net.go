package router

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	icmptransport "gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The appliance's own sockets: health checks and table announcements are
// sent from the router's netstack, with its addresses, out of its links.

func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// DialTCP opens a TCP connection from the appliance to dst.
func (r *Router) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	c, err := gonet.DialContextTCP(ctx, r.stack, tcpip.FullAddress{Addr: address(dst.Addr()), Port: dst.Port()}, netProto(dst.Addr()))
	if err != nil {
		return nil, fmt.Errorf("router: tcp %s: %w", dst, err)
	}
	return c, nil
}

// Ping sends one ICMP echo request from the appliance to dst and waits for
// the reply until ctx ends.
func (r *Router) Ping(ctx context.Context, dst netip.Addr, seq uint16) error {
	proto, tproto := ipv4.ProtocolNumber, icmptransport.ProtocolNumber4
	typ := byte(8)
	if dst.Is6() {
		proto, tproto, typ = ipv6.ProtocolNumber, icmptransport.ProtocolNumber6, 128
	}
	var wq waiter.Queue
	ep, e := r.stack.NewEndpoint(tproto, proto, &wq)
	if e != nil {
		return fmt.Errorf("router: ping %s: %s", dst, e)
	}
	conn := gonet.NewUDPConn(&wq, ep)
	defer conn.Close()
	if e := ep.Connect(tcpip.FullAddress{Addr: address(dst)}); e != nil {
		return fmt.Errorf("router: ping %s: %s", dst, e)
	}
	req := make([]byte, 16)
	req[0] = typ
	binary.BigEndian.PutUint16(req[6:], seq)
	copy(req[8:], "ghostrtr")
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(time.Second))
	}
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("router: ping %s: %w", dst, err)
	}
	buf := make([]byte, 128)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("router: ping %s: %w", dst, err)
		}
		if n >= 8 && (buf[0] == 0 || buf[0] == 129) && binary.BigEndian.Uint16(buf[6:]) == seq {
			return nil
		}
	}
}

// UDPSender sends datagrams from one of the appliance's addresses,
// broadcast destinations included.
type UDPSender struct {
	conn *gonet.UDPConn
}

// NewUDPSender binds a UDP socket on the appliance's address src on the
// named interface, allowed to send to broadcast addresses.
func (r *Router) NewUDPSender(ifname string, src netip.Addr) (*UDPSender, error) {
	l, err := r.link(ifname)
	if err != nil {
		return nil, err
	}
	var wq waiter.Queue
	ep, e := r.stack.NewEndpoint(udp.ProtocolNumber, netProto(src), &wq)
	if e != nil {
		return nil, fmt.Errorf("router: udp socket on %s: %s", ifname, e)
	}
	ep.SocketOptions().SetBroadcast(true)
	if e := ep.Bind(tcpip.FullAddress{NIC: l.NIC, Addr: address(src)}); e != nil {
		ep.Close()
		return nil, fmt.Errorf("router: udp bind %s on %s: %s", src, ifname, e)
	}
	return &UDPSender{conn: gonet.NewUDPConn(&wq, ep)}, nil
}

// ListenUDP binds a UDP socket to port on the named interface, any of its
// addresses of like's family, broadcast and all-nodes destinations
// included: it receives what hosts on that link broadcast to the port
// (another appliance's table announcements). Read it with Recv.
func (r *Router) ListenUDP(ifname string, like netip.Addr, port uint16) (*UDPSender, error) {
	l, err := r.link(ifname)
	if err != nil {
		return nil, err
	}
	var wq waiter.Queue
	ep, e := r.stack.NewEndpoint(udp.ProtocolNumber, netProto(like), &wq)
	if e != nil {
		return nil, fmt.Errorf("router: udp socket on %s: %s", ifname, e)
	}
	ep.SocketOptions().SetReuseAddress(true)
	if e := ep.Bind(tcpip.FullAddress{NIC: l.NIC, Port: port}); e != nil {
		ep.Close()
		return nil, fmt.Errorf("router: udp bind port %d on %s: %s", port, ifname, e)
	}
	return &UDPSender{conn: gonet.NewUDPConn(&wq, ep)}, nil
}

// Send writes b to dst.
func (u *UDPSender) Send(b []byte, dst netip.AddrPort) error {
	_, err := u.conn.WriteTo(b, net.UDPAddrFromAddrPort(dst))
	return err
}

// Recv reads the next datagram sent to the socket (answers to what it
// sent) into b; it returns an error once the socket is closed.
func (u *UDPSender) Recv(b []byte) (int, netip.AddrPort, error) {
	n, from, err := u.conn.ReadFrom(b)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		return n, netip.AddrPort{}, nil
	}
	return n, ua.AddrPort(), nil
}

// Close closes the socket.
func (u *UDPSender) Close() error { return u.conn.Close() }

// ErrNoAddress is returned when an interface has no address of a family.
var ErrNoAddress = errors.New("interface has no address of that family")

// InterfaceAddress returns the first address of ifname in the family of
// like, and its prefix.
func (r *Router) InterfaceAddress(ifname string, like netip.Addr) (netip.Prefix, error) {
	l, err := r.link(ifname)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, p := range l.Config.Addresses {
		if p.Addr().Is4() == like.Is4() {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("router: %s: %w", ifname, ErrNoAddress)
}
