package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/bpf"

	"github.com/ghostrouter/ghostrouter/router/capture"
)

// `ghostrouter capture` asks the running appliance to capture on one link.
// On the control socket the request is the word "capture" on its own line,
// then one JSON captureRequest line. The appliance answers with one JSON
// captureReply line, then, if it accepted, a stream of chunks, each a kind
// byte and a big-endian 32-bit length before the payload: kind 'p' is one
// pcap record (record header and data), kind 'e' ends the stream with a
// JSON captureEnd. The client writes the pcap file header and the records.

const (
	chunkRecord = 'p'
	chunkEnd    = 'e'
	// maxCaptureRequest bounds the request line: a filter of MaxFilter
	// instructions as JSON fits with room to spare.
	maxCaptureRequest = 256 << 10
)

type captureRequest struct {
	Interface string               `json:"interface"`
	SnapLen   int                  `json:"snaplen"`
	Count     uint64               `json:"count"` // 0: until the client goes away
	Filter    []bpf.RawInstruction `json:"filter,omitempty"`
}

type captureReply struct {
	Error   string `json:"error,omitempty"`
	SnapLen int    `json:"snaplen"`
}

type captureEnd struct {
	Captured uint64 `json:"captured"` // records sent
	Matched  uint64 `json:"matched"`  // frames that passed the filter
	Dropped  uint64 `json:"dropped"`  // of those, lost because the reader was behind
	Reason   string `json:"reason"`
}

// serveCapture runs one capture request on c; r reads what the client sent
// after the request word.
func (a *appliance) serveCapture(c net.Conn, r io.Reader) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(io.LimitReader(r, maxCaptureRequest))
	line, err := br.ReadBytes('\n')
	if err != nil {
		json.NewEncoder(c).Encode(captureReply{Error: "capture request: " + errText(err)})
		return
	}
	var req captureRequest
	if err := json.Unmarshal(line, &req); err != nil {
		json.NewEncoder(c).Encode(captureReply{Error: "capture request: " + err.Error()})
		return
	}
	ep, ok := a.r.Endpoint(req.Interface)
	if !ok {
		json.NewEncoder(c).Encode(captureReply{Error: fmt.Sprintf("no interface %q", req.Interface)})
		return
	}
	s, err := a.captures.Start(ep, capture.Options{SnapLen: req.SnapLen, Filter: req.Filter})
	if err != nil {
		json.NewEncoder(c).Encode(captureReply{Error: err.Error()})
		return
	}
	defer s.Close()
	a.log.Info("capture started", "interface", req.Interface, "snaplen", s.SnapLen(), "count", req.Count, "filter_instructions", len(req.Filter))
	if err := json.NewEncoder(c).Encode(captureReply{SnapLen: s.SnapLen()}); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	// The client says nothing more; its going away (EOF) ends the capture.
	gone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(gone)
	}()
	end := captureEnd{Reason: "count reached"}
	w := bufio.NewWriterSize(c, 256<<10)
	buf := make([]byte, 0, 5+capture.RecordHeaderLen+s.SnapLen())
loop:
	for req.Count == 0 || end.Captured < req.Count {
		var rec capture.Record
		select {
		case rec = <-s.Records():
		case <-gone:
			end.Reason = "stopped by the client"
			break loop
		case <-s.Done():
			end.Reason = "appliance stopping"
			break loop
		}
		buf = append(buf[:0], chunkRecord, 0, 0, 0, 0)
		buf = capture.AppendRecord(buf, rec)
		binary.BigEndian.PutUint32(buf[1:5], uint32(len(buf)-5))
		s.Release(rec)
		// A client that stops reading is cut off rather than kept forever;
		// meanwhile the session drops (and counts) what does not fit.
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(buf); err != nil {
			end.Reason = "write: " + errText(err)
			break
		}
		end.Captured++
		if len(s.Records()) == 0 {
			if err := w.Flush(); err != nil {
				end.Reason = "write: " + errText(err)
				break
			}
		}
	}
	s.Close()
	end.Matched, end.Dropped = s.Matched(), s.Dropped()
	a.log.Info("capture ended", "interface", req.Interface, "captured", end.Captured, "matched", end.Matched, "dropped", end.Dropped, "reason", end.Reason)
	if strings.HasPrefix(end.Reason, "write") {
		return
	}
	payload, _ := json.Marshal(end)
	buf = append(buf[:0], chunkEnd, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	w.Write(append(buf, payload...))
	w.Flush()
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	// Let the client read the end before the connection closes.
	select {
	case <-gone:
	case <-time.After(2 * time.Second):
	}
}

func errText(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed early"
	}
	return err.Error()
}

const captureUsage = `usage: ghostrouter capture [--socket PATH] -i IFACE [-w FILE] [-c COUNT] [-s SNAPLEN] [FILTER]

Captures on one of the running appliance's links, both directions, every
frame as it is on the wire (after the dispatch stage's MAC rewrite; TCP
super-frames whole), including those the dispatch stage and the fast path
consume, which tcpdump on the host never sees. Writes pcap (Ethernet) to
FILE, or to stdout with -w - (the default):

  ghostrouter capture -i lan0 -w - | tcpdump -n -e -r -

FILTER is a tcpdump expression (compiled by tcpdump, which must be
installed). A reader slower than the traffic loses frames; the count is
printed at the end. Stops after COUNT frames, or on SIGINT/SIGTERM.
`

