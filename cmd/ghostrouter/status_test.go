package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// The event text status shows, written out by hand: a failure says when it
// was detected, a recovery does not.
func TestEventText(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	for _, c := range []struct {
		ev   dispatch.Event
		want string
	}{
		{dispatch.Event{At: at, ServerID: 2, Up: false, Reason: "tcp: connection refused", Detect: 1499700 * time.Microsecond, Moved: 1365, Buckets: 4096},
			"2026-01-02T03:04:05.6Z server 2 down: tcp: connection refused; 1365 of 4096 buckets moved; detected 1.5s after its last good check"},
		{dispatch.Event{At: at, ServerID: 2, Up: true, Reason: "passed", Moved: 1365, Buckets: 4096},
			"2026-01-02T03:04:05.6Z server 2 up: passed; 1365 of 4096 buckets moved"},
	} {
		if got := eventText(c.ev); got != c.want {
			t.Errorf("eventText(%+v) =\n %q, want\n %q", c.ev, got, c.want)
		}
	}
}

// A cluster's state rendered for the control socket: the JSON keys and
// values the status document has always carried.
func TestClusterStatusJSON(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	closes := time.Date(2026, 1, 2, 3, 5, 0, 250_000_000, time.UTC)
	st := &dispatch.ClusterState{
		Name: "web", Mode: config.ModeRouting, Ghost: netip.MustParseAddr("203.0.113.10"), Interface: "lan0",
		Hash: config.HashJhash, Seed: 0x5eed, Buckets: 8, Version: 4, Fingerprint: "0x00000000000000ff",
		Servers: []dispatch.ServerState{
			{ID: 1, Addr: netip.MustParseAddr("10.0.0.11"), MAC: config.MAC{2, 0, 0, 0, 0, 0x11}, Weight: 1, Up: true, Buckets: 8,
				Checked: true, Health: health.State{Up: true, Since: since, Transitions: 1, LastError: "old"}, Packets: 3, Bytes: 300},
			{ID: 2, Addr: netip.MustParseAddr("10.0.0.12"), Weight: 2, Drain: true, Up: false,
				Checked: true, Health: health.State{Up: false, Since: since, Transitions: 2, LastError: "refused"}},
		},
		Stats:      &dispatch.ClusterStats{},
		Flows:      &dispatch.FlowStats{},
		Transition: &dispatch.Transition{Learning: true, Moved: 3, Entries: 5, Capacity: 64, Closes: closes},
	}
	st.Stats.Packets.Store(3)
	st.Flows.Windows.Store(1)
	b, err := json.Marshal(clusterStatus(st))
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{
		`"name":"web"`, `"mode":"routing"`, `"ghost":"203.0.113.10"`, `"interface":"lan0"`, `"hash":"jhash"`,
		`"seed":24301`, `"buckets":8`, `"version":4`, `"table_fingerprint":"0x00000000000000ff"`,
		`{"id":1,"address":"10.0.0.11","mac":"02:00:00:00:00:11","weight":1,"up":true,"since":"2026-01-02T03:00:00Z","transitions":1,"buckets":8,"packets":3,"bytes":300}`,
		`{"id":2,"address":"10.0.0.12","mac":"","weight":2,"drain":true,"up":false,"since":"2026-01-02T03:00:00Z","last_error":"refused","transitions":2,"buckets":0,"packets":0,"bytes":0}`,
		`"packets":3`, `"flow_windows":1`, `"drop_no_mac":0`,
		`"transition":{"phase":"learning","moved_buckets":3,"entries":5,"capacity":64,"closes_by":"2026-01-02T03:05:00.25Z"}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status JSON lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "broadcast_address") || strings.Contains(got, `"events"`) {
		t.Errorf("status JSON shows an unset second ghost or no events:\n%s", got)
	}
}
