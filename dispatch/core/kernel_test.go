//go:build linux

package core

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestKernelJHashAgrees makes the running kernel compute nftables'
// `jhash ip saddr mod B seed S` (and `jhash ip6 saddr ...`) for hundreds of
// client addresses and checks every result against Bucket(JHash(addr, S), B):
// the appliance and a server's broadcast-mode filter must agree on every
// client (the hash contract in package dispatch's documentation).
//
//	netns <run>-tx                              netns <run>-rx
//	┌────────────────────────────┐              ┌───────────────────────────────────────────┐
//	│ AF_PACKET socket sends UDP │     veth     │ nft prerouting, for each (B, S):          │
//	│ to 198.51.100.1:9 and      │  vtx ── vrx  │  meta mark set jhash ip saddr mod B seed S│
//	│ [2001:db8::1]:9 from 10.x  │ ───────────> │  add @set { ip saddr . meta mark }        │
//	│ and 2001:db8:: sources     │              │ then drop; the test reads the sets back   │
//	└────────────────────────────┘              └───────────────────────────────────────────┘
//
// Nothing outside the two namespaces is touched; they are deleted in
// t.Cleanup. Needs root, ip(8) and nft(8): without them the test is skipped,
// or fails when CI=true.
func TestKernelJHashAgrees(t *testing.T) {
	requirePrivileged(t)

	run := fmt.Sprintf("grk-%d-%08x", os.Getpid(), rand.Uint32())
	tx, rx := run+"-tx", run+"-rx"
	t.Cleanup(func() {
		for _, ns := range []string{tx, rx} {
			if _, err := os.Stat("/run/netns/" + ns); err != nil {
				continue // never created
			}
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("cleanup: ip netns del %s: %v: %s", ns, err, out)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	txMAC := [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	rxMAC := [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	dst4 := netip.MustParseAddr("198.51.100.1")
	dst6 := netip.MustParseAddr("2001:db8::1")
	sh(ctx, t, nil, "ip", "netns", "add", tx)
	sh(ctx, t, nil, "ip", "netns", "add", rx)
	sh(ctx, t, nil, "ip", "-n", tx, "link", "add", "vtx", "address", macString(txMAC),
		"type", "veth", "peer", "name", "vrx", "address", macString(rxMAC), "netns", rx)
	sh(ctx, t, nil, "ip", "-n", tx, "link", "set", "vtx", "up")
	sh(ctx, t, nil, "ip", "-n", rx, "link", "set", "vrx", "up")

	type probe struct {
		set    string
		family string // "ip" or "ip6"
		seed   uint32
		mod    uint32
	}
	var probes []probe
	var rules strings.Builder
	for _, fam := range []string{"ip", "ip6"} {
		fmt.Fprintf(&rules, "table %s grk {\n", fam)
		var chain strings.Builder
		i := 0
		for _, seed := range []uint32{0x5eed, 0xdeadbeef} {
			for _, mod := range []uint32{3, 4096} {
				p := probe{set: fmt.Sprintf("s%d", i), family: fam, seed: seed, mod: mod}
				probes = append(probes, p)
				i++
				fmt.Fprintf(&rules, "  set %s { typeof %s saddr . meta mark; flags dynamic; size 65535; }\n", p.set, fam)
				fmt.Fprintf(&chain, "    meta mark set jhash %s saddr mod %d seed %#x\n", fam, mod, seed)
				fmt.Fprintf(&chain, "    add @%s { %s saddr . meta mark }\n", p.set, fam)
			}
		}
		dst := dst4
		if fam == "ip6" {
			dst = dst6
		}
		fmt.Fprintf(&rules, "  chain probe {\n%s    drop\n  }\n", chain.String())
		fmt.Fprintf(&rules, "  chain pre {\n    type filter hook prerouting priority raw; policy accept;\n")
		fmt.Fprintf(&rules, "    %s daddr %s udp dport 9 jump probe\n  }\n}\n", fam, dst)
	}
	sh(ctx, t, strings.NewReader(rules.String()), "ip", "netns", "exec", rx, "nft", "-f", "-")

	// Clients: random 10.0.0.0/8 and 2001:db8::/32 addresses, plus the hash
	// contract's worked example (package dispatch's documentation). The generator is seeded per run and logged.
	seed := rand.Uint64()
	t.Logf("client address seed %#x", seed)
	rng := rand.New(rand.NewPCG(seed, 0x6b65726e656c))
	clients := map[netip.Addr]bool{}
	for _, s := range []string{"198.51.100.12", "198.51.100.13", "198.51.100.14", "198.51.100.15"} {
		clients[netip.MustParseAddr(s)] = true
	}
	for n4 := 0; n4 < 300; {
		a := netip.AddrFrom4([4]byte{10, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		if !clients[a] {
			clients[a] = true
			n4++
		}
	}
	for n6 := 0; n6 < 300; {
		var b [16]byte
		binary.BigEndian.PutUint64(b[0:], 0x20010db8<<32|rng.Uint64()&0xffffffff)
		binary.BigEndian.PutUint64(b[8:], rng.Uint64())
		if a := netip.AddrFrom16(b); !clients[a] {
			clients[a] = true
			n6++
		}
	}

	ifindex := linkIndex(ctx, t, tx, "vtx")
	poll(ctx, t, "vtx and vrx up", func() bool {
		return linkUp(ctx, tx, "vtx") && linkUp(ctx, rx, "vrx")
	})

	// Send, read the sets back, resend what the kernel has not recorded yet;
	// bounded in rounds and by ctx.
	var got map[string]map[netip.Addr]uint32
	for round := 1; ; round++ {
		var missing []netip.Addr
		for a := range clients {
			for _, p := range probes {
				if (p.family == "ip") == a.Is4() && !hasKey(got[p.family+"/"+p.set], a) {
					missing = append(missing, a)
					break
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		if round > 5 {
			t.Fatalf("after %d rounds the kernel has not recorded %d clients, e.g. %v", round-1, len(missing), missing[0])
		}
		if err := sendProbes(tx, ifindex, rxMAC, dst4, dst6, missing); err != nil {
			t.Fatalf("sending probes from %s: %v", tx, err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			got = readSets(ctx, t, rx)
			if complete(got, missing) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	checked := 0
	for _, p := range probes {
		recs := got[p.family+"/"+p.set]
		if len(recs) < 256 {
			t.Errorf("%s set %s: %d clients recorded, want at least 256", p.family, p.set, len(recs))
		}
		bad := 0
		for a, kernel := range recs {
			if !clients[a] {
				t.Errorf("%s set %s: recorded %s, which the test did not send", p.family, p.set, a)
				continue
			}
			want := Bucket(JHash(a, p.seed), p.mod)
			if kernel != want {
				bad++
				if bad <= 5 {
					t.Errorf("jhash %s saddr mod %d seed %#x: kernel says %s -> %d, Bucket(JHash(%s, %#x), %d) = %d",
						p.family, p.mod, p.seed, a, kernel, a, p.seed, p.mod, want)
				}
			}
			checked++
		}
		if bad > 0 {
			t.Errorf("jhash %s saddr mod %d seed %#x: %d of %d clients disagree", p.family, p.mod, p.seed, bad, len(recs))
		}
	}
	// The worked example, straight from the kernel.
	for s, want := range map[string]uint32{"198.51.100.12": 1, "198.51.100.13": 0, "198.51.100.14": 1, "198.51.100.15": 2} {
		if k, ok := got["ip/s0"][netip.MustParseAddr(s)]; !ok || k != want {
			t.Errorf("kernel: jhash ip saddr mod 3 seed 0x5eed of %s = %d (recorded %v), the worked example says %d", s, k, ok, want)
		}
	}
	t.Logf("%d (client, seed, modulus) results from the kernel compared", checked)
}

// requirePrivileged skips the test unless it can create namespaces and run
// ip and nft; with CI=true it fails instead, so CI cannot skip it silently.
func requirePrivileged(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+"(8) in PATH")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s to run the kernel in network namespaces", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: not skipping)")
	}
	t.Skip(msg)
}

// sh runs a command, failing the test with its output if it fails.
func sh(ctx context.Context, t *testing.T, stdin *strings.Reader, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// poll calls cond until it holds, failing the test when ctx ends.
func poll(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type ipLink struct {
	Ifindex   int      `json:"ifindex"`
	Flags     []string `json:"flags"`
	Operstate string   `json:"operstate"`
}

func linkIndex(ctx context.Context, t *testing.T, ns, dev string) int {
	t.Helper()
	var links []ipLink
	if err := json.Unmarshal(sh(ctx, t, nil, "ip", "-j", "-n", ns, "link", "show", "dev", dev), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j -n %s link show dev %s: %v (%d links)", ns, dev, err, len(links))
	}
	return links[0].Ifindex
}

func linkUp(ctx context.Context, ns, dev string) bool {
	out, err := exec.CommandContext(ctx, "ip", "-j", "-n", ns, "link", "show", "dev", dev).Output()
	var links []ipLink
	if err != nil || json.Unmarshal(out, &links) != nil || len(links) != 1 {
		return false
	}
	return links[0].Operstate == "UP"
}

// sendProbes sends one UDP packet to port 9 from each client, through an
// AF_PACKET socket on ifindex in namespace ns: the packets need no route or
// neighbour entry and leave with exactly the given source addresses. The
// socket is made on a thread that has joined ns; the thread stays locked and
// is discarded when the goroutine ends, so no other goroutine runs in ns.
func sendProbes(ns string, ifindex int, dstMAC [6]byte, dst4, dst6 netip.Addr, clients []netip.Addr) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		errc <- func() error {
			nsfd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(nsfd)
			if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("setns: %w", err)
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("AF_PACKET socket: %w", err)
			}
			defer unix.Close(fd)
			for _, src := range clients {
				var pkt []byte
				proto := uint16(unix.ETH_P_IP)
				if src.Is4() {
					pkt = udp4(src, dst4)
				} else {
					pkt = udp6(src, dst6)
					proto = unix.ETH_P_IPV6
				}
				sa := &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex, Halen: 6}
				copy(sa.Addr[:], dstMAC[:])
				if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
					return fmt.Errorf("sendto from %s: %w", src, err)
				}
			}
			return nil
		}()
	}()
	return <-errc
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// udp4 is an IPv4/UDP packet src:40000 -> dst:9 with a 4-byte payload.
func udp4(src, dst netip.Addr) []byte {
	p := make([]byte, 20+8+4)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], 0x4000) // DF
	p[8], p[9] = 64, unix.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^fold(sum(p[:20], 0)))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 9)
	binary.BigEndian.PutUint16(p[24:], 8+4)
	copy(p[28:], "grk!")
	return p
}

// udp6 is an IPv6/UDP packet src:40000 -> dst:9 with a 4-byte payload.
func udp6(src, dst netip.Addr) []byte {
	p := make([]byte, 40+8+4)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], 8+4)
	p[6], p[7] = unix.IPPROTO_UDP, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	u := p[40:]
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], 9)
	binary.BigEndian.PutUint16(u[4:], 8+4)
	copy(u[8:], "grk!")
	// Pseudo-header: addresses, length, next header.
	acc := sum(p[8:40], 0)
	acc += uint32(len(u)) + unix.IPPROTO_UDP
	acc = sum(u, acc)
	c := ^fold(acc)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return p
}

