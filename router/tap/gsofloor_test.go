package tap

import (
	"bytes"
	"testing"
)

// TestTinyGSOSizeDropped: a super-frame asking for segments smaller than
// MinGSOSize is dropped and counted when it is read; neither the hook,
// nor netstack, nor another link sees anything of it. One at the floor
// passes.
func TestTinyGSOSizeDropped(t *testing.T) {
	a := newLink(t, "a", macA, true, 1)
	hooked := 0
	a.ep.SetHook(hookFunc(func(*Endpoint, []byte) bool { hooked++; return true }))
	payload := bytes.Repeat([]byte("x"), 60000)
	for _, size := range []uint16{1, 8, MinGSOSize - 1} {
		frame, h := superFrame(false, payload, 0x18)
		h.gsoSize = size
		receiveOne(a.ep, &h, frame)
	}
	if n := a.ep.Stats().GSOTooSmall.Load(); n != 3 {
		t.Errorf("GSOTooSmall = %d, want 3", n)
	}
	if hooked != 0 {
		t.Errorf("the hook saw %d of the dropped super-frames", hooked)
	}
	frame, h := superFrame(false, payload, 0x18)
	h.gsoSize = MinGSOSize
	receiveOne(a.ep, &h, frame)
	if hooked != 1 || a.ep.Stats().GSOTooSmall.Load() != 3 {
		t.Errorf("a super-frame at the floor: hooked %d times, GSOTooSmall %d", hooked, a.ep.Stats().GSOTooSmall.Load())
	}
	var s segmenter
	h.gsoSize = MinGSOSize - 1
	if s.reset(frame, &h) {
		t.Error("the segmenter accepts a gso_size below the floor")
	}
}
