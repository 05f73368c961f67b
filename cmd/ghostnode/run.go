package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/filter"
	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/node"
	"github.com/ghostrouter/ghostrouter/cmd/ghostnode/internal/runloop"
	"github.com/ghostrouter/ghostrouter/cmd/internal/sdnotify"
	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// runPlan is what `ghostnode run` was asked to do, from -c FILE or flags.
type runPlan struct {
	spec node.Spec         // the cluster's setup; in broadcast mode Filter is the initial table, nil to wait for one
	id   int               // this server's id (-1 in routing mode without --id)
	key  ed25519.PublicKey // broadcast mode: the public key of the cluster's announce_key_file
	addr string            // broadcast mode: the UDP address to listen on
	// from (broadcast mode) are the appliance's addresses on the LAN: a
	// datagram from any other source is not an announcement.
	from []netip.Addr
}

// teardownTimeout bounds --teardown-on-exit, which runs after the signal
// has ended the command's context.
const teardownTimeout = 30 * time.Second

// planRun checks run's flags and builds its plan. It reads the
// configuration and the key file but does not touch the host.
func planRun(f *flags) (*runPlan, error) {
	if f.cluster == "" {
		return nil, usageErr("--cluster NAME is required")
	}
	switch f.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, usageErr("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	if bad := setAmong(f, "owned", "down"); bad != "" {
		return nil, usageErr("--%s: run takes the owned buckets from the appliance's announcements", bad)
	}
	p := &runPlan{id: -1}
	port := announce.DefaultPort
	var keyFile string   // default public key file (-c: next to the private key's path)
	anyHost := "0.0.0.0" // the appliance announces to the IPv4 subnet broadcast address...
	if f.set["config"] {
		if bad := setAmong(f, "ghost", "mode", "buckets", "seed"); bad != "" {
			return nil, usageErr("--%s: with -c the cluster's parameters come from the file", bad)
		}
		if !f.set["id"] {
			return nil, usageErr("-c needs --id N, this server's id in the cluster")
		}
		cfg, err := config.LoadWithoutKeys(f.config)
		if err != nil {
			return nil, err
		}
		spec, err := node.FromConfig(cfg, f.cluster, f.id, nil)
		if err != nil {
			return nil, err
		}
		cl, _ := cfg.Cluster(f.cluster)
		if spec.Filter != nil && cl.AnnounceKeyFile != "" {
			// Until the first announcement this server owns no bucket: its
			// copy of the file may be ahead of the appliance, and a bucket
			// claimed too early is a second answer to someone's connection.
			spec.Filter.Owned = []uint32{}
			spec.Filter.Pinned, spec.Filter.PinnedAway = nil, nil
		}
		p.spec, p.id, port = spec, f.id, cl.AnnouncePort
		if cl.AnnounceKeyFile != "" {
			keyFile = keyfile.PublicPath(cl.AnnounceKeyFile)
		}
		if ifc, ok := cfg.Interface(cl.Interface); ok {
			if _, dst, ok := ifc.AnnounceTo(); ok && dst.Is6() {
				anyHost = "::" // ...or, on an IPv6-only LAN, to ff02::1
			}
			for _, a := range ifc.Addresses {
				p.from = append(p.from, a.Addr())
			}
		}
	} else {
		if !f.set["ghost"] {
			return nil, usageErr("give -c FILE --id N, or --ghost ADDR")
		}
		ghost, err := netip.ParseAddr(f.ghost)
		if err != nil {
			return nil, usageErr("--ghost %q: %v", f.ghost, err)
		}
		var mode config.Mode
		if f.mode != "" {
			if mode, err = config.ParseMode(f.mode); err != nil {
				return nil, usageErr("--mode %q: want routing or broadcast", f.mode)
			}
		} else {
			mode = node.ModeRouting
			if setAmong(f, "key-file", "buckets", "seed", "listen", "appliance") != "" {
				mode = node.ModeBroadcast
			}
		}
		p.spec = node.Spec{Cluster: f.cluster, Mode: mode, Ghost: ghost}
		if f.set["id"] {
			if f.id < 0 || f.id > config.MaxServerID {
				return nil, usageErr("--id %d: want 0..%d", f.id, config.MaxServerID)
			}
			p.id = f.id
		}
		switch mode {
		case node.ModeRouting:
			if bad := setAmong(f, "key-file", "buckets", "seed", "listen", "appliance"); bad != "" {
				return nil, usageErr("--%s: routing mode has no filter and no announcements", bad)
			}
		case node.ModeBroadcast:
			if p.id < 0 {
				return nil, usageErr("broadcast mode needs --id N, this server's id in the cluster")
			}
			if f.set["buckets"] != f.set["seed"] {
				return nil, usageErr("give both --buckets and --seed, or neither (then the filter is set up from the first announcement)")
			}
			if f.set["buckets"] {
				buckets, err := strconv.Atoi(f.buckets)
				if err != nil || buckets < 1 || buckets > filter.MaxBuckets {
					return nil, usageErr("--buckets %q: want 1..%d", f.buckets, filter.MaxBuckets)
				}
				seed, err := strconv.ParseUint(f.seed, 0, 32)
				if err != nil {
					return nil, usageErr("--seed %q: want a 32-bit number, decimal or 0x hex", f.seed)
				}
				// Until the first announcement this server owns no bucket:
				// it accepts no new connection rather than someone else's.
				p.spec.Filter = &filter.Spec{Cluster: f.cluster, Ghost: ghost, Buckets: buckets, Seed: uint32(seed), Server: p.id, Owned: []uint32{}}
			}
		default:
			return nil, usageErr("--mode %q: want routing or broadcast", mode)
		}
	}
	p.spec.Dev, p.spec.LAN = f.dev, f.lan
	if f.set["address"] {
		a, err := netip.ParseAddr(f.address)
		if err != nil {
			return nil, usageErr("--address %q: %v", f.address, err)
		}
		if p.spec.Primary.IsValid() && p.spec.Primary != a {
			return nil, usageErr("--address %s differs from server %d's address %s in %s", a, f.id, p.spec.Primary, f.config)
		}
		p.spec.Primary = a
	}
	if p.spec.LAN == "" && !p.spec.Primary.IsValid() {
		return nil, usageErr("give --lan IFACE or --address ADDR (the server's primary address) to find the LAN interface")
	}
	if p.spec.Mode != node.ModeBroadcast {
		return p, nil
	}

	switch {
	case f.set["key-file"]:
		keyFile = f.keyFile
	case keyFile != "":
	case f.set["config"]:
		return nil, usageErr("cluster %s has no announce_key_file in %s: give --key-file FILE, the public key", f.cluster, f.config)
	default:
		return nil, usageErr("broadcast mode needs --key-file FILE, the public key of the cluster's announce_key_file")
	}
	key, err := keyfile.ReadPublic(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w", err)
	}
	p.key = key
	if f.set["appliance"] {
		p.from = p.from[:0]
		for _, s := range strings.Split(f.appliance, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil || a.Zone() != "" || !a.IsGlobalUnicast() && !a.IsLinkLocalUnicast() {
				return nil, usageErr("--appliance %q: want the appliance's LAN addresses, e.g. 10.0.0.1 or 10.0.0.1,2001:db8::1", f.appliance)
			}
			p.from = append(p.from, a)
		}
	}
	if len(p.from) == 0 {
		return nil, usageErr("broadcast mode needs --appliance ADDRS, the appliance's addresses on the LAN: announcements from anywhere else are ignored")
	}
	addr := f.listen
	if addr == "" {
		addr = ":" + strconv.Itoa(port)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageErr("--listen %q: %v", addr, err)
	}
	if host == "" {
		host = anyHost
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(host, portStr))
	if err != nil {
		return nil, usageErr("--listen %q: want ADDR:PORT or :PORT: %v", addr, err)
	}
	p.addr = ap.String()
	return p, nil
}

