package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// decoder turns one file into a Config, collecting problems as it goes. It
// lives for one Parse call.
type decoder struct {
	file     string
	data     []byte
	prev     *Config        // the running configuration, on a reload (see announceKey)
	noKeys   bool           // key files are named, not read (LoadWithoutKeys)
	lines    map[string]int // locator path → line
	problems Problems

	// Where each decoded entry came from, index for index with the
	// Config's slices, for the cross-entry checks in validate.go.
	ifaces   []ifaceSrc
	routes   []*table
	nbrs     []*table
	clusters []clusterSrc
	vrrps    []*table
	bgpNbrs  []*table // index for index with Config.BGP.Neighbors
}

type ifaceSrc struct {
	t         *table
	addrLines []int // line of each of Interface.Addresses
}

type clusterSrc struct {
	t       *table
	servers []*table // index for index with Cluster.Servers
}

func newDecoder(file string, data []byte) *decoder {
	return &decoder{file: file, data: data}
}

// ValidClusterName reports whether name can name a cluster: it appears in the
// CLI (--cluster NAME), metrics labels and logs, so it is 1 to 63 letters,
// digits, '_', '.' or '-', starting with a letter or digit.
func ValidClusterName(name string) bool {
	if name == "" || len(name) > 63 || !isAlnum(name[0]) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// splitHostPort splits "host:port" and parses the port.
func splitHostPort(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", port, err)
	}
	return host, n, nil
}

// decode runs the whole pipeline: TOML syntax, per-key decoding and
// defaults, then the cross-entry checks.
func (d *decoder) decode() *Config {
	var m map[string]any
	if _, err := toml.Decode(string(d.data), &m); err != nil {
		d.syntaxError(err)
		return nil
	}
	d.lines = locate(d.data)
	root := &table{d: d, m: m}
	root.known("router", "interface", "route", "neighbor", "cluster", "vrrp", "bgp")

	cfg := &Config{File: d.file}
	cfg.Router = d.router(root)
	for _, t := range root.tables("interface", "interface") {
		cfg.Interfaces = append(cfg.Interfaces, d.iface(t))
	}
	if arr, isArr := root.m["interface"].([]any); !root.has("interface") || isArr && len(arr) == 0 {
		root.errorf("interface", "a router needs at least one [[interface]]")
	}
	for _, t := range root.tables("route", "route") {
		cfg.Routes = append(cfg.Routes, d.route(t))
	}
	for _, t := range root.tables("neighbor", "neighbor") {
		cfg.Neighbors = append(cfg.Neighbors, d.neighbor(t))
	}
	for _, t := range root.tables("cluster", "cluster") {
		cfg.Clusters = append(cfg.Clusters, d.cluster(t))
	}
	for _, t := range root.tables("vrrp", "vrrp") {
		cfg.VRRP = append(cfg.VRRP, d.vrrp(t))
	}
	cfg.BGP = d.bgp(root)
	d.validate(cfg)
	return cfg
}

// syntaxError reports what BurntSushi/toml could not parse.
func (d *decoder) syntaxError(err error) {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		d.problems = append(d.problems, Problem{
			File: d.file,
			Line: pe.Position.Line,
			Key:  pe.LastKey,
			Msg:  "TOML syntax: " + pe.Message,
		})
		return
	}
	d.problems = append(d.problems, Problem{File: d.file, Msg: fmt.Sprintf("decoding TOML: %v", err)})
}

func (d *decoder) router(root *table) Router {
	r := Router{
		LogLevel:       DefaultLogLevel,
		ControlSocket:  DefaultControlSocket,
		MetricsAddress: DefaultMetricsAddress,
		ICMPRate:       DefaultICMPRate,
		ICMPBurst:      DefaultICMPBurst,
		ICMPRateMask:   DefaultICMPRateMask,
	}
	t, ok := root.sub("router", "", "router.")
	if !ok {
		t = &table{d: d, m: map[string]any{}, prefix: "router."}
	}
	d.runUser(t, &r)
	if !ok {
		return r
	}
	t.known("log_level", "control_socket", "metrics_address", "send_redirects", "user", "icmp_rate", "icmp_burst", "icmp_ratemask")
	r.ICMPRate = t.intRange("icmp_rate", DefaultICMPRate, 1, 1_000_000)
	r.ICMPBurst = t.intRange("icmp_burst", DefaultICMPBurst, 1, 1_000_000)
	if n, ok := t.integer("icmp_ratemask"); ok {
		if n < 0 || n > math.MaxUint32 {
			t.errorf("icmp_ratemask", "must be a 32-bit mask of ICMP types such as 0x1838, not %d", n)
		} else {
			r.ICMPRateMask = uint32(n)
		}
	}
	r.LogLevel = t.oneOf("log_level", DefaultLogLevel, "debug", "info", "warn", "error")
	if s, ok := t.str("control_socket"); ok {
		r.ControlSocket = s
		switch {
		case s == "":
			t.errorf("control_socket", "must not be empty: the CLI needs it")
		case len(s) > maxSocketPath:
			t.errorf("control_socket", "is %d bytes; a unix socket path has room for %d", len(s), maxSocketPath)
		}
	}
	if s, ok := t.str("metrics_address"); ok {
		r.MetricsAddress = s
		if msg := checkHostPort(s); s != "" && msg != "" {
			t.errorf("metrics_address", "%s", msg)
		}
	}
	r.SendRedirects, _ = t.boolean("send_redirects")
	return r
}

