package harness

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopGraceCapture is Capture.Stop's wait between the last traffic and stopping tcpdump.
// A tcpdump stopped right after the traffic loses what libpcap still buffers, so captures
// run with --immediate-mode -U (tcpdump writes each packet as soon as libpcap hands it over)
// and Stop waits a moment: a frame that has just crossed the interface may still sit in the
// kernel's packet ring or in libpcap's buffer, and stopping at once loses it (seen on Linux
// 6.18). There is nothing to poll for a packet nobody knows is missing, so
// this short fixed wait is the one sleep the harness allows. Tests that know what they
// expect should poll Capture.Packets instead (then Stop loses nothing).
const StopGraceCapture = 300 * time.Millisecond

// Capture sizing. With --immediate-mode, libpcap uses a TPACKET_V2 ring (V3 would batch
// packets into blocks) whose slots are sized from the snapshot length, or, on a device with
// offloads (veth, bridge), for a 64 KiB GSO frame; with tcpdump's default 2 MiB buffer that
// is about 30 slots, and a burst larger than that while tcpdump writes is "dropped by
// kernel". A 1920-byte snapshot (a full 1500-MTU frame, two slots per 4 KiB page) in an
// 8 MiB buffer gives about 4000 slots. Larger frames (GSO super-packets on veth, jumbo
// MTUs) are cut: their headers are all there and Packet.Truncated reports the cut.
const (
	CaptureSnaplen   = 1920
	CaptureBufferKiB = 8192
)

// Capture is a running tcpdump writing a pcap file into ArtifactDir.
type Capture struct {
	ns     *NS
	ifname string
	path   string
	proc   *Proc

	once sync.Once
}

// Capture starts, in the namespace,
//
//	tcpdump -i IFNAME -n -e --immediate-mode -U -Z root -s 1920 -B 8192 -w FILE [FILTER]
//
// writing ArtifactDir/<ns>-<ifname>.pcap, and returns once tcpdump reports "listening on"
// (so no packet sent afterwards is missed). filter is a pcap-filter expression or "".
// "-Z root" keeps tcpdump from dropping to its own user, which could not write into a
// private artifact directory. Captures still running at cleanup are stopped first, so
// their files are complete when kept.
func (n *NS) Capture(ifname, filter string) *Capture {
	t := n.h.t
	t.Helper()
	path := n.h.artifactPath(n.Name+"-"+ifname, ".pcap")
	args := []string{"tcpdump", "-i", ifname, "-n", "-e", "--immediate-mode", "-U", "-Z", "root",
		"-s", strconv.Itoa(CaptureSnaplen), "-B", strconv.Itoa(CaptureBufferKiB), "-w", path}
	if filter != "" {
		args = append(args, filter)
	}
	p, err := n.start("tcpdump-"+n.Name+"-"+ifname, args...)
	if err != nil {
		t.Fatalf("harness: capture: %v", err)
	}
	c := &Capture{ns: n, ifname: ifname, path: path, proc: p}
	n.h.mu.Lock()
	n.h.caps = append(n.h.caps, c)
	n.h.mu.Unlock()
	p.WaitForLog("listening on", ReadyTimeout)
	return c
}

// Path is the pcap file.
func (c *Capture) Path() string { return c.path }

// Packets reads what the capture has written so far, without stopping it. A last record
// still being written is left out (tcpdump -U writes whole packets, but the read may race
// the write). Use it with WaitFor to wait for expected packets instead of sleeping.
func (c *Capture) Packets() []Packet {
	pkts, err := ReadPcap(c.path)
	if err != nil && !errors.Is(err, ErrTruncated) {
		// Before tcpdump writes its header the file may be empty: nothing captured yet.
		return nil
	}
	return pkts
}

// Stop waits StopGraceCapture, stops tcpdump (SIGINT, which makes it flush and exit), and
// returns the parsed capture. It fails the test if the file cannot be parsed, and marks it
// failed (t.Errorf) if tcpdump reports packets "dropped by kernel": a capture with holes is
// no evidence. Tests sending bulk traffic should filter the capture to what they assert on
// (packets the filter rejects are not drops). Calling Stop again parses the file again.
func (c *Capture) Stop() []Packet {
	c.ns.h.t.Helper()
	c.halt(true)
	return c.result()
}

// StopAll stops several captures with one grace wait between them all (rather than one
// each) and returns their packets in order. Same checks as Stop.
func StopAll(caps ...*Capture) [][]Packet {
	if len(caps) == 0 {
		return nil
	}
	caps[0].ns.h.t.Helper()
	time.Sleep(StopGraceCapture)
	var wg sync.WaitGroup
	for _, c := range caps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.halt(false)
		}()
	}
	wg.Wait()
	out := make([][]Packet, len(caps))
	for i, c := range caps {
		out[i] = c.result()
	}
	return out
}

// result reads the stopped capture's file, failing the test as Stop documents.
func (c *Capture) result() []Packet {
	t := c.ns.h.t
	t.Helper()
	if d := kernelDrops(c.proc.Log()); d > 0 {
		t.Errorf("harness: capture %s in %s: tcpdump reports %d packets dropped by kernel: the capture has holes", c.ifname, c.ns.Name, d)
	}
	pkts, err := ReadPcap(c.path)
	if err != nil {
		t.Fatalf("harness: capture %s in %s: %v\ntcpdump log:\n%s", c.ifname, c.ns.Name, err, c.proc.Log())
	}
	return pkts
}

// halt stops tcpdump once, after the grace wait if grace is set; the cleanup calls it
// (with grace) for captures a test left running.
func (c *Capture) halt(grace bool) {
	c.once.Do(func() {
		if c.proc.Exited() {
			return
		}
		if grace {
			time.Sleep(StopGraceCapture)
		}
		_ = c.proc.Signal(syscall.SIGINT)
		if c.proc.Wait(5*time.Second) != nil && !c.proc.Exited() {
			_ = c.proc.stop(StopGrace)
		}
	})
}

var dropsRE = regexp.MustCompile(`(\d+) packets? dropped by kernel`) // read-only after init

func kernelDrops(log string) int {
	m := dropsRE.FindStringSubmatch(log)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// String names the capture for messages.
func (c *Capture) String() string {
	return strings.Join([]string{c.ns.Name, c.ifname, c.path}, " ")
}
