package tune

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
)

// SVG layout, in pixels.
const (
	svgPlotH   = 260 // plot height
	svgTop     = 70  // room for titles
	svgBottom  = 40  // room for x labels
	svgAxisW   = 44  // room for the y axis labels
	svgGap     = 36  // between the two panels
	svgMaxBarW = 24
	svgMinBarW = 3
)

// WriteSVG draws the per-server load of the current and the recommended
// settings side by side, as load over fair share (1 is perfect), on one
// y scale, with the fair share and the heaviest client's floor marked. The
// output is a standalone SVG document and is the same for the same report.
func (r *Report) WriteSVG(w io.Writer) error {
	bw := bufio.NewWriter(w)
	e, s := r.Eval, &r.Search
	by := e.Metric()
	total := by.Of(e.Total())
	n := len(e.Servers())
	barW := max(svgMinBarW, min(svgMaxBarW, 480/max(n, 1)))
	plotW := max(n*barW, 240)
	width := 2*(svgAxisW+plotW) + svgGap + 20
	height := svgTop + svgPlotH + svgBottom
	if r.HoldOut != nil && len(r.HoldOut.Folds) > 0 {
		height += svgHoldOutH
	}

	panels := []struct {
		label string
		res   *Result
		fill  string
	}{
		{"current", &s.Current, "#9aa5b1"},
		{"best found (in-sample)", &s.Best, "#2f6fb0"},
	}
	bound := e.LowerBound()
	ymax := math.Max(1.25, bound.MaxMean)
	for _, pn := range panels {
		for _, v := range r.ratios(pn.res.Loads(by), total) {
			ymax = math.Max(ymax, v)
		}
	}
	step := niceStep(ymax)
	ymax = math.Ceil(ymax/step) * step
	y := func(v float64) float64 { return svgTop + svgPlotH - v/ymax*svgPlotH }

	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="10" y="18" font-size="14" font-weight="bold">%s</text>`+"\n",
		esc(fmt.Sprintf("ghostrouter tune: cluster %q, load / fair share per server, by %s", r.Cluster, by)))
	for k, pn := range panels {
		x0 := 10 + svgAxisW + k*(svgAxisW+plotW+svgGap)
		sc := pn.res.Score(by)
		p(`<text x="%d" y="40" font-size="12" font-weight="bold">%s</text>`+"\n", x0, esc(pn.label+": "+short(pn.res.Candidate)))
		p(`<text x="%d" y="56">%s</text>`+"\n", x0, esc(fmt.Sprintf("max/mean %.3f, cv %.4f", sc.MaxMean, sc.CV)))
		// Grid and y labels.
		for v := 0.0; v <= ymax+step/2; v += step {
			p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e3e3e3"/>`+"\n", x0, x0+plotW, y(v), y(v))
			p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y(v)+4, strconv.FormatFloat(v, 'f', -1, 64))
		}
		// Bars.
		ratios := r.ratios(pn.res.Loads(by), total)
		for i, srv := range e.Servers() {
			v := ratios[i]
			bx := x0 + i*barW
			p(`<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
				bx+1, y(v), max(barW-2, 1), y(0)-y(v), pn.fill,
				esc(fmt.Sprintf("server %d (%s): %s of %s, %.3f x fair share", srv.ID, srv.Addr,
					pct(frac(pn.res.Loads(by)[i], total)), by, v)))
		}
		// X labels, thinned so they do not overlap.
		widest := 1
		for _, srv := range e.Servers() {
			widest = max(widest, len(strconv.Itoa(srv.ID)))
		}
		labelW := widest*7 + 6 // about 7px a digit at font-size 11
		every := max(1, (labelW+barW-1)/barW)
		for i, srv := range e.Servers() {
			if i%every == 0 {
				p(`<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n",
					float64(x0+i*barW)+float64(barW)/2, svgTop+svgPlotH+14, srv.ID)
			}
		}
		p(`<text x="%d" y="%d" text-anchor="middle">server id</text>`+"\n", x0+plotW/2, svgTop+svgPlotH+32)
		// Fair share and the heaviest client's floor.
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#2a9d3a" stroke-dasharray="6 3"/>`+"\n", x0, x0+plotW, y(1), y(1))
		p(`<text x="%d" y="%.1f" fill="#2a9d3a" text-anchor="end">fair</text>`+"\n", x0+plotW, y(1)-3)
		if bound.MaxMean > 1 {
			p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#c0392b" stroke-dasharray="2 3"/>`+"\n",
				x0, x0+plotW, y(bound.MaxMean), y(bound.MaxMean))
			p(`<text x="%d" y="%.1f" fill="#c0392b" text-anchor="end">%s</text>`+"\n", x0+plotW, y(bound.MaxMean)-3,
				esc(fmt.Sprintf("heaviest client %s alone", bound.Client.Addr)))
		}
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", x0, x0+plotW, y(0), y(0))
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", x0, x0, y(0), y(ymax))
	}
	r.svgHoldOut(bw, svgTop+svgPlotH+svgBottom, width)
	p("</svg>\n")
	return bw.Flush()
}