// runRun is `ghostnode run`: setup if needed, then (broadcast mode) the
// announcement loop until SIGTERM or SIGINT, then teardown if asked.
func runRun(ctx context.Context, e env, f *flags) error {
	p, err := planRun(f)
	if err != nil {
		return err
	}
	if !e.root {
		return node.ErrNotRoot
	}
	log := config.NewLogger(f.logLevel, e.stderr)
	n := &node.Node{Host: e.host, StateDir: f.dir, Out: e.stdout}
	base := node.RunStatus{Cluster: p.spec.Cluster, Mode: p.spec.Mode, Server: p.id, PID: os.Getpid(), Started: time.Now()}

	unlock, err := n.LockRun(p.spec.Cluster)
	if err != nil {
		return err
	}
	defer unlock()
	prev, err := n.ReadRunStatus(p.spec.Cluster)
	if err != nil {
		log.Warn("previous run status unreadable; starting without it", "err", err)
		prev = nil
	}

	owned := 0
	if p.spec.Mode == node.ModeBroadcast {
		owned, err = keepFilter(ctx, n, p)
		if err != nil {
			return err
		}
	}
	if p.spec.Mode == node.ModeRouting || p.spec.Filter != nil {
		if err := n.Setup(ctx, p.spec); err != nil {
			return err
		}
	} else {
		log.Info(fmt.Sprintf("cluster %s: not set up yet: waiting for the first announcement's bucket count and seed", p.spec.Cluster))
	}

	sd := notifier(log)
	notify(sd, log, sdnotify.Ready, sdnotify.Status("cluster "+p.spec.Cluster+" set up"))
	defer notify(sd, log, sdnotify.Stopping)
	var runErr error
	if p.spec.Mode == node.ModeRouting {
		// The appliance sends to this server's MAC: nothing to listen for.
		if err := n.WriteRunStatus(&base); err != nil {
			return err
		}
		log.Info(fmt.Sprintf("cluster %s: set up in routing mode; running until SIGTERM or SIGINT", p.spec.Cluster))
		<-ctx.Done()
		base.Updated = time.Now()
		base.Stopped = base.Updated
		if err := n.WriteRunStatus(&base); err != nil {
			log.Warn("run status not written", "err", err)
		}
	} else {
		runErr = listenLoop(ctx, e, n, p, base, prev, owned, log)
	}
	switch {
	case runErr != nil:
	case f.teardownOnExit:
		log.Info(fmt.Sprintf("cluster %s: stopping; tearing down", p.spec.Cluster))
	default:
		log.Info(fmt.Sprintf("cluster %s: stopping; the setup and the last table stay", p.spec.Cluster))
	}

	if f.teardownOnExit {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
		defer cancel()
		if err := n.Teardown(tctx, p.spec.Cluster); err != nil {
			return errors.Join(runErr, err)
		}
	}
	return runErr
}

