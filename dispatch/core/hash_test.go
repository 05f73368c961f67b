package core

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// refJHash is the kernel's jhash() (include/linux/jhash.h) transcribed as
// plainly as possible, for any key length: the slow, obvious reference the
// fast paths are checked against. __get_unaligned_cpu32 on a little-endian
// CPU is spelled out byte by byte.
func refJHash(key []byte, initval uint32) uint32 {
	rol := func(x uint32, s uint) uint32 { return x<<s | x>>(32-s) }
	le := func(k []byte) uint32 {
		return uint32(k[0]) | uint32(k[1])<<8 | uint32(k[2])<<16 | uint32(k[3])<<24
	}
	length := uint32(len(key))
	a := 0xdeadbeef + length + initval
	b, c := a, a
	k := key
	for length > 12 {
		a += le(k[0:])
		b += le(k[4:])
		c += le(k[8:])
		// __jhash_mix
		a -= c
		a ^= rol(c, 4)
		c += b
		b -= a
		b ^= rol(a, 6)
		a += c
		c -= b
		c ^= rol(b, 8)
		b += a
		a -= c
		a ^= rol(c, 16)
		c += b
		b -= a
		b ^= rol(a, 19)
		a += c
		c -= b
		c ^= rol(b, 4)
		b += a
		length -= 12
		k = k[12:]
	}
	if length == 0 {
		return c
	}
	// The switch with its fallthroughs.
	for i := int(length) - 1; i >= 0; i-- {
		v := uint32(k[i]) << (8 * uint(i%4))
		switch i / 4 {
		case 0:
			a += v
		case 1:
			b += v
		case 2:
			c += v
		}
	}
	// __jhash_final
	c ^= b
	c -= rol(b, 14)
	a ^= c
	a -= rol(c, 11)
	b ^= a
	b -= rol(a, 25)
	c ^= b
	c -= rol(b, 16)
	a ^= c
	a -= rol(c, 4)
	b ^= a
	b -= rol(a, 14)
	c ^= b
	c -= rol(b, 24)
	return c
}

// The reference against Bob Jenkins' own test vectors for lookup3's
// hashlittle() (lookup3.c, driver5), which the kernel's jhash() is on
// little-endian machines.
func TestRefJHashLookup3Vectors(t *testing.T) {
	const fourScore = "Four score and seven years ago"
	tests := []struct {
		key     string
		initval uint32
		want    uint32
	}{
		{"", 0, 0xdeadbeef},
		{"", 0xdeadbeef, 0xbd5b7dde},
		{fourScore, 0, 0x17770551},
		{fourScore, 1, 0xcd628161},
	}
	for _, tc := range tests {
		if got := refJHash([]byte(tc.key), tc.initval); got != tc.want {
			t.Errorf("refJHash(%q, %#x) = %#08x, want %#08x", tc.key, tc.initval, got, tc.want)
		}
	}
}

// The worked example of the hash contract in package dispatch's documentation.
func TestJHashWorkedExample(t *testing.T) {
	tests := []struct {
		client string
		want   uint32
	}{
		{"198.51.100.12", 1},
		{"198.51.100.13", 0},
		{"198.51.100.14", 1},
		{"198.51.100.15", 2},
	}
	for _, tc := range tests {
		a := netip.MustParseAddr(tc.client)
		if got := Bucket(JHash(a, 0x5eed), 3); got != tc.want {
			t.Errorf("Bucket(JHash(%s, 0x5eed), 3) = %d, want %d", a, got, tc.want)
		}
	}
}

func TestJHashMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		seed := rng.Uint32()
		var a4 [4]byte
		var a16 [16]byte
		for i := range a4 {
			a4[i] = byte(rng.Uint32())
		}
		for i := range a16 {
			a16[i] = byte(rng.Uint32())
		}
		if got, want := JHash4(a4, seed), refJHash(a4[:], seed); got != want {
			t.Fatalf("JHash4(%v, %#x) = %#08x, reference %#08x", a4, seed, got, want)
		}
		if got, want := JHash(netip.AddrFrom4(a4), seed), refJHash(a4[:], seed); got != want {
			t.Fatalf("JHash(%v, %#x) = %#08x, reference %#08x", netip.AddrFrom4(a4), seed, got, want)
		}
		if got, want := JHash16(a16, seed), refJHash(a16[:], seed); got != want {
			t.Fatalf("JHash16(%v, %#x) = %#08x, reference %#08x", a16, seed, got, want)
		}
		if got, want := JHash(netip.AddrFrom16(a16), seed), refJHash(a16[:], seed); got != want {
			t.Fatalf("JHash(%v, %#x) = %#08x, reference %#08x", netip.AddrFrom16(a16), seed, got, want)
		}
	}
}

