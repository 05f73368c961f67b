package config

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Two interfaces on which most test configurations build.
const twoArms = `
[[interface]]
name = "up0"
addresses = ["198.51.100.1/24"]

[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]
`

// A valid routing-mode cluster on lan0, to append to twoArms.
const webCluster = `
[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "routing"

  [[cluster.server]]
  id = 0
  address = "10.0.0.11"

  [[cluster.server]]
  id = 1
  address = "10.0.0.12"
`

func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := Parse("test.toml", []byte(text))
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror:\n%v", numbered(text), err)
	}
	return cfg
}

// numbered prefixes every line of text with its number, for failure output.
func numbered(text string) string {
	var b strings.Builder
	for i, l := range strings.Split(text, "\n") {
		fmt.Fprintf(&b, "%4d | %s\n", i+1, l)
	}
	return b.String()
}

func TestParseFull(t *testing.T) {
	keyPath := filepath.Join(t.TempDir(), "web.key")
	if _, err := keyfile.Generate(keyPath, keyfile.PublicPath(keyPath)); err != nil {
		t.Fatal(err)
	}
	key, keyStat, err := keyfile.ReadPrivate(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	nobody := nobodyIDs(t)
	cfg := mustParse(t, strings.Replace(`
[router]
log_level = "debug"
control_socket = "/tmp/gr.sock"
metrics_address = "[::1]:9000"
send_redirects = true

[[interface]]
name = "up0"
addresses = ["198.51.100.1/24", "2001:db8::1/64"]
mac = "02:00:5e:00:00:01"
mtu = 9000
bridge = "br-up"
queues = 4

[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]

[[route]]
to = "0.0.0.0/0"
via = "198.51.100.254"

[[route]]
to = "10.1.0.0/16"
via = "10.0.0.254"
interface = "lan0"

[[route]]
to = "192.0.2.0/24"
interface = "lan0"

[[neighbor]]
address = "10.0.0.250"
mac = "ff:ff:ff:ff:ff:ff"
interface = "lan0"

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
hash = "jhash"
seed = 0x5eed
buckets = 256
announce_key_file = "KEYFILE"
announce_port = 9999

  [[cluster.server]]
  id = 7
  address = "10.0.0.11"
  weight = 3
  drain = true

  [cluster.health]
  check = "http"
  port = 8080
  path = "/healthz"
  expect_status = 204
  interval = "2s"
  timeout = "1500ms"
  rise = 4
  fall = 5
`, "KEYFILE", keyPath, 1))
	want := &Config{
		File: "test.toml",
		Router: Router{
			LogLevel:       "debug",
			ControlSocket:  "/tmp/gr.sock",
			MetricsAddress: "[::1]:9000",
			SendRedirects:  true,
			User:           "nobody",
			UID:            nobody.UID,
			GID:            nobody.GID,
			ICMPRate:       DefaultICMPRate,
			ICMPBurst:      DefaultICMPBurst,
			ICMPRateMask:   0x1838,
		},
		Interfaces: []Interface{
			{
				Name:      "up0",
				Addresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("2001:db8::1/64")},
				MAC:       MAC{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01},
				MTU:       9000,
				Bridge:    "br-up",
				Queues:    4,
				Line:      8,
			},
			{
				Name:      "lan0",
				Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")},
				MAC:       DerivedMAC("lan0"),
				MTU:       1500,
				Queues:    1,
				Line:      16,
			},
		},
		Routes: []Route{
			{To: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("198.51.100.254"), Interface: "up0", Line: 20},
			{To: netip.MustParsePrefix("10.1.0.0/16"), Via: netip.MustParseAddr("10.0.0.254"), Interface: "lan0", Line: 24},
			{To: netip.MustParsePrefix("192.0.2.0/24"), Interface: "lan0", Line: 29},
		},
		Neighbors: []Neighbor{
			{Address: netip.MustParseAddr("10.0.0.250"), MAC: MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, Interface: "lan0", Line: 33},
		},
		Clusters: []Cluster{{
			Name:             "web",
			Address:          netip.MustParseAddr("203.0.113.10"),
			Interface:        "lan0",
			Mode:             ModeBroadcast,
			BroadcastAddress: netip.MustParseAddr("10.0.0.250"),
			Hash:             HashJhash,
			Seed:             0x5eed,
			Buckets:          256,
			Servers:          []Server{{ID: 7, Address: netip.MustParseAddr("10.0.0.11"), Weight: 3, Drain: true, Line: 50}},
			Health: Health{
				Check: CheckHTTP, Port: 8080, Path: "/healthz", ExpectStatus: 204,
				Interval: 2 * time.Second, Timeout: 1500 * time.Millisecond, Rise: 4, Fall: 5, Line: 56,
			},
			AnnounceKeyFile:  keyPath,
			AnnounceKey:      key,
			AnnounceKeyStat:  keyStat,
			AnnouncePort:     9999,
			AnnounceInterval: time.Second,
			DrainTimeout:     DefaultDrainTimeout,
			FlowMemory:       DefaultFlowMemory,
			Line:             38,
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", cfg, want)
	}
	if r := cfg.Routes[2]; !r.OnLink() {
		t.Errorf("route to %s: OnLink() = false, want true", r.To)
	}
	if ifc, ok := cfg.Interface("lan0"); !ok || ifc.Name != "lan0" {
		t.Errorf(`Interface("lan0") = %v, %v`, ifc, ok)
	}
	if _, ok := cfg.Interface("eth0"); ok {
		t.Errorf(`Interface("eth0") found an interface`)
	}
	if c, ok := cfg.Cluster("web"); !ok || c.Address != netip.MustParseAddr("203.0.113.10") {
		t.Errorf(`Cluster("web") = %v, %v`, c, ok)
	}
	if _, ok := cfg.Cluster("api"); ok {
		t.Errorf(`Cluster("api") found a cluster`)
	}
	if ifc, ok := cfg.Connected(netip.MustParseAddr("2001:db8::99")); !ok || ifc.Name != "up0" {
		t.Errorf("Connected(2001:db8::99) = %v, %v; want up0", ifc, ok)
	}
}

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, twoArms+webCluster)
	nobody := nobodyIDs(t)
	if got := cfg.Router; got != (Router{LogLevel: "info", ControlSocket: "/run/ghostrouter.sock", MetricsAddress: "127.0.0.1:9469",
		User: "nobody", UID: nobody.UID, GID: nobody.GID, ICMPRate: 1000, ICMPBurst: 50, ICMPRateMask: 0x1838}) {
		t.Errorf("Router = %+v, want the defaults", got)
	}
	for _, ifc := range cfg.Interfaces {
		if ifc.MTU != 1500 || ifc.Queues != 1 || ifc.Bridge != "" || ifc.MAC != DerivedMAC(ifc.Name) {
			t.Errorf("interface %q = %+v, want MTU 1500, 1 queue, no bridge, MAC %s", ifc.Name, ifc, DerivedMAC(ifc.Name))
		}
	}
	c := cfg.Clusters[0]
	if c.Hash != HashJhash || c.Seed != 0 || c.Buckets != DefaultBuckets || c.BroadcastAddress.IsValid() {
		t.Errorf("cluster = %+v, want hash jhash, seed 0, %d buckets, no broadcast address", c, DefaultBuckets)
	}
	for _, s := range c.Servers {
		if s.Weight != 1 || s.Drain {
			t.Errorf("server %d = %+v, want weight 1, not draining", s.ID, s)
		}
	}
	wantHealth := Health{Check: CheckNone, Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3}
	if c.Health != wantHealth {
		t.Errorf("Health = %+v, want %+v", c.Health, wantHealth)
	}

	// An http check gets the http defaults; a tcp check does not.
	cfg = mustParse(t, twoArms+webCluster+"[cluster.health]\ncheck = \"http\"\nport = 80\n")
	if h := cfg.Clusters[0].Health; h.Path != "/" || h.ExpectStatus != 200 || h.Rise != 2 || h.Fall != 3 {
		t.Errorf("http Health = %+v, want path \"/\", expect_status 200, rise 2, fall 3", h)
	}
	cfg = mustParse(t, twoArms+webCluster+"[cluster.health]\ncheck = \"tcp\"\nport = 80\n")
	if h := cfg.Clusters[0].Health; h.Path != "" || h.ExpectStatus != 0 || h.Port != 80 {
		t.Errorf("tcp Health = %+v, want port 80, no path or expect_status", h)
	}
}

