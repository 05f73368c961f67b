package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ghostrouter/ghostrouter/cmd/internal/version"
	"github.com/ghostrouter/ghostrouter/router/config"
)

// The metrics endpoint serves, at /metrics, the appliance's counters (the
// ones `ghostrouter status` shows, read when scraped), the timings the
// dispatcher reports (health-check latency per server, table build time),
// the capture counters, and the Go runtime and process collectors, in the
// Prometheus exposition formats (client_golang negotiates text or
// protobuf).

// serveMetrics listens on addr and serves h until ctx is done; then it
// lets requests in progress finish for up to a second and closes the rest.
// Its goroutines are counted in wg.
func (a *appliance) serveMetrics(ctx context.Context, wg *sync.WaitGroup, addr string, h http.Handler) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	srv := newMetricsServer(h)
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	go func() {
		defer wg.Done()
		if err := srv.Serve(limitListener(l, maxMetricsConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server stopped", "err", err)
		}
	}()
	a.log.Info("metrics", "address", l.Addr().String())
	return l.Addr(), nil
}

// newMetricsServer is the HTTP server of the metrics endpoint: /metrics
// only, every phase of a request bounded in time.
func newMetricsServer(h http.Handler) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}

// metrics is the appliance's registry and the instruments the dispatcher
// and the capture hub feed. It implements dispatch.Observer.
type metrics struct {
	reg         *prometheus.Registry
	healthCheck *prometheus.HistogramVec
	tableBuild  *prometheus.HistogramVec
	ackRTT      *prometheus.HistogramVec
}

// newMetrics builds the registry; status is read at every scrape, capture
// counters likewise.
func newMetrics(status func() Status, captures func() (sessions, captured, dropped uint64)) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.healthCheck = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ghostrouter_health_check_duration_seconds",
		Help:    "Duration of health checks of a server, by result (ok or failed).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"cluster", "server", "result"})
	m.tableBuild = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ghostrouter_table_build_duration_seconds",
		Help:    "Time to build a cluster's bucket table (start, reload, health change).",
		Buckets: []float64{.00001, .0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"cluster"})
	m.ackRTT = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ghostrouter_announce_ack_seconds",
		Help:    "Broadcast mode: time from issuing a table announcement to each server's first acknowledgement of it (the server's filter holds it).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"cluster"})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.healthCheck, m.tableBuild, m.ackRTT,
		&statusCollector{status: status},
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ghostrouter_capture_sessions_total", Help: "Packet capture sessions started (ghostrouter capture).",
		}, func() float64 { s, _, _ := captures(); return float64(s) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ghostrouter_capture_frames_total", Help: "Frames that matched the filter of a capture session, counted when the session ends.",
		}, func() float64 { _, c, _ := captures(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ghostrouter_capture_dropped_frames_total", Help: "Matched frames a capture session lost because its reader was behind, counted when the session ends.",
		}, func() float64 { _, _, d := captures(); return float64(d) }),
	)
	v := version.Get()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "ghostrouter_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "goversion": v.GoVersion},
	})
	info.Set(1)
	m.reg.MustRegister(info)
	return m
}

// Handler serves the registry.
func (m *metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second})
}

// HealthChecked implements dispatch.Observer.
func (m *metrics) HealthChecked(cluster string, server int, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.healthCheck.WithLabelValues(cluster, strconv.Itoa(server), result).Observe(d.Seconds())
}

// AckObserved records one announcement round trip.
func (m *metrics) AckObserved(cluster string, rtt time.Duration) {
	m.ackRTT.WithLabelValues(cluster).Observe(rtt.Seconds())
}

// TableBuilt implements dispatch.Observer.
func (m *metrics) TableBuilt(cluster string, d time.Duration) {
	m.tableBuild.WithLabelValues(cluster).Observe(d.Seconds())
}

// statusCollector turns a Status, read at scrape time, into the families
// the appliance has always exported. Their label sets change with the
// configuration, so it describes nothing up front (an unchecked collector).
type statusCollector struct {
	status func() Status
}

