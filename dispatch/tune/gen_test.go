package tune

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// genSpec describes a generated access log with a known skew: a Zipf-like
// population spread over /24s (a tenth of it IPv6), plus a few heavy hitters
// (a crawler, a NAT) with fixed shares of the requests.
type genSpec struct {
	Lines      int
	Population int       // distinct addresses in the Zipf part
	Heavy      []float64 // each heavy hitter's share of all requests
	Seed       uint64    // PRNG seed: the same spec gives the same log
	// Hour is the hour of 26 Nov 2025 the log starts at (default 8): the
	// lines are one second apart, wrapping within the hour.
	Hour int
	// HeavyFrom is the last octet of the first heavy hitter, 192.0.2.X
	// (default 10), so logs can have different heavy hitters.
	HeavyFrom byte
}

// genLog is a generated log and what is known about it.
type genLog struct {
	Text  []byte
	Addrs []netip.Addr // the client of each line, in order
	Sizes []uint64     // the size of each line
	Heavy []netip.Addr // the heavy hitters, heaviest first
	Truth map[netip.Addr]Counts
}

// generate writes the log in a mix of formats: Apache common, Apache
// combined, nginx combined with "-" sizes for 304s.
func generate(spec genSpec) genLog {
	r := rand.New(rand.NewPCG(spec.Seed, 0x7475_6e65))
	pop := make([]netip.Addr, spec.Population)
	prefixes := max(1, spec.Population/40)
	base := make([][3]byte, prefixes)
	for i := range base {
		v := r.Uint32()
		base[i] = [3]byte{byte(v>>16)%223 + 1, byte(v >> 8), byte(v)}
	}
	for i := range pop {
		p := base[i%prefixes]
		host := byte(1 + (i/prefixes)%254)
		if i%10 == 9 {
			pop[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, p[0], p[1], p[2], 0, 0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)})
		} else {
			pop[i] = netip.AddrFrom4([4]byte{p[0], p[1], p[2], host})
		}
	}
	heavy := make([]netip.Addr, len(spec.Heavy))
	for i := range heavy {
		heavy[i] = netip.AddrFrom4([4]byte{192, 0, 2, cmp.Or(spec.HeavyFrom, 10) + byte(i)})
	}
	// v = 30 flattens the head so that the Zipf part alone has no client
	// above a fraction of a percent; the heavy hitters carry the skew.
	zipf := rand.NewZipf(r, 1.05, 30, uint64(spec.Population-1))
	g := genLog{Heavy: heavy, Truth: make(map[netip.Addr]Counts)}
	var buf bytes.Buffer
	buf.Grow(spec.Lines * 150)
	line := make([]byte, 0, 256)
	for i := range spec.Lines {
		var a netip.Addr
		u := r.Float64()
		for k, sh := range spec.Heavy {
			if u < sh {
				a = heavy[k]
				break
			}
			u -= sh
		}
		if !a.IsValid() {
			a = pop[zipf.Uint64()]
		}
		size := uint64(200 + r.IntN(40000))
		status := "200"
		if r.IntN(20) == 0 {
			status, size = "304", 0
		}
		line = line[:0]
		line = a.AppendTo(line)
		sec := i % 3600
		line = fmt.Appendf(line, " - - [26/Nov/2025:%02d:%02d:%02d +0000] \"GET /page/%d HTTP/1.1\" %s ", cmp.Or(spec.Hour, 8)+sec/3600, sec/60%60, sec%60, r.IntN(1000), status)
		if size == 0 && i%2 == 0 {
			line = append(line, '-')
		} else {
			line = strconv.AppendUint(line, size, 10)
		}
		if i%3 != 0 {
			line = append(line, ` "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64) \"quoted\""`...)
		}
		line = append(line, '\n')
		buf.Write(line)
		g.Addrs = append(g.Addrs, a)
		g.Sizes = append(g.Sizes, size)
		c := g.Truth[a]
		c.Requests++
		c.Bytes += size
		g.Truth[a] = c
	}
	g.Text = buf.Bytes()
	return g
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// servers returns n servers with IDs 10, 13, 16, ... (not their indices,
// so ID/index mix-ups show) on 10.0.0.0/16.
func servers(n int) []core.Server {
	s := make([]core.Server, n)
	for i := range s {
		s[i] = core.Server{ID: 10 + 3*i, Addr: netip.AddrFrom4([4]byte{10, 0, byte(i / 200), byte(11 + i%200)}), Weight: 1, Up: true}
	}
	return s
}

// configText is a valid config with one cluster "web" over servers(n) and,
// when second is set, another cluster "api" before it.
func configText(n int, mode, hash string, seed uint32, buckets int, second bool) string {
	var b strings.Builder
	b.WriteString(`# ghostrouter test config
[router]
log_level = "info" # keep

[[interface]]
name = "up0"
addresses = ["198.51.100.1/24"]

[[interface]]
name = "lan0"
addresses = [
  "10.0.0.1/16",   # a multi-line array: its lines are not keys
]

[[neighbor]]
address = "10.0.255.250"
mac = "ff:ff:ff:ff:ff:ff"
interface = "lan0"
`)
	if second {
		b.WriteString(`
[[cluster]]
name = "api"
address = "203.0.113.20"
interface = "lan0"
mode = "routing"
seed = 7
buckets = 256

  [[cluster.server]]
  id = 1
  address = "10.0.1.11"
`)
	}
	fmt.Fprintf(&b, `
# the web cluster: tune me
[[cluster]]
name = "web"          # the site
address = "203.0.113.10"
interface = "lan0"
mode = %q
`, mode)
	if mode == "broadcast" {
		b.WriteString("broadcast_address = \"10.0.255.250\"\n")
	}
	if hash != "" {
		fmt.Fprintf(&b, "hash = %q\n", hash)
	}
	fmt.Fprintf(&b, "seed = %#x     # chosen by hand in 2024\nbuckets = %d\n", seed, buckets)
	for _, s := range servers(n) {
		fmt.Fprintf(&b, "\n  [[cluster.server]]\n  id = %d\n  address = %q\n  weight = 1\n", s.ID, s.Addr)
	}
	b.WriteString("\n  [cluster.health]\n  check = \"none\"\n")
	return b.String()
}
