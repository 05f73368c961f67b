package core

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// benchBuckets is the table size of the scale benchmarks: the most a
// configuration allows.
const benchBuckets = MaxBuckets

// threadCPU is the CPU time the calling thread has used. The benchmarks
// below lock their goroutine to its thread and report this besides the wall
// time: on a machine shared with other work it is what the code costs, while
// the wall time also counts the waits for a CPU.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// buildTime is the fastest of a few builds of servers, wall and CPU time.
func buildTime(b *testing.B, servers []Server) (wall, cpu time.Duration) {
	wall, cpu = time.Duration(1<<62), time.Duration(1<<62)
	for range 3 {
		start, c0 := time.Now(), threadCPU()
		mustTable(b, servers, benchBuckets)
		wall, cpu = min(wall, time.Since(start)), min(cpu, threadCPU()-c0)
	}
	return wall, cpu
}

func weighted(s []Server) []Server {
	for i := range s {
		s[i].Weight = 1 + i%4
	}
	return s
}

// BenchmarkTableBuild is a full build of a 65536-bucket table, reported
// against the 64-server build measured in the same run ("x64" is the ratio)
// with the table's memory: "table-B" it holds alone, "plan-B" the
// preference lists it shares with the tables Update derives from it.
func BenchmarkTableBuild(b *testing.B) {
	for _, bc := range []struct {
		n, down  int
		weighted bool
	}{{64, 0, false}, {1000, 0, false}, {1000, 0, true}, {1000, 1, false}, {1000, 500, false}, {4096, 0, false}, {4096, 4000, false}} {
		name := fmt.Sprintf("servers=%d/down=%d", bc.n, bc.down)
		if bc.weighted {
			name += "/weighted"
		}
		b.Run(name, func(b *testing.B) {
			s := cluster(bc.n)
			base := cluster(64)
			if bc.weighted {
				s, base = weighted(s), weighted(base)
			}
			for i := range bc.down {
				s[i*bc.n/max(bc.down, 1)].Up = false
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t64, c64 := buildTime(b, base)
			var tb *Table
			b.ResetTimer()
			c0 := threadCPU()
			for b.Loop() {
				tb = mustTable(b, s, benchBuckets)
			}
			cpu := float64((threadCPU() - c0).Nanoseconds()) / float64(b.N)
			perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			own, shared := tb.memory()
			b.ReportMetric(perOp/1e6, "ms/build")
			b.ReportMetric(cpu/1e6, "cpu-ms/build")
			b.ReportMetric(perOp/float64(t64.Nanoseconds()), "x64")
			b.ReportMetric(cpu/float64(c64.Nanoseconds()), "x64-cpu")
			b.ReportMetric(float64(own), "table-B")
			b.ReportMetric(float64(shared), "plan-B")
		})
	}
}

// BenchmarkTableFailure is one server of 1000 failing in a 65536-bucket
// table: the derived table, its selector, published through an
// atomic.Pointer as the manager does. Every iteration fails a server that
// has not failed before on that plan, so no preference list is reused from
// an earlier iteration. "recover" is the same server coming back.
func BenchmarkTableFailure(b *testing.B) {
	const n = 1000
	for _, bc := range []struct {
		name    string
		recover bool
	}{{"fail", false}, {"recover", true}} {
		b.Run(bc.name, func(b *testing.B) {
			all := cluster(n)
			var base *Table
			var pub atomic.Pointer[JHashSelector]
			moved := 0
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var cpu time.Duration
			for i := 0; b.Loop(); i++ {
				if i%n == 0 {
					b.StopTimer()
					base = mustTable(b, all, benchBuckets)
					b.StartTimer()
				}
				from, to := base, withDown(all, all[i%n].ID)
				if bc.recover {
					b.StopTimer()
					down, err := base.Update(to)
					if err != nil {
						b.Fatal(err)
					}
					from, to = down, all
					b.StartTimer()
				}
				c0 := threadCPU()
				t, err := from.Update(to)
				if err != nil {
					b.Fatal(err)
				}
				pub.Store(NewJHashSelector(t, 1))
				cpu += threadCPU() - c0
				if i == 0 {
					b.StopTimer()
					moved = countMoved(from, t)
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/change")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1e6, "cpu-ms/change")
			b.ReportMetric(float64(moved), "buckets-moved")
		})
	}
}

func countMoved(a, b *Table) int {
	n := 0
	for i := range a.owner {
		if a.owner[i] != b.owner[i] {
			n++
		}
	}
	return n
}

// memory returns the bytes t holds alone (its owner array and deep list) and
// those its plan holds, shared with every table Update derives from it.
func (t *Table) memory() (own, shared int) {
	own = 4*cap(t.owner) + 4*cap(t.deep) + int(unsafe.Sizeof(Server{}))*cap(t.servers)
	p := t.plan
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.pref {
		shared += 4 * cap(p.pref[l])
		for _, bs := range p.by[l] {
			shared += 4*cap(bs) + int(unsafe.Sizeof(bs))
		}
	}
	for _, h := range p.heaps {
		shared += int(unsafe.Sizeof(entry{}))*cap(h) + int(unsafe.Sizeof(h))
	}
	shared += (8+8+4+1+1+8)*len(p.servers) + 40*len(p.done2) + int(unsafe.Sizeof(appItem{}))*cap(p.appScr)
	shared += 8*cap(p.ckey) + 4*cap(p.cidx) + int(unsafe.Sizeof(wclass{}))*cap(p.classes) + 4*cap(p.candScr)
	return own, shared
}
