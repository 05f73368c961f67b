package config

import (
	"fmt"
	"slices"
	"strings"
)

// Mode is a cluster's mode = "..." key.
type Mode uint8

// The modes. The zero Mode is none: a cluster always has one after Parse.
const (
	ModeRouting   Mode = iota + 1 // the appliance rewrites the destination MAC to the chosen server's
	ModeBroadcast                 // the appliance broadcasts; each server's filter keeps its own buckets
)

// Hash is a cluster's hash = "..." key: the function that picks a client's
// server. The zero Hash is HashJhash, the default.
type Hash uint8

// The hash functions.
const (
	HashJhash  Hash = iota // contract 1: Linux lookup3 jhash, as nftables computes it
	HashModulo             // the patent's k = CA mod N with its failure rule; routing mode only
)

// Check is a [cluster.health] table's check = "..." key. The zero Check is
// CheckNone, which is also what a cluster without the table gets.
type Check uint8

// The health checks.
const (
	CheckNone Check = iota
	CheckTCP
	CheckHTTP
	CheckICMP
)

// The words of the configuration file, indexed by value.
var (
	modeWords  = [...]string{ModeRouting: "routing", ModeBroadcast: "broadcast"}
	hashWords  = [...]string{HashJhash: "jhash", HashModulo: "modulo"}
	checkWords = [...]string{CheckNone: "none", CheckTCP: "tcp", CheckHTTP: "http", CheckICMP: "icmp"}
)

func word[E ~uint8](words []string, v E, kind string) string {
	if int(v) < len(words) && words[v] != "" {
		return words[v]
	}
	return fmt.Sprintf("%s(%d)", kind, uint8(v))
}

func parseWord[E ~uint8](words []string, s, kind string) (E, error) {
	for i, w := range words {
		if w != "" && w == s {
			return E(i), nil
		}
	}
	var known []string
	for _, w := range words {
		if w != "" {
			known = append(known, w)
		}
	}
	return 0, fmt.Errorf("config: %s %q: want one of %s", kind, s, strings.Join(known, ", "))
}

// String is the mode as the configuration writes it: "routing" or "broadcast".
func (m Mode) String() string { return word(modeWords[:], m, "Mode") }

// MarshalText writes the mode as the configuration does.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads a mode as the configuration writes it.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := parseWord[Mode](modeWords[:], string(b), "mode")
	if err == nil {
		*m = v
	}
	return err
}

// ParseMode reads a mode as the configuration writes it.
func ParseMode(s string) (Mode, error) { return parseWord[Mode](modeWords[:], s, "mode") }

// String is the hash as the configuration writes it: "jhash" or "modulo".
func (h Hash) String() string { return word(hashWords[:], h, "Hash") }

// MarshalText writes the hash as the configuration does.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads a hash as the configuration writes it.
func (h *Hash) UnmarshalText(b []byte) error {
	v, err := parseWord[Hash](hashWords[:], string(b), "hash")
	if err == nil {
		*h = v
	}
	return err
}

// ParseHash reads a hash as the configuration writes it.
func ParseHash(s string) (Hash, error) { return parseWord[Hash](hashWords[:], s, "hash") }

// String is the check as the configuration writes it: "none", "tcp", "http"
// or "icmp".
func (c Check) String() string { return word(checkWords[:], c, "Check") }

// MarshalText writes the check as the configuration does.
func (c Check) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// oneOfWord is oneOf for a key whose values are the words of an enumeration:
// def when k is absent; ok is false when k is present but not one of values
// (reported) or when k is absent and def is not wanted (hasDef false).
func oneOfWord[E interface {
	~uint8
	fmt.Stringer
}](t *table, k string, def E, hasDef bool, values ...E) (E, bool) {
	words := make([]string, len(values))
	for i, v := range values {
		words[i] = v.String()
	}
	s := t.oneOf(k, "", words...)
	if s == "" {
		return def, hasDef && !t.has(k)
	}
	return values[slices.Index(words, s)], true
}
