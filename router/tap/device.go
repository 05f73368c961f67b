package tap

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tunFlagPersist is IFF_PERSIST as shown in /sys/class/net/NAME/tun_flags.
const tunFlagPersist = 0x800

// offloads are what the kernel may hand a TAP with segmentation offload:
// partial checksums and TCP super-frames over IPv4 and IPv6, with ECN.
const offloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN

// DeviceConfig describes one TAP device.
type DeviceConfig struct {
	Name   string
	MTU    int
	Bridge string // attach to this existing Linux bridge when non-empty
	Queues int    // number of queues (fds); >1 opens a multi-queue TAP
	// NoOffload opens the device without the virtio-net header: every frame
	// is a plain one of at most the MTU. By default the header is on and the
	// kernel exchanges TCP super-frames and partial checksums with the
	// endpoint (TUNSETOFFLOAD TUN_F_CSUM|TSO4|TSO6|TSO_ECN).
	NoOffload bool
}

// Device is an open TAP device. Its fds stay open until Close.
type Device struct {
	name    string
	files   []*os.File
	created bool
	offload bool
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

// Offload reports whether the device's fds carry a virtio-net header and the
// kernel exchanges super-frames with them.
func (d *Device) Offload() bool { return d.offload }

// Open opens the TAP device named in cfg, creating it if it does not exist,
// then sets its MTU, brings it up and attaches it to cfg.Bridge.
func Open(cfg DeviceConfig) (*Device, error) {
	if cfg.Queues < 1 {
		cfg.Queues = 1
	}
	if len(cfg.Name) == 0 || len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap %q: name must be 1 to %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	}
	existed, persistent, err := existingTap(cfg.Name)
	if err != nil {
		return nil, err
	}
	if existed && !persistent {
		return nil, fmt.Errorf("tap %s: exists and is not a persistent TAP device", cfg.Name)
	}
	d := &Device{name: cfg.Name, created: !existed, offload: !cfg.NoOffload}
	for q := 0; q < cfg.Queues; q++ {
		f, err := openQueue(cfg.Name, cfg.Queues > 1, d.offload)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("tap %s: open queue %d: %w", cfg.Name, q, err)
		}
		d.files = append(d.files, f)
	}
	if err := d.configure(cfg); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// ifreqFlags is struct ifreq with the flags member of its union.
type ifreqFlags struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

// openQueue opens one queue of the TAP called name: TUNSETIFF on a fresh fd
// of /dev/net/tun creates the device (non-persistent: nothing here sets
// TUNSETPERSIST) or attaches to the existing one, whose persistence is left
// as it is. With offload, the fd carries a 10-byte virtio-net header.
func openQueue(name string, multiQueue, offload bool) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	var ifr ifreqFlags
	copy(ifr.name[:], name)
	ifr.flags = unix.IFF_TAP | unix.IFF_NO_PI
	if multiQueue {
		ifr.flags |= unix.IFF_MULTI_QUEUE
	}
	if offload {
		ifr.flags |= unix.IFF_VNET_HDR
	}
	if err := ioctlPtr(fd, unix.TUNSETIFF, unsafe.Pointer(&ifr)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	if offload {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("TUNSETOFFLOAD: %w", err)
		}
	}
	// Non-blocking before NewFile: the file is then registered with the
	// runtime's poller.
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg)); e != 0 {
		return e
	}
	return nil
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
	return bringUp(s, d.name)
}

// Close closes the device's fds. A device that Open created disappears with
// them; a device it only opened is left as it was found (persistent), though
// still up.
func (d *Device) Close() error {
	var errs []error
	if !d.created && d.offload && len(d.files) > 0 {
		// Leave a persistent device as found: without the offloads, which
		// would otherwise hand super-frames to its next user.
		if rc, err := d.files[0].SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, 0) })
		}
	}
	for _, f := range d.files {
		if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	d.files = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tap %s: close: %w", d.name, err)
	}
	return nil
}

// bringUp sets the interface up.
func bringUp(s int, name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("tap %s: %w", name, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("tap %s: get flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
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
