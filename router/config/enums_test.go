package config

import (
	"encoding/json"
	"strings"
	"testing"
)

// The enumerations read and write the configuration's words, and nothing
// else: the words here are written out from the reference, not taken from
// the code's tables.
func TestEnumWords(t *testing.T) {
	for _, c := range []struct {
		word string
		m    Mode
	}{{"routing", ModeRouting}, {"broadcast", ModeBroadcast}} {
		got, err := ParseMode(c.word)
		if err != nil || got != c.m || c.m.String() != c.word {
			t.Errorf("ParseMode(%q) = %v, %v; String() = %q", c.word, got, err, c.m.String())
		}
		b, err := json.Marshal(struct{ M Mode }{c.m})
		if err != nil || string(b) != `{"M":"`+c.word+`"}` {
			t.Errorf("json of %v = %s, %v", c.m, b, err)
		}
		var back struct{ M Mode }
		if err := json.Unmarshal(b, &back); err != nil || back.M != c.m {
			t.Errorf("json %s reads back as %v, %v", b, back.M, err)
		}
	}
	for _, c := range []struct {
		word string
		h    Hash
	}{{"jhash", HashJhash}, {"modulo", HashModulo}} {
		got, err := ParseHash(c.word)
		if err != nil || got != c.h || c.h.String() != c.word {
			t.Errorf("ParseHash(%q) = %v, %v; String() = %q", c.word, got, err, c.h.String())
		}
	}
	for c, word := range map[Check]string{CheckNone: "none", CheckTCP: "tcp", CheckHTTP: "http", CheckICMP: "icmp"} {
		if c.String() != word {
			t.Errorf("Check %d = %q, want %q", c, c.String(), word)
		}
	}
	var zero Health
	if zero.Check != CheckNone || (Cluster{}).Hash != HashJhash || DefaultHash != HashJhash || DefaultCheck != CheckNone {
		t.Error("the zero check is not none or the zero hash not jhash: the defaults would need restating downstream")
	}
	for _, bad := range []string{"", "Routing", "anycast", "routing "} {
		if m, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) = %v, want an error", bad, m)
		}
		var m Mode
		if err := json.Unmarshal([]byte(`"`+bad+`"`), &m); err == nil || !strings.Contains(err.Error(), "routing, broadcast") {
			t.Errorf("json mode %q: %v, want an error naming the modes", bad, err)
		}
	}
	if _, err := ParseHash("crc32"); err == nil {
		t.Error(`ParseHash("crc32") succeeded`)
	}
	if s := Mode(9).String(); s != "Mode(9)" {
		t.Errorf("Mode(9) = %q", s)
	}
}
