package health

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/router/config"
)

// Every check is reported to the observer with its server, its duration
// and its result.
func TestCheckerObserver(t *testing.T) {
	dead := netip.MustParseAddr("127.0.0.2")
	live := netip.MustParseAddr("127.0.0.1")
	p := &fakeProber{alive: map[netip.Addr]bool{live: true}}
	var mu sync.Mutex
	got := map[int][]error{}
	var longest time.Duration
	h := Spec{Check: config.CheckICMP, Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 3}
	c := NewChecker(h, []Target{{ID: 0, Addr: live}, {ID: 1, Addr: dead}}, p, nil, nil,
		WithObserver(func(id int, d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			got[id] = append(got[id], err)
			longest = max(longest, d)
		}))
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n0, n1 := len(got[0]), len(got[1])
		mu.Unlock()
		if n0 >= 3 && n1 >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observed %d and %d checks", n0, n1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Stop()
	mu.Lock()
	defer mu.Unlock()
	for _, err := range got[0] {
		if err != nil {
			t.Errorf("live server's check reported failed: %v", err)
		}
	}
	for _, err := range got[1] {
		if err == nil {
			t.Error("dead server's check reported ok")
		}
	}
	if longest <= 0 || longest > time.Second {
		t.Errorf("longest check %v: not a plausible duration", longest)
	}
}