// keepFilter makes the initial filter the one in force when the cluster is
// already set up: a restarted agent keeps the last table it applied (with
// its bucket count and seed, which announcements may have changed since
// the configuration was written) rather than going back to the
// configuration's table until the next announcement. A cluster set up in
// another mode or for another ghost is refused. It returns how many
// buckets the server owns at the start.
func keepFilter(ctx context.Context, n *node.Node, p *runPlan) (int, error) {
	reps, err := n.Status(ctx, p.spec.Cluster)
	if errors.Is(err, node.ErrNotSetUp) {
		if p.spec.Filter == nil {
			return 0, nil
		}
		return len(p.spec.Filter.Owned), nil
	}
	if err != nil {
		return 0, err
	}
	r := reps[0]
	st := r.State
	if st.Mode != node.ModeBroadcast || st.Table == nil || st.Ghost != p.spec.Ghost {
		return 0, fmt.Errorf("cluster %s %w (it is set up in %s mode for ghost %s): run `ghostnode teardown --cluster %s` first",
			st.Cluster, node.ErrConflict, st.Mode, st.Ghost, st.Cluster)
	}
	owned := r.Owned
	if !r.FilterOK {
		// The kernel's table is gone or not as setup made it: setup
		// repairs it, with the configuration's table if there is one.
		if p.spec.Filter != nil {
			return len(p.spec.Filter.Owned), nil
		}
		owned = []uint32{}
	}
	p.spec.Filter = &filter.Spec{Cluster: st.Cluster, Ghost: st.Ghost, Buckets: st.Table.Buckets, Seed: st.Table.Seed, Server: p.id, Owned: owned}
	return len(owned), nil
}

// nodeInstaller installs announced tables with node.Apply.
type nodeInstaller struct {
	n    *node.Node
	spec node.Spec // the cluster's setup; Filter is replaced by each table
	id   int
}

var _ runloop.Installer = (*nodeInstaller)(nil)

// errGhost: an authentic announcement for another ghost address than the
// one this server was set up for (a configuration mismatch; changing the
// ghost takes a teardown).
var errGhost = errors.New("the announcement's ghost address differs from this server's")

