package icmp

import "time"

// Defaults of the ICMP error budgets, as Linux's (net.ipv4.icmp_msgs_per_sec,
// icmp_msgs_burst, icmp_ratemask).
const (
	DefaultRate  = 1000 // errors per second, per link and per type
	DefaultBurst = 50
	// DefaultRateMask selects the ICMPv4 types that are limited: Linux's
	// 0x1818 (destination unreachable 3, source quench 4, time exceeded
	// 11, parameter problem 12) plus redirect (5), which Linux limits by
	// its own per-peer back-off.
	DefaultRateMask = 1<<3 | 1<<4 | 1<<5 | 1<<11 | 1<<12
)

// Budget is one link's ICMP error budgets: a token bucket per ICMP type
// and family, so that a flood drawing errors of one kind (time exceeded
// for a TTL 1 flood) cannot starve another kind (the path-MTU errors
// another client depends on). Fragmentation needed (IPv4 type 3 code 4)
// has its own bucket, apart from the other destination-unreachable codes,
// as packet too big has in IPv6 (its own type). ICMPv4 types not in the
// rate mask are not limited (Linux's icmp_ratemask); every ICMPv6 error
// type is. Safe for concurrent use; Allow does not allocate.
type Budget struct {
	mask   uint32
	v4, v6 [256]Limiter
	frag   Limiter
}

// NewBudget returns a link's budgets: rate errors per second with bursts
// of burst, per type; mask selects the limited ICMPv4 types (bit n: type
// n, for types below 32).
func NewBudget(rate float64, burst int, mask uint32) *Budget {
	b := &Budget{mask: mask}
	for i := range b.v4 {
		b.v4[i].set(rate, burst)
		b.v6[i].set(rate, burst)
	}
	b.frag.set(rate, burst)
	return b
}

// Allow reports whether one more error of (typ, code) may be sent now.
func (b *Budget) Allow(v6 bool, typ, code uint8, now time.Time) bool {
	switch {
	case v6:
		return b.v6[typ].Allow(now)
	case typ < 32 && b.mask&(1<<typ) == 0:
		return true
	case typ == TypeDestUnreachable && code == CodeFragNeeded:
		return b.frag.Allow(now)
	default:
		return b.v4[typ].Allow(now)
	}
}

func (l *Limiter) set(rate float64, burst int) {
	l.rate, l.burst, l.tokens = rate, float64(burst), float64(burst)
}
