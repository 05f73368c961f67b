// Package tap owns the appliance's Ethernet links: opening or creating Linux
// TAP devices (through github.com/songgao/water), configuring them (MTU, up,
// bridge), and the netstack link endpoint that moves frames between a TAP file
// descriptor and gVisor's stack.
//
// The endpoint is our own rather than link/fdbased for two reasons recorded in
// shared/NETSTACK.md: fdbased stops its receive loop for good on the first
// frame addressed to a foreign unicast MAC, and panics the router on a write
// error such as EIO from a TAP whose interface is down. Here a foreign frame is
// counted and dropped, and every write error is counted and reported to
// netstack as a full queue. The endpoint also offers the hook that the
// dispatcher and the guards use to take frames before netstack sees them.
package tap

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// tunFlagPersist is IFF_PERSIST as shown in /sys/class/net/NAME/tun_flags.
const tunFlagPersist = 0x800

// DeviceConfig describes one TAP device.
type DeviceConfig struct {
	Name   string
	MTU    int
	Bridge string // attach to this existing Linux bridge when non-empty
	Queues int    // number of queues (fds); >1 opens a multi-queue TAP
}

// Device is an open TAP device. Its fds stay open until Close.
type Device struct {
	name    string
	ifaces  []*water.Interface // kept reachable: their finalizers close the fds
	files   []*os.File
	created bool
}

// Name is the Linux interface name.
func (d *Device) Name() string { return d.name }

// Files are the device's queues, one *os.File each, registered with Go's
// poller (the fds are non-blocking).
func (d *Device) Files() []*os.File { return d.files }

// Created reports whether Open created the device (rather than opening an
// existing persistent one). A created device is non-persistent: the kernel
// removes it when its last fd closes, even if the process dies.
func (d *Device) Created() bool { return d.created }

// Open opens the TAP device named in cfg, creating it if it does not exist,
// then sets its MTU, brings it up and attaches it to cfg.Bridge.
func Open(cfg DeviceConfig) (*Device, error) {
	if cfg.Queues < 1 {
		cfg.Queues = 1
	}
	existed, persistent, err := existingTap(cfg.Name)
	if err != nil {
		return nil, err
	}
	if existed && !persistent {
		return nil, fmt.Errorf("tap %s: exists and is not a persistent TAP device", cfg.Name)
	}
	d := &Device{name: cfg.Name, created: !existed}
	for q := 0; q < cfg.Queues; q++ {
		ifc, err := water.New(water.Config{
			DeviceType: water.TAP,
			PlatformSpecificParams: water.PlatformSpecificParams{
				Name: cfg.Name,
				// A device we create is non-persistent so that it disappears with
				// the process; one we only open keeps the persistence it had.
				Persist:    existed,
				MultiQueue: cfg.Queues > 1,
			},
		})
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("tap %s: open queue %d: %w", cfg.Name, q, err)
		}
		f, ok := ifc.ReadWriteCloser.(*os.File)
		if !ok {
			d.Close()
			return nil, fmt.Errorf("tap %s: water returned %T, want *os.File", cfg.Name, ifc.ReadWriteCloser)
		}
		d.ifaces = append(d.ifaces, ifc)
		d.files = append(d.files, f)
	}
	if err := d.configure(cfg); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) configure(cfg DeviceConfig) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tap %s: control socket: %w", d.name, err)
	}
	defer unix.Close(s)
	if cfg.MTU > 0 {
		ifr, err := unix.NewIfreq(d.name)
		if err != nil {
			return fmt.Errorf("tap %s: %w", d.name, err)
		}
		ifr.SetUint32(uint32(cfg.MTU))
		if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
			return fmt.Errorf("tap %s: set mtu %d: %w", d.name, cfg.MTU, err)
		}
	}
	if cfg.Bridge != "" {
		idx, err := ifIndex(s, d.name)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(cfg.Bridge)
		if err != nil {
			return fmt.Errorf("tap %s: bridge %q: %w", d.name, cfg.Bridge, err)
		}
		ifr.SetUint32(idx)
		if err := unix.IoctlIfreq(s, unix.SIOCBRADDIF, ifr); err != nil {
			return fmt.Errorf("tap %s: attach to bridge %s: %w", d.name, cfg.Bridge, err)
		}
	}
	return setUp(s, d.name, true)
}

// Close closes the device's fds. A device that Open created disappears with
// them; a device it only opened is left as it was found (persistent), though
// still up.
func (d *Device) Close() error {
	var errs []error
	for _, f := range d.files {
		if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	d.files = nil
	d.ifaces = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tap %s: close: %w", d.name, err)
	}
	return nil
}

// SetLinkUp sets the kernel-side interface up or down (tests use it to
// provoke write errors).
func SetLinkUp(name string, up bool) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	return setUp(s, name, up)
}

func setUp(s int, name string, up bool) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", name, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tap %s: get flags: %w", name, err)
	}
	flags := ifr.Uint16()
	if up {
		flags |= unix.IFF_UP
	} else {
		flags &^= unix.IFF_UP
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tap %s: set flags: %w", name, err)
	}
	return nil
}

func ifIndex(s int, name string) (uint32, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, fmt.Errorf("tap %s: %w", name, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("tap %s: get index: %w", name, err)
	}
	return ifr.Uint32(), nil
}

// existingTap reports whether an interface called name exists and, if it is a
// TAP, whether it is persistent. An existing interface that is not a TUN/TAP
// device is an error.
func existingTap(name string) (existed, persistent bool, err error) {
	if _, err := os.Stat("/sys/class/net/" + name); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, false, nil
		}
		return false, false, fmt.Errorf("tap %s: %w", name, err)
	}
	b, err := os.ReadFile("/sys/class/net/" + name + "/tun_flags")
	if err != nil {
		return true, false, fmt.Errorf("tap %s: interface exists and is not a TUN/TAP device", name)
	}
	flags, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 32)
	if err != nil {
		return true, false, fmt.Errorf("tap %s: read tun_flags %q: %w", name, b, err)
	}
	return true, flags&tunFlagPersist != 0, nil
}
