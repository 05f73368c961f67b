package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// nftOwnedSet reads, from the kernel of ns, the buckets of ghostnode's owned
// set for cluster web (`nft -j list set ip ghost_web owned`: single buckets
// and ranges).
func nftOwnedSet(t *testing.T, ns *harness.NS) map[int]bool {
	t.Helper()
	out := ns.MustRun("nft", "-j", "list", "set", "ip", "ghost_web", "owned")
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j list set in %s: %v\n%s", ns.Name, err, out)
	}
	got := map[int]bool{}
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
			var one int
			if json.Unmarshal(e, &one) == nil {
				got[one] = true
				continue
			}
			var r struct {
				Range [2]int `json:"range"`
			}
			if err := json.Unmarshal(e, &r); err != nil || r.Range[1] < r.Range[0] {
				t.Fatalf("nft element %s: want a bucket or a range", e)
			}
			for b := r.Range[0]; b <= r.Range[1]; b++ {
				got[b] = true
			}
		}
	}
	return got
}

// TestBroadcastThousandsAnnounced: a broadcast-mode cluster of 3000 declared
// servers, more members than one announcement datagram carried before
// segments: three real servers with `ghostnode run`, the other 2997
// declared but absent (drained: members of every announcement that own no
// bucket). The appliance's announcement (3000 members, about 42 KB) crosses
// the LAN as segments over real UDP (captured on a server: 36 "GHRS"
// segments, none IP-fragmented); every ghostnode reassembles it, verifies
// it and installs its filter. The oracle is the servers'
// kernels: the owned sets nftables holds split all 4096 buckets among the
// three real servers, each as large as the appliance's table says, and for
// 64 clients the server whose kernel set holds the client's bucket (by the
// hash contract's reference, written in the test) is the one the appliance
// names and the only one that answers over HTTP and UDP. Then a reload
// drains one real server: the change, a release and an acquisition, also in
// segments, moves its buckets to the other two (and re-balances at most
// 1.5% between them), and every client is answered by its new owner.
func TestBroadcastThousandsAnnounced(t *testing.T) {
	const (
		declared = 3000
		nReal    = 3
		buckets  = 4096
		seed     = 0x5eed
		nClients = 64
	)
	tp := newTopo(t, topoOptions{servers: nReal, clientAddrs: nClients})
	// A /16 LAN holds thousands of server addresses; the servers hear the
	// announcements at its broadcast address.
	for _, s := range tp.servers {
		s.ns.MustRun("ip", "addr", "del", s.addr.String()+"/24", "dev", "e0")
		s.ns.MustRun("ip", "addr", "add", s.addr.String()+"/16", "dev", "e0")
		s.ns.MustRun("ip", "route", "replace", "default", "via", lanAddr)
	}
	tp.startServers()
	base := strings.Replace(tp.baseConfig(), fmt.Sprintf("%q", lanAddr+"/24"), fmt.Sprintf("%q", lanAddr+"/16"), 1)
	if !strings.Contains(base, `"10.0.0.1/16"`) {
		t.Fatal("the LAN's prefix was not widened")
	}
	// config is the file with the real servers of live in the table.
	config := func(live int) string {
		var b strings.Builder
		b.WriteString(base)
		fmt.Fprintf(&b, `
[[cluster]]
name = "web"
address = %q
interface = "lan0"
mode = "broadcast"
hash = "jhash"
seed = %#x
buckets = %d
%s`, ghostAddr, seed, buckets, broadcastExtra(""))
		for i := range declared {
			addr := fmt.Sprintf("10.0.%d.%d", 1+(i-nReal)/250, 1+(i-nReal)%250)
			drain := "drain = true"
			if i < nReal {
				addr = tp.servers[i].addr.String()
			}
			if i < live {
				drain = ""
			}
			fmt.Fprintf(&b, "\n  [[cluster.server]]\n  id = %d\n  address = %q\n  %s\n", i, addr, drain)
		}
		return b.String()
	}
	start := time.Now()
	tp.start(config(nReal))
	capSrv := tp.servers[0].ns.Capture("e0", "(udp and dst port 9470) or (ip[6:2] & 0x3fff != 0)")
	tp.runNodes(tp.cfgPath, 0, nReal)
	var app map[int]int
	harness.WaitFor(t, 30*time.Second, "every real server's filter to hold its buckets of the announced table", func() bool {
		app = tp.applianceBuckets()
		for i := range nReal {
			if app[i] == 0 || tp.ownedCount(i) != app[i] {
				return false
			}
		}
		return true
	})
	inStep := time.Since(start)
	time.Sleep(700 * time.Millisecond) // two more repetitions for the capture
	pkts := capSrv.Stop()

	// The announcements on the wire: segments, none IP-fragmented, each
	// announcement in as many as its length needs.
	type ann struct{ epoch, tx uint64 }
	seen := map[ann]map[int]bool{}
	nOf := map[ann]int{}
	biggest, frags := 0, 0
	for _, p := range pkts {
		if p.Fragment {
			frags++
			continue
		}
		if len(p.Payload) < 32 || string(p.Payload[:4]) != "GHRS" {
			continue
		}
		k, n := int(binary.BigEndian.Uint16(p.Payload[6:])), int(binary.BigEndian.Uint16(p.Payload[8:]))
		total := int(binary.BigEndian.Uint32(p.Payload[28:]))
		if want := (total + 1199) / 1200; n != want || k >= n || total < 3000*14 {
			t.Errorf("segment %d of %d of a %d-byte announcement; want %d segments of at most 1200 bytes", k, n, total, want)
		}
		id := ann{binary.BigEndian.Uint64(p.Payload[12:]), binary.BigEndian.Uint64(p.Payload[20:])}
		if seen[id] == nil {
			seen[id] = map[int]bool{}
		}
		seen[id][k], nOf[id] = true, n
		if p.Src.String() != lanAddr {
			t.Errorf("a segment from %v, not the appliance", p.Src)
		}
		biggest = max(biggest, len(p.Payload)+8)
	}
	whole, segsPer := 0, 0
	for id, ks := range seen {
		if len(ks) == nOf[id] {
			whole, segsPer = whole+1, nOf[id]
		}
	}
	if whole < 2 {
		t.Fatalf("captured %d announcements with all their segments (of %d seen, %d packets); want the repetitions", whole, len(seen), len(pkts))
	}
	if frags != 0 || biggest > 1232 {
		t.Errorf("%d IP fragments to the announce port, largest datagram %d bytes: segments must not be fragmented", frags, biggest)
	}

	// Each ghostnode reassembled and applied all 3000 members.
	for i, s := range tp.servers {
		var rep struct {
			Run *struct {
				Applied *struct {
					Members int `json:"members"`
					Owned   int `json:"owned"`
				} `json:"applied"`
				Segments struct {
					Segments, Completed, Malformed, Conflicts uint64
				} `json:"segments"`
			} `json:"run"`
		}
		out := s.ns.MustRun(tp.node, "status", "--cluster", "web", "--json", "--state-dir", tp.h.ArtifactDir()+"/node-"+s.name)
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			var reps []json.RawMessage
			if json.Unmarshal([]byte(out), &reps) != nil || len(reps) != 1 || json.Unmarshal(reps[0], &rep) != nil {
				t.Fatalf("ghostnode status --json on s%d: %v\n%s", i, err, out)
			}
		}
		if rep.Run == nil || rep.Run.Applied == nil || rep.Run.Applied.Members != declared {
			t.Fatalf("s%d: ghostnode applied no table of %d members:\n%s", i, declared, out)
		}
		sg := rep.Run.Segments
		if sg.Completed == 0 || sg.Malformed != 0 || sg.Conflicts != 0 {
			t.Errorf("s%d: segment counters %+v: want reassembled announcements and nothing malformed", i, sg)
		}
		t.Logf("s%d: %d segments, %d announcements reassembled; owns %d buckets", i, sg.Segments, sg.Completed, rep.Run.Applied.Owned)
	}

	// The kernels' owned sets: all buckets, split among the real servers as
	// the appliance's table says.
	owner := map[int]int{}
	for i, s := range tp.servers {
		set := nftOwnedSet(t, s.ns)
		if len(set) != app[i] {
			t.Errorf("s%d: the kernel's owned set has %d buckets, the appliance's table gives it %d", i, len(set), app[i])
		}
		for bk := range set {
			if o, dup := owner[bk]; dup {
				t.Errorf("bucket %d is in the owned sets of s%d and s%d", bk, o, i)
			}
			owner[bk] = i
		}
	}
	if len(owner) != buckets {
		t.Fatalf("the real servers' kernels own %d of %d buckets; the 2997 absent servers are drained", len(owner), buckets)
	}

	// Clients: the server whose kernel owns the client's bucket (reference
	// hash) is the one the appliance names and the one that answers.
	clients := tp.clientSources(nClients)
	want := map[string]int{}
	for _, c := range clients {
		want[c] = owner[refBucket4(netip.MustParseAddr(c), seed, buckets)]
	}
	named := tp.lookup(clients)
	for _, c := range clients {
		if named[c] != want[c] {
			t.Errorf("client %s: the appliance names server %d, the kernels' sets server %d", c, named[c], want[c])
		}
	}
	tp.askAll(clients, want)
	if st := tp.nodeStatus(0); !strings.Contains(st, "segments received") {
		t.Errorf("ghostnode status on s0 shows no segments line:\n%s", st)
	}

	// A change announced in segments: s2 drained by a reload. Its buckets
	// go to s0 and s1 (released first, then acquired: the release carries
	// two tables, a longer announcement), and only its clients move.
	tp.writeConfig(config(nReal - 1))
	changed := time.Now()
	tp.app.Signal(syscall.SIGHUP)
	harness.WaitFor(t, 30*time.Second, "s2's buckets in s0's and s1's filters", func() bool {
		app = tp.applianceBuckets()
		return app[2] == 0 && tp.ownedCount(2) == 0 && app[0]+app[1] == buckets && tp.ownedCount(0) == app[0] && tp.ownedCount(1) == app[1]
	})
	moved := time.Since(changed)
	// Draining is a change of membership, not a failure: besides s2's
	// buckets, the capacities re-balance a few between s0 and s1, at most
	// 1.5% of the buckets (the table contract's bound for one server more
	// or less at 4096 buckets).
	after := map[int]int{}
	others := 0
	for i, s := range tp.servers[:nReal-1] {
		for bk := range nftOwnedSet(t, s.ns) {
			if owner[bk] != i && owner[bk] != nReal-1 {
				others++
			}
			after[bk] = i
		}
	}
	if others > buckets*15/1000 {
		t.Errorf("%d buckets moved between s0 and s1 besides s2's; want at most %d", others, buckets*15/1000)
	}
	if n := len(nftOwnedSet(t, tp.servers[nReal-1].ns)); len(after) != buckets || n != 0 {
		t.Fatalf("after the drain the kernels of s0 and s1 own %d of %d buckets, s2's %d", len(after), buckets, n)
	}
	for _, c := range clients {
		want[c] = after[refBucket4(netip.MustParseAddr(c), seed, buckets)]
	}
	tp.askAll(clients, want)
	s2had := 0
	for _, o := range owner {
		if o == nReal-1 {
			s2had++
		}
	}
	fmt.Fprintf(os.Stdout, "ANNOUNCE SCALE: s2 drained by a reload: its %d buckets (and %d re-balanced between s0 and s1) in s0's and s1's filters after %v\n", s2had, others, moved.Round(time.Millisecond))
	fmt.Fprintf(os.Stdout, "ANNOUNCE SCALE: %d declared servers (%d real), %d buckets: in step %v after start; %d announcements captured whole in %d segments each, largest datagram %d bytes, no IP fragments\n",
		declared, nReal, buckets, inStep.Round(time.Millisecond), whole, segsPer, biggest)
}
