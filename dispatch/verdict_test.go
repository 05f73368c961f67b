package dispatch

import (
	"net/netip"
	"testing"

	"github.com/ghostrouter/ghostrouter/dispatch/core"
	"github.com/ghostrouter/ghostrouter/router/stage"
)

// TestForwarderVerdicts: the dispatch stage names what it did with each
// frame, and a dropped or answered frame's reason is the cluster counter
// that moved.
func TestForwarderVerdicts(t *testing.T) {
	client := netip.MustParseAddr("198.51.100.10")
	lan, _ := lanPair(t)
	f, c, v := testForwarder(t, lan, &recordedError{})
	idx, _, _ := v.Selector.Select(client)
	lanNoMAC, _ := lanPair(t)
	fNoMAC, cNoMAC, _ := testForwarder(t, lanNoMAC, nil, idx)
	lanSmall, _ := lanWithMTU(t, 576)
	fSmall, cSmall, _ := testForwarder(t, lanSmall, &recordedError{})

	badSum := udpFrame(client, hookGhost, 64)
	badSum[14+10] ^= 0xff
	df := ipv4Frame(client, nil, 0x4000, 1000)
	noDFTinyMTU := ipv4Frame(client, nil, 0, 1000)
	quote := icmpErrorFrame(netip.MustParseAddr("192.0.2.254"), 3, 4, nil) // quotes no header of the ghost's
	for _, tc := range []struct {
		name    string
		f       *Forwarder
		frame   []byte
		want    stage.Verdict
		counter func() uint64
	}{
		{"dispatched", f, udpFrame(client, hookGhost, 64), stage.Consumed, func() uint64 { return c.Stats().Packets.Load() }},
		{"not a ghost", f, udpFrame(client, netip.MustParseAddr("10.0.0.11"), 64), stage.Pass, nil},
		{"TTL 1", f, udpFrame(client, hookGhost, 1), stage.Answer(stage.TTLExceeded), func() uint64 { return c.Stats().TTLExceeded.Load() }},
		{"bad checksum", f, badSum, stage.Drop(stage.Malformed), func() uint64 { return c.Stats().Malformed.Load() }},
		{"unresolved server", fNoMAC, udpFrame(client, hookGhost, 64), stage.Drop(stage.NoMAC), func() uint64 { return cNoMAC.Stats().NoMAC.Load() }},
		{"too big with DF", fSmall, df, stage.Answer(stage.TooBig), func() uint64 { return cSmall.Stats().TooBig.Load() }},
		{"fragmented", fSmall, noDFTinyMTU, stage.Consumed, func() uint64 { return cSmall.Stats().Fragmented.Load() }},
		{"ICMP error quoting another's packet", f, quote, stage.Drop(stage.BadICMPQuote), func() uint64 { return c.Stats().ICMPMalformed.Load() }},
	} {
		var before uint64
		if tc.counter != nil {
			before = tc.counter()
		}
		if got := tc.f.Inbound(nil, tc.frame); got != tc.want {
			t.Errorf("%s: verdict %v, want %v", tc.name, got, tc.want)
		}
		if tc.counter != nil && tc.counter()-before != 1 {
			t.Errorf("%s: its counter moved by %d, want 1", tc.name, tc.counter()-before)
		}
	}

	// No live server.
	tbl, _ := core.NewTable([]core.Server{{ID: 0, Addr: netip.MustParseAddr("10.0.0.11"), Weight: 1, Up: false}}, 64)
	c.Publish(&View{Selector: core.NewJHashSelector(tbl, 1), Servers: tbl.Servers(), MACs: [][6]byte{{2, 0, 0, 0, 1, 1}}, Stats: []*ServerStats{{}}})
	if got := f.Inbound(nil, udpFrame(client, hookGhost, 64)); got != stage.Drop(stage.NoServer) {
		t.Errorf("no live server: verdict %v", got)
	}
	// A 60-byte header and 8 data bytes do not fit a 64-byte MTU: the
	// packet cannot be cut.
	lanTiny, _ := lanWithMTU(t, 64)
	fTiny, cTiny, _ := testForwarder(t, lanTiny, nil)
	opts := make([]byte, 40)
	for i := range opts {
		opts[i] = 1 // no-operation
	}
	big := ipv4Frame(client, opts, 0, 200)
	if got := fTiny.Inbound(nil, big); got != stage.Drop(stage.Unfragmentable) || cTiny.Stats().Unfragmentable.Load() != 1 {
		t.Errorf("a header too long for the MTU: verdict %v, counter %d", got, cTiny.Stats().Unfragmentable.Load())
	}
}