func TestMetricsAddress(t *testing.T) {
	for _, tc := range []struct {
		router string
		want   string
	}{
		{"", "127.0.0.1:9469"},
		{"[router]\n", "127.0.0.1:9469"},
		{"[router]\nmetrics_address = \"\"\n", ""},
		{"[router]\nmetrics_address = \":9100\"\n", ":9100"},
		{"[router]\nmetrics_address = \"localhost:9100\"\n", "localhost:9100"},
	} {
		cfg := mustParse(t, tc.router+twoArms)
		if got := cfg.Router.MetricsAddress; got != tc.want {
			t.Errorf("Parse(%q): MetricsAddress = %q, want %q", tc.router, got, tc.want)
		}
	}
}

func TestSeed(t *testing.T) {
	for _, tc := range []struct {
		seed string
		want uint32
	}{
		{"0x5eed", 0x5eed},
		{"24301", 24301},
		{"0xffffffff", 0xffffffff},
		{"0o17", 15},
		{"0b101", 5},
		{"1_000", 1000},
	} {
		cfg := mustParse(t, twoArms+strings.Replace(webCluster, "mode", "seed = "+tc.seed+"\nmode", 1))
		if got := cfg.Clusters[0].Seed; got != tc.want {
			t.Errorf("seed = %s: Seed = %#x, want %#x", tc.seed, got, tc.want)
		}
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		interval, timeout string
		wantI, wantT      time.Duration
	}{
		{`"1s"`, `"500ms"`, time.Second, 500 * time.Millisecond},
		{`"1m30s"`, `"1m30s"`, 90 * time.Second, 90 * time.Second},
		{`"250ms"`, `"100us"`, 250 * time.Millisecond, 100 * time.Microsecond},
		{`"1.5s"`, `"0.5s"`, 1500 * time.Millisecond, 500 * time.Millisecond},
	} {
		text := twoArms + webCluster + "[cluster.health]\ncheck = \"icmp\"\ninterval = " + tc.interval + "\ntimeout = " + tc.timeout + "\n"
		h := mustParse(t, text).Clusters[0].Health
		if h.Interval != tc.wantI || h.Timeout != tc.wantT {
			t.Errorf("interval = %s, timeout = %s: got %v, %v; want %v, %v", tc.interval, tc.timeout, h.Interval, h.Timeout, tc.wantI, tc.wantT)
		}
	}
}

