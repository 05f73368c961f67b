package dispatch

import (
	"github.com/ghostrouter/ghostrouter/router/tap"
	"net/netip"
	"os"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
)

// cluster is n servers with equal weights, all up, with IDs that are not
// their positions (the core's tests use the same membership).
func cluster(n int) []core.Server {
	s := make([]core.Server, n)
	for i := range s {
		s[i] = core.Server{ID: 10 + 3*i, Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Weight: 1, Up: true}
	}
	return s
}

func mustTable(t testing.TB, servers []core.Server, buckets int) *core.Table {
	t.Helper()
	tb, err := core.NewTable(servers, buckets)
	if err != nil {
		t.Fatalf("NewTable(%d servers, %d buckets): %v", len(servers), buckets, err)
	}
	return tb
}

// ownerIDs flattens a table to bucket -> owner ID, -1 for none.
func ownerIDs(tb *core.Table) []int {
	out := make([]int, tb.Buckets())
	for b := range out {
		id, ok := tb.OwnerID(uint32(b))
		if !ok {
			id = -1
		}
		out[b] = id
	}
	return out
}

// moved counts the buckets whose owner differs between two tables of the
// same size.
func moved(a, b *core.Table) int {
	oa, ob := ownerIDs(a), ownerIDs(b)
	n := 0
	for i := range oa {
		if oa[i] != ob[i] {
			n++
		}
	}
	return n
}

// nullLAN is a LAN endpoint named name (with hookLANMAC) whose writes go to
// /dev/null: the forwarder writes real frames and nobody reads them.
func nullLAN(t testing.TB, name string) *tap.Endpoint {
	t.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { null.Close() })
	lan, err := tap.NewEndpoint(tap.EndpointConfig{Name: name, Files: []*os.File{null}, MAC: hookLANMAC, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	return lan
}
