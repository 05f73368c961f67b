package main

import (
	"fmt"
	"time"

	"github.com/ghostrouter/ghostrouter/dispatch"
	"github.com/ghostrouter/ghostrouter/dispatch/health"
)

// ClusterStatus is one cluster's state as `ghostrouter status` shows it: the
// dispatcher's ClusterState rendered for the control socket's JSON.
type ClusterStatus struct {
	Name             string            `json:"name"`
	Mode             string            `json:"mode"`
	Ghost            string            `json:"ghost"`
	BroadcastAddress string            `json:"broadcast_address,omitempty"`
	Interface        string            `json:"interface"`
	Hash             string            `json:"hash"`
	Seed             uint32            `json:"seed"`
	Buckets          int               `json:"buckets"`
	Health           string            `json:"health"`
	Version          uint64            `json:"version"`
	Servers          []ServerStatus    `json:"servers"`
	Counters         map[string]uint64 `json:"counters"`
	Events           []string          `json:"events,omitempty"`
	// Transition is the open transition window (routing mode), if any.
	Transition *TransitionStatus `json:"transition,omitempty"`
	// TableFingerprint digests where the table sends every bucket (see
	// Table.Fingerprint): equal on two appliances that dispatch alike.
	TableFingerprint string `json:"table_fingerprint"`
}

// ServerStatus is one server's state as `ghostrouter status` shows it.
type ServerStatus struct {
	ID          int    `json:"id"`
	Address     string `json:"address"`
	MAC         string `json:"mac"`
	Weight      int    `json:"weight"`
	Drain       bool   `json:"drain,omitempty"`
	Up          bool   `json:"up"`
	Since       string `json:"since,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	Transitions int    `json:"transitions"`
	Buckets     int    `json:"buckets"`
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
}

// TransitionStatus is an open transition window as `status` shows it.
type TransitionStatus struct {
	Phase    string `json:"phase"` // "learning" or "switched"
	Moved    int    `json:"moved_buckets"`
	Entries  int64  `json:"entries"`
	Capacity int    `json:"capacity"`
	Closes   string `json:"closes_by"` // RFC 3339: the window closes by then at the latest
}

// clusterStatuses renders the dispatcher's clusters for status.
func clusterStatuses(states []dispatch.ClusterState) []ClusterStatus {
	out := make([]ClusterStatus, len(states))
	for i := range states {
		out[i] = clusterStatus(&states[i])
	}
	return out
}

func clusterStatus(c *dispatch.ClusterState) ClusterStatus {
	cs := ClusterStatus{
		Name: c.Name, Mode: c.Mode.String(), Ghost: c.Ghost.String(), Interface: c.Interface,
		Hash: c.Hash.String(), Seed: c.Seed, Buckets: c.Buckets, Version: c.Version,
		Health: health.Describe(c.Health), Counters: map[string]uint64{},
		TableFingerprint: c.Fingerprint,
	}
	if c.BroadcastAddress.IsValid() {
		cs.BroadcastAddress = c.BroadcastAddress.String()
	}
	for _, ev := range c.Events {
		cs.Events = append(cs.Events, eventText(ev))
	}
	for _, s := range c.Servers {
		ss := ServerStatus{ID: s.ID, Address: s.Addr.String(), Weight: s.Weight, Drain: s.Drain, Up: s.Up, Buckets: s.Buckets,
			Packets: s.Packets, Bytes: s.Bytes}
		if s.Checked {
			ss.Since = s.Health.Since.Format(time.RFC3339)
			ss.Transitions = s.Health.Transitions
			if !s.Health.Up {
				ss.LastError = s.Health.LastError
			}
		}
		if !s.MAC.IsZero() {
			ss.MAC = s.MAC.String()
		}
		cs.Servers = append(cs.Servers, ss)
	}
	if st := c.Stats; st != nil {
		cs.Counters["packets"] = st.Packets.Load()
		cs.Counters["bytes"] = st.Bytes.Load()
		cs.Counters["drop_malformed"] = st.Malformed.Load()
		cs.Counters["drop_ttl_exceeded"] = st.TTLExceeded.Load()
		cs.Counters["drop_no_server"] = st.NoServer.Load()
		cs.Counters["drop_no_mac"] = st.NoMAC.Load()
		cs.Counters["drop_write_error"] = st.WriteErrors.Load()
		cs.Counters["drop_too_big"] = st.TooBig.Load()
		cs.Counters["drop_unfragmentable"] = st.Unfragmentable.Load()
		cs.Counters["fragmented"] = st.Fragmented.Load()
		cs.Counters["icmp_errors"] = st.ICMPErrors.Load()
		cs.Counters["drop_icmp_malformed"] = st.ICMPMalformed.Load()
	}
	if fl := c.Flows; fl != nil {
		cs.Counters["flow_remembered"] = fl.Remembered.Load()
		cs.Counters["flow_overflow"] = fl.Overflow.Load()
		cs.Counters["flow_released"] = fl.Released.Load()
		cs.Counters["flow_held_packets"] = fl.Held.Load()
		cs.Counters["flow_windows"] = fl.Windows.Load()
	}
	if tr := c.Transition; tr != nil {
		cs.Transition = &TransitionStatus{Phase: "switched", Moved: tr.Moved, Entries: tr.Entries, Capacity: tr.Capacity,
			Closes: tr.Closes.Format(time.RFC3339Nano)}
		if tr.Learning {
			cs.Transition.Phase = "learning"
		}
	}
	return cs
}

// eventText is a health transition as status lists it, e.g.
// "2026-01-02T03:04:05Z server 2 down: timeout; 1365 of 4096 buckets moved;
// detected 1.5s after its last good check".
func eventText(ev dispatch.Event) string {
	state := "up"
	if !ev.Up {
		state = "down"
	}
	text := fmt.Sprintf("%s server %d %s: %s; %d of %d buckets moved", ev.At.Format(time.RFC3339Nano), ev.ServerID, state, ev.Reason, ev.Moved, ev.Buckets)
	if !ev.Up {
		text += fmt.Sprintf("; detected %s after its last good check", ev.Detect.Round(time.Millisecond))
	}
	return text
}
