package main

import (
	"crypto/ed25519"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// A backup hears a large master's announcements in segments: only the
// segment that completes one hands it on, whatever the order the segments
// arrived in, and what it hands on is the signed announcement the master
// sent, which the backup's Follower accepts. A small announcement (one
// datagram, no segment framing) is handed on as it is.
func TestHeardAnnouncementReassembles(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(n int, seq uint64) []byte {
		m := announce.Message{Cluster: "web", Epoch: 7, Seq: seq, Tx: seq, Hash: config.HashJhash, Seed: 1, Buckets: 4096,
			Ghost: netip.MustParseAddr("198.51.100.80")}
		for id := range n {
			m.Members = append(m.Members, announce.Member{ID: id, Addr: netip.AddrFrom4([4]byte{10, 1, byte(id >> 8), byte(id)}), Weight: 1, Up: true})
		}
		b, err := m.Marshal(key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	f, err := announce.NewFollower("web", pub)
	if err != nil {
		t.Fatal(err)
	}
	re := announce.NewReassembler(announce.DefaultReassemblyTimeout, announce.DefaultReassemblies)
	master := netip.MustParseAddr("10.0.0.1")
	now := time.Unix(1_800_000_000, 0)

	small := sign(3, 1)
	if announce.IsSegment(small) {
		t.Fatal("a 3-member announcement was framed as a segment")
	}
	if b, ok := heardAnnouncement(re, master, small, now); !ok || string(b) != string(small) {
		t.Fatalf("a small announcement was not handed on as it is")
	}
	if err := f.Hear(small, now); err != nil {
		t.Fatalf("the follower refused the small announcement: %v", err)
	}

	body := sign(1000, 2)
	segs, err := announce.Segments(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) < 3 {
		t.Fatalf("a 1000-member announcement went out in %d segments, want several", len(segs))
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(segs), func(i, j int) { segs[i], segs[j] = segs[j], segs[i] })
	for i, s := range segs {
		b, ok := heardAnnouncement(re, master, s, now)
		if last := i == len(segs)-1; ok != last {
			t.Fatalf("segment %d of %d: handed on %v", i+1, len(segs), ok)
		}
		if ok && string(b) != string(body) {
			t.Fatalf("the reassembled announcement differs from the one signed (%d vs %d bytes)", len(b), len(body))
		}
		if ok {
			if err := f.Hear(b, now.Add(time.Millisecond)); err != nil {
				t.Fatalf("the follower refused the reassembled announcement: %v", err)
			}
		}
	}
	if e, seq, _ := f.Last(); e != 7 || seq != 2 {
		t.Errorf("the follower's last announcement is epoch %d seq %d, want 7 seq 2", e, seq)
	}
}
