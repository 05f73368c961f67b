package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/bpf"
)

// Compile turns a tcpdump filter expression into a classic BPF program for
// Ethernet frames cut at snapLen. The compiler is tcpdump's own (libpcap),
// run as `tcpdump -ddd` against an empty Ethernet savefile, so the
// expression means exactly what it means to tcpdump; tcpdump must be
// installed. An empty expression is no filter (nil).
func Compile(ctx context.Context, expr string, snapLen int) ([]bpf.RawInstruction, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, nil
	}
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		return nil, errors.New("filter expressions are compiled by tcpdump, which is not installed (Debian: apt-get install tcpdump)")
	}
	if snapLen <= 0 || snapLen > MaxSnapLen {
		snapLen = MaxSnapLen
	}
	// tcpdump compiles for the link type of its input: an empty savefile
	// says Ethernet without needing a device or privileges.
	f, err := os.CreateTemp("", "ghostrouter-filter-*.pcap")
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(FileHeader(snapLen)); err != nil {
		f.Close()
		return nil, fmt.Errorf("filter: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-ddd", "-r", f.Name(), "--", expr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:]
		}
		return nil, fmt.Errorf("filter %q: tcpdump: %s", expr, msg)
	}
	return ParseDDD(out)
}

// ParseDDD parses tcpdump -ddd output: the instruction count on the first
// line, then one instruction per line as four decimal numbers (code, jt,
// jf, k).
func ParseDDD(text []byte) ([]bpf.RawInstruction, error) {
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
		return nil, errors.New("filter program: empty")
	}
	n, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || n < 1 || n > MaxFilter {
		return nil, fmt.Errorf("filter program: bad instruction count %q", lines[0])
	}
	if len(lines)-1 != n {
		return nil, fmt.Errorf("filter program: says %d instructions, has %d", n, len(lines)-1)
	}
	out := make([]bpf.RawInstruction, n)
	for i, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 4 {
			return nil, fmt.Errorf("filter program: line %d: want 4 numbers, got %q", i+2, l)
		}
		var v [4]uint64
		for j, s := range f {
			bits := []int{16, 8, 8, 32}[j]
			v[j], err = strconv.ParseUint(s, 10, bits)
			if err != nil {
				return nil, fmt.Errorf("filter program: line %d: %w", i+2, err)
			}
		}
		out[i] = bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])}
	}
	return out, nil
}
