package dispatch

import (
	"net/netip"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// threadCPU is the CPU time the calling thread has used (as in the core's
// benchmarks): on a machine shared with other work it is what the code
// costs, while the wall time also counts the waits for a CPU.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// BenchmarkForwarderDuringBuild is the forwarding stage's per-packet cost
// (as BenchmarkForwarderInbound) with nothing else running and while another
// goroutine builds a 1000-server table, measured in alternating batches in
// one run; a busy batch counts only if a build was under way from its start
// to its end. "ratio" is the median busy batch over the median idle one in
// wall time (which also counts waiting for a CPU when the machine has fewer
// free cores than runnable threads), "cpu-ratio" in the forwarding thread's
// CPU time (what the build costs the datapath itself: cache, memory, garbage
// collection).
func BenchmarkForwarderDuringBuild(b *testing.B) {
	lan := nullLAN(b, "null")
	f, _, _ := testForwarder(b, lan, nil)
	frames := make([][]byte, 256)
	for i := range frames {
		frames[i] = udpFrame(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), hookGhost, 64)
	}
	work := make([]byte, len(frames[0]))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const batch = 5000
	run := func() (wall, cpu time.Duration) {
		start, c0 := time.Now(), threadCPU()
		for i := range batch {
			copy(work, frames[i&255])
			f.Inbound(nil, work)
		}
		return time.Since(start), threadCPU() - c0
	}

	// The builder builds while active, and counts builds started and
	// finished.
	var active atomic.Bool
	var started, finished atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		servers := cluster(1000)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !active.Load() {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			started.Add(1)
			if _, err := core.NewTable(servers, core.MaxBuckets); err != nil {
				panic(err)
			}
			finished.Add(1)
		}
	}()

	run() // warm up
	var idleW, idleC, busyW, busyC []time.Duration
	for b.Loop() {
		active.Store(false)
		for started.Load() != finished.Load() {
			time.Sleep(time.Millisecond) // the last build ends
		}
		w, c := run()
		idleW, idleC = append(idleW, w), append(idleC, c)

		active.Store(true)
		for {
			s0 := started.Load()
			if s0 == finished.Load() {
				time.Sleep(100 * time.Microsecond) // not under way yet
				continue
			}
			w, c := run()
			if started.Load() == s0 && finished.Load() == s0-1 {
				busyW, busyC = append(busyW, w), append(busyC, c)
				break
			}
		}
	}
	active.Store(false)
	b.StopTimer()
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds()) / batch
	}
	iw, ic, bw, bc := med(idleW), med(idleC), med(busyW), med(busyC)
	b.ReportMetric(iw, "ns/pkt-idle")
	b.ReportMetric(bw, "ns/pkt-building")
	b.ReportMetric(bw/iw, "ratio")
	b.ReportMetric(ic, "cpu-ns/pkt-idle")
	b.ReportMetric(bc, "cpu-ns/pkt-building")
	b.ReportMetric(bc/ic, "cpu-ratio")
}
