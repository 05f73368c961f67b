package config

import (
	"strings"
	"testing"
	"time"
)

// drain_timeout and flow_memory: defaults when absent, the written values
// when present ("0s" included: planned changes then move connections at once).
func TestDrainTimeoutAndFlowMemory(t *testing.T) {
	for _, c := range []struct {
		keys  string
		drain time.Duration
		mem   int
	}{
		{"", DefaultDrainTimeout, DefaultFlowMemory},
		{"drain_timeout = \"45s\"\nflow_memory = 1000\n", 45 * time.Second, 1000},
		{"drain_timeout = \"0s\"\n", 0, DefaultFlowMemory},
		{"drain_timeout = \"24h\"\nflow_memory = 4194304\n", 24 * time.Hour, 4194304},
	} {
		text := twoArms + strings.Replace(webCluster, "mode = \"routing\"\n", "mode = \"routing\"\n"+c.keys, 1)
		cfg, err := Parse("test.toml", []byte(text))
		if err != nil {
			t.Fatalf("%q: %v", c.keys, err)
		}
		if cl := cfg.Clusters[0]; cl.DrainTimeout != c.drain || cl.FlowMemory != c.mem {
			t.Errorf("%q: drain_timeout %v, flow_memory %d; want %v, %d", c.keys, cl.DrainTimeout, cl.FlowMemory, c.drain, c.mem)
		}
	}
}
