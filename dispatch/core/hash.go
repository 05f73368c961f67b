package core

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// jhashInitval is JHASH_INITVAL from the kernel's include/linux/jhash.h.
const jhashInitval = 0xdeadbeef

// JHash is the Linux kernel's lookup3 jhash() (include/linux/jhash.h,
// JHASH_INITVAL 0xdeadbeef) over the address bytes in network order (4 bytes
// for IPv4, 16 bytes for IPv6, including IPv4-mapped IPv6 addresses) with
// initval = seed: bit for bit what nftables computes for
// `jhash ip saddr mod B seed S` (`ip6 saddr` for IPv6) before it scales the
// result to B (see Bucket).
//
// The kernel reads the key's 12-byte blocks with __get_unaligned_cpu32 and its
// tail bytes as k[0] | k[1]<<8 | ...; on the little-endian machines the
// appliance and the servers run on (amd64, arm64) both are little-endian word
// loads, so JHash reads little-endian words on every host and agrees with an
// amd64 kernel even when it runs elsewhere. TestKernelJHashAgrees checks it
// against the running kernel.
//
// The zero Addr has no bytes; JHash hashes the empty key for it (the kernel's
// jhash with length 0). JHash does not allocate.
func JHash(addr netip.Addr, seed uint32) uint32 {
	switch {
	case addr.Is4():
		return JHash4(addr.As4(), seed)
	case addr.Is6():
		return JHash16(addr.As16(), seed)
	default:
		return jhashInitval + seed
	}
}

// JHash4 is JHash for an IPv4 address given as its 4 bytes in network order:
// the allocation-free fast path used per packet.
func JHash4(a [4]byte, seed uint32) uint32 {
	x := jhashInitval + 4 + seed
	return jhashFinal(x+binary.LittleEndian.Uint32(a[:]), x, x)
}

// JHash16 is JHash for an IPv6 address given as its 16 bytes in network order.
func JHash16(a [16]byte, seed uint32) uint32 {
	x := jhashInitval + 16 + seed
	ha, hb, hc := x, x, x
	// One full 12-byte block goes through __jhash_mix ...
	ha += binary.LittleEndian.Uint32(a[0:4])
	hb += binary.LittleEndian.Uint32(a[4:8])
	hc += binary.LittleEndian.Uint32(a[8:12])
	ha, hb, hc = jhashMix(ha, hb, hc)
	// ... and the 4-byte tail through __jhash_final.
	ha += binary.LittleEndian.Uint32(a[12:16])
	return jhashFinal(ha, hb, hc)
}

// Bucket scales a hash to one of n buckets the way nft_jhash does, with the
// kernel's reciprocal_scale: (h * n) >> 32 in 64-bit arithmetic. The result is
// in [0, n) for n > 0, and 0 for n == 0.
func Bucket(h uint32, n uint32) uint32 {
	return uint32((uint64(h) * uint64(n)) >> 32)
}

// jhashMix is the kernel's __jhash_mix.
func jhashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

// jhashFinal is the kernel's __jhash_final; it returns c.
func jhashFinal(a, b, c uint32) uint32 {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return c
}

// Mix64 is the 64-bit finalizer the table's scores are built from
// (splitmix64's): a bijection whose every output bit depends on every input
// bit. The forwarding stage's flow memory hashes its keys with it.
func Mix64(x uint64) uint64 { return mix64(x) }
