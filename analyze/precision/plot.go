package precision

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"slices"
	"strings"

	"github.com/lem-energy/lem/internal/manifest"
)

// Plot geometry (SVG user units): two panels side by side, square waves left, bursts right.
const (
	plotW, plotH     = 960.0, 380.0
	plotTop, plotBot = 74.0, 320.0 // the panels' y range
	legendY          = 60.0        // the legends' row, under the panel titles
	sqLeft, sqRight  = 64.0, 480.0
	bLeft, bRight    = 570.0, 940.0
	barGroupGap      = 0.25 // of a category's slot, left empty between groups
)

// squareSeries are the square-wave panel's bars: each method against the counter.
var squareSeries = []struct {
	label, color string
	v            func(SquareRow) manifest.Num
}{
	{"50 Hz samples", "#1f77b4", func(r SquareRow) manifest.Num { return r.SampledPct }},
	{"hybrid", "#ff7f0e", func(r SquareRow) manifest.Num { return r.HybridPct }},
	{"1 s-average power", "#b0b0b0", func(r SquareRow) manifest.Num { return r.AveragePct }},
}

// cadenceColors colour the burst panel's cadences in the order they come.
var cadenceColors = []string{"#2ca02c", "#17becf", "#9467bd", "#8c564b", "#d62728", "#e377c2"}

// SVG draws what the characterisation shows: per square-wave period, the 50 Hz integral's, the hybrid's and the
// 1 s-average power's departure from the counter (%); per burst length, the spread of the energy per burst (CV,
// %) at each counter cadence. The same rows give the same bytes (numbers at fixed precision, rows in the order
// given), so a committed plot can be checked against its data.
func SVG(title string, sq []SquareRow, bs []BurstRow) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" font-family="sans-serif" role="img" aria-label="%s">`+"\n",
		n(plotW), n(plotH), n(plotW), n(plotH), esc(title))
	fmt.Fprintf(&b, `<rect width="%s" height="%s" fill="#fff"/>`+"\n", n(plotW), n(plotH))
	fmt.Fprintf(&b, `<text x="%s" y="20" font-size="15" text-anchor="middle">%s</text>`+"\n", n(plotW/2), esc(title))
	squarePanel(&b, sq)
	burstPanel(&b, bs)
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func squarePanel(b *bytes.Buffer, sq []SquareRow) {
	fmt.Fprintf(b, `<text x="%s" y="42" font-size="13" text-anchor="middle">Square waves, 50 %% duty: energy against the counter (%%)</text>`+"\n",
		n((sqLeft+sqRight)/2))
	var vals []float64
	for _, r := range sq {
		for _, s := range squareSeries {
			if v := s.v(r); v.Valid() {
				vals = append(vals, float64(v))
			}
		}
	}
	if len(vals) == 0 {
		empty(b, sqLeft, sqRight, "no square-wave phases")
		return
	}
	hi := 0.0
	for _, v := range vals {
		hi = max(hi, math.Abs(v))
	}
	step, top := ticks(hi)
	y := func(v float64) float64 { return plotTop + (plotBot-plotTop)*(top-v)/(2*top) }
	yAxis(b, sqLeft, sqRight, -top, top, step, y, "%+g")
	fmt.Fprintf(b, `<line x1="%s" x2="%s" y1="%s" y2="%s" stroke="#000"/>`+"\n", n(sqLeft), n(sqRight), n(y(0)), n(y(0)))
	slot := (sqRight - sqLeft) / float64(len(sq))
	w := slot * (1 - barGroupGap) / float64(len(squareSeries))
	for i, r := range sq {
		x0 := sqLeft + float64(i)*slot + slot*barGroupGap/2
		for j, s := range squareSeries {
			v := s.v(r)
			if !v.Valid() {
				continue
			}
			top, bot := y(max(float64(v), 0)), y(min(float64(v), 0))
			fmt.Fprintf(b, `<rect class="bar square" x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s, %g ms: %+.2f %%</title></rect>`+"\n",
				n(x0+float64(j)*w), n(top), n(w-1), n(bot-top), s.color, esc(s.label), r.PeriodMS, float64(v))
		}
		fmt.Fprintf(b, `<text x="%s" y="%s" font-size="11" text-anchor="middle">%g</text>`+"\n", n(sqLeft+(float64(i)+0.5)*slot), n(plotBot+15), r.PeriodMS)
	}
	fmt.Fprintf(b, `<text x="%s" y="%s" font-size="12" text-anchor="middle">period, ms</text>`+"\n", n((sqLeft+sqRight)/2), n(plotBot+32))
	var items [][2]string
	for _, s := range squareSeries {
		items = append(items, [2]string{s.color, s.label})
	}
	legend(b, sqLeft+6, legendY, items)
}

