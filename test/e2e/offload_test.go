package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ghostrouter/ghostrouter/test/harness"
)

// Segmentation offload end to end. The appliance's TAPs carry TCP
// super-frames (up to 64 KiB, cut by whoever finally needs them cut): the
// bytes of a TCP transfer must arrive exactly as sent, through both fast
// paths and in both directions, and the captures on the TAPs' kernel side
// must show frames larger than the MTU (otherwise the offload is off and the
// test proves nothing about it).
//
//	cli ── c0 ─ u-c ─ br-up ─ up0 [ghostrouter] lan0 ─ br-lan ─ l-s0 ─ e0 ── srv0
//	198.51.100.10            ▲ capture          ▲ capture              10.0.0.11
//	                                                                   + ghost on lo
//
//	upload   client -> server 0    forwarding fast path
//	download server 0 -> client    forwarding fast path
//	upload   client -> ghost       dispatch hook
//	download ghost -> client       forwarding fast path (the server's replies)

const (
	transferPort  = 9200
	transferBytes = 8 << 20
	ethMTUFrame   = 14 + 1500 // the largest plain frame on these links
)

// transferServer accepts connections on srv: the first byte says what to do.
// 'u': read transferBytes, answer their sha256. 'd': send transferBytes of
// the stream seeded by the next 8 bytes.
func transferServer(t *testing.T, srv *harness.NS) {
	t.Helper()
	var ln net.Listener
	if err := srv.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", transferPort))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", srv.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				var op [9]byte
				if _, err := io.ReadFull(c, op[:]); err != nil {
					return
				}
				switch op[0] {
				case 'u':
					h := sha256.New()
					if _, err := io.CopyN(h, c, transferBytes); err != nil {
						return
					}
					c.Write(h.Sum(nil))
				case 'd':
					io.Copy(c, stream(op[1:]))
				}
			}()
		}
	}()
}

// stream is transferBytes of pseudo-random bytes determined by seed.
func stream(seed []byte) io.Reader {
	var s [32]byte
	copy(s[:], seed)
	return io.LimitReader(chachaReader{rand.NewChaCha8(s)}, transferBytes)
}

type chachaReader struct{ c *rand.ChaCha8 }

func (r chachaReader) Read(p []byte) (int, error) { return r.c.Read(p) }

// transfer runs one upload or download from the client to dst and checks the
// byte stream's sha256 at the receiving end against the sender's.
func transfer(t *testing.T, cli *harness.NS, dst netip.Addr, upload bool, seed uint64) {
	t.Helper()
	var c net.Conn
	addr := netip.AddrPortFrom(dst, transferPort).String()
	if err := cli.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial %s from the client: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	var op [9]byte
	op[0] = 'd'
	if upload {
		op[0] = 'u'
	}
	for i := range 8 {
		op[1+i] = byte(seed >> (8 * i))
	}
	if _, err := c.Write(op[:]); err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	want := sha256.New()
	io.Copy(want, stream(op[1:]))
	what := "download from " + addr
	var got []byte
	if upload {
		what = "upload to " + addr
		if _, err := io.Copy(c, stream(op[1:])); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got = make([]byte, sha256.Size)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("%s: no sha256 from the server: %v", what, err)
		}
	} else {
		h := sha256.New()
		n, err := io.Copy(h, c)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("%s: %v after %d bytes", what, err, n)
		}
		if n != transferBytes {
			t.Fatalf("%s: %d bytes, want %d", what, n, transferBytes)
		}
		got = h.Sum(nil)
	}
	if !bytes.Equal(got, want.Sum(nil)) {
		t.Fatalf("%s: sha256 of the bytes received %x, of the bytes sent %x", what, got, want.Sum(nil))
	}
	t.Logf("%s: %d bytes, sha256 %x at both ends", what, transferBytes, got[:8])
}

func TestSuperFramesCrossIntact(t *testing.T) {
	for _, queues := range []int{1, 2} {
		t.Run(fmt.Sprintf("queues=%d", queues), func(t *testing.T) { superFramesCrossIntact(t, queues) })
	}
}

// superFramesCrossIntact runs the transfers with TAPs of the given number of
// queues (with two, frames leave on the queue matching the one they came in
// on, and each queue has its own reader).
func superFramesCrossIntact(t *testing.T, queues int) {
	tp := newTopo(t, topoOptions{servers: 1})
	base := strings.ReplaceAll(tp.baseConfig(), "\nbridge = ", fmt.Sprintf("\nqueues = %d\nbridge = ", queues))
	tp.start(base + tp.clusterConfig("routing", "jhash", ""))
	tp.setupNodes()
	if want := fmt.Sprintf("queues=%d", queues); strings.Count(tp.app.Log(), want) != 2 {
		t.Fatalf("the appliance's TAPs are not opened with %s:\n%s", want, tp.app.Log())
	}
	srv := tp.servers[0]
	transferServer(t, srv.ns)

	filter := fmt.Sprintf("tcp port %d", transferPort)
	capUp := tp.rtr.Capture("up0", filter)
	capLAN := tp.rtr.Capture("lan0", filter)
	ghost := netip.MustParseAddr(ghostAddr)
	for i, dst := range []netip.Addr{srv.addr, ghost} {
		transfer(t, tp.cli, dst, true, uint64(2*i+1))
		transfer(t, tp.cli, dst, false, uint64(2*i+2))
	}
	all := harness.StopAll(capUp, capLAN)

	// On each TAP, super-frames both ways: toward each end and from it.
	client := netip.MustParseAddr(clientAddr)
	for i, name := range []string{"up0", "lan0"} {
		biggest := map[string]int{}
		for _, p := range all[i] {
			dir := "to the client"
			if p.Src == client {
				dir = "from the client"
				if p.Dst == ghost {
					dir = "from the client to the ghost"
				}
			}
			biggest[dir] = max(biggest[dir], p.Len)
		}
		for _, dir := range []string{"to the client", "from the client", "from the client to the ghost"} {
			if biggest[dir] <= ethMTUFrame {
				t.Errorf("%s: largest TCP frame %s is %d bytes: no super-frames (offload off?)", name, dir, biggest[dir])
			}
		}
		t.Logf("%s: largest frames %v", name, biggest)
	}
	if t.Failed() {
		t.Logf("appliance log:\n%s", tp.app.Log())
	}
}