func (i *nodeInstaller) Install(ctx context.Context, m *announce.Message, owned, unowned []uint32) error {
	if m.Ghost != i.spec.Ghost {
		return fmt.Errorf("%w: %s, not %s", errGhost, m.Ghost, i.spec.Ghost)
	}
	s := i.spec
	s.Filter = &filter.Spec{Cluster: s.Cluster, Ghost: s.Ghost, Buckets: m.Buckets, Seed: m.Seed, Server: i.id, Owned: owned, Unowned: unowned}
	// The announced pins, ahead of the hash: the clients granted to this
	// server are accepted, every other pinned client dropped.
	here, away, err := m.PinnedFor(i.id)
	if err != nil {
		return err
	}
	s.Filter.Pinned, s.Filter.PinnedAway = here, away
	return i.n.Apply(ctx, s)
}

// listenLoop opens the UDP socket and runs the announcement loop.
func listenLoop(ctx context.Context, e env, n *node.Node, p *runPlan, base node.RunStatus, prev *node.RunStatus, owned int, log *slog.Logger) error {
	recv, err := announce.NewReceiver(p.spec.Cluster, p.key, p.id)
	if err != nil {
		return err
	}
	recv.SetSources(p.from)
	if prev != nil {
		if err := recv.SetFloors(prev.Epochs); err != nil {
			return fmt.Errorf("cluster %s: run status: %w", p.spec.Cluster, err)
		}
		if len(prev.Epochs) > 0 {
			log.Debug(fmt.Sprintf("cluster %s: announcements of %d earlier epochs were heard before: they are stale", p.spec.Cluster, len(prev.Epochs)))
		}
	}
	lan, err := lanInterface(ctx, e.host, p.spec)
	if err != nil {
		return err
	}
	conn, err := listenUDP(ctx, p.addr, lan)
	if err != nil {
		return err
	}
	base.Listen = p.addr
	l, err := runloop.New(runloop.Config{
		Receiver:  recv,
		Installer: &nodeInstaller{n: n, spec: p.spec, id: p.id},
		Source:    conn,
		Status:    n.WriteRunStatus,
		Base:      base,
		Owned:     owned,
		Logger:    log,
	})
	if err != nil {
		conn.Close()
		return err
	}
	log.Info(fmt.Sprintf("cluster %s: server %d listening for announcements on %s on %s from %v", p.spec.Cluster, p.id, p.addr, lan, p.from))
	return l.Run(ctx)
}

// lanInterface is the interface facing the appliance: spec.LAN, or the one
// holding the server's primary address.
func lanInterface(ctx context.Context, h node.Host, spec node.Spec) (string, error) {
	if spec.LAN != "" {
		return spec.LAN, nil
	}
	links, err := h.Links(ctx)
	if err != nil {
		return "", err
	}
	for _, l := range links {
		for _, a := range l.Addrs {
			if a.Addr() == spec.Primary {
				return l.Name, nil
			}
		}
	}
	return "", fmt.Errorf("%w: none holds the server's primary address %s (give --lan IFACE)", node.ErrNoLink, spec.Primary)
}

// announceReceiveBuffer is the receive buffer of the announcement socket:
// an announcement of thousands of members arrives as a hundred or more
// datagrams back to back, and the kernel charges each about 2 KB.
const announceReceiveBuffer = 4 << 20

// listenUDP opens the announcement socket on the LAN interface only
// (SO_BINDTODEVICE: a datagram that arrives on any other interface, e.g.
// one routed from a client network, never reaches it), with SO_REUSEADDR,
// so that the runs of several clusters on one server share the port: a
// broadcast datagram is delivered to every socket bound to it, and each
// run keeps its own cluster's. Its receive buffer has room for every
// segment of the longest announcement arriving back to back
// (announceReceiveBuffer; SO_RCVBUFFORCE as root, else as much as
// net.core.rmem_max allows).
func listenUDP(ctx context.Context, addr, dev string) (*net.UDPConn, error) {
	network := "udp4"
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is6() {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			if serr == nil {
				serr = syscall.BindToDevice(int(fd), dev)
			}
			if serr == nil && syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, announceReceiveBuffer) != nil {
				// Not privileged: the kernel caps it at rmem_max.
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, announceReceiveBuffer)
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("listening for announcements on %s: %w", dev, err)
	}
	return pc.(*net.UDPConn), nil
}
