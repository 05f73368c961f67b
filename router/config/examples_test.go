package config

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestExamples parses and validates every example configuration in configs/,
// and checks that the ones the documentation names (routing, broadcast,
// IPv6 broadcast, one-armed, a plain router) show what they say they show.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example configurations in ../../configs")
	}
	ghosts, ghosts6 := netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")
	checks := map[string]func(*testing.T, *Config){
		"routing.toml": func(t *testing.T, cfg *Config) {
			c := onlyCluster(t, cfg)
			if len(cfg.Interfaces) != 2 || c.Mode != ModeRouting || len(c.Servers) != 4 ||
				c.Health.Check != CheckTCP || c.Health.Port != 80 {
				t.Errorf("want two interfaces and a routing cluster of 4 servers with a tcp:80 check; got %+v", cfg)
			}
		},
		"broadcast.toml": func(t *testing.T, cfg *Config) {
			c := onlyCluster(t, cfg)
			if c.Mode != ModeBroadcast || c.BroadcastAddress != netip.MustParseAddr("10.0.0.250") {
				t.Errorf("want a broadcast cluster with broadcast_address 10.0.0.250; got %+v", c)
			}
		},
		"ipv6-broadcast.toml": func(t *testing.T, cfg *Config) {
			c := onlyCluster(t, cfg)
			lan, ok := cfg.Interface(c.Interface)
			if !ok || c.Mode != ModeBroadcast || !c.Address.Is6() || !c.BroadcastAddress.Is6() {
				t.Fatalf("want an IPv6 broadcast cluster; got %+v", c)
			}
			if _, dst, ok := lan.AnnounceTo(); !ok || dst != AllNodes {
				t.Errorf("announcements on %s go to %s, want ff02::1 (an IPv6-only LAN)", lan.Name, dst)
			}
		},
		"one-armed.toml": func(t *testing.T, cfg *Config) {
			c := onlyCluster(t, cfg)
			if len(cfg.Interfaces) != 1 || !cfg.Router.SendRedirects || c.Interface != cfg.Interfaces[0].Name {
				t.Errorf("want one interface, send_redirects and the cluster on that interface; got %+v", cfg)
			}
		},
		"minimal-router.toml": func(t *testing.T, cfg *Config) {
			if len(cfg.Clusters) != 0 || len(cfg.Routes) == 0 {
				t.Errorf("want routes and no cluster; got %+v", cfg)
			}
		},
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			// No example ships a key: their key files are outside the
			// repository, to be written by ghostrouter keygen.
			cfg, err := LoadWithoutKeys(f)
			if err != nil {
				t.Fatalf("LoadWithoutKeys(%q):\n%v", f, err)
			}
			for _, c := range cfg.Clusters {
				if c.AnnounceKeyFile != "" && !strings.HasPrefix(c.AnnounceKeyFile, "/etc/") {
					t.Errorf("cluster %q: announce_key_file %s: want a path under /etc, not a key shipped with the example", c.Name, c.AnnounceKeyFile)
				}
			}
			for _, r := range cfg.Routes {
				if r.Interface == "" {
					t.Errorf("route to %s (line %d) has no interface after Load", r.To, r.Line)
				}
			}
			for _, c := range cfg.Clusters {
				if !ghosts.Contains(c.Address) && !ghosts6.Contains(c.Address) {
					t.Errorf("cluster %q: ghost %s is not from %s or %s, the documentation ranges for ghosts", c.Name, c.Address, ghosts, ghosts6)
				}
			}
			if check, ok := checks[filepath.Base(f)]; ok {
				check(t, cfg)
			}
		})
	}
	for name := range checks {
		if !slices.Contains(files, filepath.Join("../../configs", name)) {
			t.Errorf("example %s is missing from configs/", name)
		}
	}
}

func onlyCluster(t *testing.T, cfg *Config) *Cluster {
	t.Helper()
	if len(cfg.Clusters) != 1 {
		t.Fatalf("want exactly one cluster, got %d", len(cfg.Clusters))
	}
	return &cfg.Clusters[0]
}
