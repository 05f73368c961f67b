package config

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
	"github.com/ghostrouter/ghostrouter/dispatch/limits"
)

// Defaults filled in by [Parse] for keys that are absent, and the limits it
// enforces.
const (
	DefaultLogLevel       = "info"
	DefaultControlSocket  = "/run/ghostrouter.sock"
	DefaultUser           = "nobody"
	DefaultICMPRate       = 1000                               // per second, per link and type: Linux's icmp_msgs_per_sec
	DefaultICMPBurst      = 50                                 // Linux's icmp_msgs_burst
	DefaultICMPRateMask   = 1<<3 | 1<<4 | 1<<5 | 1<<11 | 1<<12 // Linux's 0x1818, plus redirects
	DefaultMetricsAddress = "127.0.0.1:9469"

	DefaultMTU    = 1500
	MinMTU        = 68    // RFC 791: every IPv4 module must forward 68 octets without fragmenting
	MinMTUIPv6    = 1280  // RFC 8200 section 5: links carrying IPv6 have an MTU of at least 1280
	MaxMTU        = 65535 // the largest IPv4 total length
	DefaultQueues = 1
	MaxQueues     = 16

	DefaultHash    = HashJhash
	DefaultBuckets = 16384 // from this size up, adding a server moves at most 1/(N+1) + 1% of buckets (dispatch/core/doc.go)
	MaxServerID    = 65535
	DefaultWeight  = 1

	// The appliance's limits (package dispatch/limits, which the table, the
	// modulo selector and the announcement codec read too): a file that
	// passes validation is one the running appliance can serve.
	MaxBuckets         = limits.Buckets         // buckets per cluster
	MaxWeight          = limits.Weight          // weight of one server
	MaxServers         = limits.Servers         // servers per cluster
	MaxModuloServers   = limits.ModuloServers   // servers per cluster with hash = "modulo"
	MaxAnnounceMembers = limits.AnnounceMembers // servers per broadcast cluster with an announce_key

	DefaultCheck        = CheckNone
	DefaultHTTPPath     = "/"
	DefaultExpectStatus = 200
	DefaultInterval     = time.Second
	DefaultTimeout      = 500 * time.Millisecond
	DefaultRise         = 2
	DefaultFall         = 3
	MinHealthInterval   = 10 * time.Millisecond
	MaxHealthInterval   = time.Hour
	MinHealthTimeout    = 100 * time.Microsecond

	DefaultDrainTimeout = 5 * time.Minute // how long a planned change keeps the old connections of moved buckets
	MaxDrainTimeout     = 24 * time.Hour
	DefaultFlowMemory   = 65536 // flows a routing cluster remembers while buckets move
	MinFlowMemory       = 64
	MaxFlowMemory       = 1 << 22

	DefaultAnnouncePort     = 9470
	DefaultAnnounceInterval = time.Second
	MinAnnounceInterval     = 100 * time.Millisecond
	MaxAnnounceInterval     = time.Hour

	// maxSocketPath is the room in sockaddr_un.sun_path, less the NUL.
	maxSocketPath = 107
)

// Config is one parsed and validated configuration file.
type Config struct {
	File       string // the path it was read from, as given to Load or Parse
	Router     Router
	Interfaces []Interface
	Routes     []Route
	Neighbors  []Neighbor
	Clusters   []Cluster
	VRRP       []VRRP // [[vrrp]]: virtual routers (vrrp.go)
	BGP        *BGP   // nil without a [bgp] table
}

// Router is the [router] table: settings of the appliance as a whole.
type Router struct {
	LogLevel       string // debug | info | warn | error
	ControlSocket  string // unix socket the CLI talks to
	MetricsAddress string // host:port for Prometheus text; "" (written explicitly) turns metrics off
	SendRedirects  bool   // RFC 1812 redirects for ordinary traffic; never for cluster traffic
	// User is who the appliance runs as once its devices are open (a name
	// or a numeric uid; "root" keeps root); UID and GID are its ids, from
	// the password database when the file was loaded.
	User     string
	UID, GID int
	// ICMPRate and ICMPBurst bound the ICMP errors the datapath sends, per
	// link and per ICMP type (token buckets); ICMPRateMask selects the
	// ICMPv4 types limited (bit n: type n), as Linux's icmp_ratemask.
	ICMPRate     int
	ICMPBurst    int
	ICMPRateMask uint32
}