// checkHostPort returns why s is not a listen address "host:port", or "".
func checkHostPort(s string) string {
	host, port, err := splitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port such as \"127.0.0.1:9469\" (\"\" turns metrics off)", s)
	}
	if host != "" && strings.ContainsAny(host, " /\t") {
		return fmt.Sprintf("%q: bad host %q", s, host)
	}
	if port < 1 || port > 65535 {
		return fmt.Sprintf("%q: port must be between 1 and 65535", s)
	}
	return ""
}

func (d *decoder) iface(t *table) Interface {
	ifc := Interface{Line: t.line}
	src := ifaceSrc{t: t}
	if name, ok := t.str("name"); ok {
		ifc.Name = name
		t.label = fmt.Sprintf("interface %q", name)
		if msg := validIfname(name); msg != "" {
			t.errorf("name", "%s", msg)
		}
	} else if !t.has("name") {
		t.missing("name", "")
	}

	// Unknown keys are reported once the label names the entry.
	t.known("name", "addresses", "mac", "mtu", "bridge", "queues")
	elems, _ := t.strings("addresses")
	if arr, isArr := t.m["addresses"].([]any); !t.has("addresses") || isArr && len(arr) == 0 {
		t.errorf("addresses", "an interface needs at least one address such as \"10.0.0.1/24\"")
	}
	hasV6 := false
	for _, e := range elems {
		p, msg := parsePrefix(e.s)
		if msg == "" {
			msg = checkIfaceAddr(p)
		}
		if msg != "" {
			t.errorAt(e.line, "addresses", "%s", msg)
			continue
		}
		hasV6 = hasV6 || p.Addr().Is6()
		ifc.Addresses = append(ifc.Addresses, p)
		src.addrLines = append(src.addrLines, e.line)
	}

	if m, ok := t.mac("mac"); ok {
		if m.IsMulticast() {
			t.errorf("mac", "%s is a multicast MAC address; an interface needs a unicast one", m)
		}
		ifc.MAC = m
	} else if !t.has("mac") {
		ifc.MAC = DerivedMAC(ifc.Name)
	}

	ifc.MTU = t.intRange("mtu", DefaultMTU, MinMTU, MaxMTU)
	if hasV6 && ifc.MTU < MinMTUIPv6 && ifc.MTU >= MinMTU {
		t.errorf("mtu", "%d is below %d, the minimum MTU of a link carrying IPv6 (RFC 8200)", ifc.MTU, MinMTUIPv6)
	}
	if s, ok := t.str("bridge"); ok {
		ifc.Bridge = s
		if msg := validIfname(s); msg != "" {
			t.errorf("bridge", "%s", msg)
		}
	}
	ifc.Queues = t.intRange("queues", DefaultQueues, 1, MaxQueues)
	d.ifaces = append(d.ifaces, src)
	return ifc
}

// checkIfaceAddr returns why p cannot be an interface address, or "".
func checkIfaceAddr(p netip.Prefix) string {
	a := p.Addr()
	if msg := notUnicast(a); msg != "" {
		return msg
	}
	if p.Bits() == 0 {
		return fmt.Sprintf("%s: a prefix length of 0 would put every address on this link", p)
	}
	return notHost(p, a)
}

func (d *decoder) route(t *table) Route {
	r := Route{Line: t.line}
	if s, ok := t.str("to"); ok {
		t.label = fmt.Sprintf("route %q", s)
		p, msg := parsePrefix(s)
		switch {
		case msg != "":
			t.errorf("to", "%s", msg)
		case p != p.Masked():
			t.errorf("to", "%q is not canonical: it has host bits set; write %q", s, p.Masked().String())
		default:
			r.To = p
		}
	} else if !t.has("to") {
		t.missing("to", "the destination prefix, such as \"0.0.0.0/0\"")
	}
	t.known("to", "via", "interface")
	if a, ok := t.unicast("via"); ok {
		if r.To.IsValid() && a.Is4() != r.To.Addr().Is4() {
			t.errorf("via", "%s and the destination %s are of different IP families", a, r.To)
		} else {
			r.Via = a
		}
	}
	r.Interface, _ = t.str("interface")
	d.routes = append(d.routes, t)
	return r
}

