package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// The metrics endpoint serves the status counters in the Prometheus text
// exposition format at /metrics.

func (a *appliance) serveMetrics(ctx context.Context, addr, path string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		writeMetrics(w, a.status(path))
	})
	srv := newHTTPServer(mux)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(limitListener(l, maxMetricsConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server stopped", "err", err)
		}
	}()
	a.log.Info("metrics", "address", l.Addr().String())
	return nil
}

// writeMetrics renders st as Prometheus text.
func writeMetrics(w io.Writer, st Status) {
	type sample struct {
		labels string
		value  uint64
	}
	families := map[string][]sample{}
	help := map[string]string{}
	add := func(name, h, labels string, v uint64) {
		families[name] = append(families[name], sample{labels, v})
		help[name] = h
	}
	q := strconv.Quote
	for _, c := range st.Clusters {
		cl := "cluster=" + q(c.Name)
		add("ghostrouter_cluster_table_version", "Version of the cluster's bucket table.", cl, c.Version)
		for k, v := range c.Counters {
			add("ghostrouter_cluster_"+k+"_total", "Dispatch outcome counter.", cl, v)
		}
		for _, s := range c.Servers {
			sl := cl + ",server=" + q(strconv.Itoa(s.ID)) + ",address=" + q(s.Address)
			up := uint64(0)
			if s.Up {
				up = 1
			}
			add("ghostrouter_server_up", "1 while the server passes its health checks.", sl, up)
			add("ghostrouter_server_buckets", "Buckets the server owns.", sl, uint64(s.Buckets))
			add("ghostrouter_server_packets_total", "Packets dispatched to the server.", sl, s.Packets)
			add("ghostrouter_server_bytes_total", "IP bytes dispatched to the server.", sl, s.Bytes)
			add("ghostrouter_server_transitions_total", "Health state changes.", sl, uint64(s.Transitions))
		}
	}
	for _, l := range st.Links {
		ll := "interface=" + q(l.Name)
		for k, v := range l.Counters {
			add("ghostrouter_link_"+k+"_total", "Link counter.", ll, v)
		}
	}
	for k, v := range st.Counters {
		add("ghostrouter_"+k+"_total", "Router counter.", "", v)
	}
	for _, c := range st.Conflicts {
		add("ghostrouter_address_conflict_claims_total", "ARP claims of a protected address by a LAN host (dropped).",
			"address="+q(c.Address.String())+",role="+q(c.Role)+",mac="+q(c.MAC), c.Claims)
	}
	names := make([]string, 0, len(families))
	for n := range families {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		typ := "gauge"
		if len(n) > 6 && n[len(n)-6:] == "_total" {
			typ = "counter"
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", n, help[n], n, typ)
		ss := families[n]
		sort.Slice(ss, func(i, j int) bool { return ss[i].labels < ss[j].labels })
		for _, s := range ss {
			if s.labels == "" {
				fmt.Fprintf(w, "%s %d\n", n, s.value)
			} else {
				fmt.Fprintf(w, "%s{%s} %d\n", n, s.labels, s.value)
			}
		}
	}
}
