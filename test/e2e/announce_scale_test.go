package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
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
// the LAN as segments over real UDP (captured on a server: "GHRS" segments,
// 2 of them, each an IP-fragmented datagram); every ghostnode reassembles
// it, verifies it and installs its filter. The oracle is the servers'
// kernels: the owned sets nftables holds split all 4096 buckets among the
// three real servers, each as large as the appliance's table says, and for
// 64 clients the server whose kernel set holds the client's bucket (by the
// hash contract's reference, written in the test) is the one the appliance
// names and the only one that answers over HTTP and UDP.
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
	var b strings.Builder
	b.WriteString(strings.Replace(tp.baseConfig(), fmt.Sprintf("%q", lanAddr+"/24"), fmt.Sprintf("%q", lanAddr+"/16"), 1))
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
			addr, drain = tp.servers[i].addr.String(), ""
		}
		fmt.Fprintf(&b, "\n  [[cluster.server]]\n  id = %d\n  address = %q\n  %s\n", i, addr, drain)
	}
	if !strings.Contains(b.String(), `"10.0.0.1/16"`) {
		t.Fatal("the LAN's prefix was not widened")
	}
	start := time.Now()
	tp.start(b.String())
	capSrv := tp.servers[0].ns.Capture("e0", "udp and dst port 9470")
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

	// The announcements on the wire: segments, two per announcement.
	type ann struct{ epoch, tx uint64 }
	seen := map[ann]map[int]bool{}
	biggest := 0
	for _, p := range pkts {
		if p.Fragment && len(p.Payload) == 0 || len(p.Payload) < 28 || string(p.Payload[:4]) != "GHRS" {
			continue
		}
		k, n := int(p.Payload[5]), int(p.Payload[6])
		if n != 2 || k >= n {
			t.Errorf("a segment %d of %d; want 2 segments per announcement", k, n)
		}
		id := ann{binary.BigEndian.Uint64(p.Payload[8:]), binary.BigEndian.Uint64(p.Payload[16:])}
		if seen[id] == nil {
			seen[id] = map[int]bool{}
		}
		seen[id][k] = true
		if p.Src.String() != lanAddr {
			t.Errorf("a segment from %v, not the appliance", p.Src)
		}
		if len(p.Network) >= 28 {
			biggest = max(biggest, int(binary.BigEndian.Uint16(p.Network[24:26])))
		}
	}
	whole := 0
	for _, ks := range seen {
		if len(ks) == 2 {
			whole++
		}
	}
	if whole < 2 {
		t.Fatalf("captured %d announcements with both segments (of %d seen, %d packets); want the repetitions", whole, len(seen), len(pkts))
	}
	if biggest <= 1500 {
		t.Errorf("the largest segment's UDP length is %d: not a datagram larger than a frame", biggest)
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
	fmt.Fprintf(os.Stdout, "ANNOUNCE SCALE: %d declared servers (%d real), %d buckets: in step %v after start; %d announcements captured whole in 2 segments, largest datagram %d bytes\n",
		declared, nReal, buckets, inStep.Round(time.Millisecond), whole, biggest)
}
