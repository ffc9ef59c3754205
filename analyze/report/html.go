package report

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/stats"
)

// Plot geometry (SVG user units).
const (
	plotW, plotH             = 900.0, 260.0
	padL, padR, padT, padB   = 60.0, 20.0, 20.0, 40.0
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
	pmax := 0.0
	for _, ss := range r.Power {
		for _, s := range ss {
			pmax = math.Max(pmax, s.PowerW)
		}
	}
	if pmax <= 0 {
		return ""
	}
	pmax *= 1.1
	x := func(sec float64) float64 { return padL + (plotW-padL-padR)*sec/span }
	y := func(w float64) float64 { return padT + (plotH-padT-padB)*(1-w/pmax) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="power" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="power of run %s">`,
		f(plotW), f(plotH), f(plotW), f(plotH), template.HTMLEscapeString(m.RunID))
	colorOf := map[string]string{}
	for i, p := range m.Phases {
		c, ok := colorOf[p.Name]
		if !ok {
			c = phaseColors[len(colorOf)%len(phaseColors)]
			colorOf[p.Name] = c
		}
		a, e := p.Start.Sub(t0).Seconds(), p.End.Sub(t0).Seconds()
		fmt.Fprintf(&b, `<rect class="phase" x="%s" y="%s" width="%s" height="%s" fill="%s" fill-opacity="%g"><title>%s</title></rect>`,
			f(x(a)), f(padT), f(math.Max(x(e)-x(a), 0.5)), f(plotH-padT-padB), c, phaseOpacity, template.HTMLEscapeString(p.Name))
		if i == 0 || m.Phases[i-1].Name != p.Name {
			fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" fill="%s">%s</text>`, f(x(a)+2), f(padT+10), c, template.HTMLEscapeString(p.Name))
		}
	}
	if !m.Times.BaselineStart.IsZero() {
		a, e := 0.0, m.Times.BaselineEnd.Sub(t0).Seconds()
		fmt.Fprintf(&b, `<rect class="baseline-window" x="%s" y="%s" width="%s" height="%s" fill="#999" fill-opacity="0.10"><title>idle baseline</title></rect>`,
			f(x(a)), f(padT), f(x(e)-x(a)), f(plotH-padT-padB))
	}
	gpus := make([]int, 0, len(r.Power))
	for g := range r.Power {
		gpus = append(gpus, g)
	}
	sort.Ints(gpus)
	for i, g := range gpus {
		c := phaseColors[(i+3)%len(phaseColors)]
		var pts []string
		for _, s := range r.Power[g] {
			pts = append(pts, f(x(s.Time.Sub(t0).Seconds()))+","+f(y(s.PowerW)))
		}
		fmt.Fprintf(&b, `<polyline class="trace" fill="none" stroke="%s" stroke-width="1" points="%s"><title>GPU %d power</title></polyline>`,
			c, strings.Join(pts, " "), g)
		for _, mg := range m.GPUs {
			if mg.Index == g && mg.Baseline != nil {
				fmt.Fprintf(&b, `<line class="baseline" x1="%s" x2="%s" y1="%s" y2="%s" stroke="%s" stroke-dasharray="6 4"><title>GPU %d idle baseline %.1f W</title></line>`,
					f(padL), f(plotW-padR), f(y(mg.Baseline.MedianW)), f(y(mg.Baseline.MedianW)), c, g, mg.Baseline.MedianW)
			}
		}
	}
	// Axes with a few ticks.
	fmt.Fprintf(&b, `<line x1="%s" x2="%s" y1="%s" y2="%s" stroke="#333"/>`, f(padL), f(plotW-padR), f(plotH-padB), f(plotH-padB))
	fmt.Fprintf(&b, `<line x1="%s" x2="%s" y1="%s" y2="%s" stroke="#333"/>`, f(padL), f(padL), f(padT), f(plotH-padB))
	for i := 0; i <= 4; i++ {
		w := pmax * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" text-anchor="end">%.0f W</text>`, f(padL-4), f(y(w)+3), w)
		sec := span * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" text-anchor="middle">%.1f s</text>`, f(x(sec)), f(plotH-padB+14), sec)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// barsSVG draws one bar per experiment (mean adjusted J/token, or adjusted energy without tokens) with 95 %
// interval whiskers.
func barsSVG(exps []Experiment) template.HTML {
	type bar struct {
		name   string
		s      stats.Summary
		metric string
	}
	// The first metric every experiment has, with something above zero: adjusted per token, raw per token,
	// adjusted energy, raw energy (idle-only runs have 0 adjusted).
	candidates := []struct {
		metric string
		get    func(Experiment) stats.Summary
	}{
		{"J/token (adjusted)", func(e Experiment) stats.Summary { return e.JPerTokenAdj }},
		{"J/token", func(e Experiment) stats.Summary { return e.JPerToken }},
		{"J (adjusted)", func(e Experiment) stats.Summary { return e.AdjustedJ }},
		{"J", func(e Experiment) stats.Summary { return e.EnergyJ }},
	}
	var bars []bar
	for _, c := range candidates {
		ok, some := true, false
		for _, e := range exps {
			s := c.get(e)
			ok = ok && s.N > 0
			some = some || s.Mean > 0
		}
		if ok && some {
			for _, e := range exps {
				bars = append(bars, bar{e.Name, c.get(e), c.metric})
			}
			break
		}
	}
	if len(bars) == 0 {
		return ""
	}
	top := 0.0
	for _, b := range bars {
		v := b.s.Mean
		if !math.IsNaN(b.s.CIHigh) {
			v = math.Max(v, b.s.CIHigh)
		}
		top = math.Max(top, v)
	}
	if top <= 0 || math.IsNaN(top) {
		return ""
	}
	top *= 1.1
	slot := (barW - barPadL - 20) / float64(len(bars))
	y := func(v float64) float64 { return 20 + (barH-20-barPadB)*(1-v/top) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="%s per experiment">`,
		f(barW), f(barH), f(barW), f(barH), bars[0].metric)
	for i, br := range bars {
		x0 := barPadL + float64(i)*slot + barGap/2
		w := slot - barGap
		fmt.Fprintf(&b, `<rect class="bar" x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s: %.4g</title></rect>`,
			f(x0), f(y(br.s.Mean)), f(w), f(y(0)-y(br.s.Mean)), phaseColors[i%len(phaseColors)], template.HTMLEscapeString(br.name), br.s.Mean)
		if !math.IsNaN(br.s.CILow) {
			cx := x0 + w/2
			fmt.Fprintf(&b, `<g class="whisker" stroke="#000"><line x1="%s" x2="%s" y1="%s" y2="%s"/><line x1="%s" x2="%s" y1="%s" y2="%s"/><line x1="%s" x2="%s" y1="%s" y2="%s"/></g>`,
				f(cx), f(cx), f(y(math.Max(br.s.CILow, 0))), f(y(br.s.CIHigh)),
				f(cx-6), f(cx+6), f(y(br.s.CIHigh)), f(y(br.s.CIHigh)),
				f(cx-6), f(cx+6), f(y(math.Max(br.s.CILow, 0))), f(y(math.Max(br.s.CILow, 0))))
		}
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="11" text-anchor="middle">%s (n=%d)</text>`, f(x0+w/2), f(barH-barPadB+16),
			template.HTMLEscapeString(br.name), br.s.N)
	}
	fmt.Fprintf(&b, `<text x="12" y="%s" font-size="11" transform="rotate(-90 12 %s)" text-anchor="middle">%s</text>`,
		f(barH/2), f(barH/2), bars[0].metric)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

var funcs = template.FuncMap{
	"ci":  ci,
	"num": numAny,
	"svg": powerSVG,
	"ratio": func(r *stats.Ratio) string {
		if r == nil {
			return "–"
		}
		return fmt.Sprintf("%s [%s, %s]", num(r.Value, 3), num(r.CILow, 3), num(r.CIHigh, 3))
	},
	"since": func(a, b time.Time) string { return num(a.Sub(b).Seconds(), 3) },
}

var page = template.Must(template.New("report").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lem report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.warn{color:#a40}
svg{display:block;margin:0.5em 0 1.5em;background:#fff;border:1px solid #eee}
</style></head><body>
<h1>lem report</h1>
<p>{{len .Runs}} runs, {{len .Exps}} experiments. Absolute energies carry the GPU sensor's ±5 % gain (systematic
per board); it cancels in ratios between experiments on the same GPU.</p>
<h2>Experiments</h2>
<table><tr><th>experiment</th><th>runs (ok)</th><th>energy J</th><th>adjusted J</th><th>J/token</th><th>J/token adjusted</th><th>adjusted vs reference</th></tr>
{{range .Exps}}<tr><td>{{.Name}}</td><td>{{.Runs}} ({{.Valid}})</td><td>{{ci .EnergyJ 1}}</td><td>{{ci .AdjustedJ 1}}</td><td>{{ci .JPerToken 4}}</td><td>{{ci .JPerTokenAdj 4}}</td><td>{{ratio .VsReferenceAdj}}</td></tr>
{{end}}</table>
{{.Bars}}
<h2>Runs</h2>
{{range .Runs}}{{$m := .Manifest}}
<h3 id="{{$m.RunID}}">{{$m.RunID}} — {{$m.Experiment}}, {{$m.Status}}, {{num $m.Times.DurationS 2}} s</h3>
<table><tr><th>GPU</th><th>idle W</th><th>counter J</th><th>hybrid J</th><th>adjusted J</th><th>mean W</th><th>peak W</th></tr>
{{range $m.GPUs}}<tr><td>{{.Index}} {{.Name}}</td><td>{{if .Baseline}}{{num .Baseline.MedianW 1}}{{else}}–{{end}}</td><td>{{num .Energy.CounterJ 1}}</td><td>{{num .Energy.HybridJ 1}}</td><td>{{num .Energy.AdjustedJ 1}}</td><td>{{num .MeanPowerW 1}}</td><td>{{num .PeakPowerW 1}}</td></tr>
{{end}}</table>
{{if $m.Phases}}<table><tr><th>phase</th><th>start (s)</th><th>seconds</th><th>hybrid J</th><th>adjusted J</th></tr>
{{range $m.Phases}}<tr><td>{{.Name}}</td><td>{{since .Start $m.Times.Start}}</td><td>{{num .DurationS 3}}</td><td>{{num .Energy.HybridJ 1}}</td><td>{{num .Energy.AdjustedJ 1}}</td></tr>
{{end}}</table>{{end}}
<p>Uncertainty: ±{{num .Uncertainty.RandomJ 2}} J random (boundary {{num .Uncertainty.BoundaryJ 2}}, baseline {{num .Uncertainty.BaselineJ 2}}); ±{{num .Uncertainty.SensorGainJ 1}} J sensor gain.</p>
{{svg .}}
{{range $m.Warnings}}<p class="warn">warning [{{.Code}}]: {{.Message}}</p>{{end}}
{{end}}
{{if .Probs}}<h2>Inputs not used</h2><ul>{{range .Probs}}<li><code>{{.Path}}</code>: {{.Err}}</li>{{end}}</ul>{{end}}
</body></html>
`))

// HTML writes a self-contained HTML report with SVG plots.
func HTML(w io.Writer, runs []Run, exps []Experiment, probs []Problem) error {
	var buf bytes.Buffer
	err := page.Execute(&buf, map[string]any{"Runs": runs, "Exps": exps, "Probs": probs, "Bars": barsSVG(exps)})
	if err != nil {
		return fmt.Errorf("rendering HTML report: %w", err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}
