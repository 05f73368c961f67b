package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Errors about the host that callers (and the CLI's messages) branch on.
var (
	ErrNoNFT     = errors.New("nft not found: install the nftables package")
	ErrNoIP      = errors.New("ip not found: install the iproute2 package")
	ErrNoTable   = errors.New("no such nftables table")
	ErrNoSysctl  = errors.New("no such sysctl")
	ErrNotRoot   = errors.New("must run as root (it changes addresses, sysctls and nftables)")
	ErrNoLink    = errors.New("interface not found")
	ErrConflict  = errors.New("conflicts with the existing setup")
	ErrNotSetUp  = errors.New("not set up")
	ErrNotOurs   = errors.New("not made by ghostnode")
	ErrBadState  = errors.New("unreadable state file")
	ErrBadSpec   = errors.New("bad setup")
	ErrNoFilter  = errors.New("no filter")
	ErrDifferent = errors.New("differs from what setup made")
)

// Link is a network interface and its addresses.
type Link struct {
	Name  string
	Addrs []netip.Prefix
}

// Host is everything node does to the machine. System is the real one;
// tests substitute a fake. Sysctl keys are paths under /proc/sys with '/'
// separators ("net/ipv4/conf/eth0.100/arp_ignore"), so that interface
// names with dots stay unambiguous.
type Host interface {
	// Need reports ErrNoNFT or ErrNoIP when the tool ("nft", "ip") is missing.
	Need(tool string) error
	// ReadSysctl returns the value, trimmed; an error wrapping ErrNoSysctl
	// when the key does not exist.
	ReadSysctl(key string) (string, error)
	WriteSysctl(key, value string) error
	// Links lists the interfaces with their addresses.
	Links(ctx context.Context) ([]Link, error)
	AddAddr(ctx context.Context, dev string, p netip.Prefix) error
	DelAddr(ctx context.Context, dev string, p netip.Prefix) error
	// NFT runs one nft script (`nft -f -`): one transaction.
	NFT(ctx context.Context, script string) error
	// ListTable returns `nft -j list table FAMILY NAME`, or an error wrapping
	// ErrNoTable when the table does not exist.
	ListTable(ctx context.Context, family, name string) ([]byte, error)
}

// System is the running machine: /proc/sys, the ip(8) and nft(8) tools.
type System struct{}

var _ Host = System{}

// Need implements Host.
func (System) Need(tool string) error {
	if _, err := exec.LookPath(tool); err != nil {
		switch tool {
		case "nft":
			return ErrNoNFT
		case "ip":
			return ErrNoIP
		}
		return fmt.Errorf("%s not found in PATH", tool)
	}
	return nil
}

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", filepath.Clean("/"+key))
}

// ReadSysctl implements Host.
func (System) ReadSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s", ErrNoSysctl, SysctlName(key))
	}
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", SysctlName(key), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteSysctl implements Host.
func (System) WriteSysctl(key, value string) error {
	err := os.WriteFile(sysctlPath(key), []byte(value+"\n"), 0)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNoSysctl, SysctlName(key))
	}
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", SysctlName(key), value, err)
	}
	return nil
}

// Links implements Host.
func (System) Links(context.Context) ([]Link, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	links := make([]Link, 0, len(ifs))
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		l := Link{Name: ifc.Name}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			if ip.Is4In6() && len(ipn.Mask) == net.IPv4len {
				ip = ip.Unmap()
			}
			ones, _ := ipn.Mask.Size()
			l.Addrs = append(l.Addrs, netip.PrefixFrom(ip, ones))
		}
		links = append(links, l)
	}
	return links, nil
}

// AddAddr implements Host: `ip addr add P dev DEV` (nodad for IPv6, so the
// address is usable at once).
func (System) AddAddr(ctx context.Context, dev string, p netip.Prefix) error {
	args := []string{"addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	_, err := run(ctx, nil, "ip", args...)
	return err
}

// DelAddr implements Host: `ip addr del P dev DEV`.
func (System) DelAddr(ctx context.Context, dev string, p netip.Prefix) error {
	_, err := run(ctx, nil, "ip", "addr", "del", p.String(), "dev", dev)
	return err
}

// NFT implements Host.
func (System) NFT(ctx context.Context, script string) error {
	_, err := run(ctx, strings.NewReader(script), "nft", "-f", "-")
	return err
}

// ListTable implements Host.
func (System) ListTable(ctx context.Context, family, name string) ([]byte, error) {
	out, err := run(ctx, nil, "nft", "-j", "list", "table", family, name)
	if err != nil && strings.Contains(err.Error(), "No such file or directory") {
		return nil, fmt.Errorf("%w: %s %s", ErrNoTable, family, name)
	}
	return out, err
}

// run runs a command and returns its stdout; its error carries the command
// line and what the command wrote to stderr.
func run(ctx context.Context, stdin *strings.Reader, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			switch name {
			case "nft":
				return nil, ErrNoNFT
			case "ip":
				return nil, ErrNoIP
			}
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return nil, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// SysctlName writes a key the way sysctl(8) does: dots between the path's
// components, and '/' for a dot inside one (net.ipv4.conf.eth0/100.rp_filter).
func SysctlName(key string) string {
	parts := strings.Split(strings.Trim(key, "/"), "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return strings.Join(parts, ".")
}