func (c *statusCollector) Describe(chan<- *prometheus.Desc) {}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	descs := map[string]*prometheus.Desc{}
	emit := func(name, help string, typ prometheus.ValueType, v uint64, labels []string, values ...string) {
		d, ok := descs[name]
		if !ok {
			d = prometheus.NewDesc(name, help, labels, nil)
			descs[name] = d
		}
		ch <- prometheus.MustNewConstMetric(d, typ, float64(v), values...)
	}
	cl, srv, lnk := []string{"cluster"}, []string{"cluster", "server", "address"}, []string{"interface"}
	for _, c := range st.Clusters {
		emit("ghostrouter_cluster_table_version", "Version of the cluster's bucket table.", prometheus.GaugeValue, c.Version, cl, c.Name)
		if c.Mode == config.ModeRouting.String() {
			var entries uint64
			if c.Transition != nil {
				entries = uint64(c.Transition.Entries)
			}
			emit("ghostrouter_cluster_flow_entries", "Flows the routing cluster's transition memory holds now.", prometheus.GaugeValue, entries, cl, c.Name)
		}
		for k, v := range c.Counters {
			emit("ghostrouter_cluster_"+k+"_total", clusterHelp(k), prometheus.CounterValue, v, cl, c.Name)
		}
		for _, s := range c.Servers {
			id := strconv.Itoa(s.ID)
			up := uint64(0)
			if s.Up {
				up = 1
			}
			emit("ghostrouter_server_up", "1 while the server passes its health checks.", prometheus.GaugeValue, up, srv, c.Name, id, s.Address)
			emit("ghostrouter_server_buckets", "Buckets the server owns.", prometheus.GaugeValue, uint64(s.Buckets), srv, c.Name, id, s.Address)
			emit("ghostrouter_server_packets_total", "Packets dispatched to the server (routing mode).", prometheus.CounterValue, s.Packets, srv, c.Name, id, s.Address)
			emit("ghostrouter_server_bytes_total", "IP bytes dispatched to the server (routing mode).", prometheus.CounterValue, s.Bytes, srv, c.Name, id, s.Address)
			emit("ghostrouter_server_transitions_total", "Health state changes of the server.", prometheus.CounterValue, uint64(s.Transitions), srv, c.Name, id, s.Address)
		}
	}
	for _, l := range st.Links {
		up := uint64(0)
		if l.State == "up" {
			up = 1
		}
		emit("ghostrouter_link_up", "1 while the link's receive loops run; 0 once it faulted (the appliance then exits for a restart).", prometheus.GaugeValue, up, lnk, l.Name)
		for k, v := range l.Counters {
			emit("ghostrouter_link_"+k+"_total", linkHelp(k), prometheus.CounterValue, v, lnk, l.Name)
		}
	}
	for k, v := range st.Counters {
		emit("ghostrouter_"+k+"_total", routerHelp(k), prometheus.CounterValue, v, nil)
	}
	for _, v := range st.Verdicts {
		emit("ghostrouter_stage_frames_total", "Inbound frames a datapath stage dropped, or answered with an ICMP error, by reason.", prometheus.CounterValue, v.N,
			[]string{"stage", "verdict", "reason"}, v.Stage, v.Kind, v.Reason)
	}
	for _, c := range st.Conflicts {
		emit("ghostrouter_address_conflict_claims_total", "ARP claims of a protected address by a LAN host (dropped).", prometheus.CounterValue, c.Claims,
			[]string{"address", "role", "mac"}, c.Address.String(), c.Role, c.MAC)
	}
	writeVRRPMetrics(emit, st.VRRP)
	writeBGPMetrics(emit, st.BGP)
}

// emitFunc sends one sample of a family (see statusCollector.Collect).
type emitFunc func(name, help string, typ prometheus.ValueType, v uint64, labels []string, values ...string)

