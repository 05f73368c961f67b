package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ghostrouter/ghostrouter/arp"
	"github.com/ghostrouter/ghostrouter/arp/neigh"
	"github.com/ghostrouter/ghostrouter/dispatch/announce"
	"github.com/ghostrouter/ghostrouter/router"
	"github.com/ghostrouter/ghostrouter/router/bgp"
	"github.com/ghostrouter/ghostrouter/router/stage"
	"github.com/ghostrouter/ghostrouter/router/vrrp"
)

// The control socket speaks one request per connection: the client writes a
// command word and a newline ("status" or "reload"), the appliance answers
// with one JSON document (a Status, or a ReloadReply) and closes.

// Status is what `ghostrouter status` shows.
type Status struct {
	Config    string            `json:"config"`
	Clusters  []ClusterStatus   `json:"clusters"`
	Neighbors []router.Neighbor `json:"neighbors"`
	Routes    []router.RouteRow `json:"routes"`
	Links     []LinkStatus      `json:"links"`
	Counters  map[string]uint64 `json:"counters"`
	// Stages are the datapath's stages in the order every inbound frame
	// passes them; Verdicts counts, per stage, the frames each dropped or
	// answered with ICMP, by reason.
	Stages    []string       `json:"stages"`
	Verdicts  []stage.Count  `json:"verdicts"`
	Conflicts []arp.Conflict `json:"conflicts"`
	// ServerNeighbors are the servers' MACs as the appliance resolves
	// and guards them: unresolved ones, and the age of each MAC.
	ServerNeighbors []neigh.Entry       `json:"server_neighbors"`
	VRRP            []vrrp.Status       `json:"vrrp"`
	BGP             []bgp.SessionStatus `json:"bgp,omitempty"`
	// Announce is each broadcast cluster's announcements: the table in
	// force and, per server, the last one it acknowledged.
	Announce []announce.ClusterStatus `json:"announce,omitempty"`
	// Takeover is, with virtual routers, how this appliance began
	// announcing as master and what it hears of the master as backup.
	Takeover *TakeoverStatus `json:"takeover,omitempty"`
	Message  string          `json:"message,omitempty"`
}

// LinkStatus is one interface's state and counters.
type LinkStatus struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
	// State is "up", or "faulted" once its receive loop stopped (the
	// appliance is then shutting down: fault.go); Fault is the error.
	State    string            `json:"state"`
	Fault    string            `json:"fault,omitempty"`
	Counters map[string]uint64 `json:"counters"`
}