func burstPanel(b *bytes.Buffer, bs []BurstRow) {
	fmt.Fprintf(b, `<text x="%s" y="42" font-size="13" text-anchor="middle">Bursts: spread of the energy per burst (CV, %%)</text>`+"\n",
		n((bLeft+bRight)/2))
	var lens []float64
	var cads []string
	hi := 0.0
	for _, r := range bs {
		if !r.CV.Valid() {
			continue
		}
		if !slices.Contains(lens, r.LengthMS) {
			lens = append(lens, r.LengthMS)
		}
		if !slices.Contains(cads, r.Cadence) {
			cads = append(cads, r.Cadence)
		}
		hi = max(hi, 100*float64(r.CV))
	}
	if len(lens) == 0 {
		empty(b, bLeft, bRight, "no burst windows")
		return
	}
	slices.Sort(lens)
	step, top := ticks(hi)
	y := func(v float64) float64 { return plotTop + (plotBot-plotTop)*(top-v)/top }
	yAxis(b, bLeft, bRight, 0, top, step, y, "%g")
	slot := (bRight - bLeft) / float64(len(lens))
	w := slot * (1 - barGroupGap) / float64(len(cads))
	for _, r := range bs {
		if !r.CV.Valid() {
			continue
		}
		i, j := slices.Index(lens, r.LengthMS), slices.Index(cads, r.Cadence)
		v := 100 * float64(r.CV)
		x := bLeft + float64(i)*slot + slot*barGroupGap/2 + float64(j)*w
		fmt.Fprintf(b, `<rect class="bar burst" x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%g ms, %s: CV %.2f %% (%d bursts)</title></rect>`+"\n",
			n(x), n(y(v)), n(w-1), n(y(0)-y(v)), cadenceColors[j%len(cadenceColors)], r.LengthMS, esc(r.Cadence), v, r.N)
	}
	for i, l := range lens {
		fmt.Fprintf(b, `<text x="%s" y="%s" font-size="11" text-anchor="middle">%g</text>`+"\n", n(bLeft+(float64(i)+0.5)*slot), n(plotBot+15), l)
	}
	fmt.Fprintf(b, `<text x="%s" y="%s" font-size="12" text-anchor="middle">burst length, ms (bars: counter cadence)</text>`+"\n",
		n((bLeft+bRight)/2), n(plotBot+32))
	var items [][2]string
	for j, c := range cads {
		items = append(items, [2]string{cadenceColors[j%len(cadenceColors)], c})
	}
	fmt.Fprintf(b, `<text x="%s" y="%s" font-size="11">counter read:</text>`+"\n", n(bLeft+6), n(legendY))
	legend(b, bLeft+86, legendY, items)
}

// ticks picks a step of 1, 2 or 5 × 10^k giving about five ticks up to hi, and the axis' end, a whole number
// of steps at or above hi.
func ticks(hi float64) (step, top float64) {
	if !(hi > 0) {
		return 1, 1
	}
	raw := hi / 5
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if step = m * p; step >= raw {
			break
		}
	}
	return step, step * math.Ceil(hi/step*(1+1e-9)-1e-9)
}

// yAxis draws the grid lines and their labels from lo to hi.
func yAxis(b *bytes.Buffer, left, right, lo, hi, step float64, y func(float64) float64, format string) {
	for k := math.Round(lo / step); k*step <= hi+step/1e6; k++ {
		v := k * step
		if math.Abs(v) < step/1e6 {
			v = 0 // no "-0"
		}
		fmt.Fprintf(b, `<line x1="%s" x2="%s" y1="%s" y2="%s" stroke="#e0e0e0"/>`+"\n", n(left), n(right), n(y(v)), n(y(v)))
		fmt.Fprintf(b, `<text x="%s" y="%s" font-size="11" text-anchor="end">%s</text>`+"\n", n(left-5), n(y(v)+4),
			strings.Replace(fmt.Sprintf(format, v), "+0", "0", 1))
	}
	fmt.Fprintf(b, `<line x1="%s" x2="%s" y1="%s" y2="%s" stroke="#000"/>`+"\n", n(left), n(left), n(plotTop), n(plotBot))
}

func legend(b *bytes.Buffer, x, y float64, items [][2]string) {
	for _, it := range items {
		fmt.Fprintf(b, `<rect x="%s" y="%s" width="10" height="10" fill="%s"/><text x="%s" y="%s" font-size="11">%s</text>`+"\n",
			n(x), n(y-9), it[0], n(x+14), n(y), esc(it[1]))
		x += 14 + 6*float64(len([]rune(it[1]))) + 12
	}
}

func empty(b *bytes.Buffer, left, right float64, what string) {
	fmt.Fprintf(b, `<text x="%s" y="%s" font-size="12" text-anchor="middle" fill="#666">%s</text>`+"\n",
		n((left+right)/2), n((plotTop+plotBot)/2), esc(what))
}

// n formats a coordinate: fixed precision, so the same input gives the same bytes.
func n(v float64) string { return fmt.Sprintf("%.1f", v) }

func esc(s string) string { return html.EscapeString(s) }
