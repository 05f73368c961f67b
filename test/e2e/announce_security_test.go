package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
	"github.com/ghostrouter/ghostrouter/test/harness"
)

// nodeView is what a server's `ghostnode status --json` says about the
// filter in force: its owned buckets (read back from nft) and the
// announced table it applied.
type nodeView struct {
	Owned []uint32
	Epoch uint64
	Seq   uint64
	Count map[string]uint64
}

func (tp *topo) nodeView(i int) nodeView {
	tp.t.Helper()
	s := tp.servers[i]
	out, err := s.ns.Run(tp.node, "status", "--json", "--cluster", "web", "--state-dir", tp.h.ArtifactDir()+"/node-"+s.name)
	if err != nil {
		tp.t.Fatalf("ghostnode status on %s: %v\n%s", s.name, err, out)
	}
	var reps []struct {
		Owned []uint32 `json:"owned"`
		Run   *struct {
			Applied *struct {
				Epoch uint64 `json:"epoch"`
				Seq   uint64 `json:"seq"`
			} `json:"applied"`
			Counters map[string]uint64 `json:"counters"`
		} `json:"run"`
	}
	if err := json.Unmarshal([]byte(out), &reps); err != nil || len(reps) != 1 || reps[0].Run == nil || reps[0].Run.Applied == nil {
		tp.t.Fatalf("ghostnode status --json on %s: %v\n%s", s.name, err, out)
	}
	r := reps[0]
	return nodeView{Owned: r.Owned, Epoch: r.Run.Applied.Epoch, Seq: r.Run.Applied.Seq, Count: r.Run.Counters}
}

// udpFrom sends b to dst from src out of dev inside ns; src need not be
// one of ns's addresses (IP_TRANSPARENT), so that a rogue host can claim
// the appliance's.
func udpFrom(t *testing.T, ns *harness.NS, dev, src, dst string, b []byte) {
	t.Helper()
	err := ns.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_TRANSPARENT, 1)
				if serr == nil {
					serr = syscall.BindToDevice(int(fd), dev)
				}
			})
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", src+":0")
		if err != nil {
			return err
		}
		defer pc.Close()
		_, err = pc.(*net.UDPConn).WriteToUDPAddrPort(b, netip.MustParseAddrPort(dst))
		return err
	})
	if err != nil {
		t.Fatalf("sending %d bytes %s -> %s in %s: %v", len(b), src, dst, ns.Name, err)
	}
}

// captureAnnouncement reads one datagram to port 9470 in ns (a server: its
// copy of the appliance's broadcast), next to ghostnode's own socket.
func captureAnnouncement(t *testing.T, ns *harness.NS) []byte {
	t.Helper()
	var out []byte
	err := ns.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:9470")
		if err != nil {
			return err
		}
		defer pc.Close()
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 65536)
		n, _, err := pc.ReadFrom(buf)
		out = bytes.Clone(buf[:n])
		return err
	})
	if err != nil {
		t.Fatalf("capturing an announcement in %s: %v", ns.Name, err)
	}
	return out
}

var portDropped = regexp.MustCompile(`announce_port_dropped=(\d+)`)

