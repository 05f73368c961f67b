package main

import (
	"strings"
	"testing"
)

// The transition memory in the metrics: its entries as a gauge (0 with no
// window open), its counters as counters.
func TestWriteMetricsFlowMemory(t *testing.T) {
	for _, c := range []struct {
		tr   *TransitionStatus
		want string
	}{
		{&TransitionStatus{Phase: "switched", Entries: 12}, `ghostrouter_cluster_flow_entries{cluster="web"} 12`},
		{nil, `ghostrouter_cluster_flow_entries{cluster="web"} 0`},
	} {
		st := Status{Clusters: []ClusterStatus{{
			Name: "web", Mode: "routing", Transition: c.tr,
			Counters: map[string]uint64{"flow_remembered": 40, "flow_overflow": 1},
		}}}
		out := scrape(t, newMetrics(func() Status { return st }, func() (uint64, uint64, uint64) { return 0, 0, 0 }))
		for _, want := range []string{
			"# TYPE ghostrouter_cluster_flow_entries gauge\n",
			c.want + "\n",
			`ghostrouter_cluster_flow_remembered_total{cluster="web"} 40` + "\n",
			`ghostrouter_cluster_flow_overflow_total{cluster="web"} 1` + "\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("metrics lack %q:\n%s", want, out)
			}
		}
	}
}