// sum adds b as big-endian 16-bit words (Internet checksum, RFC 1071).
func sum(b []byte, acc uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	return acc
}

func fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// readSets lists the ruleset of namespace ns and returns the elements of the
// grk tables' sets, keyed "family/set", as address -> mark.
func readSets(ctx context.Context, t *testing.T, ns string) map[string]map[netip.Addr]uint32 {
	t.Helper()
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	out := sh(ctx, t, nil, "ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset")
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("nft -j list ruleset in %s: %v", ns, err)
	}
	sets := map[string]map[netip.Addr]uint32{}
	for _, obj := range doc.Nftables {
		raw, ok := obj["set"]
		if !ok {
			continue
		}
		var set struct {
			Family string            `json:"family"`
			Name   string            `json:"name"`
			Table  string            `json:"table"`
			Elem   []json.RawMessage `json:"elem"`
		}
		if err := json.Unmarshal(raw, &set); err != nil {
			t.Fatalf("nft set %s: %v", raw, err)
		}
		if set.Table != "grk" {
			continue
		}
		recs := map[netip.Addr]uint32{}
		for _, e := range set.Elem {
			a, mark, err := parseElem(e)
			if err != nil {
				t.Fatalf("nft set %s %s: element %s: %v", set.Family, set.Name, e, err)
			}
			recs[a] = mark
		}
		sets[set.Family+"/"+set.Name] = recs
	}
	return sets
}

