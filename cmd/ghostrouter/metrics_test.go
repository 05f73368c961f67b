package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch"
)

func TestWriteMetrics(t *testing.T) {
	st := Status{
		Clusters: []dispatch.ClusterStatus{{
			Name: "web", Version: 3,
			Counters: map[string]uint64{"packets": 10, "drop_no_mac": 2},
			Servers: []dispatch.ServerStatus{
				{ID: 0, Address: "10.0.0.11", Up: true, Buckets: 2048, Packets: 6, Bytes: 600},
				{ID: 1, Address: "10.0.0.12", Up: false, Buckets: 0, Packets: 4, Bytes: 400, Transitions: 1},
			},
		}},
		Links:    []LinkStatus{{Name: "lan0", Counters: map[string]uint64{"rx_frames": 7}}},
		Counters: map[string]uint64{"ttl_exceeded": 1},
	}
	var b bytes.Buffer
	writeMetrics(&b, st)
	out := b.String()
	for _, want := range []string{
		"# TYPE ghostrouter_cluster_packets_total counter\n",
		`ghostrouter_cluster_packets_total{cluster="web"} 10` + "\n",
		`ghostrouter_cluster_drop_no_mac_total{cluster="web"} 2` + "\n",
		"# TYPE ghostrouter_server_up gauge\n",
		`ghostrouter_server_up{cluster="web",server="0",address="10.0.0.11"} 1` + "\n",
		`ghostrouter_server_up{cluster="web",server="1",address="10.0.0.12"} 0` + "\n",
		`ghostrouter_server_buckets{cluster="web",server="0",address="10.0.0.11"} 2048` + "\n",
		`ghostrouter_link_rx_frames_total{interface="lan0"} 7` + "\n",
		"ghostrouter_ttl_exceeded_total 1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
	// Every sample line belongs to a family announced by # TYPE before it.
	typed := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "# TYPE ") {
			typed[strings.Fields(l)[2]] = true
			continue
		}
		if strings.HasPrefix(l, "#") {
			continue
		}
		name := strings.FieldsFunc(l, func(r rune) bool { return r == '{' || r == ' ' })[0]
		if !typed[name] {
			t.Errorf("sample %q before its # TYPE line", l)
		}
	}
}