func cmdCapture(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, captureUsage); fs.PrintDefaults() }
	sock := socketFlag(fs)
	iface := fs.String("i", "", "the appliance's `IFACE` to capture on (as named in its configuration)")
	out := fs.String("w", "-", "write pcap to `FILE` (- for stdout)")
	count := fs.Uint64("c", 0, "stop after `COUNT` frames (0: until interrupted)")
	snap := fs.Int("s", capture.MaxSnapLen, "keep at most `SNAPLEN` bytes of each frame (0: the maximum)")
	// Flags may come after the filter's words too, as with tcpdump.
	var words []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		words, rest = append(words, rest[0]), rest[1:]
	}
	if *iface == "" {
		fmt.Fprintln(stderr, "ghostrouter capture: -i IFACE is required")
		return 2
	}
	if *snap < 0 || *snap > capture.MaxSnapLen {
		fmt.Fprintf(stderr, "ghostrouter capture: -s %d: must be 0 to %d\n", *snap, capture.MaxSnapLen)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	filter, err := capture.Compile(ctx, strings.Join(words, " "), *snap)
	if err != nil {
		fmt.Fprintf(stderr, "ghostrouter capture: %v\n", err)
		return 2
	}
	var w io.Writer = stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintf(stderr, "ghostrouter capture: %v\n", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	res, err := runCapture(ctx, *sock, captureRequest{Interface: *iface, SnapLen: *snap, Count: *count, Filter: filter}, w, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "ghostrouter capture: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "%d frames captured on %s, %d dropped (reader too slow)", res.Captured, *iface, res.Dropped)
	if res.Reason != "" {
		fmt.Fprintf(stderr, "; %s", res.Reason)
	}
	fmt.Fprintln(stderr)
	return 0
}

// runCapture sends req to the appliance at sock and writes the pcap file to
// w until the appliance ends the stream or ctx is done; msgs gets the line
// saying the capture runs.
func runCapture(ctx context.Context, sock string, req captureRequest, w, msgs io.Writer) (captureEnd, error) {
	var res captureEnd
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return res, fmt.Errorf("connect to %s (is the appliance running?): %w", sock, err)
	}
	defer c.Close()
	body, err := json.Marshal(req)
	if err != nil {
		return res, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(append(append([]byte("capture\n"), body...), '\n')); err != nil {
		return res, fmt.Errorf("send capture request: %w", err)
	}
	br := bufio.NewReaderSize(c, 256<<10)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return res, fmt.Errorf("read capture answer: %w", err)
	}
	var rep captureReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return res, fmt.Errorf("capture answer %q: %w", strings.TrimSpace(string(line)), err)
	}
	if rep.Error != "" {
		return res, errors.New(rep.Error)
	}
	if rep.SnapLen < 1 || rep.SnapLen > capture.MaxSnapLen {
		return res, fmt.Errorf("capture answer: snap length %d", rep.SnapLen)
	}
	// As tcpdump's "listening on": from here on, no frame is missed.
	fmt.Fprintf(msgs, "capturing on %s, link-type EN10MB (Ethernet), snapshot length %d bytes\n", req.Interface, rep.SnapLen)
	c.SetDeadline(time.Time{})
	// Interrupted: ask the appliance to end the stream (half-close), and
	// take what it still sends, for a little while.
	stopWatch := context.AfterFunc(ctx, func() {
		if uc, ok := c.(*net.UnixConn); ok {
			uc.CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
	})
	defer stopWatch()
	bw := bufio.NewWriterSize(w, 256<<10)
	defer bw.Flush()
	if _, err := bw.Write(capture.FileHeader(rep.SnapLen)); err != nil {
		return res, fmt.Errorf("write: %w", err)
	}
	bw.Flush()
	return copyRecords(ctx, br, bw, rep.SnapLen)
}

// copyRecords copies the records of a capture stream from br to bw until
// the stream's end chunk, checking each is a well-formed pcap record within
// the snap length (the appliance is trusted no more than a file).
func copyRecords(ctx context.Context, br *bufio.Reader, bw *bufio.Writer, snapLen int) (captureEnd, error) {
	var res captureEnd
	var hdr [5]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if ctx.Err() != nil {
				res.Reason = "interrupted"
				return res, nil
			}
			return res, fmt.Errorf("capture stream: %w", errors.New(errText(err)))
		}
		n := int(binary.BigEndian.Uint32(hdr[1:]))
		if n > capture.RecordHeaderLen+capture.MaxSnapLen {
			return res, fmt.Errorf("capture stream: chunk of %d bytes", n)
		}
		if n > cap(payload) {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return res, fmt.Errorf("capture stream: %w", errors.New(errText(err)))
		}
		switch hdr[0] {
		case chunkRecord:
			if !validRecord(payload, snapLen) {
				return res, errors.New("capture stream: malformed record")
			}
			if _, err := bw.Write(payload); err != nil {
				return res, fmt.Errorf("write: %w", err)
			}
			res.Captured++
			if br.Buffered() == 0 {
				if err := bw.Flush(); err != nil {
					return res, fmt.Errorf("write: %w", err)
				}
			}
		case chunkEnd:
			var end captureEnd
			if err := json.Unmarshal(payload, &end); err != nil {
				return res, fmt.Errorf("capture stream end: %w", err)
			}
			end.Captured = res.Captured
			return end, nil
		default:
			return res, fmt.Errorf("capture stream: unknown chunk kind %#x", hdr[0])
		}
	}
}

// validRecord reports whether b is one pcap record: a header whose
// captured length is the data that follows, at most snapLen and at most
// the original length.
func validRecord(b []byte, snapLen int) bool {
	if len(b) < capture.RecordHeaderLen {
		return false
	}
	capLen := binary.LittleEndian.Uint32(b[8:])
	origLen := binary.LittleEndian.Uint32(b[12:])
	return int(capLen) == len(b)-capture.RecordHeaderLen && int(capLen) <= snapLen && capLen <= origLen &&
		binary.LittleEndian.Uint32(b[4:]) < 1e6
}