// parseElem decodes one `saddr . mark` element: {"concat": [addr, mark]}, or
// {"elem": {"val": {"concat": ...}, ...}} when the element carries
// attributes.
func parseElem(raw json.RawMessage) (netip.Addr, uint32, error) {
	var e struct {
		Concat []json.RawMessage `json:"concat"`
		Elem   *struct {
			Val struct {
				Concat []json.RawMessage `json:"concat"`
			} `json:"val"`
		} `json:"elem"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return netip.Addr{}, 0, err
	}
	c := e.Concat
	if c == nil && e.Elem != nil {
		c = e.Elem.Val.Concat
	}
	if len(c) != 2 {
		return netip.Addr{}, 0, fmt.Errorf("want a 2-part concatenation")
	}
	var as string
	if err := json.Unmarshal(c[0], &as); err != nil {
		return netip.Addr{}, 0, err
	}
	a, err := netip.ParseAddr(as)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	ms := strings.Trim(string(c[1]), `"`) // a number, or a string such as "0x00000002"
	mark, err := strconv.ParseUint(ms, 0, 32)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	return a, uint32(mark), nil
}

func hasKey(m map[netip.Addr]uint32, a netip.Addr) bool {
	_, ok := m[a]
	return ok
}

// complete reports whether every client in want appears in every set.
func complete(got map[string]map[netip.Addr]uint32, want []netip.Addr) bool {
	for _, a := range want {
		fam := "ip6"
		if a.Is4() {
			fam = "ip"
		}
		for key, recs := range got {
			if strings.HasPrefix(key, fam+"/") && !hasKey(recs, a) {
				return false
			}
		}
	}
	return true
}
