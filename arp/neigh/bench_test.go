package neigh

import (
	"net/netip"
	"testing"
	"time"
)

// What the stage costs per frame: a data frame (every frame the datapath
// forwards) is looked at for its type only; a server's ARP request goes
// through the parser, the lock-free target filter and the lock.
func BenchmarkStage(b *testing.B) {
	r, _, _, a, mac := resolveOne(b, false, testParams())
	data := make([]byte, 1514)
	data[12] = 0x08
	req := arpFrame(1, broadcastMAC, mac, a, [6]byte{}, self4)
	other := arpFrame(1, broadcastMAC, rogue, netip.MustParseAddr("10.0.0.200"), [6]byte{}, self4)
	now := time.Unix(2000, 0)
	b.Run("data-frame", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Inbound(nil, data)
		}
	})
	b.Run("arp-other-host", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.input("lan0", selfMAC, other, now)
		}
	})
	b.Run("arp-from-server", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.input("lan0", selfMAC, req, now)
		}
	})
	b.Run("link-address", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.LinkAddress("lan0", a)
		}
	})
}
