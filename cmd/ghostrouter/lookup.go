package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// cmdLookup prints, per client, the bucket and server it maps to, offline
// from the configuration: every configured server counted as up.
func cmdLookup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	name := fs.String("cluster", "", "cluster `NAME` (needed when the file has more than one)")
	downList := fs.String("down", "", "comma-separated server `IDS` to count as failed (what-if)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "ghostrouter lookup: name at least one client address")
		return 2
	}
	cfg, ok := loadConfigWith(config.LoadWithoutKeys, *path, stderr)
	if !ok {
		return 1
	}
	cl, err := pickCluster(cfg, *name)
	if err != nil {
		fmt.Fprintf(stderr, "ghostrouter lookup: %v\n", err)
		return 2
	}
	down := map[int]bool{}
	for _, f := range strings.FieldsFunc(*downList, func(r rune) bool { return r == ',' || r == ' ' }) {
		id, err := strconv.Atoi(f)
		if _, ok := cl.Server(id); err != nil || !ok {
			fmt.Fprintf(stderr, "ghostrouter lookup: --down: %q is not a server id of cluster %s\n", f, cl.Name)
			return 2
		}
		down[id] = true
	}
	sel, servers, err := core.SelectorFor(cl, down)
	if err != nil {
		fmt.Fprintf(stderr, "ghostrouter lookup: cluster %s: %v\n", cl.Name, err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tBUCKET\tSERVER\tADDRESS")
	code := 0
	for _, a := range fs.Args() {
		c, err := netip.ParseAddr(a)
		if err != nil || c.Is4() != cl.Address.Is4() {
			fmt.Fprintf(stderr, "ghostrouter lookup: %q is not an address of the cluster's family\n", a)
			code = 1
			continue
		}
		idx, b, ok := sel.Select(c)
		if !ok {
			fmt.Fprintf(tw, "%s\t%d\t-\t(no live server)\n", c, b)
			continue
		}
		s := servers[idx]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", c, b, s.ID, s.Addr)
	}
	tw.Flush()
	return code
}

func pickCluster(cfg *config.Config, name string) (*config.Cluster, error) {
	if name != "" {
		cl, ok := cfg.Cluster(name)
		if !ok {
			return nil, fmt.Errorf("no cluster %q in %s", name, cfg.File)
		}
		return cl, nil
	}
	switch len(cfg.Clusters) {
	case 0:
		return nil, fmt.Errorf("%s defines no cluster", cfg.File)
	case 1:
		return &cfg.Clusters[0], nil
	default:
		return nil, fmt.Errorf("%s defines %d clusters: name one with --cluster", cfg.File, len(cfg.Clusters))
	}
}