func TestDerivedMAC(t *testing.T) {
	for _, name := range []string{"up0", "lan0", "a", "fifteen-chars-x"} {
		m := DerivedMAC(name)
		sum := sha256.Sum256([]byte(name))
		want := net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
		if !bytes.Equal(m[:], want) {
			t.Errorf("DerivedMAC(%q) = %s, want %s", name, m, want)
		}
		if m[0]&0x02 == 0 || m[0]&0x01 != 0 {
			t.Errorf("DerivedMAC(%q) = %s: not locally administered unicast", name, m)
		}
		if again := DerivedMAC(name); m != again {
			t.Errorf("DerivedMAC(%q) changed between calls: %s, then %s", name, m, again)
		}
	}
	if DerivedMAC("up0") == DerivedMAC("lan0") {
		t.Errorf("DerivedMAC(up0) == DerivedMAC(lan0) = %s", DerivedMAC("up0"))
	}
	// Pinned, so that a change to the derivation (and so to every appliance's
	// MACs, and its neighbors' caches) is deliberate.
	if got, want := DerivedMAC("lan0").String(), "02:83:06:f8:20:8e"; got != want {
		t.Errorf("DerivedMAC(lan0) = %s, want %s", got, want)
	}
}

// TestRouteInterfaceResolved checks that a route without interface gets the
// interface whose subnet holds its next hop.
func TestRouteInterfaceResolved(t *testing.T) {
	cfg := mustParse(t, twoArms+`
[[route]]
to = "0.0.0.0/0"
via = "198.51.100.254"

[[route]]
to = "10.8.0.0/16"
via = "10.0.0.254"
`)
	for i, want := range []string{"up0", "lan0"} {
		if got := cfg.Routes[i].Interface; got != want {
			t.Errorf("route to %s: Interface = %q, want %q", cfg.Routes[i].To, got, want)
		}
	}
}

// TestSyntaxForms checks the less common ways of writing the same things:
// inline tables, dotted keys, quoted keys, multi-line arrays with comments,
// CRLF line ends.
func TestSyntaxForms(t *testing.T) {
	text := `
"router".log_level = "warn"   # a dotted key at the top level

[[interface]]
name = 'up0'
addresses = [   # comment
  "198.51.100.1/24",  # comment, trailing comma
]
[[interface]]
name = "lan0"
addresses = ["""10.0.0.1/24"""]

[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "routing"
server = [
  { id = 0, address = "10.0.0.11" },
  { id = 1, address = "10.0.0.12", weight = 2 },
]
health.check = "tcp"
health.port = 80
`
	for _, eol := range []string{"\n", "\r\n"} {
		cfg := mustParse(t, strings.ReplaceAll(text, "\n", eol))
		if cfg.Router.LogLevel != "warn" {
			t.Errorf("eol %q: LogLevel = %q, want warn", eol, cfg.Router.LogLevel)
		}
		c := cfg.Clusters[0]
		if len(c.Servers) != 2 || c.Servers[1].Weight != 2 || c.Servers[1].Line != 20 || c.Health.Port != 80 {
			t.Errorf("eol %q: cluster = %+v, want 2 servers, the second of weight 2 on line 20, health port 80", eol, c)
		}
	}
}

// want is one expected problem.
type want struct {
	line int
	key  string
	msg  string // a substring of Msg; "" for any
}

// wants reads the problems a test configuration expects from markers in its
// comments: "#! KEY" or "#! KEY ~ MESSAGE PART" expects a problem on that
// line; several may follow one another on a line. "#!0" instead of "#!"
// expects a problem about the whole file (line 0).
func wants(text string) []want {
	var ws []want
	for i, l := range strings.Split(text, "\n") {
		for _, part := range strings.Split(l, "#!")[1:] {
			line := i + 1
			if rest, ok := strings.CutPrefix(part, "0 "); ok {
				part, line = rest, 0
			}
			key, msg, _ := strings.Cut(part, "~")
			ws = append(ws, want{line: line, key: strings.TrimSpace(key), msg: strings.TrimSpace(msg)})
		}
	}
	return ws
}

