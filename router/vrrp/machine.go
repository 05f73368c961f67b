package vrrp

import (
	"net/netip"
	"time"
)

// State is a virtual router's state (RFC 5798 section 6.4).
type State uint8

const (
	Initialize State = iota
	Backup
	Master
)

func (s State) String() string {
	switch s {
	case Backup:
		return "backup"
	case Master:
		return "master"
	}
	return "init"
}

// Action is what an event asks of the machine's owner, bits ORed.
type Action uint8

const (
	// SendAdvert: send an advertisement at the local priority now.
	SendAdvert Action = 1 << iota
	// SendShutdown: send an advertisement with priority 0 now.
	SendShutdown
	// BecameMaster: take the virtual addresses and MAC, announce them.
	BecameMaster
	// BecameBackup: give the virtual addresses and MAC up.
	BecameBackup
	// SawLowerMaster: while master, an advertisement from another master
	// with a lower priority arrived (two masters: a partition healing).
	SawLowerMaster
)

// Machine is the protocol state machine of one virtual router, RFC 5798
// section 6.4, driven by its owner with explicit times: it does no I/O and
// reads no clock, so tests run it on a fake clock. Not safe for concurrent
// use.
type Machine struct {
	priority uint8
	interval time.Duration // Advertisement_Interval
	preempt  bool
	self     netip.Addr // the primary address: ties between equal priorities

	state    State
	mai      time.Duration // Master_Adver_Interval
	downAt   time.Time     // Master_Down_Timer, while Backup
	adverAt  time.Time     // Adver_Timer, while Master
	master   netip.Addr    // the current master's address (self while Master)
	masterPr uint8
}

// NewMachine returns a machine in Initialize. interval is rounded down to
// centiseconds, the protocol's unit.
func NewMachine(priority uint8, interval time.Duration, preempt bool, self netip.Addr) *Machine {
	return &Machine{priority: priority, interval: interval.Truncate(10 * time.Millisecond), preempt: preempt, self: self}
}

// SkewTime is ((256 - priority) * Master_Adver_Interval) / 256.
func SkewTime(priority uint8, mai time.Duration) time.Duration {
	return time.Duration(256-int(priority)) * mai / 256
}

// MasterDownInterval is 3 * Master_Adver_Interval + Skew_Time.
func MasterDownInterval(priority uint8, mai time.Duration) time.Duration {
	return 3*mai + SkewTime(priority, mai)
}

// State is the current state.
func (m *Machine) State() State { return m.state }

// Master is the address and priority of the current master as this router
// knows it: itself while Master, the last advertiser heard while Backup
// (invalid before any).
func (m *Machine) Master() (netip.Addr, uint8) { return m.master, m.masterPr }

// MasterAdverInterval is the interval the machine's down timer is based on.
func (m *Machine) MasterAdverInterval() time.Duration { return m.mai }

// Deadline is when Tick must next be called: the Master_Down_Timer while
// Backup, the Adver_Timer while Master, zero in Initialize.
func (m *Machine) Deadline() time.Time {
	switch m.state {
	case Backup:
		return m.downAt
	case Master:
		return m.adverAt
	}
	return time.Time{}
}

// Start is the Startup event (6.4.1): the address owner becomes Master at
// once, everyone else Backup with the down timer running.
func (m *Machine) Start(now time.Time) Action {
	if m.state != Initialize {
		return 0
	}
	if m.priority == 255 {
		return m.toMaster(now)
	}
	m.mai = m.interval
	m.master, m.masterPr = netip.Addr{}, 0
	return m.toBackup(now)
}

func (m *Machine) toMaster(now time.Time) Action {
	m.state = Master
	m.adverAt = now.Add(m.interval)
	m.master, m.masterPr = m.self, m.priority
	return SendAdvert | BecameMaster
}

func (m *Machine) toBackup(now time.Time) Action {
	was := m.state
	m.state = Backup
	m.downAt = now.Add(MasterDownInterval(m.priority, m.mai))
	if was == Master {
		return BecameBackup
	}
	return 0
}

// Tick fires the timer that is due at now, if any.
func (m *Machine) Tick(now time.Time) Action {
	switch {
	case m.state == Backup && !now.Before(m.downAt):
		return m.toMaster(now)
	case m.state == Master && !now.Before(m.adverAt):
		m.adverAt = now.Add(m.interval)
		return SendAdvert
	}
	return 0
}

// Receive handles an advertisement for this virtual router from src with
// the given priority and Max Adver Int (6.4.2, 6.4.3).
func (m *Machine) Receive(now time.Time, src netip.Addr, priority uint8, interval time.Duration) Action {
	switch m.state {
	case Backup:
		if priority == 0 {
			m.downAt = now.Add(SkewTime(m.priority, m.mai))
			return 0
		}
		if !m.preempt || priority >= m.priority {
			m.mai = interval
			m.downAt = now.Add(MasterDownInterval(m.priority, m.mai))
			m.master, m.masterPr = src, priority
		}
		return 0
	case Master:
		if priority == 0 {
			m.adverAt = now.Add(m.interval)
			return SendAdvert
		}
		if priority > m.priority || priority == m.priority && src.Compare(m.self) > 0 {
			m.mai = interval
			m.master, m.masterPr = src, priority
			return m.toBackup(now)
		}
		return SawLowerMaster
	}
	return 0
}

// Shutdown is the Shutdown event: a Master sends priority 0 so a backup
// takes over after its skew time rather than the full down interval.
func (m *Machine) Shutdown() Action {
	was := m.state
	m.state = Initialize
	if was == Master {
		return SendShutdown | BecameBackup
	}
	return 0
}

// Force moves the machine to s for its sync group: a member of a group that
// became Master takes the others along (sending an advertisement at once),
// and one that became Backup takes them back.
func (m *Machine) Force(now time.Time, s State) Action {
	switch {
	case s == Master && m.state == Backup:
		return m.toMaster(now)
	case s == Backup && m.state == Master:
		if m.mai == 0 {
			m.mai = m.interval
		}
		return m.toBackup(now)
	}
	return 0
}
