package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics, that it returns either a Config
// or Problems, and that what it returns keeps the package's promises.
func FuzzParse(f *testing.F) {
	// The example files: every key in a realistic arrangement.
	files, _ := filepath.Glob("../../configs/*.toml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	// The test building blocks, whole and cut short.
	full := twoArms + webCluster + "[cluster.health]\ncheck = \"http\"\nport = 80\n"
	f.Add([]byte(full))
	f.Add([]byte(full[:len(full)/2]))
	// Inline forms the locator must follow.
	f.Add([]byte(`[[interface]]
name = "lan0"
addresses = ["10.0.0.1/24", "2001:db8::1/64"]
[[cluster]]
name = "c"
address = "203.0.113.1"
interface = "lan0"
mode = "broadcast"
broadcast_address = "10.0.0.250"
server = [{ id = 0, address = "10.0.0.11" }, { id = 1, address = "10.0.0.12", weight = 0 }]
health = { check = "tcp", port = 80, interval = "1s", timeout = "2s" }
`))
	// Syntax the locator skips over.
	f.Add([]byte("s = \"\"\"\n[[interface]]\n\"\"\"\nt = '''\n'''\n[a.\"b\"]\nc = [[1], {d = 2}]\n"))
	// Not TOML.
	f.Add([]byte("[[interface]\nname = \"\n"))
	f.Add([]byte{0xff, 0xfe, '[', 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		locate(data) // must not panic on anything, TOML or not

		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse returned a Config and an error: %v", err)
			}
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("Parse error %T %q is not a non-empty Problems", err, err)
			}
			lines := bytes.Count(data, []byte("\n")) + 1
			for _, p := range ps {
				if p.Line < 0 || p.Line > lines || p.Msg == "" || p.File != "fuzz.toml" {
					t.Fatalf("bad problem %#v for a file of %d lines", p, lines)
				}
			}
			return
		}
		if len(cfg.Interfaces) == 0 {
			t.Fatalf("Config without interfaces")
		}
		for _, ifc := range cfg.Interfaces {
			if len(ifc.MAC) != 6 || len(ifc.Addresses) == 0 || ifc.MTU < MinMTU || ifc.Queues < 1 {
				t.Fatalf("bad interface %+v", ifc)
			}
		}
		for _, r := range cfg.Routes {
			if _, ok := cfg.Interface(r.Interface); !ok || r.To != r.To.Masked() {
				t.Fatalf("bad route %+v", r)
			}
		}
		for _, c := range cfg.Clusters {
			if _, ok := cfg.Interface(c.Interface); !ok || len(c.Servers) == 0 || c.Buckets < 1 ||
				c.Health.Timeout > c.Health.Interval || c.Health.Timeout <= 0 {
				t.Fatalf("bad cluster %+v", c)
			}
			if (c.Mode == ModeBroadcast) != c.BroadcastAddress.IsValid() {
				t.Fatalf("cluster %q: mode %s with broadcast address %v", c.Name, c.Mode, c.BroadcastAddress)
			}
		}
	})
}
