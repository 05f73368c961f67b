package dispatch

import "time"

// Observer receives the manager's timings, for metrics. Its methods may be
// called from any goroutine, concurrently, and must not block.
type Observer interface {
	// HealthChecked reports one health check of a server: how long it
	// took and its error (nil: passed).
	HealthChecked(cluster string, server int, d time.Duration, err error)
	// TableBuilt reports how long building a cluster's table took.
	TableBuilt(cluster string, d time.Duration)
}
