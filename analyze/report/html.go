package report

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/stats"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// Plot geometry (SVG user units).
const (
	plotW, plotH             = 900.0, 260.0
	padL, padR, padT, padB   = 60.0, 20.0, 30.0, 40.0
	phaseOpacity             = 0.12
	barW, barH               = 900.0, 300.0
	barPadL, barPadB, barGap = 70.0, 70.0, 30.0
)

var phaseColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

func f(v float64) string { return fmt.Sprintf("%.1f", v) }

// powerSVG draws one run: each GPU's 50 Hz power from the baseline to the end, the phases shaded, each GPU's idle
// baseline as a dashed line.
func powerSVG(r Run) template.HTML {
	m := r.Manifest
	t0 := m.Times.BaselineStart
	if t0.IsZero() {
		t0 = m.Times.Start
	}
	t1 := m.Times.End
	span := t1.Sub(t0).Seconds()
	if span <= 0 || len(r.Power) == 0 {
		return ""
	}
	pmax := maxPower(r.Power)
	if pmax <= 0 {
		return ""
	}
	pl := powerPlot{t0: t0, span: span, pmax: pmax * 1.1}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="power" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="power of run %s">`,
		f(plotW), f(plotH), f(plotW), f(plotH), template.HTMLEscapeString(m.RunID))
	colorOf := pl.phases(&b, m)
	if !m.Times.BaselineStart.IsZero() {
		a, e := 0.0, m.Times.BaselineEnd.Sub(t0).Seconds()
		fmt.Fprintf(&b, `<rect class="baseline-window" x="%s" y="%s" width="%s" height="%s" fill="#999" fill-opacity="0.10"><title>idle baseline</title></rect>`,
			f(pl.x(a)), f(padT), f(pl.x(e)-pl.x(a)), f(plotH-padT-padB))
	}
	gpus := make([]int, 0, len(r.Power))
	for g := range r.Power {
		gpus = append(gpus, g)
	}
	sort.Ints(gpus)
	pl.traces(&b, r, gpus)
	// Axes: ticks with units, axis titles, and a legend naming every series.
	axes(&b, padL, plotW-padR, padT, plotH-padB, pl.pmax, span, "power (W)", "time since the baseline started (s)", pl.x, pl.y)
	drawLegend(&b, padL+8, 14, powerLegend(m, gpus, colorOf))
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// maxPower is the highest power of any GPU (0 if none is positive).
func maxPower(power map[int][]trace.PowerSample) float64 {
	pmax := 0.0
	for _, ss := range power {
		for _, s := range ss {
			pmax = math.Max(pmax, s.PowerW)
		}
	}
	return pmax
}

// powerPlot places a run's power on the plot: seconds since t0 across, watts up to pmax.
type powerPlot struct {
	t0         time.Time
	span, pmax float64
}

func (pl powerPlot) x(sec float64) float64 { return padL + (plotW-padL-padR)*sec/pl.span }
func (pl powerPlot) y(w float64) float64   { return padT + (plotH-padT-padB)*(1-w/pl.pmax) }

// phases shades the run's phases, one colour per phase name, labelled where a name begins; it returns the colours.
func (pl powerPlot) phases(b *strings.Builder, m *manifest.Manifest) map[string]string {
	colorOf := map[string]string{}
	for i, p := range m.Phases {
		c, ok := colorOf[p.Name]
		if !ok {
			c = phaseColors[len(colorOf)%len(phaseColors)]
			colorOf[p.Name] = c
		}
		a, e := p.Start.Sub(pl.t0).Seconds(), p.End.Sub(pl.t0).Seconds()
		fmt.Fprintf(b, `<rect class="phase" x="%s" y="%s" width="%s" height="%s" fill="%s" fill-opacity="%g"><title>%s</title></rect>`,
			f(pl.x(a)), f(padT), f(math.Max(pl.x(e)-pl.x(a), 0.5)), f(plotH-padT-padB), c, phaseOpacity, template.HTMLEscapeString(p.Name))
		if i == 0 || m.Phases[i-1].Name != p.Name {
			fmt.Fprintf(b, `<text x="%s" y="%s" font-size="10" fill="%s">%s</text>`, f(pl.x(a)+2), f(padT+10), c, template.HTMLEscapeString(p.Name))
		}
	}
	return colorOf
}

// traces draws each GPU's power and its idle baseline, in the GPU's colour.
func (pl powerPlot) traces(b *strings.Builder, r Run, gpus []int) {
	for i, g := range gpus {
		c := phaseColors[(i+3)%len(phaseColors)]
		var pts []string
		for _, s := range r.Power[g] {
			pts = append(pts, f(pl.x(s.Time.Sub(trace.StampOf(pl.t0)).Seconds()))+","+f(pl.y(s.PowerW)))
		}
		fmt.Fprintf(b, `<polyline class="trace" fill="none" stroke="%s" stroke-width="1" points="%s"><title>GPU %d power</title></polyline>`,
			c, strings.Join(pts, " "), g)
		for _, mg := range r.Manifest.GPUs {
			if mg.Index == g && mg.Baseline != nil {
				fmt.Fprintf(b, `<line class="baseline" x1="%s" x2="%s" y1="%s" y2="%s" stroke="%s" stroke-dasharray="6 4"><title>GPU %d idle baseline %.1f W</title></line>`,
					f(padL), f(plotW-padR), f(pl.y(mg.Baseline.MedianW)), f(pl.y(mg.Baseline.MedianW)), c, g, mg.Baseline.MedianW)
			}
		}
	}
}

// powerLegend names every series of the power plot: the GPUs' power, the baselines and the phases.
func powerLegend(m *manifest.Manifest, gpus []int, colorOf map[string]string) []legendItem {
	var legend []legendItem
	for i, g := range gpus {
		legend = append(legend, legendItem{phaseColors[(i+3)%len(phaseColors)], "line", fmt.Sprintf("GPU %d power (50 Hz)", g)})
	}
	if len(gpus) > 0 {
		legend = append(legend, legendItem{"#555", "dash", "idle baseline (median)"})
	}
	seen := map[string]bool{}
	for _, p := range m.Phases {
		if !seen[p.Name] {
			seen[p.Name] = true
			legend = append(legend, legendItem{colorOf[p.Name], "box", "phase " + p.Name})
		}
	}
	return legend
}

// niceStep is a round tick step (1, 2 or 5 × 10^k) giving about n ticks over span.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// tickLabel formats a tick value with as many decimals as its step needs.
func tickLabel(v, step float64) string {
	prec := max(0, -int(math.Floor(math.Log10(step))))
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// axes draws the x and y axes of a plot area with round ticks, grid lines and titles.
func axes(b *strings.Builder, x0, x1, y0, y1, ymax, xmax float64, ytitle, xtitle string, x, y func(float64) float64) {
	fmt.Fprintf(b, `<g class="axes" font-size="10" fill="#333">`)
	fmt.Fprintf(b, `<line class="axis" x1="%s" x2="%s" y1="%s" y2="%s" stroke="#333"/>`, f(x0), f(x1), f(y1), f(y1))
	fmt.Fprintf(b, `<line class="axis" x1="%s" x2="%s" y1="%s" y2="%s" stroke="#333"/>`, f(x0), f(x0), f(y0), f(y1))
	ys := niceStep(ymax, 5)
	for v := 0.0; v <= ymax+ys*1e-9; v += ys {
		fmt.Fprintf(b, `<line class="grid" x1="%s" x2="%s" y1="%s" y2="%s" stroke="#eee"/>`, f(x0), f(x1), f(y(v)), f(y(v)))
		fmt.Fprintf(b, `<text class="tick y" x="%s" y="%s" text-anchor="end">%s</text>`, f(x0-4), f(y(v)+3), tickLabel(v, ys))
	}
	if xmax > 0 {
		xs := niceStep(xmax, 8)
		for v := 0.0; v <= xmax+xs*1e-9; v += xs {
			fmt.Fprintf(b, `<line x1="%s" x2="%s" y1="%s" y2="%s" stroke="#333"/>`, f(x(v)), f(x(v)), f(y1), f(y1+4))
			fmt.Fprintf(b, `<text class="tick x" x="%s" y="%s" text-anchor="middle">%s</text>`, f(x(v)), f(y1+14), tickLabel(v, xs))
		}
	}
	if xtitle != "" {
		fmt.Fprintf(b, `<text class="axis-title" x="%s" y="%s" text-anchor="middle">%s</text>`, f((x0+x1)/2), f(y1+30),
			template.HTMLEscapeString(xtitle))
	}
	fmt.Fprintf(b, `<text class="axis-title" x="12" y="%s" transform="rotate(-90 12 %s)" text-anchor="middle">%s</text>`,
		f((y0+y1)/2), f((y0+y1)/2), template.HTMLEscapeString(ytitle))
	b.WriteString(`</g>`)
}

type legendItem struct {
	color, shape, label string // shape: line, dash, box
}

// drawLegend lists the series of a plot in a row from (x, y).
func drawLegend(b *strings.Builder, x, y float64, items []legendItem) {
	b.WriteString(`<g class="legend" font-size="10">`)
	for _, it := range items {
		switch it.shape {
		case "box":
			fmt.Fprintf(b, `<rect x="%s" y="%s" width="12" height="8" fill="%s" fill-opacity="0.35"/>`, f(x), f(y-7), it.color)
		case "dash":
			fmt.Fprintf(b, `<line x1="%s" x2="%s" y1="%s" y2="%s" stroke="%s" stroke-dasharray="4 2"/>`, f(x), f(x+12), f(y-3), f(y-3), it.color)
		default:
			fmt.Fprintf(b, `<line x1="%s" x2="%s" y1="%s" y2="%s" stroke="%s" stroke-width="2"/>`, f(x), f(x+12), f(y-3), f(y-3), it.color)
		}
		fmt.Fprintf(b, `<text class="legend-item" x="%s" y="%s">%s</text>`, f(x+16), f(y), template.HTMLEscapeString(it.label))
		x += 16 + 5.5*float64(len([]rune(it.label))) + 14
	}
	b.WriteString(`</g>`)
}

// Series colours of the experiment chart: raw and idle-adjusted are always separate series.
const (
	rawColor = "#1f77b4"
	adjColor = "#ff7f0e"
)

// barsSVG draws the experiments' J per output token (or, where a run lacks token counts, their energy) as two
// separate series, raw and idle-adjusted, each bar with its 95 % interval; an experiment with fewer than three
// runs shows its runs as dots instead. A series an experiment lacks (no baseline: no adjusted) is left out, never
// filled with the other.
func barsSVG(exps []Experiment) template.HTML {
	if len(exps) == 0 {
		return ""
	}
	metric, unit := "J per output token", "J/token"
	raw := func(e Experiment) stats.Summary { return e.JPerToken }
	adj := func(e Experiment) stats.Summary { return e.JPerTokenAdj }
	for _, e := range exps {
		if e.JPerToken.N == 0 {
			metric, unit = "energy per run", "J"
			raw = func(e Experiment) stats.Summary { return e.EnergyJ }
			adj = func(e Experiment) stats.Summary { return e.AdjustedJ }
			break
		}
	}
	top := 0.0
	for _, e := range exps {
		for _, s := range []stats.Summary{raw(e), adj(e)} {
			for _, v := range append([]float64{s.Mean, s.CIHigh}, s.Values...) {
				if !math.IsNaN(v) {
					top = math.Max(top, v)
				}
			}
		}
	}
	if top <= 0 {
		return ""
	}
	top *= 1.1
	x0, x1, y0, y1 := barPadL, barW-20, 30.0, barH-barPadB
	slot := (x1 - x0) / float64(len(exps))
	y := func(v float64) float64 { return y0 + (y1-y0)*(1-v/top) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="%s per experiment, raw and idle-adjusted">`,
		f(barW), f(barH), f(barW), f(barH), metric)
	axes(&b, x0, x1, y0, y1, top, 0, metric+" ("+unit+")", "", nil, y)
	for i, e := range exps {
		w := (slot - barGap) / 2
		for j, series := range []struct {
			s     stats.Summary
			color string
			class string
		}{{raw(e), rawColor, "bar raw"}, {adj(e), adjColor, "bar adjusted"}} {
			s := series.s
			if s.N == 0 {
				continue
			}
			bx := x0 + float64(i)*slot + barGap/2 + float64(j)*w
			cx := bx + w/2
			label := fmt.Sprintf("%s %s: %s", e.Name, strings.TrimPrefix(series.class, "bar "), ci(s, 4))
			fmt.Fprintf(&b, `<rect class="%s" x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s</title></rect>`,
				series.class, f(bx), f(y(s.Mean)), f(w-2), f(y(0)-y(s.Mean)), series.color, template.HTMLEscapeString(label))
			if s.HasInterval() {
				lo, hi := y(math.Max(s.CILow, 0)), y(s.CIHigh)
				fmt.Fprintf(&b, `<g class="whisker" stroke="#000"><line x1="%s" x2="%s" y1="%s" y2="%s"/><line x1="%s" x2="%s" y1="%s" y2="%s"/><line x1="%s" x2="%s" y1="%s" y2="%s"/></g>`,
					f(cx), f(cx), f(lo), f(hi), f(cx-5), f(cx+5), f(hi), f(hi), f(cx-5), f(cx+5), f(lo), f(lo))
			} else {
				for _, v := range s.Values {
					fmt.Fprintf(&b, `<circle class="run" cx="%s" cy="%s" r="3" fill="#000"/>`, f(cx), f(y(v)))
				}
			}
		}
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="11" text-anchor="middle">%s (n=%d)</text>`, f(x0+float64(i)*slot+slot/2),
			f(y1+16), template.HTMLEscapeString(e.Name), raw(e).N)
	}
	drawLegend(&b, x0+8, 16, []legendItem{{rawColor, "box", "raw"}, {adjColor, "box", "idle-adjusted"},
		{"#000", "line", "95 % interval (3+ runs; dots: each run below 3)"}})
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

var funcs = template.FuncMap{
	"ci":         ci,
	"num":        numAny,
	"pm":         func(v manifest.Num, prec int) string { return pm(v, prec) },
	"svg":        powerSVG,
	"ratio":      ratioText,
	"yesno":      yesNo,
	"passes":     Passes,
	"adjusted":   adjustedText,
	"phaseLabel": phaseLabel,
	"phaseU": func(r Run, name string) Budget {
		b, _ := r.PhaseBudget(name)
		return b
	},
	"capped": func(r Run, name string) manifest.Num {
		if r.Power == nil {
			return manifest.Null
		}
		return manifest.Num(r.PowerCappedS[name])
	},
	"since":  func(a, b time.Time) string { return num(a.Sub(b).Seconds(), 3) },
	"terms":  func() []string { return budgetTerms },
	"term":   func(b Budget, name string) Term { return b.Term(name) },
	"uterms": func() []string { return append(slices.Clone(budgetTerms), TermRepetition) },
	"uterm":  func(u Uncert, name string) UTerm { return u.Term(name) },
	"note":   func() string { return uncertaintyNote },
	"join":   strings.Join,
	"figs": func(e Experiment) []struct {
		Name string
		U    Uncert
		Prec int
	} {
		return []struct {
			Name string
			U    Uncert
			Prec int
		}{{"energy J", e.EnergyU, 2}, {"adjusted J", e.AdjustedU, 2}, {"J/token", e.JPerTokenU, 5}, {"J/token adjusted", e.JPerTokenAdjU, 5}}
	},
}

var page = template.Must(template.New("report").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lem report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.warn{color:#a40} .excluded{color:#a40}
svg{display:block;margin:0.5em 0 1.5em;background:#fff;border:1px solid #eee}
</style></head><body>
<h1>lem report</h1>
<p>{{len .Runs}} runs, {{len .Exps}} experiments. {{note}}</p>
<h2>Experiments</h2>
<table class="experiments"><tr><th>experiment</th><th>runs</th><th>ok</th><th>s</th><th>energy J</th><th>U J</th><th>adjusted J</th><th>U J</th><th>J/token</th><th>U</th><th>J/token adjusted</th><th>U</th></tr>
{{range .Exps}}<tr><td>{{.Name}}</td><td>{{.Runs}}</td><td>{{.Valid}}</td><td>{{ci .DurationS 2}}</td><td>{{ci .EnergyJ 1}}</td><td>{{pm .EnergyU.Expanded 1}}</td><td>{{ci .AdjustedJ 1}}</td><td>{{pm .AdjustedU.Expanded 1}}</td><td>{{ci .JPerToken 4}}</td><td>{{pm .JPerTokenU.Expanded 4}}</td><td>{{ci .JPerTokenAdj 4}}</td><td>{{pm .JPerTokenAdjU.Expanded 4}}</td></tr>
{{end}}</table>
<p>ok: runs that pass every quality rule (<code>lem-analyze validate</code>); only they enter the statistics.</p>
{{range .Exps}}{{$e := .}}{{range .Excluded}}<p class="excluded">left out: {{.RunID}} ({{$e.Name}}): {{join .Violations "; "}}</p>{{end}}{{end}}
{{.Bars}}
{{if .Refs}}<h3>Against the reference</h3>
<table class="reference"><tr><th>experiment</th><th>vs</th><th>runs</th><th>energy (raw)</th><th>energy (adjusted)</th><th>J/token (raw)</th><th>J/token (adjusted)</th></tr>
{{range .Exps}}{{$e := .}}{{with .Reference}}<tr><td>{{$e.Name}}</td><td>{{.Reference}}{{if .DifferentBoards}} (different boards: the sensor gain does not cancel){{end}}</td><td>{{if .Paired}}paired by cycle{{else}}independent{{end}}</td><td>{{ratio .EnergyJ}}</td><td>{{ratio .AdjustedJ}}</td><td>{{ratio .JPerToken}}</td><td>{{ratio .JPerTokenAdj}}</td></tr>{{end}}
{{end}}</table>{{end}}
{{if .Idle}}<h3>Two idles</h3>
<table class="idle"><tr><th>experiment</th><th>deep idle W</th><th>adjusted J (adds to the host)</th><th>active idle W</th><th>adjusted to active idle J (the computation adds)</th></tr>
{{range .Exps}}<tr><td>{{.Name}}</td><td>{{ci .Idle.DeepW 1}}</td><td>{{ci .AdjustedJ 1}}</td><td>{{ci .Idle.ActiveW 1}}</td><td>{{ci .Idle.AdjustedActiveJ 1}}</td></tr>
{{end}}</table>
<p>Deep idle: the baseline before the workload (no context, clocks down). Active idle: the context held, nothing running.</p>{{end}}
{{if .Phases}}<h3>Phases</h3>
<table class="experiment-phases"><tr><th>experiment</th><th>phase</th><th>s</th><th>energy J</th><th>U J</th><th>adjusted J</th><th>U J</th><th>adjusted to active idle J</th><th>runs clamped</th><th>power-capped s</th></tr>
{{range .Exps}}{{$e := .}}{{range .Phases}}<tr><td>{{$e.Name}}</td><td>{{.Name}}</td><td>{{ci .DurationS 3}}</td><td>{{ci .EnergyJ 1}}</td><td>{{pm .EnergyU.Expanded 1}}</td><td>{{ci .AdjustedJ 1}}</td><td>{{pm .AdjustedU.Expanded 1}}</td><td>{{ci .AdjustedActiveJ 1}}</td><td>{{.Clamped}}</td><td>{{num .PowerCappedS 2}}</td></tr>
{{end}}{{end}}</table>{{end}}
<h3>Uncertainty budgets of the means</h3>
<p>Standard uncertainties in the figure's unit; in parentheses: random per run, already in the repetition.</p>
<table class="budget"><tr><th>experiment</th><th>figure</th>{{range uterms}}<th>{{.}}</th>{{end}}<th>u_c</th><th>U (k=2)</th></tr>
{{range .Exps}}{{$e := .}}{{range figs .}}{{if .U.Terms}}{{$f := .}}<tr><td>{{$e.Name}}</td><td>{{.Name}}</td>{{range uterms}}{{$t := uterm $f.U .}}<td>{{if $t.Combined}}{{num $t.U $f.Prec}}{{else}}({{num $t.U $f.Prec}}){{end}}</td>{{end}}<td>{{num .U.U .Prec}}</td><td>{{num .U.Expanded .Prec}}</td></tr>{{end}}
{{end}}{{end}}</table>
<h2>Runs</h2>
{{range .Runs}}{{$r := .}}{{$m := .Manifest}}
<h3 id="{{$m.RunID}}">{{$m.RunID}} — {{$m.Experiment}}, {{$m.Status}}, {{num $m.Times.DurationS 2}} s, passes the rules: {{yesno (passes $m)}}</h3>
{{if $r.Calibrated}}<p class="calibrated">Energies corrected to the external meter's scale: {{$r.Calibrated}}</p>
{{end}}<table><tr><th>GPU</th><th>idle W</th><th>counter J</th><th>hybrid J</th><th>adjusted J</th><th>mean W</th><th>peak W</th><th>lag ms</th></tr>
{{range $m.GPUs}}<tr><td>{{.Index}} {{.Name}}{{if eq .Role "observed"}} (observed){{end}}</td><td>{{if .Baseline}}{{num .Baseline.MedianW 1}}{{else}}—{{end}}</td><td>{{num .Energy.CounterJ 1}}</td><td>{{num .Energy.HybridJ 1}}</td><td>{{adjusted .Energy.AdjustedJ .Energy.AdjustedClamped 1}}</td><td>{{num .MeanPowerW 1}}</td><td>{{num .PeakPowerW 1}}</td><td>{{if .Lag}}{{num .Lag.MS 0}}{{if eq .Lag.Source "cache"}} (kept{{with .Lag.CacheDate}} from {{.Format "2006-01-02"}}{{end}}){{else if not .Lag.Resolved}} (not resolved){{end}}{{else}}—{{end}}</td></tr>
{{end}}</table>
{{if $m.Phases}}<table class="run-phases"><tr><th>phase</th><th>times</th><th>start (s)</th><th>seconds</th><th>hybrid J</th><th>U J</th><th>adjusted J</th><th>U J</th><th>power-capped s</th></tr>
{{range $m.Phases}}{{$b := phaseU $r .Name}}<tr><td>{{phaseLabel .}}</td><td>{{.Count}}</td><td>{{since .Start $m.Times.Start}}</td><td>{{num .DurationS 3}}</td><td>{{num .Energy.HybridJ 1}}</td><td>{{pm $b.ExpandedRawJ 1}}</td><td>{{adjusted .Energy.AdjustedJ .Energy.AdjustedClamped 1}}</td><td>{{pm $b.ExpandedAdjustedJ 1}}</td><td>{{num (capped $r .Name) 2}}</td></tr>
{{end}}</table>{{end}}
<table class="run-budget"><tr><th>energy</th>{{range terms}}<th>{{.}} J</th>{{end}}<th>u_c J</th><th>U (k=2) J</th></tr>
<tr><td>raw {{num $r.Uncertainty.RawJ 1}}</td>{{range terms}}<td>{{num (term $r.Uncertainty .).RawJ 2}}</td>{{end}}<td>{{num $r.Uncertainty.URawJ 2}}</td><td>{{num $r.Uncertainty.ExpandedRawJ 2}}</td></tr>
<tr><td>adjusted {{num $r.Uncertainty.AdjustedJ 1}}</td>{{range terms}}<td>{{num (term $r.Uncertainty .).AdjustedJ 2}}</td>{{end}}<td>{{num $r.Uncertainty.UAdjustedJ 2}}</td><td>{{num $r.Uncertainty.ExpandedAdjustedJ 2}}</td></tr></table>
{{svg .}}
{{range $m.Warnings}}<p class="warn">warning [{{.Code}}]: {{.Message}}</p>{{end}}
{{end}}
{{if .Probs}}<h2>Inputs not used</h2><ul>{{range .Probs}}<li><code>{{.Path}}</code>: {{.Err}}</li>{{end}}</ul>{{end}}
</body></html>
`))

// HTML writes a self-contained HTML report with SVG plots.
func HTML(w io.Writer, runs []Run, exps []Experiment, probs []Problem) error {
	refs, phases, idle := false, false, false
	for _, e := range exps {
		refs = refs || e.Reference != nil
		phases = phases || len(e.Phases) > 0
		idle = idle || e.Idle.ActiveW.N > 0
	}
	var buf bytes.Buffer
	err := page.Execute(&buf, map[string]any{"Runs": runs, "Exps": exps, "Probs": probs, "Bars": barsSVG(exps),
		"Refs": refs, "Phases": phases, "Idle": idle})
	if err != nil {
		return fmt.Errorf("rendering HTML report: %w", err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}
