package router

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// SetVirtualAddress adds (on) or removes a virtual address, such as a VRRP
// virtual router's while this appliance is its master, as one of the named
// interface's own: netstack then answers ping and TCP to it. It is never
// chosen as a source address, and adding one twice or removing one that is
// not there is no error. Resolution of the address is not netstack's: the
// virtual router's stage answers ARP and NDP for it with the virtual MAC.
func (r *Router) SetVirtualAddress(ifname string, a netip.Addr, on bool) error {
	l, err := r.link(ifname)
	if err != nil {
		return err
	}
	if !on {
		if e := r.stack.RemoveAddress(l.NIC, address(a)); e != nil {
			if _, missing := e.(*tcpip.ErrBadLocalAddress); missing {
				return nil
			}
			return fmt.Errorf("router: interface %s: remove virtual address %s: %s", ifname, a, e)
		}
		return nil
	}
	pa := protocolAddress(netip.PrefixFrom(a, a.BitLen()))
	e := r.stack.AddProtocolAddress(l.NIC, pa, stack.AddressProperties{PEB: stack.NeverPrimaryEndpoint})
	if e != nil {
		if _, dup := e.(*tcpip.ErrDuplicateAddress); dup {
			return nil
		}
		return fmt.Errorf("router: interface %s: add virtual address %s: %s", ifname, a, e)
	}
	return nil
}
