package dispatch

import (
	"sync"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
)

type recordedTimings struct {
	mu     sync.Mutex
	builds map[string]int
}

func (r *recordedTimings) HealthChecked(string, int, time.Duration, error) {}

func (r *recordedTimings) TableBuilt(cluster string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d > 0 {
		r.builds[cluster]++
	}
}

// Each table build (start, health change) is reported with its duration.
func TestManagerReportsTableBuilds(t *testing.T) {
	obs := &recordedTimings{builds: map[string]int{}}
	m := newTestManager(t, testConfig(config.ModeBroadcast, 3), nil)
	m.Close()
	m, err := NewManager(testConfig(config.ModeBroadcast, 3), Deps{Endpoint: m.d.Endpoint, Resolver: fakeResolver{}, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.healthChanged("web", health.Event{ServerID: 1, Up: false, At: time.Now()})
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.builds["web"] != 2 {
		t.Fatalf("%d table builds reported, want 2 (start, failure)", obs.builds["web"])
	}
}