func (a *appliance) status(path string) Status {
	st := Status{
		Config:          path,
		Clusters:        clusterStatuses(a.m.State()),
		Neighbors:       a.r.Neighbors(),
		Routes:          a.r.Routes(),
		Conflicts:       append(a.guard.Conflicts(), a.nb.Conflicts()...),
		ServerNeighbors: a.nb.Entries(),
		BGP:             a.bgp.status(),
		Stages:          a.r.StageNames(),
		Verdicts:        a.r.StageCounts(),
		Counters: map[string]uint64{
			"ttl_exceeded":       a.r.Stats().TTLExceeded.Load(),
			"icmp_rate_limited":  a.r.Stats().ICMPRateLimited.Load(),
			"malformed_dropped":  a.r.Stats().MalformedDropped.Load(),
			"arp_claims_dropped": a.guard.Stats().Total(),
			"arp_claim_requests": a.guard.Stats().Requests.Load(),
			"arp_claim_replies":  a.guard.Stats().Replies.Load(),
			"arp_claim_gratuit":  a.guard.Stats().Gratuitous.Load(),
			// UDP from outside the LAN to a broadcast cluster's announce port
			"announce_port_dropped": a.ports.Dropped(),
		},
	}
	ns := a.nb.Stats()
	st.Counters["server_neighbor_requests"] = ns.Requests.Load()
	st.Counters["server_neighbor_deferred"] = ns.Deferred.Load()
	st.Counters["server_neighbor_learned"] = ns.Learned.Load()
	st.Counters["server_neighbor_changed"] = ns.Changed.Load()
	st.Counters["server_neighbor_confirmed"] = ns.Confirmed.Load()
	st.Counters["server_neighbor_claims"] = ns.Claims.Load()
	st.Counters["server_neighbor_unsolicited"] = ns.Unsolicited.Load()
	st.Counters["server_neighbor_send_errors"] = ns.SendErrors.Load()
	st.Counters["unicast_in_broadcast_dropped"] = a.r.Stats().UnicastInGroupFrame.Load()
	st.Counters["redirects_sent"] = a.r.Stats().RedirectsSent.Load()
	st.Counters["refragmented"] = a.r.Stats().Refragmented.Load()
	// What got past every stage: netstack's own view of the IP packets it
	// was handed, and of those it could not forward.
	ip := a.r.Stack().Stats().IP
	st.Counters["netstack_ip_received"] = ip.PacketsReceived.Value()
	st.Counters["netstack_forward_unrouteable"] = ip.Forwarding.Unrouteable.Value()
	st.Counters["netstack_forward_errors"] = ip.Forwarding.Errors.Value()
	fp := a.r.FastPathStats()
	st.Counters["fastpath_forwarded"] = fp.Forwarded.Load()
	st.Counters["fastpath_bytes"] = fp.Bytes.Load()
	st.Counters["fastpath_missed"] = fp.Missed.Load()
	st.Counters["fastpath_write_errors"] = fp.WriteErrors.Load()
	st.Counters["fastpath_refused"] = fp.Refused.Load()
	sent, failed, suppressed := a.ann.Stats()
	st.Counters["announcements_sent"], st.Counters["announcements_failed"] = sent, failed
	st.Counters["announcements_suppressed_backup"] = suppressed
	st.VRRP = a.vr.Status()
	for k, v := range a.vr.Counters() {
		st.Counters[k] = v
	}
	st.Counters["acks_malformed"], st.Counters["acks_unknown_cluster"] = a.ann.AckDrops()
	st.Announce = a.ann.Status()
	if !a.vr.Empty() {
		tk := a.ann.Takeover()
		st.Takeover = &tk
		st.Counters["announce_takeovers_continued"], st.Counters["announce_takeovers_fresh"] = tk.Continued, tk.Fresh
	}
	for _, l := range a.r.Links() {
		s := l.EP.Stats()
		state, fault := a.faults.state(l.Config.Name)
		st.Links = append(st.Links, LinkStatus{
			Name:  l.Config.Name,
			MAC:   l.Config.MAC.String(),
			State: state,
			Fault: fault,
			Counters: map[string]uint64{
				"rx_frames": s.RxFrames.Load(), "rx_bytes": s.RxBytes.Load(),
				"rx_runt": s.RxRunt.Load(), "rx_foreign": s.RxForeign.Load(), "rx_errors": s.RxErrors.Load(),
				"tx_frames": s.TxFrames.Load(), "tx_bytes": s.TxBytes.Load(),
				"tx_errors": s.TxErrors.Load(), "tx_too_big": s.TxTooBig.Load(),
				"rx_super_frames": s.RxSuperFrames.Load(), "tx_super_frames": s.TxSuperFrames.Load(),
				"segmented": s.Segmented.Load(), "bad_offload": s.BadOffload.Load(), "gso_too_small": s.GSOTooSmall.Load(),
				"rx_batches": s.RxBatches.Load(), "tx_rings": s.TxRings.Load(), "rx_carried": s.RxCarried.Load(),
				"holds": s.Holds.Load(), "holds_paid": s.HoldsPaid.Load(), "holds_missed": s.HoldsMissed.Load(),
			},
		})
	}
	return st
}

// listenControl listens on the control socket at path (listenUnixSafely):
// a stale socket file left by a dead appliance is replaced; a live one, or
// any other kind of file, is an error.
func listenControl(path string) (net.Listener, error) { return listenUnixSafely(path) }

