package tap

import (
	"bytes"
	"sync"
	"testing"
)

// tapRecorder keeps a copy of every frame shown to it.
type tapRecorder struct {
	mu     sync.Mutex
	dirs   []Direction
	frames [][]byte
}

func (r *tapRecorder) Frame(dir Direction, frame []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dirs = append(r.dirs, dir)
	r.frames = append(r.frames, bytes.Clone(frame))
}

type noopTap struct{}

func (noopTap) Frame(Direction, []byte) {}

func TestTapSeesFramesAsOnTheWire(t *testing.T) {
	a, b := newLink(t, "a", macA, false, 1), newLink(t, "b", macB, false, 1)
	drain(t, b)
	a.ep.SetHook(forwardTo(t, b.ep))
	var ta, tb tapRecorder
	a.ep.SetTap(&ta)
	b.ep.SetTap(&tb)
	frame, _ := superFrame(false, make([]byte, 200), 0x18)
	orig := bytes.Clone(frame)
	receiveOne(a.ep, nil, frame)

	if len(ta.frames) != 1 || ta.dirs[0] != In || !bytes.Equal(ta.frames[0], orig) {
		t.Fatalf("ingress tap saw %d frames (dirs %v); want the received frame once, inbound, unchanged", len(ta.frames), ta.dirs)
	}
	if len(tb.frames) != 1 || tb.dirs[0] != Out {
		t.Fatalf("egress tap saw %d frames (dirs %v); want the forwarded frame once, outbound", len(tb.frames), tb.dirs)
	}
	got := tb.frames[0]
	if !bytes.Equal(got[0:6], macOut[:]) || !bytes.Equal(got[6:12], macB) || !bytes.Equal(got[12:], orig[12:]) {
		t.Fatalf("egress tap saw %x..., want the frame after the MAC rewrite (dst %x, src %x)", got[:14], macOut, []byte(macB))
	}

	// Removed: nothing more is shown.
	a.ep.SetTap(nil)
	b.ep.SetTap(nil)
	receiveOne(a.ep, nil, orig)
	if len(ta.frames) != 1 || len(tb.frames) != 1 {
		t.Fatalf("taps removed, still saw frames: %d in, %d out", len(ta.frames), len(tb.frames))
	}
}

func TestTapSeesFramesForNetstackAndForeign(t *testing.T) {
	a := newLink(t, "a", macA, false, 1)
	var ta tapRecorder
	a.ep.SetTap(&ta)
	frame, _ := superFrame(false, make([]byte, 100), 0x18)
	receiveOne(a.ep, nil, frame) // no hook: to netstack
	foreign := bytes.Clone(frame)
	foreign[5] = 0x77 // unicast to another MAC: dropped, but seen
	receiveOne(a.ep, nil, foreign)
	if len(ta.frames) != 2 || !bytes.Equal(ta.frames[1], foreign) {
		t.Fatalf("tap saw %d frames, want the netstack frame and the foreign one", len(ta.frames))
	}
	if a.ep.Stats().RxForeign.Load() != 1 {
		t.Fatalf("foreign frame not counted as such")
	}
}

func TestNoTapAllocatesNothing(t *testing.T) {
	a := newLink(t, "a", macA, false, 1)
	a.ep.SetHook(hookFunc(func(*Endpoint, []byte) bool { return true }))
	frame, _ := superFrame(false, make([]byte, 1000), 0x18)
	for _, tp := range []Tap{nil, noopTap{}} {
		a.ep.SetTap(tp)
		if n := testing.AllocsPerRun(1000, func() { receiveOne(a.ep, nil, frame) }); n != 0 {
			t.Errorf("tap %T: %v allocations per frame, want 0", tp, n)
		}
	}
}

// BenchmarkTapReceive measures what a tap costs the receive path: "none" is
// the datapath as it runs without a capture (the one atomic load), "noop"
// with a tap installed that does nothing, both with a hook that consumes
// the frame, so the link's own work is all that is measured.
func BenchmarkTapReceive(b *testing.B) {
	a := newLink(b, "a", macA, false, 1)
	a.ep.SetHook(hookFunc(func(*Endpoint, []byte) bool { return true }))
	frame, _ := superFrame(false, make([]byte, 1000), 0x18)
	for _, tc := range []struct {
		name string
		tap  Tap
	}{{"none", nil}, {"noop", noopTap{}}} {
		b.Run(tc.name, func(b *testing.B) {
			a.ep.SetTap(tc.tap)
			b.ReportAllocs()
			for b.Loop() {
				receiveOne(a.ep, nil, frame)
			}
		})
	}
}
