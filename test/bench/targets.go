package bench

import (
	"fmt"
	"math"
)

// Unmet lists the figures with a target that the medians of kernel and
// appliance do not meet (a figure without data does not meet its target),
// each as "name: ratio (target)". The benchmark prints them always and fails
// on them only when asked to (-strict).
func Unmet(figs []Figure, kernel, appliance Samples) []string {
	var out []string
	for _, f := range figs {
		if f.Target == 0 && f.Limit == 0 {
			continue
		}
		k, g := Median(kernel[f.Key]), Median(appliance[f.Key])
		if f.ApplianceOnly {
			k = math.NaN()
		}
		r, v := f.Judge(k, g)
		if v == "met" {
			continue
		}
		if f.ApplianceOnly {
			out = append(out, fmt.Sprintf("%s: %s %s (target %s, %s)", f.Name, num(g), f.Unit, f.targetText(), v))
		} else {
			out = append(out, fmt.Sprintf("%s: ratio %s (target %s, %s)", f.Name, num(r), f.targetText(), v))
		}
	}
	return out
}