func (d *decoder) neighbor(t *table) Neighbor {
	n := Neighbor{Line: t.line}
	if s, ok := t.str("address"); ok {
		t.label = fmt.Sprintf("neighbor %q", s)
	}
	t.known("address", "mac", "interface")
	if a, ok := t.unicast("address"); ok {
		n.Address = a
	} else if !t.has("address") {
		t.missing("address", "")
	}
	if m, ok := t.mac("mac"); ok {
		n.MAC = m
	} else if !t.has("mac") {
		t.missing("mac", "")
	}
	if s, ok := t.str("interface"); ok {
		n.Interface = s
	} else if !t.has("interface") {
		t.missing("interface", "")
	}
	d.nbrs = append(d.nbrs, t)
	return n
}

func (d *decoder) cluster(t *table) Cluster {
	c := Cluster{Line: t.line}
	src := clusterSrc{t: t}
	if name, ok := t.str("name"); ok {
		c.Name = name
		t.label = fmt.Sprintf("cluster %q", name)
		if !ValidClusterName(name) {
			t.errorf("name", "%q: a cluster name is 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
		}
	} else if !t.has("name") {
		t.missing("name", "")
	}
	t.known("name", "address", "interface", "mode", "broadcast_address", "hash", "seed", "buckets", "server", "pin", "health",
		"announce_key", "announce_key_file", "announce_port", "announce_interval", "drain_timeout", "flow_memory")
	if a, ok := t.unicast("address"); ok {
		c.Address = a
	} else if !t.has("address") {
		t.missing("address", "the ghost (cluster) address")
	}
	if s, ok := t.str("interface"); ok {
		c.Interface = s
	} else if !t.has("interface") {
		t.missing("interface", "the interface on the servers' LAN")
	}
	c.Mode, _ = oneOfWord(t, "mode", 0, false, ModeRouting, ModeBroadcast)
	if !t.has("mode") {
		t.missing("mode", "routing or broadcast")
	}
	if a, ok := t.unicast("broadcast_address"); ok {
		c.BroadcastAddress = a
	}
	switch {
	case c.Mode == ModeBroadcast && !t.has("broadcast_address"):
		t.missing("broadcast_address", "broadcast mode needs a free LAN address to route the ghost through")
	case c.Mode == ModeRouting && t.has("broadcast_address"):
		t.errorf("broadcast_address", "only for mode = \"broadcast\"; this cluster is in routing mode")
	}
	hash, hashOK := oneOfWord(t, "hash", DefaultHash, true, HashJhash, HashModulo)
	c.Hash = hash
	if hashOK && c.Hash == HashModulo && c.Mode == ModeBroadcast {
		t.errorf("hash", "\"modulo\" works in routing mode only: servers' filters in broadcast mode compute jhash")
	}
	if n, ok := t.integer("seed"); ok {
		if n < 0 || n > math.MaxUint32 {
			t.errorf("seed", "must be between 0 and 0xffffffff, not %d", n)
		} else {
			c.Seed = uint32(n)
		}
	}
	c.Buckets = t.intRange("buckets", DefaultBuckets, 1, MaxBuckets)
	if t.has("announce_key") {
		t.errorf("announce_key", "a shared secret is no longer used: announcements are signed with an Ed25519 key; "+
			"write a pair with `ghostrouter keygen`, name the private key with announce_key_file, give servers the public one")
	}
	if c.Mode == ModeBroadcast {
		d.announceKey(t, &c)
	}
	c.AnnouncePort = t.intRange("announce_port", DefaultAnnouncePort, 1, 65535)
	c.AnnounceInterval, _ = t.durationRange("announce_interval", DefaultAnnounceInterval, MinAnnounceInterval, MaxAnnounceInterval)
	if c.AnnounceInterval <= 0 {
		c.AnnounceInterval = DefaultAnnounceInterval
	}
	c.DrainTimeout = t.drainTimeout("drain_timeout")
	c.FlowMemory = t.intRange("flow_memory", DefaultFlowMemory, MinFlowMemory, MaxFlowMemory)
	if c.Mode == ModeRouting {
		for _, k := range []string{"announce_key_file", "announce_port", "announce_interval"} {
			if t.has(k) {
				t.errorf(k, "only for mode = \"broadcast\": in routing mode the appliance alone chooses the server")
			}
		}
	}

	for _, st := range t.tables("server", "server") {
		st.label = fmt.Sprintf("%s %s", t.label, st.label)
		c.Servers = append(c.Servers, d.server(st, t.label))
		src.servers = append(src.servers, st)
		if c.Mode == ModeBroadcast && st.has("mac") {
			st.errorf("mac", "only for mode = \"routing\": in broadcast mode no frame is sent to a server's MAC")
		}
	}
	if !t.has("server") {
		t.missing("server", "a cluster needs at least one [[cluster.server]]")
	} else if len(c.Servers) == 0 {
		t.errorf("server", "a cluster needs at least one server")
	}
	d.pins(t, &c)

	c.Health = d.health(t)
	d.clusters = append(d.clusters, src)
	return c
}

func (d *decoder) server(t *table, cluster string) Server {
	s := Server{Line: t.line}
	if id, ok := t.integer("id"); ok {
		s.ID = int(max(min(id, math.MaxInt32), math.MinInt32))
		t.label = fmt.Sprintf("%s server %d", cluster, id)
		if id < 0 || id > MaxServerID {
			t.errorf("id", "must be between 0 and %d, not %d", MaxServerID, id)
		}
	} else if !t.has("id") {
		t.missing("id", "every server needs an id: the bucket table names servers by id")
	}
	t.known("id", "address", "weight", "drain", "mac")
	if a, ok := t.unicast("address"); ok {
		s.Address = a
	} else if !t.has("address") {
		t.missing("address", "")
	}
	s.Weight = t.intRange("weight", DefaultWeight, 0, MaxWeight)
	s.Drain, _ = t.boolean("drain")
	if m, ok := t.mac("mac"); ok {
		if m.IsMulticast() {
			t.errorf("mac", "%s is a broadcast or multicast MAC address; a server's MAC is unicast", m)
		} else {
			s.MAC = m
		}
	}
	return s
}

func (d *decoder) health(c *table) Health {
	h := Health{
		Check:    DefaultCheck,
		Interval: DefaultInterval,
		Timeout:  DefaultTimeout,
		Rise:     DefaultRise,
		Fall:     DefaultFall,
	}
	t, ok := c.sub("health", c.label, "health.")
	if !ok {
		return h
	}
	t.known("check", "port", "path", "expect_status", "interval", "timeout", "rise", "fall")
	h.Line = t.line
	check, checkOK := oneOfWord(t, "check", 0, false, CheckTCP, CheckHTTP, CheckICMP, CheckNone)
	h.Check = check
	if !t.has("check") {
		t.missing("check", "tcp, http, icmp or none")
	}
	switch {
	case !checkOK:
	case h.Check == CheckTCP || h.Check == CheckHTTP:
		if t.has("port") {
			h.Port = t.intRange("port", 0, 1, 65535)
		} else {
			t.missing("port", fmt.Sprintf("a %s check needs a port", h.Check))
		}
	case h.Check == CheckICMP || h.Check == CheckNone:
		if t.has("port") {
			t.errorf("port", "only for tcp and http checks, not %q", h.Check)
		}
	}
	switch {
	case !checkOK:
	case h.Check == CheckHTTP:
		h.Path, h.ExpectStatus = DefaultHTTPPath, DefaultExpectStatus
		if s, ok := t.str("path"); ok {
			h.Path = s
			if !strings.HasPrefix(s, "/") || strings.ContainsAny(s, " \t\r\n") {
				t.errorf("path", "%q is not an absolute URL path such as \"/healthz\"", s)
			}
		}
		h.ExpectStatus = t.intRange("expect_status", DefaultExpectStatus, 100, 599)
	default:
		for _, k := range []string{"path", "expect_status"} {
			if t.has(k) {
				t.errorf(k, "only for http checks, not %q", h.Check)
			}
		}
	}
	interval, iok := t.durationRange("interval", DefaultInterval, MinHealthInterval, MaxHealthInterval)
	timeout, tok := t.durationRange("timeout", DefaultTimeout, MinHealthTimeout, MaxHealthInterval)
	h.Interval, h.Timeout = interval, timeout
	if iok && tok && timeout > interval {
		t.errorf("timeout", "%v is longer than the interval %v", timeout, interval)
	}
	h.Rise = t.intRange("rise", DefaultRise, 1, math.MaxInt32)
	h.Fall = t.intRange("fall", DefaultFall, 1, math.MaxInt32)
	return h
}
