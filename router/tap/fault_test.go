package tap

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/kit"
)

// TestLinkFaultNamesTheLink: a receive loop that stops on an error (here
// the other end went away) reports a *LinkFault naming its endpoint, once.
func TestLinkFaultNamesTheLink(t *testing.T) {
	local, peer := kit.Pair(t, "lan7")
	faults := make(chan error, 4)
	ep, err := NewEndpoint(EndpointConfig{Name: "lan7", Files: []*os.File{local}, MAC: macA, MTU: 1500,
		OnFault: func(err error) { faults <- err }})
	if err != nil {
		t.Fatal(err)
	}
	ep.Attach(&recorder{})
	t.Cleanup(func() { ep.Close(); ep.Wait() })
	peer.Close()
	select {
	case err := <-faults:
		var lf *LinkFault
		if !errors.As(err, &lf) || lf.Link != "lan7" || lf.Err == nil {
			t.Fatalf("fault %v (%T), want a *LinkFault for lan7", err, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no fault reported after the other end closed")
	}
	select {
	case err := <-faults:
		t.Errorf("a second fault: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}