// svgHoldOutH is the height of the held-out panel.
const svgHoldOutH = 200

// svgHoldOut draws, below the panels, the held-out max/mean of each fold:
// the current setting, the searched one, and random seeds (mean and one
// standard deviation), with the verdict.
func (r *Report) svgHoldOut(w io.Writer, top, width int) {
	h := r.HoldOut
	if h == nil || len(h.Folds) == 0 {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	const plotH = 120
	x0, plotW := 10+svgAxisW, width-svgAxisW-40
	lo, hi := math.Inf(1), 1.0
	for _, f := range h.Folds {
		lo = min(lo, f.Current, f.Searched, f.RandomMean-f.RandomSD, 1)
		hi = max(hi, f.Current, f.Searched, f.RandomMean+f.RandomSD)
	}
	step := niceStep(hi - lo + 0.01)
	lo, hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	y := func(v float64) float64 { return float64(top+40+plotH) - (v-lo)/(hi-lo)*plotH }
	verdict := "no setting is reliably better than the current one"
	if h.Reliable {
		verdict = "the searched setting is reliably better"
	}
	p(`<text x="10" y="%d" font-size="12" font-weight="bold">%s</text>`+"\n", top+14,
		esc("held-out max/mean per fold (searched on earlier windows, scored on the next): "+verdict))
	p(`<text x="10" y="%d">%s</text>`+"\n", top+30,
		esc(fmt.Sprintf("grey: current %s   blue: searched %s   orange: random seeds, mean ± sd %s", h.Current, h.Searched, h.Random)))
	for v := lo; v <= hi+step/2; v += step {
		p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e3e3e3"/>`+"\n", x0, x0+plotW, y(v), y(v))
		p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y(v)+4, strconv.FormatFloat(v, 'f', -1, 64))
	}
	slot := float64(plotW) / float64(len(h.Folds))
	for i, f := range h.Folds {
		cx := float64(x0) + slot*(float64(i)+0.5)
		p(`<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#e67e22" stroke-width="3"/>`+"\n",
			cx+12, cx+12, y(f.RandomMean-f.RandomSD), y(f.RandomMean+f.RandomSD))
		p(`<circle cx="%.1f" cy="%.1f" r="4" fill="#e67e22"><title>%s</title></circle>`+"\n", cx+12, y(f.RandomMean),
			esc(fmt.Sprintf("fold %d: random seeds %.3f ± %.3f", i+1, f.RandomMean, f.RandomSD)))
		p(`<circle cx="%.1f" cy="%.1f" r="5" fill="#9aa5b1"><title>%s</title></circle>`+"\n", cx-12, y(f.Current),
			esc(fmt.Sprintf("fold %d: current %.3f", i+1, f.Current)))
		p(`<circle cx="%.1f" cy="%.1f" r="5" fill="#2f6fb0"><title>%s</title></circle>`+"\n", cx, y(f.Searched),
			esc(fmt.Sprintf("fold %d: searched %s, %.3f (fitted %.3f)", i+1, short(f.Chosen), f.Searched, f.InSample)))
		p(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", cx, top+40+plotH+16,
			esc(fmt.Sprintf("fold %d: %s", i+1, span(f.TestFrom, f.TestTo))))
	}
	p(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", x0, x0, y(lo), y(hi))
}

// niceStep picks a grid step giving about five lines up to ymax.
func niceStep(ymax float64) float64 {
	for _, s := range []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100} {
		if ymax/s <= 6 {
			return s
		}
	}
	return math.Pow(10, math.Ceil(math.Log10(ymax/5)))
}

func esc(s string) string { return html.EscapeString(s) }
