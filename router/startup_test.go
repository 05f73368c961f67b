package router

import (
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ghostrouter/ghostrouter/router/config"
	"github.com/ghostrouter/ghostrouter/router/hdr"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/tap"
)

// ghostGuard is a stage standing in for the dispatcher: it takes every
// IPv4 frame to the ghost, counting them.
type ghostGuard struct {
	ghost [4]byte
	seen  atomic.Uint64
}

func (*ghostGuard) Name() string { return "test-ghost" }

func (g *ghostGuard) Inbound(_ *tap.Endpoint, frame []byte) stage.Verdict {
	if hdr.IsIPv4(frame) && hdr.IP4(frame[hdr.EthLen:]).Dst() == g.ghost {
		g.seen.Add(1)
		return stage.Drop(stage.NoServer)
	}
	return stage.Pass
}

// TestStagesGuardFromTheFirstFrame: ghost frames are queued on a link before
// the router exists and keep coming while it is built; every one of them
// passes the stages, and netstack receives none. The stages are built
// before any link reads a frame.
func TestStagesGuardFromTheFirstFrame(t *testing.T) {
	ghost := netip.MustParseAddr("203.0.113.80")
	cfg := &config.Config{
		File: "test",
		Interfaces: []config.Interface{
			{Name: "a", Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}, MAC: config.MAC(macRA), MTU: 1500, Queues: 1},
			{Name: "b", Addresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")}, MAC: config.MAC(macRB), MTU: 1500, Queues: 1},
		},
		// A route for the ghost: netstack, given one of its packets,
		// would forward it to host B.
		Routes: []config.Route{{To: netip.PrefixFrom(ghost, 32), Via: ipB, Interface: "b"}},
	}
	eps := map[string]*tap.Endpoint{}
	var wa, wb *wire
	for _, ic := range cfg.Interfaces {
		f, w := socketPair(t, ic.Name)
		ep, err := tap.NewEndpoint(tap.EndpointConfig{Name: ic.Name, Files: []*os.File{f}, MAC: ic.MAC.HardwareAddr(), MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		eps[ic.Name] = ep
		if ic.Name == "a" {
			wa = w
		} else {
			wb = w
		}
	}
	frame := ipFrame(macA, macRA, ipA, ghost, 64, 17, []byte{0x30, 0x39, 0x23, 0x28, 0, 8, 0, 0})

	// Frames waiting before the router exists.
	var sent atomic.Uint64
	for range 256 {
		if _, err := wa.f.Write(frame); err != nil {
			break
		}
		sent.Add(1)
	}
	queued := sent.Load()
	if queued == 0 {
		t.Fatal("could not queue a single frame")
	}
	// And more while it is being built.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 200000 {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := wa.f.Write(frame); err == nil {
				sent.Add(1)
			} else {
				time.Sleep(10 * time.Microsecond)
			}
		}
	}()

	g := &ghostGuard{ghost: ghost.As4()}
	rxAtBuild := ^uint64(0)
	r, err := New(cfg, Options{Endpoints: eps, Stages: func(r *Router) ([]stage.Stage, error) {
		ep, _ := r.Endpoint("a")
		rxAtBuild = ep.Stats().RxFrames.Load()
		return []stage.Stage{g}, nil
	}})
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	// Keep sending a little after New returned, then stop.
	deadline := time.Now().Add(5 * time.Second)
	for g.seen.Load() < 512 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()

	if rxAtBuild != 0 {
		t.Fatalf("link a had read %d frames when the stages were built, want 0", rxAtBuild)
	}
	epA, _ := r.Endpoint("a")
	want := sent.Load()
	deadline = time.Now().Add(10 * time.Second)
	for epA.Stats().RxFrames.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := epA.Stats().RxFrames.Load(); got != want {
		t.Fatalf("link a read %d frames, %d were sent", got, want)
	}
	if got := g.seen.Load(); got != want {
		t.Errorf("the stage saw %d of the %d ghost frames", got, want)
	}
	if n := r.Stack().Stats().IP.PacketsReceived.Value(); n != 0 {
		t.Errorf("netstack received %d IP packets, want 0: ghost frames got past the stages", n)
	}
	if f := wb.next(200*time.Millisecond, isIPv4(func(ip header.IPv4) bool { return ip.DestinationAddress() == tcpip.AddrFrom4(ghost.As4()) })); f != nil {
		t.Errorf("a ghost packet was forwarded by netstack to host B")
	}
	var dropped uint64
	for _, c := range r.StageCounts() {
		if c.Stage == "test-ghost" && c.Kind == "dropped" && c.Reason == "no_server" {
			dropped = c.N
		}
	}
	if dropped != want {
		t.Errorf("the verdict counter says %d frames dropped for no_server, want %d (%v)", dropped, want, r.StageCounts())
	}
	t.Logf("%d ghost frames (%d queued before the router existed), all judged by the stages", want, queued)
}
