package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// The dispatch tests' oracle for which bucket a client is in, independent of
// the appliance's code: a reference of the hash contract written here from
// the Linux kernel's lookup3 jhash() (include/linux/jhash.h, initval
// 0xdeadbeef, a 4-byte key taken as one little-endian word), reduced as
// bucket = (jhash * buckets) >> 32, and the servers' kernels computing
// nftables' `jhash ip saddr mod BUCKETS seed SEED` for every ghost packet
// they receive.

func rol32(x uint32, s uint) uint32 { return x<<s | x>>(32-s) }

// refBucket4 is the contract's bucket of IPv4 client a.
func refBucket4(a netip.Addr, seed uint32, buckets int) int {
	k := a.As4()
	init := 0xdeadbeef + 4 + seed
	x, y, z := init, init, init // a, b, c of jhash.h
	x += uint32(k[0]) | uint32(k[1])<<8 | uint32(k[2])<<16 | uint32(k[3])<<24
	// __jhash_final(a, b, c)
	z ^= y
	z -= rol32(y, 14)
	x ^= z
	x -= rol32(z, 11)
	y ^= x
	y -= rol32(x, 25)
	z ^= y
	z -= rol32(y, 16)
	x ^= z
	x -= rol32(z, 4)
	y ^= x
	y -= rol32(x, 14)
	z ^= y
	z -= rol32(y, 24)
	return int(uint64(z) * uint64(buckets) >> 32)
}

// TestRefBucketWorkedExample pins the reference to the hash contract's
// worked example (seed 0x5eed, 3 buckets).
func TestRefBucketWorkedExample(t *testing.T) {
	for a, want := range map[string]int{"198.51.100.12": 1, "198.51.100.13": 0, "198.51.100.14": 1, "198.51.100.15": 2} {
		if got := refBucket4(netip.MustParseAddr(a), 0x5eed, 3); got != want {
			t.Errorf("refBucket4(%s) = %d, want %d", a, got, want)
		}
	}
}

const kernelHashTable = "grhash"

// recordKernelBuckets makes ns's kernel note, for every packet to the ghost,
// its source and nftables' jhash bucket of that source.
func recordKernelBuckets(t *testing.T, ns *harness.NS, seed uint32, buckets int) {
	t.Helper()
	script := fmt.Sprintf(`table ip %s {
	set seen { typeof ip saddr . meta mark; flags dynamic; size 65535; }
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		ip daddr %s meta mark set jhash ip saddr mod %d seed %#x add @seen { ip saddr . meta mark } meta mark set 0
	}
}
`, kernelHashTable, ghostAddr, buckets, seed)
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s\n%s", ns.Name, err, out, script)
	}
}

// kernelBuckets reads back what recordKernelBuckets noted: source -> bucket.
func kernelBuckets(t *testing.T, ns *harness.NS) map[netip.Addr]int {
	t.Helper()
	out := ns.MustRun("nft", "-j", "list", "set", "ip", kernelHashTable, "seen")
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j list set in %s: %v\n%s", ns.Name, err, out)
	}
	got := map[netip.Addr]int{}
	for _, obj := range doc.Nftables {
		raw, ok := obj["set"]
		if !ok {
			continue
		}
		var set struct {
			Elem []json.RawMessage `json:"elem"`
		}
		if err := json.Unmarshal(raw, &set); err != nil {
			t.Fatalf("nft set: %v", err)
		}
		for _, e := range set.Elem {
			var el struct {
				Concat []json.RawMessage `json:"concat"`
				Elem   *struct {
					Val struct {
						Concat []json.RawMessage `json:"concat"`
					} `json:"val"`
				} `json:"elem"`
			}
			if err := json.Unmarshal(e, &el); err != nil {
				t.Fatalf("nft element %s: %v", e, err)
			}
			c := el.Concat
			if c == nil && el.Elem != nil {
				c = el.Elem.Val.Concat
			}
			if len(c) != 2 {
				t.Fatalf("nft element %s: want address . mark", e)
			}
			var as string
			if err := json.Unmarshal(c[0], &as); err != nil {
				t.Fatalf("nft element %s: %v", e, err)
			}
			a, err := netip.ParseAddr(as)
			if err != nil {
				t.Fatalf("nft element %s: %v", e, err)
			}
			mark, err := strconv.ParseUint(strings.Trim(string(c[1]), `"`), 0, 32)
			if err != nil {
				t.Fatalf("nft element %s: %v", e, err)
			}
			got[a] = int(mark)
		}
	}
	return got
}

// bucketPairs returns up to n pairs of addresses from 198.51.100.0/24,
// outside used, that fall in the same bucket by the reference: clients the
// dispatcher must send to one server without knowing they are related.
func bucketPairs(used map[string]bool, seed uint32, buckets, n int) [][2]string {
	first := map[int]string{}
	var out [][2]string
	for i := 2; i < 255 && len(out) < n; i++ {
		a := fmt.Sprintf("198.51.100.%d", i)
		if used[a] {
			continue
		}
		b := refBucket4(netip.MustParseAddr(a), seed, buckets)
		if o, ok := first[b]; ok {
			out = append(out, [2]string{o, a})
			delete(first, b)
			continue
		}
		first[b] = a
	}
	return out
}
