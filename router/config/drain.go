package config

import "time"

// drainTimeout reads a cluster's drain_timeout: a duration from "0s" (planned
// changes move connections at once) to MaxDrainTimeout; DefaultDrainTimeout
// when absent.
func (t *table) drainTimeout(k string) time.Duration {
	v, present := t.m[k]
	if !present {
		return DefaultDrainTimeout
	}
	s, ok := v.(string)
	if !ok {
		t.errorf(k, "must be a duration string such as \"30s\", not %s", typeName(v))
		return DefaultDrainTimeout
	}
	dur, err := time.ParseDuration(s)
	switch {
	case err != nil:
		t.errorf(k, "%q is not a duration such as \"30s\" or \"5m\"", s)
	case dur < 0 || dur > MaxDrainTimeout:
		t.errorf(k, "must be between \"0s\" and %q, not %q", MaxDrainTimeout.String(), s)
	default:
		return dur
	}
	return DefaultDrainTimeout
}