// TestProblems parses bad configurations and checks that Parse reports
// exactly the problems marked in each (see wants), with their lines and keys,
// all in one call.
func TestProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
	}{
		// TOML syntax.
		{"syntax missing value", twoArms + "\n[router]\nlog_level = #! router.log_level ~ TOML syntax\n"},
		{"syntax duplicate key", twoArms + "[[route]]\nto = \"0.0.0.0/0\"\nto = \"::/0\" #! route.to ~ already been defined\n"},
		{"syntax unterminated array", "[[interface]]\nname = \"up0\"\naddresses = [\"10.0.0.1/24\",\n\nmtu = 1500 #! interface.addresses ~ TOML syntax\n"},

		// Unknown keys and wrong types.
		{"unknown top-level key", "routers = 1 #! routers ~ unknown key\n" + twoArms},
		{"unknown table", twoArms + "[dispatcher] #! dispatcher ~ unknown key\nx = 1\n"},
		{"misspelt router key", "[router]\nloglevel = \"info\" #! router.loglevel ~ did you mean \"log_level\"\n" + twoArms},
		{"unknown interface key", twoArms + "mtus = 1500 #! interface \"lan0\": mtus ~ did you mean \"mtu\"\n"},
		{"unknown quoted key", twoArms + "\"a b\" = 1 #! interface \"lan0\": \"a b\" ~ unknown key\n"},
		{"unknown cluster keys", twoArms + strings.Replace(webCluster, "mode", "hashing = \"jhash\" #! cluster \"web\": hashing ~ unknown key (known keys: name, address,\nmode", 1) +
			"  weigth = 2 #! cluster \"web\" server 1: weigth ~ did you mean \"weight\"\n" +
			"  [cluster.health]\n  check = \"none\"\n  intervall = \"1s\" #! cluster \"web\": health.intervall ~ did you mean \"interval\"\n"},
		{"unknown neighbor key", twoArms + "[[neighbor]]\naddress = \"10.0.0.9\"\nmac = \"02:00:00:00:00:09\"\ninterface = \"lan0\"\nstatic = true #! neighbor \"10.0.0.9\": static ~ unknown key\n"},
		{"wrong types", "[router]\nlog_level = 1 #! router.log_level ~ must be a string, not an integer (1)\nsend_redirects = \"yes\" #! router.send_redirects ~ must be a boolean\n" +
			"[[interface]]\nname = \"lan0\"\naddresses = \"10.0.0.1/24\" #! interface \"lan0\": addresses ~ must be an array of strings\nmtu = \"1500\" #! interface \"lan0\": mtu ~ must be an integer, not a string\nqueues = 1.0 #! interface \"lan0\": queues ~ not a float (1.0)\n"},
		{"interface as a table", "[interface] #! interface ~ must be an array of tables ([[interface]])\nname = \"lan0\"\n"},
		{"router as an array", "[[router]] #! router ~ must be a table ([router])\n" + twoArms},
		{"address element types", "[[interface]]\nname = \"lan0\"\naddresses = [\n  \"10.0.0.1/24\",\n  24, #! interface \"lan0\": addresses ~ element 2 must be a string\n]\n"},
		{"cluster value types", twoArms + `
[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "routing"
seed = "0x5eed" #! cluster "web": seed ~ must be an integer, not a string
buckets = 1e3 #! cluster "web": buckets ~ must be an integer, not a float
server = [{id = 0, address = "10.0.0.11", drain = 1}, 5] #! cluster "web" server 0: drain ~ must be a boolean #! cluster "web": server ~ element 2 must be a table
`},

		// The file as a whole.
		{"no interfaces", "#!0 interface ~ at least one [[interface]]\n[router]\nlog_level = \"info\"\n"},
		{"empty file", "#!0 interface ~ at least one [[interface]]\n"},
		{"empty interface array", "interface = [] #! interface ~ at least one [[interface]]\n"},

		// [router].
		{"router values", "[router]\nlog_level = \"verbose\" #! router.log_level ~ must be one of debug, info, warn, error, not \"verbose\"\n" +
			"control_socket = \"\" #! router.control_socket ~ must not be empty\n" +
			"metrics_address = \"127.0.0.1\" #! router.metrics_address ~ not host:port\n" + twoArms},
		{"router socket too long", "[router]\ncontrol_socket = \"/" + strings.Repeat("s", 107) + "\" #! router.control_socket ~ has room for 107\n" +
			"metrics_address = \"127.0.0.1:0\" #! router.metrics_address ~ port must be between 1 and 65535\n" + twoArms},

		// Interfaces.
		{"interface names", `
[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]
[[interface]]
name = "lan0" #! interface "lan0": name ~ already defined on line 3
addresses = ["10.1.0.1/24"]
[[interface]]
name = "a-very-long-interface" #! interface "a-very-long-interface": name ~ longer than 15 bytes
addresses = ["10.2.0.1/24"]
[[interface]]
name = "up/0" #! interface "up/0": name ~ cannot contain
addresses = ["10.3.0.1/24"]
[[interface]]
name = "up 0" #! interface "up 0": name ~ cannot contain
addresses = ["10.4.0.1/24"]
[[interface]]
name = "" #! interface "": name ~ must not be empty
addresses = ["10.5.0.1/24"]
[[interface]] #! interface[6]: name ~ missing
addresses = ["10.6.0.1/24"]
[[interface]]
name = "br" 
addresses = ["10.7.0.1/24"]
bridge = "br:0" #! interface "br": bridge ~ cannot contain
`},
		{"interface addresses", `
[[interface]] #! interface "lan0": addresses ~ at least one address
name = "lan0"
[[interface]]
name = "lan1"
addresses = [] #! interface "lan1": addresses ~ at least one address
[[interface]]
name = "lan2"
addresses = [
  "10.2.0.0/24",    #! interface "lan2": addresses ~ network address of 10.2.0.0/24
  "10.2.1.255/24",  #! interface "lan2": addresses ~ broadcast address of 10.2.1.0/24
  "10.2.2.1",       #! interface "lan2": addresses ~ has no prefix length
  "10.2.3.300/24",  #! interface "lan2": addresses ~ not an address with a prefix length
  "224.0.0.1/4",    #! interface "lan2": addresses ~ multicast
  "10.2.4.1/0",     #! interface "lan2": addresses ~ prefix length of 0
  "127.0.0.1/8",    #! interface "lan2": addresses ~ loopback
  "fe80::1%lan2/64", #! interface "lan2": addresses ~ not an address with a prefix length
  "::ffff:10.2.5.1/120", #! interface "lan2": addresses ~ IPv4-mapped
  "10.2.6.0/31",    # RFC 3021: fine
  "10.2.7.7/32",    # fine
]
`},
		{"duplicate and overlapping subnets", `
[[interface]]
name = "up0"
addresses = ["198.51.100.1/24", "10.0.0.1/16"]
[[interface]]
name = "lan0"
addresses = [
  "10.0.5.1/24",     #! interface "lan0": addresses ~ subnet 10.0.5.0/24 overlaps 10.0.0.0/16 on interface "up0" (line 4)
  "198.51.100.9/24", #! interface "lan0": addresses ~ subnet 198.51.100.0/24 is also on interface "up0" (line 4)
  "198.51.100.1/24", #! interface "lan0": addresses ~ 198.51.100.1 is already assigned to interface "up0" on line 4
  "192.0.2.1/24",
  "192.0.2.1/24",    #! interface "lan0": addresses ~ 192.0.2.1 is given twice (also on line 11)
  "192.0.2.2/24",    # a second address on the same subnet of the same interface is fine
]
`},
		{"interface MACs", `
[[interface]]
name = "a0"
addresses = ["10.0.0.1/24"]
mac = "01:00:5e:00:00:01" #! interface "a0": mac ~ multicast MAC
[[interface]]
name = "a1"
addresses = ["10.0.1.1/24"]
mac = "00:00:00:00:00:00" #! interface "a1": mac ~ zero MAC
[[interface]]
name = "a2"
addresses = ["10.0.2.1/24"]
mac = "02:00:5e:00:00" #! interface "a2": mac ~ not a MAC address
[[interface]]
name = "a3"
addresses = ["10.0.3.1/24"]
mac = "00:00:00:00:fe:80:00:00:00:00:00:00:00:00:00:00:00:00:00:00" #! interface "a3": mac ~ not a MAC address
[[interface]]
name = "a4"
addresses = ["10.0.4.1/24"]
mac = "ff:ff:ff:ff:ff:ff" #! interface "a4": mac ~ multicast
`},
		{"interface MTU and queues", `
[[interface]]
name = "a0"
addresses = ["10.0.0.1/24"]
mtu = 67 #! interface "a0": mtu ~ between 68 and 65535, not 67
queues = 0 #! interface "a0": queues ~ between 1 and 16, not 0
[[interface]]
name = "a1"
addresses = ["10.0.1.1/24"]
mtu = 65536 #! interface "a1": mtu ~ between 68 and 65535
queues = 17 #! interface "a1": queues ~ between 1 and 16
[[interface]]
name = "a2"
addresses = ["2001:db8::1/64"]
mtu = 1279 #! interface "a2": mtu ~ below 1280
`},

		// Routes.
		{"routes", twoArms + `
[[route]]
to = "10.9.0.1/16" #! route "10.9.0.1/16": to ~ not canonical: it has host bits set; write "10.9.0.0/16"
via = "10.0.0.254"
[[route]]
to = "10.10.0.0/16"
via = "192.168.1.1" #! route "10.10.0.0/16": via ~ not on any interface's subnet
[[route]]
to = "10.11.0.0/16"
via = "10.0.0.254" #! route "10.11.0.0/16": via ~ 10.0.0.254 is not on a subnet of interface "up0" (198.51.100.0/24)
interface = "up0"
[[route]]
to = "10.12.0.0/16"
via = "10.0.0.254"
interface = "eth9" #! route "10.12.0.0/16": interface ~ unknown interface "eth9" (interfaces: "up0", "lan0")
[[route]] #! route "10.13.0.0/16": interface ~ on-link and needs an interface
to = "10.13.0.0/16"
[[route]]
to = "10.14.0.0/16"
via = "10.0.0.254"
[[route]]
to = "10.14.0.0/16" #! route "10.14.0.0/16": to ~ duplicate route to 10.14.0.0/16 (also on line 27)
interface = "lan0"
[[route]]
to = "10.15.0.0/16"
via = "2001:db8::1" #! route "10.15.0.0/16": via ~ different IP families
[[route]]
to = "10.16.0.0/16"
via = "10.0.0.1" #! route "10.16.0.0/16": via ~ this router's own address on interface "lan0"
[[route]]
to = "10.17.0.0/16"
via = "10.0.0.255" #! route "10.17.0.0/16": via ~ broadcast address of 10.0.0.0/24
[[route]] #! route[10]: to ~ missing
via = "10.0.0.254"
[[route]]
to = "10.18.0.0" #! route "10.18.0.0": to ~ has no prefix length
via = "10.0.0.254"
[[route]]
to = "10.19.0.0/16"
via = "0.0.0.1" #! route "10.19.0.0/16": via ~ "this network"
[[route]]
to = "10.20.0.0/16"
interface = "" #! route "10.20.0.0/16": interface ~ must not be empty
`},

		// Neighbors.
		{"neighbors", twoArms + `
[[neighbor]]
address = "10.0.0.20"
mac = "02:00:00:00:00:20"
interface = "lan9" #! neighbor "10.0.0.20": interface ~ unknown interface "lan9"
[[neighbor]]
address = "10.0.1.20" #! neighbor "10.0.1.20": address ~ not on a subnet of interface "lan0" (10.0.0.0/24)
mac = "02:00:00:00:00:20"
interface = "lan0"
[[neighbor]] #! neighbor "10.0.0.21": mac ~ missing #! neighbor "10.0.0.21": interface ~ missing
address = "10.0.0.21"
[[neighbor]]
address = "10.0.0.1" #! neighbor "10.0.0.1": address ~ this router's own address
mac = "02:00:00:00:00:20"
interface = "lan0"
[[neighbor]]
address = "10.0.0.22"
mac = "02:00:00:00:00:22"
interface = "lan0"
[[neighbor]]
address = "10.0.0.22" #! neighbor "10.0.0.22": address ~ duplicate neighbor 10.0.0.22 on interface "lan0" (also on line 25)
mac = "02:00:00:00:00:23"
interface = "lan0"
[[neighbor]]
address = "10.0.0.23"
mac = "zz:00:00:00:00:23" #! neighbor "10.0.0.23": mac ~ not a MAC address
interface = "lan0"
`},

		// Clusters.
		{"cluster identity", twoArms + webCluster + `
[[cluster]]
name = "web" #! cluster "web": name ~ already defined on line 11
address = "203.0.113.10" #! cluster "web": address ~ already the ghost of cluster "web" (line 12)
interface = "lan0"
mode = "routing"
  [[cluster.server]]
  id = 0
  address = "10.0.0.11"
[[cluster]]
name = "web 2" #! cluster "web 2": name ~ a cluster name is
address = "10.0.0.1" #! cluster "web 2": address ~ this router's own address on interface "lan0"
interface = "lan9" #! cluster "web 2": interface ~ unknown interface "lan9"
mode = "routed" #! cluster "web 2": mode ~ must be one of routing, broadcast, not "routed"
hash = "crc32" #! cluster "web 2": hash ~ must be one of jhash, modulo
  [[cluster.server]]
  id = 0
  address = "10.9.9.9"
[[cluster]] #! cluster[3]: name ~ missing #! cluster[3]: address ~ missing #! cluster[3]: interface ~ missing #! cluster[3]: mode ~ missing #! cluster[3]: server ~ at least one
`},
		{"cluster numbers", twoArms + `
[[cluster]]
name = "a"
address = "203.0.113.1"
interface = "lan0"
mode = "routing"
seed = -1 #! cluster "a": seed ~ between 0 and 0xffffffff, not -1
buckets = 0 #! cluster "a": buckets ~ between 1 and 65536, not 0
server = [{ id = 0, address = "10.0.0.11" }]
[[cluster]]
name = "b"
address = "203.0.113.2"
interface = "lan0"
mode = "routing"
seed = 0x1_0000_0000 #! cluster "b": seed ~ not 4294967296
buckets = 65537 #! cluster "b": buckets ~ not 65537
server = [{ id = 0, address = "10.0.0.11" }]
`},
		{"cluster modes", twoArms + `
[[neighbor]]
address = "10.0.0.250"
mac = "02:00:00:00:02:50" #! neighbor "10.0.0.250": mac ~ broadcast_address of cluster "b" and must resolve to ff:ff:ff:ff:ff:ff
interface = "lan0"
[[cluster]] #! cluster "a": broadcast_address ~ missing: broadcast mode needs
name = "a"
address = "203.0.113.1"
interface = "lan0"
mode = "broadcast"
hash = "modulo" #! cluster "a": hash ~ routing mode only
server = [{ id = 0, address = "10.0.0.11" }]
[[cluster]]
name = "b"
address = "203.0.113.2"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
server = [{ id = 0, address = "10.0.0.11" }]
[[cluster]]
name = "c"
address = "203.0.113.3"
interface = "lan0"
mode = "routing"
broadcast_address = "10.0.0.250" #! cluster "c": broadcast_address ~ only for mode = "broadcast"
server = [{ id = 0, address = "10.0.0.11" }]
`},
		{"announcements", twoArms + `
[[cluster]]
name = "b"
address = "203.0.113.2"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
announce_key = "0123456789abcdef-web" #! cluster "b": announce_key ~ no longer used
announce_port = 70000 #! cluster "b": announce_port
announce_interval = "soon" #! cluster "b": announce_interval ~ not a duration
announce_key_file = "/nonexistent/b.key" #! cluster "b": announce_key_file ~ no such file
server = [{ id = 0, address = "10.0.0.11" }]
[[cluster]]
name = "r"
address = "203.0.113.3"
interface = "lan0"
mode = "routing"
announce_key_file = "r.key" #! cluster "r": announce_key_file ~ only for mode = "broadcast"
server = [{ id = 0, address = "10.0.0.11" }]
`},
		{"drain timeout and flow memory", twoArms + `
[[cluster]]
name = "a"
address = "203.0.113.1"
interface = "lan0"
mode = "routing"
drain_timeout = "-1s" #! cluster "a": drain_timeout ~ between "0s" and "24h0m0s", not "-1s"
flow_memory = 10 #! cluster "a": flow_memory ~ between 64 and 4194304, not 10
server = [{ id = 0, address = "10.0.0.11" }]
[[cluster]]
name = "b"
address = "203.0.113.2"
interface = "lan0"
mode = "routing"
drain_timeout = "forever" #! cluster "b": drain_timeout ~ not a duration
server = [{ id = 0, address = "10.0.0.12" }]
[[cluster]]
name = "c"
address = "203.0.113.3"
interface = "lan0"
mode = "routing"
drain_timeout = 30 #! cluster "c": drain_timeout ~ must be a duration string
server = [{ id = 0, address = "10.0.0.13" }]
`},
		{"broadcast addresses", twoArms + `
[[cluster]]
name = "a"
address = "203.0.113.1"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.1.250" #! cluster "a": broadcast_address ~ not on a subnet of interface "lan0" (10.0.0.0/24)
server = [{ id = 0, address = "10.0.0.11" }]
[[cluster]]
name = "b"
address = "203.0.113.2"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.1" #! cluster "b": broadcast_address ~ this router's own address
server = [{ id = 0, address = "10.0.0.11" }]
[[cluster]]
name = "c"
address = "203.0.113.3"
interface = "lan0"
mode = "broadcast"
broadcast_address = "203.0.113.1" #! cluster "c": broadcast_address ~ the ghost of cluster "a" (line 12)
server = [{ id = 0, address = "10.0.0.11" }]
[[cluster]]
name = "d"
address = "203.0.113.4"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.11" #! cluster "d": broadcast_address ~ the address of a server of cluster "a" (line 16)
server = [{ id = 0, address = "10.0.0.12" }]
[[cluster]]
name = "e"
address = "203.0.113.5"
interface = "lan0"
mode = "broadcast"
broadcast_address = "2001:db8::250" #! cluster "e": broadcast_address ~ different IP families
server = [{ id = 0, address = "10.0.0.12" }]
[[cluster]]
name = "f"
address = "203.0.113.6"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.255" #! cluster "f": broadcast_address ~ broadcast address of 10.0.0.0/24
server = [{ id = 0, address = "10.0.0.12" }]
`},
		{"servers", twoArms + `
[[cluster]] #! cluster "none": server ~ at least one [[cluster.server]]
name = "none"
address = "203.0.113.1"
interface = "lan0"
mode = "routing"
[[cluster]]
name = "empty"
address = "203.0.113.2"
interface = "lan0"
mode = "routing"
server = [] #! cluster "empty": server ~ at least one server
[[cluster]]
name = "web"
address = "203.0.113.3"
interface = "lan0"
mode = "routing"
  [[cluster.server]]
  id = 0
  address = "10.0.0.11"
  [[cluster.server]]
  id = 0 #! cluster "web" server 0: id ~ duplicate server id 0 (also on line 27)
  address = "10.0.0.12"
  [[cluster.server]]
  id = -1 #! cluster "web" server -1: id ~ between 0 and 65535, not -1
  address = "10.0.0.13"
  [[cluster.server]] #! cluster "web" server[3]: id ~ missing
  address = "10.0.0.14"
  [[cluster.server]]
  id = 4
  address = "10.0.0.11" #! cluster "web" server 4: address ~ already a server of this cluster (line 28)
  [[cluster.server]]
  id = 5
  address = "10.0.1.15" #! cluster "web" server 5: address ~ not on a subnet of interface "lan0"
  [[cluster.server]]
  id = 6
  address = "10.0.0.1" #! cluster "web" server 6: address ~ this router's own address
  [[cluster.server]]
  id = 7
  address = "203.0.113.3" #! cluster "web" server 7: address ~ the ghost of cluster "web"
  [[cluster.server]]
  id = 8
  address = "10.0.0.18"
  weight = -1 #! cluster "web" server 8: weight ~ between 0 and 65535, not -1
  [[cluster.server]]
  id = 9
  address = "10.0.0.255" #! cluster "web" server 9: address ~ broadcast address of 10.0.0.0/24
  [[cluster.server]] #! cluster "web" server 10: address ~ missing
  id = 10
[[cluster]]
name = "idle"
address = "203.0.113.4"
interface = "lan0"
mode = "routing"
server = [{ id = 0, address = "10.0.0.11", weight = 0 }, { id = 1, address = "10.0.0.12", weight = 0 }] #! cluster "idle": server ~ every server has weight 0
`},
		{"family mismatch", `
[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24", "2001:db8::1/64"]
[[cluster]]
name = "v6"
address = "2001:db8:100::10"
interface = "lan0"
mode = "routing"
  [[cluster.server]]
  id = 0
  address = "10.0.0.11" #! cluster "v6" server 0: address ~ 10.0.0.11 and the ghost 2001:db8:100::10 are of different IP families
  [[cluster.server]]
  id = 1
  address = "2001:db8::11"
`},
		{"ghost is a server", twoArms + strings.Replace(webCluster, `"10.0.0.12"`, `"10.0.0.12" #! cluster "web" server 1: address ~ 10.0.0.12 is the ghost of cluster "other" (line 26)`, 1) + `
[[cluster]]
name = "other"
address = "10.0.0.12"
interface = "lan0"
mode = "routing"
server = [{ id = 0, address = "10.0.0.11" }]
`},

		// Health checks.
		{"health", twoArms + `
[[cluster]]
name = "a"
address = "203.0.113.1"
interface = "lan0"
mode = "routing"
server = [{ id = 0, address = "10.0.0.11" }]
  [cluster.health]
  check = "ping" #! cluster "a": health.check ~ must be one of tcp, http, icmp, none, not "ping"
  rise = 0 #! cluster "a": health.rise ~ must be at least 1, not 0
  fall = 0 #! cluster "a": health.fall ~ must be at least 1, not 0
[[cluster]]
name = "b"
address = "203.0.113.2"
interface = "lan0"
mode = "routing"
server = [{ id = 0, address = "10.0.0.11" }]
  [cluster.health] #! cluster "b": health.port ~ a tcp check needs a port
  check = "tcp"
  path = "/" #! cluster "b": health.path ~ only for http checks, not "tcp"
  expect_status = 200 #! cluster "b": health.expect_status ~ only for http checks
  interval = "1s"
  timeout = "2s" #! cluster "b": health.timeout ~ 2s is longer than the interval 1s
[[cluster]]
name = "c"
address = "203.0.113.3"
interface = "lan0"
mode = "routing"
server = [{ id = 0, address = "10.0.0.11" }]
  [cluster.health]
  check = "icmp"
  port = 80 #! cluster "c": health.port ~ only for tcp and http checks, not "icmp"
  interval = "soon" #! cluster "c": health.interval ~ not a duration
  timeout = 1 #! cluster "c": health.timeout ~ must be a duration string
[[cluster]]
name = "d"
address = "203.0.113.4"
interface = "lan0"
mode = "routing"
server = [{ id = 0, address = "10.0.0.11" }]
  [cluster.health]
  check = "http"
  port = 65536 #! cluster "d": health.port ~ between 1 and 65535
  path = "healthz" #! cluster "d": health.path ~ not an absolute URL path
  expect_status = 99 #! cluster "d": health.expect_status ~ between 100 and 599
  timeout = "-1s" #! cluster "d": health.timeout ~ must be more than 0
[[cluster]]
name = "e"
address = "203.0.113.5"
interface = "lan0"
mode = "routing"
server = [{ id = 0, address = "10.0.0.11" }]
health = { port = 0 } #! cluster "e": health.check ~ missing
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkProblems(t, tc.text)
		})
	}
}

// checkProblems parses text and compares the problems with its markers.
func checkProblems(t *testing.T, text string) {
	t.Helper()
	ws := wants(text)
	if len(ws) == 0 {
		t.Fatal("test configuration has no #! markers")
	}
	cfg, err := Parse("bad.toml", []byte(text))
	if err == nil {
		t.Fatalf("Parse succeeded (%+v), want problems:\n%s", cfg, numbered(text))
	}
	if cfg != nil {
		t.Errorf("Parse returned a Config with its problems")
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse error %T (%v) is not Problems", err, err)
	}
	if !slices.IsSortedFunc(ps, func(a, b Problem) int { return a.Line - b.Line }) {
		t.Errorf("problems are not sorted by line:\n%v", ps)
	}
	matched := make([]bool, len(ps))
	for _, w := range ws {
		found := false
		for i, p := range ps {
			if !matched[i] && p.Line == w.line && p.Key == w.key && strings.Contains(p.Msg, w.msg) && p.File == "bad.toml" {
				matched[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("missing problem: line %d, key %s, message containing %q", w.line, w.key, w.msg)
		}
	}
	for i, p := range ps {
		if !matched[i] {
			t.Errorf("unexpected problem: %v", p)
		}
	}
	if t.Failed() {
		t.Logf("configuration:\n%s\nproblems:\n%v", numbered(text), err)
	}
}

// TestOnePass checks that one Parse call reports problems from every part of
// a file, and formats them as FILE:LINE: KEY: MSG, one per line.
func TestOnePass(t *testing.T) {
	text := `[router]
log_level = "loud"
[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24"]
mtu = 10
[[route]]
to = "10.1.0.1/16"
via = "10.0.0.254"
[[neighbor]]
address = "10.0.0.5"
mac = "02:00:00:00:00:05"
interface = "lan1"
[[cluster]]
name = "web"
address = "203.0.113.10"
interface = "lan0"
mode = "routing"
buckets = 0
  [[cluster.server]]
  id = 0
  address = "10.9.0.11"
  [cluster.health]
  check = "tcp"
`
	_, err := Parse("one.toml", []byte(text))
	want := `one.toml:2: router.log_level: must be one of debug, info, warn, error, not "loud"
one.toml:6: interface "lan0": mtu: must be between 68 and 65535, not 10
one.toml:8: route "10.1.0.1/16": to: "10.1.0.1/16" is not canonical: it has host bits set; write "10.1.0.0/16"
one.toml:13: neighbor "10.0.0.5": interface: unknown interface "lan1" (interfaces: "lan0")
one.toml:19: cluster "web": buckets: must be between 1 and 65536, not 0
one.toml:22: cluster "web" server 0: address: 10.9.0.11 is not on a subnet of interface "lan0" (10.0.0.0/24)
one.toml:23: cluster "web": health.port: missing: a tcp check needs a port`
	if err == nil || err.Error() != want {
		t.Errorf("Parse error:\n%v\nwant:\n%s", err, want)
	}
}

func TestProblemError(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{File: "a.toml", Line: 3, Key: "router.log_level", Msg: "bad"}, "a.toml:3: router.log_level: bad"},
		{Problem{File: "a.toml", Line: 0, Key: "interface", Msg: "missing"}, "a.toml: interface: missing"},
		{Problem{File: "a.toml", Line: 7, Msg: "TOML syntax: oops"}, "a.toml:7: TOML syntax: oops"},
	} {
		if got := tc.p.Error(); got != tc.want {
			t.Errorf("%#v.Error() = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte(twoArms), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(good)
	if err != nil || cfg.File != good {
		t.Fatalf("Load(%q) = %+v, %v; want a Config with File set", good, cfg, err)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[router]\nlog_level = 3\n"+twoArms), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].File != bad || ps[0].Line != 2 {
		t.Errorf("Load(%q) error = %v; want one problem on %s:2", bad, err, bad)
	}

	missing := filepath.Join(dir, "missing.toml")
	_, err = Load(missing)
	if err == nil || !errors.Is(err, os.ErrNotExist) || errors.As(err, &ps) {
		t.Errorf("Load(%q) error = %v; want a not-exist error that is not Problems", missing, err)
	}
}

func TestSubnetBroadcast(t *testing.T) {
	for p, want := range map[string]string{
		"10.0.0.1/24":      "10.0.0.255",
		"10.0.0.1/8":       "10.255.255.255",
		"198.51.100.77/30": "198.51.100.79",
		"203.0.113.4/20":   "203.0.127.255",
		"0.0.0.0/0":        "255.255.255.255",
		"10.0.0.1/31":      "",
		"10.0.0.1/32":      "",
		"2001:db8::1/64":   "",
	} {
		a, ok := SubnetBroadcast(netip.MustParsePrefix(p))
		if got := a.String(); ok != (want != "") || ok && got != want {
			t.Errorf("SubnetBroadcast(%s) = %s, %v; want %q", p, got, ok, want)
		}
	}
}

func TestAnnounceTo(t *testing.T) {
	for _, tc := range []struct {
		addrs    []string
		src, dst string
	}{
		{[]string{"10.0.0.1/24", "2001:db8::1/64"}, "10.0.0.1/24", "10.0.0.255"},
		{[]string{"2001:db8::1/64", "10.0.0.1/24"}, "10.0.0.1/24", "10.0.0.255"},
		{[]string{"2001:db8::1/64"}, "2001:db8::1/64", "ff02::1"},
		{[]string{"10.0.0.1/32", "2001:db8::1/64"}, "2001:db8::1/64", "ff02::1"},
		{[]string{"10.0.0.1/32"}, "", ""},
	} {
		ifc := Interface{Name: "lan0"}
		for _, a := range tc.addrs {
			ifc.Addresses = append(ifc.Addresses, netip.MustParsePrefix(a))
		}
		src, dst, ok := ifc.AnnounceTo()
		if tc.dst == "" {
			if ok {
				t.Errorf("%v: announces from %s to %s, want nowhere", tc.addrs, src, dst)
			}
			continue
		}
		if !ok || src.String() != tc.src || dst.String() != tc.dst {
			t.Errorf("%v: from %s to %s (%v), want from %s to %s", tc.addrs, src, dst, ok, tc.src, tc.dst)
		}
	}
}
