package main

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch"
	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/dispatch/announce/keyfile"
	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// limitCase is a cluster at one of the appliance's limits.
type limitCase struct {
	name      string
	mode      config.Mode
	hash      config.Hash
	announce  bool
	servers   int
	buckets   int
	maxWeight bool // the last server has the largest weight
	v6        bool // an IPv6-only LAN: the longest announcement (26 bytes a member)
}

// limitFile writes a configuration with one cluster as c says and returns
// its path and the line of each [[cluster.server]] header (1-based, by
// server index).
func limitFile(t *testing.T, c limitCase) (path string, serverLines []int) {
	t.Helper()
	var b strings.Builder
	line := 0
	w := func(format string, args ...any) {
		fmt.Fprintf(&b, format+"\n", args...)
		line++
	}
	w("[router]")
	w(`metrics_address = ""`)
	w("[[interface]]")
	w(`name = "lan0"`)
	if c.v6 {
		w(`addresses = ["2001:db8:2::1/64"]`)
	} else {
		w(`addresses = ["10.0.0.1/16"]`)
	}
	w("[[cluster]]")
	w(`name = "web"`)
	if c.v6 {
		w(`address = "2001:db8:ffff::20"`)
	} else {
		w(`address = "203.0.113.10"`)
	}
	w(`interface = "lan0"`)
	w(`mode = %q`, c.mode)
	w(`hash = %q`, c.hash)
	w("buckets = %d", c.buckets)
	switch {
	case c.mode == config.ModeBroadcast && c.v6:
		w(`broadcast_address = "2001:db8:2::fa"`)
	case c.mode == config.ModeBroadcast:
		w(`broadcast_address = "10.0.255.250"`)
	}
	if c.announce {
		key := filepath.Join(t.TempDir(), "web.key")
		if _, err := keyfile.Generate(key, keyfile.PublicPath(key)); err != nil {
			t.Fatal(err)
		}
		w(`announce_key_file = %q`, key)
	}
	for i := range c.servers {
		w("[[cluster.server]]")
		serverLines = append(serverLines, line)
		w("id = %d", i)
		if c.v6 {
			w(`address = "2001:db8:2::%x"`, 0x1000+i)
		} else {
			w(`address = "10.0.%d.%d"`, 1+i/250, 1+i%250)
		}
		if c.maxWeight && i == c.servers-1 {
			w("weight = %d", config.MaxWeight)
		}
	}
	path = filepath.Join(t.TempDir(), strings.ReplaceAll(c.name, " ", "-")+".toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, serverLines
}

// recordSender takes the announcements the appliance would send as a server
// does: framed as the appliance's sender frames them (announce.Segments),
// every datagram within a UDP datagram's size, reassembled, and handled by
// a Receiver that holds the public key, which must take the announcement.
type recordSender struct {
	n        int // announcements taken
	segments int // datagrams of the last one
	members  int // members of the last one
}

func (r *recordSender) send(cl *config.Cluster, body []byte) error {
	segs, err := announce.Segments(body)
	if err != nil {
		return err
	}
	reasm := announce.NewReassembler(time.Minute, 1)
	from := netip.MustParseAddr("10.0.0.1")
	whole := body
	for k, seg := range segs {
		if len(seg) > announce.MaxDatagram {
			return fmt.Errorf("datagram %d of %d: %d bytes, more than UDP carries", k+1, len(segs), len(seg))
		}
		if len(segs) > 1 {
			b, ok := reasm.Add(from, seg, time.Now())
			if ok != (k == len(segs)-1) {
				return fmt.Errorf("segment %d of %d: complete %v (%+v)", k+1, len(segs), ok, reasm.Stats())
			}
			whole = b
		}
	}
	rcv, err := announce.NewReceiver(cl.Name, cl.AnnounceKey.Public().(ed25519.PublicKey), 0)
	if err != nil {
		return err
	}
	res := rcv.Handle(whole)
	if res.Verdict != announce.Apply {
		return fmt.Errorf("a server refuses the announcement: %v: %v", res.Verdict, res.Err)
	}
	r.n, r.segments, r.members = r.n+1, len(segs), len(res.Msg.Members)
	return nil
}

type nullResolver struct{}

func (nullResolver) LinkAddress(string, netip.Addr) ([6]byte, bool) { return [6]byte{}, false }

// A file `ghostrouter check` accepts at each limit is one the running
// appliance serves: its clusters' tables build and its announcements are
// sent. One server, bucket or unit of weight more, and check rejects the
// file with FILE:LINE: key.
func TestLimitsCheckAgreesWithRun(t *testing.T) {
	cases := []limitCase{
		{"routing jhash", config.ModeRouting, config.HashJhash, false, config.MaxServers, config.MaxBuckets, true, false},
		{"routing modulo", config.ModeRouting, config.HashModulo, false, config.MaxModuloServers, 16, false, false},
		{"broadcast announcing", config.ModeBroadcast, config.HashJhash, true, config.MaxAnnounceMembers, 1024, true, false},
		{"broadcast silent", config.ModeBroadcast, config.HashJhash, false, config.MaxServers, 1024, false, false},
		{"broadcast announcing IPv6", config.ModeBroadcast, config.HashJhash, true, config.MaxAnnounceMembers, 1024, true, true},
	}
	jhash := cases[0] // the bucket and weight checks below; -short drops it from the loop
	if testing.Short() {
		cases = cases[1:3]
	}
	for _, c := range cases {
		path, _ := limitFile(t, c)
		var out, errs bytes.Buffer
		if rc := cmdCheck([]string{"--config", path}, &out, &errs); rc != 0 {
			t.Fatalf("%s at the limit (%d servers): check exit %d: %s", c.name, c.servers, rc, errs.String())
		}
		// What run does with the clusters: the manager builds every table
		// and announces the broadcast ones.
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer null.Close()
		lan, err := tap.NewEndpoint(tap.EndpointConfig{Name: "lan0", Files: []*os.File{null}, MAC: []byte{2, 0, 0, 0, 0, 1}, MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		rec := &recordSender{}
		ann := announce.NewAnnouncer(1, rec.send, nil)
		m, err := dispatch.NewManager(cfg, dispatch.Deps{
			Endpoint: func(string) (*tap.Endpoint, bool) { return lan, true },
			Resolver: nullResolver{},
			Announce: ann,
		})
		if err != nil {
			t.Fatalf("%s at the limit: check accepted the file, but run's manager fails: %v", c.name, err)
		}
		st := m.State()[0]
		m.Close()
		owned := 0
		for _, s := range st.Servers {
			owned += s.Buckets
		}
		if len(st.Servers) != c.servers || (c.hash == config.HashJhash && owned != c.buckets) {
			t.Fatalf("%s: status shows %d servers owning %d buckets, want %d and %d", c.name, len(st.Servers), owned, c.servers, c.buckets)
		}
		if sent, failed := ann.Stats(); c.announce && (sent == 0 || failed != 0 || rec.n == 0 || rec.members != c.servers) {
			t.Fatalf("%s: %d announcements sent, %d failed, %d taken by a server, of %d members", c.name, sent, failed, rec.n, rec.members)
		}
		if c.announce && c.v6 && rec.segments < 2 {
			t.Fatalf("%s: the longest announcement went out in %d datagrams: it should need segments", c.name, rec.segments)
		}
		t.Logf("%s: %d servers, %d buckets: check ok, run builds it (announced in %d datagrams)", c.name, c.servers, c.buckets, rec.segments)

		// One server more.
		over := c
		over.servers++
		path, lines := limitFile(t, over)
		want := fmt.Sprintf("%s:%d: cluster \"web\": server: %d servers: at most %d", path, lines[c.servers], over.servers, c.servers)
		checkRejects(t, path, want)
	}

	// One bucket more, and one unit of weight more.
	c := jhash
	c.servers, c.buckets = 4, config.MaxBuckets+1
	path, _ := limitFile(t, c)
	checkRejects(t, path, fmt.Sprintf("%s:12: cluster \"web\": buckets:", path))
	c.buckets = 16
	path, lines := limitFile(t, c)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	heavier := strings.Replace(string(data), fmt.Sprintf("weight = %d", config.MaxWeight), fmt.Sprintf("weight = %d", config.MaxWeight+1), 1)
	if err := os.WriteFile(path, []byte(heavier), 0o644); err != nil {
		t.Fatal(err)
	}
	checkRejects(t, path, fmt.Sprintf("%s:%d: cluster \"web\" server 3: weight:", path, lines[3]+3))
}

// checkRejects runs `ghostrouter check` on path and wants it to fail with a
// line starting with want.
func checkRejects(t *testing.T, path, want string) {
	t.Helper()
	var out, errs bytes.Buffer
	rc := cmdCheck([]string{"--config", path}, &out, &errs)
	if rc == 0 || !strings.Contains(errs.String(), want) {
		t.Fatalf("check %s: exit %d, output %q; want a failure with %q", filepath.Base(path), rc, errs.String(), want)
	}
}
