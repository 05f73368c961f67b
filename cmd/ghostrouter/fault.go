package main

import (
	"errors"
	"sync"

	"github.com/ghostrouter/ghostrouter/router/tap"
)

// A link fault is a receive loop that stopped on an error: the TAP device
// was deleted or broke under the appliance. The link then neither receives
// nor (usefully) sends, so the appliance does not carry on half blind. It
// acts in this order:
//
//  1. status shows the link as faulted, with the error (links[].state and
//     links[].fault), and systemd's STATUS says which link failed;
//  2. BGP withdraws the ghosts served on that link;
//  3. it shuts down as on SIGTERM (a VRRP master hands over with priority 0,
//     BGP sessions end, every TAP device it created is removed, the control
//     socket stops answering) and exits with status 1 (exitLinkFault).
//
// A supervisor restarts it: the shipped systemd unit has Restart=on-failure,
// and the restarted appliance creates its TAP devices again. Recovering the
// link in place is not attempted: the device, its bridge port and its
// offloads would all have to be rebuilt under a running netstack NIC.

// exitLinkFault is the exit status after a link fault.
const exitLinkFault = 1

// linkFaults records the links whose receive loop stopped, for status.
type linkFaults struct {
	mu     sync.Mutex
	faults map[string]string // link -> error
}

// record notes err (a *tap.LinkFault) and returns the link it names ("" for
// another error).
func (f *linkFaults) record(err error) string {
	var lf *tap.LinkFault
	if !errors.As(err, &lf) {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.faults == nil {
		f.faults = map[string]string{}
	}
	f.faults[lf.Link] = err.Error()
	return lf.Link
}

// state is what status shows for link: "up", or "faulted" with the error.
func (f *linkFaults) state(link string) (state, fault string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg, ok := f.faults[link]; ok {
		return "faulted", msg
	}
	return "up", ""
}

// linkFault is the appliance's response to a fault before it shuts down:
// the link is marked for status and BGP withdraws its ghosts.
func (a *appliance) linkFault(err error) string {
	link := a.faults.record(err)
	a.bgp.linkFault(err)
	return link
}
