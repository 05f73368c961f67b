package filter

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrBucketList is wrapped by ParseList's errors.
var ErrBucketList = errors.New("bad bucket list")

// Range is the buckets Lo through Hi, both included.
type Range struct{ Lo, Hi uint32 }

// String is "Lo" for one bucket and "Lo-Hi" otherwise: the syntax of both
// ParseList and nft set elements.
func (r Range) String() string {
	if r.Lo == r.Hi {
		return strconv.FormatUint(uint64(r.Lo), 10)
	}
	return strconv.FormatUint(uint64(r.Lo), 10) + "-" + strconv.FormatUint(uint64(r.Hi), 10)
}

// Ranges compresses ascending, distinct buckets into maximal runs.
func Ranges(owned []uint32) []Range {
	var rs []Range
	for _, b := range owned {
		if n := len(rs); n > 0 && rs[n-1].Hi+1 == b {
			rs[n-1].Hi = b
			continue
		}
		rs = append(rs, Range{b, b})
	}
	return rs
}

// Expand is the inverse of Ranges: the buckets of rs in order.
func Expand(rs []Range) []uint32 {
	var out []uint32
	for _, r := range rs {
		for b := uint64(r.Lo); b <= uint64(r.Hi); b++ {
			out = append(out, uint32(b))
		}
	}
	return out
}

// FormatList writes ascending, distinct buckets the way ParseList reads
// them: "0-3,7,9-12"; "" for none.
func FormatList(owned []uint32) string {
	var b strings.Builder
	for i, r := range Ranges(owned) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// ParseList reads a list of buckets such as "1,2,5-9" (spaces around items
// allowed, any order) for a table of n buckets and returns them ascending.
// An empty list (or "none") is no bucket. Every bucket must be below n and
// may appear once: a list that names one twice, an inverted range or a
// malformed item is an error naming the item, not something to repair.
func ParseList(s string, n int) ([]uint32, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return []uint32{}, nil
	}
	var out []uint32
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		lo, hi, isRange := strings.Cut(item, "-")
		a, err := parseBucket(lo, n)
		if err != nil {
			return nil, fmt.Errorf("%w: item %q: %v", ErrBucketList, item, err)
		}
		b := a
		if isRange {
			if b, err = parseBucket(hi, n); err != nil {
				return nil, fmt.Errorf("%w: item %q: %v", ErrBucketList, item, err)
			}
			if b < a {
				return nil, fmt.Errorf("%w: item %q: range ends before it starts", ErrBucketList, item)
			}
		}
		for x := uint64(a); x <= uint64(b); x++ {
			out = append(out, uint32(x))
		}
	}
	slices.Sort(out)
	for i := 1; i < len(out); i++ {
		if out[i] == out[i-1] {
			return nil, fmt.Errorf("%w: bucket %d is listed more than once", ErrBucketList, out[i])
		}
	}
	return out, nil
}

func parseBucket(s string, n int) (uint32, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty bucket number")
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a bucket number", s)
	}
	if v >= uint64(n) {
		return 0, fmt.Errorf("bucket %d is out of range (the table has %d buckets: 0-%d)", v, n, n-1)
	}
	return uint32(v), nil
}

// CheckOwned reports whether owned is ascending, distinct and below n, as
// Spec requires.
func CheckOwned(owned []uint32, n int) error {
	for i, b := range owned {
		if uint64(b) >= uint64(n) {
			return fmt.Errorf("bucket %d is out of range (the table has %d buckets: 0-%d)", b, n, n-1)
		}
		if i > 0 && b <= owned[i-1] {
			return fmt.Errorf("buckets not ascending and distinct at %d", b)
		}
	}
	return nil
}
