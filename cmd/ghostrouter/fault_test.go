package main

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/ghostrouter/ghostrouter/router/tap"
)

// TestLinkFaultShownInStatus: a *tap.LinkFault marks its link faulted with
// the error, other links stay up, another error marks nothing; the status
// text shows the faulted link.
func TestLinkFaultShownInStatus(t *testing.T) {
	var f linkFaults
	if link := f.record(errors.New("not a link fault")); link != "" {
		t.Errorf("a plain error was recorded for link %q", link)
	}
	fault := &tap.LinkFault{Link: "lan0", Err: syscall.EBADFD}
	if link := f.record(fault); link != "lan0" {
		t.Fatalf("record named %q, want lan0", link)
	}
	if st, msg := f.state("lan0"); st != "faulted" || !strings.Contains(msg, "lan0") || !strings.Contains(msg, syscall.EBADFD.Error()) {
		t.Errorf("lan0: %q %q", st, msg)
	}
	if st, msg := f.state("up0"); st != "up" || msg != "" {
		t.Errorf("up0: %q %q", st, msg)
	}
	var b bytes.Buffer
	st, msg := f.state("lan0")
	printStatus(&b, &Status{Links: []LinkStatus{{Name: "up0", State: "up"}, {Name: "lan0", State: st, Fault: msg}}})
	if !strings.Contains(b.String(), "lan0 FAULTED: "+fault.Error()) || strings.Contains(b.String(), "up0 FAULTED") {
		t.Errorf("status text:\n%s", b.String())
	}
}

// TestReloadReplyPrint: the text form names the step that refused, the
// problems, and that nothing was committed; a success is one line.
func TestReloadReplyPrint(t *testing.T) {
	var b bytes.Buffer
	ReloadReply{Config: "g.toml", Failed: stepRouter, Error: "router: next hop 10.0.0.99 on lan0 unreachable",
		Validated: []string{stepDispatch}, Committed: []string{}, Clusters: 1, Routes: 2}.print(&b)
	for _, want := range []string{"rejected by the router: router: next hop 10.0.0.99", "validated: dispatch; committed: none", "kept: 1 clusters, 2 routes"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in:\n%s", want, b.String())
		}
	}
	b.Reset()
	ReloadReply{Config: "g.toml", OK: true, Validated: []string{stepDispatch, stepRouter}, Committed: []string{stepRouter, stepDispatch}, Clusters: 1, Routes: 3}.print(&b)
	if got := b.String(); got != "reloaded g.toml: 1 clusters, 3 routes\n" {
		t.Errorf("success printed %q", got)
	}
}