// TestAnnouncementAttacks: broadcast mode with `ghostnode run` on three
// servers that hold only the public key. From a rogue position on the LAN
// (a server's namespace, claiming the appliance's address 10.0.0.1) and
// from the client side, forged, replayed, oversized and wrongly signed
// announcements, and one signed with a key a server could derive from the
// public key, are sent to the LAN broadcast address and to every server.
// No server's nft set or applied table changes; the servers count each
// kind; the appliance drops and counts every datagram from the client side
// to the announce port. Then the appliance restarts (a new random epoch:
// a clock set back could not matter) with a server drained, and every
// server follows it at once.
func TestAnnouncementAttacks(t *testing.T) {
	tp := newTopo(t, topoOptions{servers: 3})
	tp.startServers()
	all := tp.baseConfig() + tp.clusterConfig("broadcast", "jhash", broadcastExtra(""))
	drain := func(cfg string, id int) string {
		s := fmt.Sprintf("  id = %d\n  address = %q\n", id, tp.servers[id].addr)
		if !strings.Contains(cfg, s) {
			t.Fatalf("no server %d in\n%s", id, cfg)
		}
		return strings.Replace(cfg, s, s+"  drain = true\n", 1)
	}
	tp.start(all)
	// The servers get the appliance's file without the private key: only
	// the public key sits next to the path it names.
	nodeDir := filepath.Join(tp.h.ArtifactDir(), "nodes")
	os.MkdirAll(nodeDir, 0o755)
	pubPEM, err := os.ReadFile(filepath.Join(tp.h.ArtifactDir(), announcePubFile))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(nodeDir, announcePubFile), pubPEM, 0o644)
	nodeCfg := filepath.Join(nodeDir, "ghostrouter.toml")
	os.WriteFile(nodeCfg, []byte(all), 0o644)
	tp.runNodes(nodeCfg, 0, 3)
	tp.waitInStep(3, "at start")

	// A genuine announcement of the all-up table, kept for replaying.
	old := captureAnnouncement(t, tp.servers[0].ns)
	oldMsg, err := announce.Unmarshal(old, mustPub(t, pubPEM))
	if err != nil {
		t.Fatalf("captured announcement: %v", err)
	}
	// The table changes: server 2 drained.
	tp.writeConfig(drain(all, 2))
	tp.app.Signal(syscall.SIGHUP)
	tp.waitInStep(3, "after server 2 was drained")
	before := make([]nodeView, 3)
	for i := range before {
		before[i] = tp.nodeView(i)
		if before[i].Epoch != oldMsg.Epoch || before[i].Seq <= oldMsg.Seq {
			t.Fatalf("server %d applied epoch %d seq %d; the replayed one will be %d/%d", i, before[i].Epoch, before[i].Seq, oldMsg.Epoch, oldMsg.Seq)
		}
	}
	if len(before[2].Owned) != 0 {
		t.Fatalf("drained server 2 owns %d buckets", len(before[2].Owned))
	}

	// The attacks. "grab" hands server 0 every bucket.
	grab := *oldMsg
	grab.Seq, grab.Tx = 1<<63, 1<<63
	grab.Members = slices.Clone(oldMsg.Members)
	for i := range grab.Members {
		grab.Members[i].Up = grab.Members[i].ID == 0
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	fromPub := ed25519.NewKeyFromSeed(mustPub(t, pubPEM)) // what a server could make of the public key
	sign := func(m announce.Message, k ed25519.PrivateKey) []byte {
		b, err := m.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tampered := bytes.Clone(old)
	tampered[len(tampered)-ed25519.SignatureSize-1] ^= 0x01 // the last member's address: the signature no longer fits
	oversized := grab
	oversized.Buckets = 65536
	oversizedBytes := sign(oversized, stranger)
	binaryPutBuckets(oversizedBytes, 1<<20) // a million buckets: refused before it is built
	huge := append([]byte("GHRT\x02\x01\x00\x00"), make([]byte, 60000)...)
	attacks := []struct {
		name string
		b    []byte
	}{
		{"replayed", old},
		{"signed by a stranger", sign(grab, stranger)},
		{"signed with a key made from the public key", sign(grab, fromPub)},
		{"tampered", tampered},
		{"oversized table", oversizedBytes},
		{"oversized datagram", huge},
	}
	rogue := tp.servers[0].ns
	var lanDsts []string
	lanDsts = append(lanDsts, "10.0.0.255:9470")
	for _, s := range tp.servers {
		lanDsts = append(lanDsts, s.addr.String()+":9470")
	}
	for _, a := range attacks {
		for _, dst := range lanDsts {
			udpFrom(t, rogue, "e0", lanAddr, dst, a.b) // claiming the appliance's address
		}
	}
	// A genuine datagram from a rogue's own address: foreign.
	udpFrom(t, rogue, "e0", tp.servers[0].addr.String(), "10.0.0.255:9470", old)
	// From the client side, to the servers, the LAN broadcast and the ghost,
	// with the appliance's source address and with the client's.
	clientDsts := append(slices.Clone(lanDsts), ghostAddr+":9470")
	for _, a := range attacks {
		for _, dst := range clientDsts {
			udpFrom(t, tp.cli, "c0", lanAddr, dst, a.b)
			udpFrom(t, tp.cli, "c0", clientAddr, dst, a.b)
		}
	}
	wantDropped := 2 * len(attacks) * len(clientDsts)

	// Every server gets each attack twice from the LAN (the broadcast and
	// its unicast copy) and nothing from the client side. Four kinds fail
	// the signature (an oversized table is only ever built from an
	// authentic datagram, which an attacker cannot make), the giant
	// datagram is malformed. Each server counts them all before the test
	// looks at its filter.
	want := map[string]uint64{"stale": 2, "bad_mac": 4 * 2, "malformed": 2, "foreign": 1}
	for i := range tp.servers {
		harness.WaitFor(t, 10*time.Second, fmt.Sprintf("server %d to count the attacks", i), func() bool {
			c := tp.nodeView(i).Count
			for k, n := range want {
				if c[k]-before[i].Count[k] < n {
					return false
				}
			}
			return true
		})
		now := tp.nodeView(i)
		if !slices.Equal(now.Owned, before[i].Owned) || now.Epoch != before[i].Epoch || now.Seq != before[i].Seq {
			t.Errorf("server %d: filter or table changed: %d buckets epoch %d seq %d, was %d buckets epoch %d seq %d",
				i, len(now.Owned), now.Epoch, now.Seq, len(before[i].Owned), before[i].Epoch, before[i].Seq)
		}
		for k, n := range want {
			if got := now.Count[k] - before[i].Count[k]; got != n {
				t.Errorf("server %d counted %d %s, want %d (the client side's must not arrive)", i, got, k, n)
			}
		}
		if got := now.Count["applied"] - before[i].Count["applied"]; got != 0 {
			t.Errorf("server %d applied %d tables during the attacks", i, got)
		}
	}
	m := portDropped.FindStringSubmatch(tp.status())
	if m == nil {
		t.Fatalf("no announce_port_dropped in the appliance's status:\n%s", tp.status())
	}
	if n, _ := strconv.Atoi(m[1]); n != wantDropped {
		t.Errorf("appliance dropped %d datagrams to the announce port from the client side, want %d", n, wantDropped)
	}

	// The appliance restarts with server 1 drained too. Its epoch is a new
	// random number; whether it is below or above the old one does not
	// matter.
	if err := tp.app.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := tp.app.Wait(10 * time.Second); err != nil {
		t.Fatalf("appliance after SIGTERM: %v", err)
	}
	tp.start(drain(drain(all, 2), 1))
	harness.WaitFor(t, 10*time.Second, "every server to follow the restarted appliance", func() bool {
		for i := range tp.servers {
			v := tp.nodeView(i)
			if v.Epoch == before[i].Epoch || (i != 0) != (len(v.Owned) == 0) {
				return false
			}
		}
		return true
	})
	tp.waitInStep(3, "after the restart")
}

func mustPub(t *testing.T, pemBytes []byte) ed25519.PublicKey {
	t.Helper()
	k, err := keyfile.DecodePublic(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// binaryPutBuckets overwrites the bucket count of an encoded announcement
// (offset 36, see package announce).
func binaryPutBuckets(b []byte, n uint32) {
	b[36], b[37], b[38], b[39] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}