// serveControl answers requests on l; reload requests are handed to reload,
// whose reply (a ReloadReply) is sent back.
func (a *appliance) serveControl(l net.Listener, path string, reload func() ReloadReply) {
	acceptLoop(l, maxControlConns, a.log, "control socket", func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(io.LimitReader(c, 256))
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if strings.TrimSpace(line) == "capture" { // streams; see capture.go
			a.serveCapture(c, io.MultiReader(br, c))
			return
		}
		var resp any
		switch strings.TrimSpace(line) {
		case "status":
			resp = a.status(path)
		case "reload":
			resp = reload()
		default:
			resp = Status{Message: fmt.Sprintf("unknown request %q", strings.TrimSpace(line))}
		}
		json.NewEncoder(c).Encode(resp)
	})
}

// request sends one command to the appliance at sock.
func request(sock, cmd string) (*Status, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (is the appliance running?): %w", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, cmd); err != nil {
		return nil, fmt.Errorf("send %s: %w", cmd, err)
	}
	var st Status
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		return nil, fmt.Errorf("read %s answer: %w", cmd, err)
	}
	return &st, nil
}

func socketFlag(fs *flag.FlagSet) *string {
	return fs.String("socket", "/run/ghostrouter.sock", "control socket `PATH` of the running appliance")
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sock := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print the raw JSON document")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	st, err := request(*sock, "status")
	if err != nil {
		fmt.Fprintf(stderr, "ghostrouter status: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return 0
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st *Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "config %s\n", st.Config)
	for _, c := range st.Clusters {
		fmt.Fprintf(tw, "\ncluster %s: %s mode, ghost %s on %s, hash %s seed %#x, %d buckets, table version %d (fingerprint %s), health %s\n",
			c.Name, c.Mode, c.Ghost, c.Interface, c.Hash, c.Seed, c.Buckets, c.Version, c.TableFingerprint, c.Health)
		if c.BroadcastAddress != "" {
			fmt.Fprintf(tw, "  second ghost %s -> ff:ff:ff:ff:ff:ff (permanent)\n", c.BroadcastAddress)
		}
		fmt.Fprintln(tw, "  SERVER\tADDRESS\tMAC\tWEIGHT\tSTATE\tBUCKETS\tPACKETS\tBYTES\tCHANGES")
		for _, s := range c.Servers {
			state := "up"
			if !s.Up {
				state = "down"
			}
			if s.Drain {
				state += ",drain"
			}
			mac := s.MAC
			if mac == "" {
				mac = "(unresolved)"
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\n", s.ID, s.Address, mac, s.Weight, state, s.Buckets, s.Packets, s.Bytes, s.Transitions)
			if s.LastError != "" {
				fmt.Fprintf(tw, "    last error: %s\n", s.LastError)
			}
		}
		printCounters(tw, "  counters:", c.Counters)
		if tr := c.Transition; tr != nil {
			fmt.Fprintf(tw, "  transition: %s, %d buckets moved, %d of %d flows remembered, closes by %s\n",
				tr.Phase, tr.Moved, tr.Entries, tr.Capacity, tr.Closes)
		}
		printAnnounce(tw, st.Announce, c.Name)
		for _, e := range c.Events {
			fmt.Fprintf(tw, "  event: %s\n", e)
		}
	}
	fmt.Fprintln(tw, "\nroutes")
	fmt.Fprintln(tw, "  TO\tVIA\tINTERFACE")
	for _, r := range st.Routes {
		via := r.Via
		if via == "" {
			via = "(connected)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.To, via, r.Interface)
	}
	fmt.Fprintln(tw, "\nneighbors")
	fmt.Fprintln(tw, "  INTERFACE\tADDRESS\tMAC\tSTATE")
	for _, n := range st.Neighbors {
		state := n.State
		if n.Permanent {
			state = "PERMANENT"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", n.Interface, n.Addr, n.MAC, state)
	}
	printServerNeighbors(tw, st.ServerNeighbors)
	fmt.Fprintln(tw, "\naddress conflicts (ARP claims of protected addresses, dropped)")
	if len(st.Conflicts) == 0 {
		fmt.Fprintln(tw, "  none")
	} else {
		fmt.Fprintln(tw, "  ADDRESS\tROLE\tCLAIMED BY\tINTERFACE\tCLAIMS\tLAST")
		for _, c := range st.Conflicts {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\n", c.Address, c.Role, c.MAC, c.Interface, c.Claims, c.Last.UTC().Format(time.RFC3339))
		}
		for _, c := range st.Conflicts {
			fmt.Fprintf(tw, "  %s: %s\n", c.Address, c.Hint)
		}
	}
	printVRRP(tw, st.VRRP)
	printTakeover(tw, st.Takeover)
	if len(st.BGP) > 0 {
		fmt.Fprintln(tw, "\nbgp sessions")
		fmt.Fprintln(tw, "  NEIGHBOR\tAS\tSTATE\tUPTIME\tHOLD\tANNOUNCED\tIN\tOUT\tERRORS")
		for _, s := range st.BGP {
			up := "-"
			if s.State == "Established" {
				up = (time.Duration(s.UptimeSec) * time.Second).String()
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%gs\t%s\t%d\t%d\t%d\n", s.Neighbor, s.PeerASN, s.State, up, s.HoldTime,
				strings.Join(s.Announced, ","), s.MsgIn, s.MsgOut, s.Errors)
			if s.LastError != "" {
				fmt.Fprintf(tw, "    last error: %s\n", s.LastError)
			}
		}
	}
	printStages(tw, st.Stages, st.Verdicts)
	fmt.Fprintln(tw, "\nlinks")
	for _, l := range st.Links {
		if l.State == "faulted" {
			fmt.Fprintf(tw, "  %s FAULTED: %s\n", l.Name, l.Fault)
		}
		printCounters(tw, "  "+l.Name+" "+l.MAC+" "+l.State+":", l.Counters)
	}
	printCounters(tw, "\nrouter:", st.Counters)
	tw.Flush()
}

// printStages prints the datapath's stages in order and, per stage, the
// frames it dropped or answered, by reason.
func printStages(w io.Writer, names []string, counts []stage.Count) {
	fmt.Fprintf(w, "\ndatapath: %s -> netstack\n", strings.Join(names, " -> "))
	if len(counts) == 0 {
		fmt.Fprintln(w, "  no frame dropped or answered")
		return
	}
	fmt.Fprintln(w, "  STAGE\tVERDICT\tREASON\tFRAMES")
	for _, c := range counts {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%d\n", c.Stage, c.Kind, c.Reason, c.N)
	}
}

// printAnnounce prints a broadcast cluster's announcements: the table in
// force, whether a change waits for acknowledgements, and per server the
// last table it acknowledged.
func printAnnounce(w io.Writer, all []announce.ClusterStatus, cluster string) {
	for _, a := range all {
		if a.Cluster != cluster {
			continue
		}
		state := "settled"
		if !a.Settled {
			state = fmt.Sprintf("changing: %d buckets owned by nobody", a.Unowned)
			if a.WaitingSince != "" {
				state += ", waiting for acknowledgements since " + a.WaitingSince
			}
		}
		fmt.Fprintf(w, "  announcements: epoch %d seq %d, %s; ack timeout %dms, %d servers excused, %d acquisitions waited\n",
			a.Epoch, a.Seq, state, a.AckTimeoutMS, a.Excused, a.Stalls)
		fmt.Fprintf(w, "  acks: accepted=%d bad_source=%d other_epoch=%d unknown_server=%d future=%d\n",
			a.Acks.Accepted, a.Acks.BadSource, a.Acks.OtherEpoch, a.Acks.UnknownServer, a.Acks.Future)
		fmt.Fprintln(w, "  ACKNOWLEDGED\tRUNS\tBEHIND\tACKED AT\tFROM\tGRANTED\tEXCUSED")
		for _, s := range a.Servers {
			at, from := s.AckedAt, s.From
			if at == "" {
				at = "never"
			}
			if from == "" {
				from = "-"
			}
			late := ""
			if s.Late {
				late = " (late)"
			}
			fmt.Fprintf(w, "  by server %d\tseq %d\t%d\t%s\t%s\t%d\t%d%s\n", s.ID, s.AckedSeq, s.Behind, at, from, s.Owned, s.Excused, late)
		}
	}
}

func printCounters(w io.Writer, title string, m map[string]uint64) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	fmt.Fprintf(w, "%s %s\n", title, strings.Join(parts, " "))
}