func clusterHelp(k string) string {
	if h, ok := map[string]string{
		"packets":             "Ghost packets dispatched to a server (routing mode).",
		"bytes":               "IP bytes of ghost packets dispatched (routing mode).",
		"drop_malformed":      "Ghost packets dropped: malformed.",
		"drop_ttl_exceeded":   "Ghost packets dropped: TTL or hop limit exceeded (ICMP error sent).",
		"drop_no_server":      "Ghost packets dropped: no server up.",
		"drop_no_mac":         "Ghost packets dropped: the chosen server's MAC is not resolved yet.",
		"drop_write_error":    "Ghost packets dropped: the LAN link refused the write.",
		"drop_too_big":        "Ghost packets dropped: larger than the LAN MTU with DF set (ICMP error sent).",
		"drop_unfragmentable": "Ghost packets dropped: super-frames without DF larger than the LAN MTU.",
		"fragmented":          "Ghost packets fragmented to fit the LAN MTU.",
	}[k]; ok {
		return h
	}
	return "Dispatch outcome counter (" + k + ")."
}

func linkHelp(k string) string {
	if h, ok := map[string]string{
		"rx_frames": "Frames read from the link (a super-frame counts once).", "rx_bytes": "Bytes read from the link.",
		"rx_runt": "Frames shorter than an Ethernet header (dropped).", "rx_foreign": "Unicast frames for another MAC (dropped).",
		"rx_errors": "Read errors.", "tx_frames": "Frames written to the link (a super-frame counts once).",
		"tx_bytes": "Bytes written to the link.", "tx_errors": "Write errors (frame dropped).",
		"tx_too_big": "Frames larger than the largest frame (dropped).", "rx_super_frames": "TCP super-frames received (segmentation offload).",
		"tx_super_frames": "TCP super-frames written whole.", "segmented": "Super-frames cut in software.",
		"bad_offload":  "Frames whose virtio-net header could not be honoured (dropped).",
		"rx_batches":   "Wake-ups of a receive queue that read at least one frame (frames read together are handled as one batch).",
		"tx_rings":     "Runs of two or more frames of a batch written in one io_uring submission.",
		"rx_carried":   "Small TCP data segments a batch cut by a bound handed to the next batch, to leave with what follows them.",
		"holds":        "Batches held open, the queue empty, for what follows a small TCP data segment (a FIN behind a response).",
		"holds_paid":   "Holds ended by a frame of the flow held for.",
		"holds_missed": "Holds that ran out with nothing of the flow.",
	}[k]; ok {
		return h
	}
	return "Link counter (" + k + ")."
}

func routerHelp(k string) string {
	if h, ok := map[string]string{
		"ttl_exceeded":                 "Packets dropped for TTL or hop limit (ICMP time exceeded sent).",
		"icmp_rate_limited":            "ICMP errors not sent because of the rate limit.",
		"malformed_dropped":            "Malformed packets dropped by the datapath.",
		"arp_claims_dropped":           "ARP packets claiming a protected address, dropped.",
		"arp_claim_requests":           "ARP requests claiming a protected address.",
		"arp_claim_replies":            "ARP replies claiming a protected address.",
		"arp_claim_gratuit":            "Gratuitous ARP claiming a protected address.",
		"fastpath_forwarded":           "Packets forwarded by the fast path.",
		"fastpath_bytes":               "Bytes forwarded by the fast path.",
		"fastpath_missed":              "Packets the fast path handed to netstack.",
		"fastpath_write_errors":        "Fast-path writes that failed.",
		"announcements_sent":           "Table announcements sent (broadcast mode).",
		"announcements_failed":         "Table announcements that could not be sent.",
		"netstack_ip_received":         "IP packets that passed every datapath stage and reached netstack.",
		"netstack_forward_unrouteable": "Packets netstack could not forward for want of a route.",
		"netstack_forward_errors":      "Packets netstack failed to forward, for any reason.",
	}[k]; ok {
		return h
	}
	return "Router counter (" + k + ")."
}
