package e2e

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// udpResult is one request of `peer udpload`.
type udpResult struct {
	at                  time.Time
	src                 string
	seq, tries, answers int
	servers             []string
	answeredTwice       int
}

var udpLine = regexp.MustCompile(`^(\d+) (\S+) seq (\d+) tries (\d+) answers (\d+) servers (\S+) attempts-answered-twice (\d+)$`)

func parseUDPLoad(t *testing.T, log string) []udpResult {
	t.Helper()
	var out []udpResult
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if strings.Contains(line, " STRAY ") || strings.Contains(line, " FAIL ") {
			t.Errorf("udpload: %s", line)
			continue
		}
		m := udpLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ms, _ := strconv.ParseInt(m[1], 10, 64)
		r := udpResult{at: time.UnixMilli(ms), src: m[2]}
		r.seq, _ = strconv.Atoi(m[3])
		r.tries, _ = strconv.Atoi(m[4])
		r.answers, _ = strconv.Atoi(m[5])
		r.answeredTwice, _ = strconv.Atoi(m[7])
		if m[6] != "-" {
			r.servers = strings.Split(m[6], ",")
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		t.Fatalf("udpload produced no results:\n%s", log)
	}
	return out
}

// udpFlow sums the requests of one source's udpload flow.
type udpFlow struct {
	sent, answered, dup, lost int
	servers                   string // the servers that answered, sorted, comma-separated
}

// udpFlows sums udpload's per-request lines per source.
func udpFlows(results []udpResult) map[string]udpFlow {
	out := map[string]udpFlow{}
	servers := map[string]map[string]bool{}
	for _, r := range results {
		f := out[r.src]
		f.sent++
		switch {
		case r.answers == 0:
			f.lost++
		default:
			f.answered++
			f.dup += r.answers - 1
		}
		if servers[r.src] == nil {
			servers[r.src] = map[string]bool{}
		}
		for _, s := range r.servers {
			servers[r.src][s] = true
		}
		out[r.src] = f
	}
	for src, set := range servers {
		names := make([]string, 0, len(set))
		for s := range set {
			names = append(names, s)
		}
		sort.Strings(names)
		f := out[src]
		f.servers = strings.Join(names, ",")
		out[src] = f
	}
	return out
}