func TestJHashAddrForms(t *testing.T) {
	tests := []struct {
		addr netip.Addr
		key  []byte
	}{
		{netip.MustParseAddr("10.0.0.1"), []byte{10, 0, 0, 1}},
		{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::1").AsSlice()},
		// An IPv4-mapped IPv6 address is 16 bytes on the wire, as `ip6 saddr`
		// sees it, not 4.
		{netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("::ffff:10.0.0.1").AsSlice()},
		{netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("fe80::1").AsSlice()},
		{netip.Addr{}, nil},
	}
	for _, tc := range tests {
		for _, seed := range []uint32{0, 0x5eed, 0xdeadbeef} {
			if got, want := JHash(tc.addr, seed), refJHash(tc.key, seed); got != want {
				t.Errorf("JHash(%v, %#x) = %#08x, want jhash(% x) = %#08x", tc.addr, seed, got, tc.key, want)
			}
		}
	}
}

func TestBucket(t *testing.T) {
	tests := []struct {
		h, n, want uint32
	}{
		{0, 3, 0},
		{0xffffffff, 3, 2},
		{0x55555555, 3, 0},
		{0x55555556, 3, 1},
		{0xaaaaaaab, 3, 2},
		{0x80000000, 4096, 2048},
		{0xffffffff, 4096, 4095},
		{0x12345678, 1, 0},
		{0x12345678, 0, 0},
		{0xffffffff, 0xffffffff, 0xfffffffe},
	}
	for _, tc := range tests {
		if got := Bucket(tc.h, tc.n); got != tc.want {
			t.Errorf("Bucket(%#x, %d) = %d, want %d", tc.h, tc.n, got, tc.want)
		}
	}
	// Every hash lands in range, and the buckets are the 2^32/n-wide slices
	// of the hash space in order.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		h, n := rng.Uint32(), rng.Uint32N(1<<20)+1
		b := Bucket(h, n)
		lo := (uint64(b)<<32 + uint64(n) - 1) / uint64(n)   // smallest h in bucket b
		hi := (uint64(b+1)<<32 + uint64(n) - 1) / uint64(n) // smallest h in bucket b+1
		if b >= n || uint64(h) < lo || uint64(h) >= hi {
			t.Fatalf("Bucket(%#x, %d) = %d, want the bucket whose slice [%#x, %#x) holds it, in [0, %d)", h, n, b, lo, hi, n)
		}
	}
}

func TestHashAllocs(t *testing.T) {
	a4 := [4]byte{198, 51, 100, 12}
	v4 := netip.AddrFrom4(a4)
	v6 := netip.MustParseAddr("2001:db8::12")
	var sink uint32
	for name, f := range map[string]func(){
		"JHash4":     func() { sink += JHash4(a4, 0x5eed) },
		"JHash/IPv4": func() { sink += JHash(v4, 0x5eed) },
		"JHash/IPv6": func() { sink += JHash(v6, 0x5eed) },
		"Bucket":     func() { sink += Bucket(sink, 4096) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
	_ = sink
}

func BenchmarkJHash4(b *testing.B) {
	b.ReportAllocs()
	a := [4]byte{198, 51, 100, 12}
	var sink uint32
	for i := 0; b.Loop(); i++ {
		a[3] = byte(i)
		sink += JHash4(a, 0x5eed)
	}
	_ = sink
}

func BenchmarkJHash16(b *testing.B) {
	b.ReportAllocs()
	a := netip.MustParseAddr("2001:db8::12").As16()
	var sink uint32
	for i := 0; b.Loop(); i++ {
		a[15] = byte(i)
		sink += JHash16(a, 0x5eed)
	}
	_ = sink
}