// Interface is one [[interface]]: a TAP device and the netstack NIC over it.
type Interface struct {
	Name string
	// Addresses are the interface's addresses with their subnets, host bits
	// kept: 198.51.100.1/24 is the address 198.51.100.1 on 198.51.100.0/24.
	// Use Addr() for the address and Masked() for the connected subnet.
	Addresses []netip.Prefix
	// MAC is as written, or DerivedMAC(Name) when not written. Always
	// unicast, not zero.
	MAC    MAC
	MTU    int
	Bridge string // an existing Linux bridge to attach the TAP to; "" for none
	Queues int    // TAP queues
	Line   int    // line of the [[interface]] header
}

// Route is one [[route]]. Connected subnets are not listed here: they come
// from the interfaces' addresses.
type Route struct {
	To        netip.Prefix // canonical (masked)
	Via       netip.Addr   // next hop; the zero Addr for an on-link route
	Interface string       // always set: written, or the interface whose subnet holds Via
	Line      int
}

// OnLink reports whether r has no next hop: To is reached directly on r.Interface.
func (r *Route) OnLink() bool { return !r.Via.IsValid() }

// Neighbor is one [[neighbor]]: a permanent neighbor (ARP/NDP) entry.
type Neighbor struct {
	Address   netip.Addr
	MAC       MAC // not zero; may be broadcast or multicast
	Interface string
	Line      int
}

// Cluster is one [[cluster]]: a ghost address served by a set of servers.
type Cluster struct {
	Name             string
	Address          netip.Addr // the ghost (cluster) address
	Interface        string     // the servers' LAN
	Mode             Mode       // ModeRouting or ModeBroadcast
	BroadcastAddress netip.Addr // the second ghost; valid iff Mode is ModeBroadcast
	Hash             Hash       // HashJhash or HashModulo
	Seed             uint32
	Buckets          int
	Servers          []Server // in file order
	Pins             []Pin    // [[cluster.pin]], in file order (pin.go)
	Health           Health
	// AnnounceKeyFile is the Ed25519 private key file that signs the table
	// announcements the appliance sends to the servers' agents (broadcast
	// mode), as an absolute path; "" sends none. AnnounceKey is its key,
	// read by Load, and AnnounceKeyStat identifies the file read.
	AnnounceKeyFile  string
	AnnounceKey      ed25519.PrivateKey
	AnnounceKeyStat  keyfile.Stat
	AnnouncePort     int           // UDP port of the announcements
	AnnounceInterval time.Duration // how often the current table is repeated
	// DrainTimeout bounds how long, after a planned change (a server added,
	// drained, reweighted or recovered; a reload), the connections of moved
	// buckets are kept on their old server; 0 moves them at once.
	DrainTimeout time.Duration
	// FlowMemory is how many flows a routing cluster remembers while its
	// buckets move.
	FlowMemory int
	Line       int
}

// Server is one [[cluster.server]].
type Server struct {
	ID      int        // unique in its cluster, 0..MaxServerID; the bucket table names servers by ID
	Address netip.Addr // the server's primary address, on the cluster's interface
	Weight  int        // 0..MaxWeight; 0 owns no buckets
	Drain   bool
	// MAC pins the server's MAC (routing mode): the appliance neither
	// resolves nor learns it. Zero: resolved by the appliance. Always unicast.
	MAC  MAC
	Line int
}

// Health is [cluster.health]. When the table is absent Check is CheckNone.
// Port is set only for tcp and http; Path and ExpectStatus only for http.
type Health struct {
	Check        Check
	Port         int
	Path         string
	ExpectStatus int
	Interval     time.Duration
	Timeout      time.Duration // > 0 and <= Interval
	Rise, Fall   int           // consecutive successes to come up, failures to go down
	Line         int           // line of the [cluster.health] header; 0 when absent
}

// Interface returns the interface called name.
func (c *Config) Interface(name string) (*Interface, bool) {
	for i := range c.Interfaces {
		if c.Interfaces[i].Name == name {
			return &c.Interfaces[i], true
		}
	}
	return nil, false
}

// Cluster returns the cluster called name.
func (c *Config) Cluster(name string) (*Cluster, bool) {
	for i := range c.Clusters {
		if c.Clusters[i].Name == name {
			return &c.Clusters[i], true
		}
	}
	return nil, false
}

