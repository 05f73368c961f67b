package router

import (
	"net/netip"
	"testing"
	"time"
)

// TestFastPathPerSourceShare: one source cannot bring more than its share
// of destinations into the next-hop cache; the rest of its misses are
// refused (counted, slow path) while another source's are admitted; its
// share is free again once its destinations leave.
func TestFastPathPerSourceShare(t *testing.T) {
	rig := newFastRig(t)
	f := rig.r.fast
	f.close() // the test drives the refresher itself
	const share = 8
	f.perSource = share
	hog, other := ipA.As4(), ipA2.As4()
	dst := func(i int) [4]byte { return netip.AddrFrom4([4]byte{198, 51, 100, byte(20 + i)}).As4() }
	pendingFrom := func(src [4]byte) int {
		n := 0
		for _, p := range f.pending {
			if p.src == src {
				n++
			}
		}
		return n
	}
	now := time.Now()
	for i := range 40 {
		f.noteMiss(f.table.Load(), dst(i), hog)
	}
	f.noteMiss(f.table.Load(), dst(100), other)
	f.refresh(now)
	if n := pendingFrom(hog); n != share {
		t.Errorf("the hog has %d destinations being cached, want its share %d", n, share)
	}
	if n := pendingFrom(other); n != 1 {
		t.Errorf("the other source has %d destinations being cached, want 1", n)
	}
	if n := f.stats.Refused.Load(); n != 40-share {
		t.Errorf("refused %d, want %d", n, 40-share)
	}
	// Still full: more misses of the hog are refused.
	for i := 40; i < 50; i++ {
		f.noteMiss(f.table.Load(), dst(i), hog)
	}
	f.refresh(now.Add(10 * time.Millisecond))
	if n := pendingFrom(hog); n != share {
		t.Errorf("after more misses the hog has %d, want %d", n, share)
	}
	// Its unresolved destinations are given up (no ARP answer): its
	// share is free again.
	f.refresh(now.Add(fastPendingTTL + time.Second))
	if n := pendingFrom(hog); n != 0 {
		t.Fatalf("%d of the hog's destinations still pending after the pending TTL", n)
	}
	for i := 50; i < 60; i++ {
		f.noteMiss(f.table.Load(), dst(i), hog)
	}
	f.refresh(now.Add(fastPendingTTL + 2*time.Second))
	if n := pendingFrom(hog); n != share {
		t.Errorf("after its share was freed the hog has %d, want %d", n, share)
	}
}