// Connected returns the interface whose connected subnets contain a.
func (c *Config) Connected(a netip.Addr) (*Interface, bool) {
	for i := range c.Interfaces {
		if c.Interfaces[i].Contains(a) {
			return &c.Interfaces[i], true
		}
	}
	return nil, false
}

// AnnounceTo is where the appliance sends a broadcast cluster's table
// announcements on this interface, and what the servers' agents listen on:
// the IPv4 subnet's broadcast address when the interface has an IPv4
// address that has one, else the IPv6 all-nodes group ff02::1 when it has
// an IPv6 address. ok is false when it has neither.
func (i *Interface) AnnounceTo() (src netip.Prefix, dst netip.Addr, ok bool) {
	for _, p := range i.Addresses {
		if b, isBcast := SubnetBroadcast(p); isBcast {
			return p, b, true
		}
	}
	for _, p := range i.Addresses {
		if p.Addr().Is6() {
			return p, AllNodes, true
		}
	}
	return netip.Prefix{}, netip.Addr{}, false
}

// AllNodes is the IPv6 link-local all-nodes multicast group (RFC 4291),
// which every IPv6 host has joined on every interface.
var AllNodes = netip.MustParseAddr("ff02::1")

// Contains reports whether a is on one of the interface's connected subnets.
func (i *Interface) Contains(a netip.Addr) bool {
	for _, p := range i.Addresses {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// HasAddress reports whether a is one of the interface's own addresses.
func (i *Interface) HasAddress(a netip.Addr) bool {
	for _, p := range i.Addresses {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

// Server returns the server with the given id.
func (c *Cluster) Server(id int) (*Server, bool) {
	for i := range c.Servers {
		if c.Servers[i].ID == id {
			return &c.Servers[i], true
		}
	}
	return nil, false
}

// DerivedMAC is the MAC an interface gets when its mac key is absent: 0x02
// (locally administered, unicast) followed by the first five bytes of
// SHA-256(name). It depends on nothing but the name, so it is stable across
// restarts and identical on a backup appliance.
func DerivedMAC(name string) MAC {
	sum := sha256.Sum256([]byte(name))
	var mac MAC
	mac[0] = 0x02
	copy(mac[1:], sum[:5])
	return mac
}

// Load reads the file at path and parses it with [Parse]. A file that cannot
// be read is an ordinary error; a file that can be read but is wrong yields
// [Problems].
func Load(path string) (*Config, error) {
	return Reload(path, nil)
}

// LoadWithoutKeys is Load for a program that must not hold the private
// keys (a server agent): announce_key_file is recorded as a path but not
// checked or read, and Cluster.AnnounceKey stays nil.
func LoadWithoutKeys(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	d := newDecoder(path, data)
	d.noKeys = true
	return d.result()
}

// Reload is Load for a running program whose configuration is running: a
// key file that running read and that has not changed since is not read
// again (see Cluster.AnnounceKey). running may be nil.
func Reload(path string, running *Config) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	d := newDecoder(path, data)
	d.prev = running
	return d.result()
}

// Parse decodes data, the contents of the named file, fills in defaults and
// validates the result. file is used only in problem reports and Config.File.
//
// On success it returns a complete Config. Otherwise it returns a nil Config
// and [Problems], sorted by line, holding every problem found: a TOML syntax
// error stops decoding (one problem), anything else is collected in one pass.
func Parse(file string, data []byte) (*Config, error) {
	return newDecoder(file, data).result()
}

func (d *decoder) result() (*Config, error) {
	cfg := d.decode()
	if len(d.problems) > 0 {
		d.problems.sort()
		return nil, d.problems
	}
	return cfg, nil
}

// NewLogger returns a text logger on w at level, one of the log_level values
// (debug, info, warn, error; anything else is info). The appliance and the
// server agent log alike.
func NewLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	switch level {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// SubnetBroadcast is the directed broadcast address of an IPv4 subnet
// (10.0.0.255 for 10.0.0.1/24); ok is false for IPv6 and for /31 and /32,
// which have none.
func SubnetBroadcast(p netip.Prefix) (netip.Addr, bool) {
	if !p.Addr().Is4() || p.Bits() < 0 || p.Bits() > 30 {
		return netip.Addr{}, false
	}
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}
