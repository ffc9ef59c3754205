package account

import (
	"math"
	"slices"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// Two idles (docs/METHODOLOGY.md, "What idle means"). The baseline lem-run measures before the workload is deep
// idle: no CUDA context, clocks parked (78 W at 345 MHz on an H200). Holding a context clocks the GPU up (~121 W
// at 1980 MHz on the same H200) before a kernel runs. Adjusted energy subtracts deep idle: what the host spends
// for the workload over a parked GPU. Active-adjusted subtracts active idle: what the workload's computation adds
// over a GPU held ready.

// Thresholds of the idle findings.
const (
	// MinActiveIdle is the shortest stretch inside a run that counts as active idle.
	MinActiveIdle = time.Second
	// ContextBytes is the memory a held CUDA context adds over deep idle (about 500 MiB on H100/H200): a stretch
	// with no kernel running and at least this much more memory used holds the context.
	ContextBytes = 256 << 20
	// BaselineDrift is how far (W) the baseline's second half may lie from its first before it counts as drifting.
	BaselineDrift = 2.0
	// ActiveIdleWindow is the window name a workload marks active idle with.
	ActiveIdleWindow = "idle"
)

// idleAtRun is the deep-idle power subtracted for a GPU: the baseline's median, corrected to the run's mean
// temperature along the GPU's temperature fit when there is one and its slope is told (over twice its standard
// error). The run's temperature is held to the range the fit saw: idle measured at 30–45 °C says nothing sure
// about idle at 70 °C.
func idleAtRun(b *manifest.Baseline, runTempC float64) float64 {
	f := b.TempFit
	if f == nil || b.TempMeanC == nil || math.IsNaN(runTempC) || math.Abs(f.SlopeWPerC) <= 2*f.SlopeSE {
		return b.MedianW
	}
	if f.MaxC > f.MinC {
		runTempC = min(max(runTempC, f.MinC), f.MaxC)
	}
	return b.MedianW + f.SlopeWPerC*(runTempC-*b.TempMeanC)
}

func meanTemp(tel []trace.Telemetry) float64 {
	var sum, n float64
	for _, t := range tel {
		if !math.IsNaN(t.TemperatureC) {
			sum += t.TemperatureC
			n++
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / n
}

// activeIdle measures a GPU's active idle inside the run: the workload's own windows named idle if it marked
// any, else the stretches of at least MinActiveIdle where telemetry shows no kernel running and the context held.
func activeIdle(g int, win *trace.Series, b *manifest.Baseline, events []trace.Event, start, end time.Time) *manifest.ActiveIdle {
	var spans [][2]time.Time
	source := "window"
	open := map[string]time.Time{}
	for _, e := range events {
		if e.Name != ActiveIdleWindow {
			continue
		}
		key := e.Attrs[trace.AttrWindowID]
		switch e.Type {
		case trace.EventWindowBegin:
			open[key] = e.Time
		case trace.EventWindowEnd:
			if s, ok := open[key]; ok {
				spans = append(spans, [2]time.Time{maxTime(s, start), minTime(e.Time, end)})
				delete(open, key)
			}
		}
	}
	if len(spans) == 0 {
		source = "zero_utilization"
		spans = idleStretches(win.Telemetry, b)
	}
	// Each span's window found once and the slices sized from them: this runs for every run and GPU.
	wins := make([]*trace.Series, len(spans))
	var nps int
	var dur time.Duration
	for i, sp := range spans {
		wins[i] = win.Window(sp[0], sp[1])
		if sp[1].After(sp[0]) {
			dur += sp[1].Sub(sp[0])
			nps += len(wins[i].Samples)
		}
	}
	if nps < energy.MinBaselineSamples {
		return nil
	}
	buf := pooled[float64](&checkScratch, nps) // reused: a fresh array per run and GPU was most of the runs' fresh pages
	defer checkScratch.Put(buf)
	ps := (*buf)[:0]
	for i, sp := range spans {
		if sp[1].After(sp[0]) {
			for _, x := range wins[i].Samples {
				ps = append(ps, x.PowerW)
			}
		}
	}
	ai := &manifest.ActiveIdle{Source: source, MedianW: energy.QuantileOf(ps, 0.5), Samples: len(ps), DurationS: dur.Seconds()}
	// The spans' telemetry in order, read in place rather than copied together.
	tels := make([][]trace.Telemetry, len(wins))
	for i, w := range wins {
		tels[i] = w.Telemetry
	}
	if c := meanClockOf(time.Time{}, time.Time{}, tels...); !math.IsNaN(c) {
		ai.SMClockHz = &c
	}
	if common, _, ok := pstatesOf(time.Time{}, time.Time{}, tels...); ok {
		ai.PState = &common
	}
	return ai
}

// idleStretches are the runs of telemetry snapshots with zero utilization and the context held, at least
// MinActiveIdle long, trimmed by a snapshot at each end (the power settles after a kernel).
func idleStretches(tel []trace.Telemetry, b *manifest.Baseline) [][2]time.Time {
	held := func(t trace.Telemetry) bool {
		if math.IsNaN(t.UtilGPU) || t.UtilGPU > 0 || math.IsNaN(t.MemUsedBytes) {
			return false
		}
		if b != nil && b.MemUsedBytes != nil {
			return t.MemUsedBytes >= *b.MemUsedBytes+ContextBytes
		}
		return t.MemUsedBytes >= 2*ContextBytes
	}
	var out [][2]time.Time
	for i := 0; i < len(tel); {
		if !held(tel[i]) {
			i++
			continue
		}
		j := i
		for j+1 < len(tel) && held(tel[j+1]) {
			j++
		}
		if j-i >= 2 && tel[j-1].Time.Sub(tel[i+1].Time) >= MinActiveIdle {
			out = append(out, [2]time.Time{tel[i+1].Time.Time(), tel[j-1].Time.Time()})
		}
		i = j + 1
	}
	return out
}

// stampBounds are [a, b] as stamps, a zero time leaving that side open.
func stampBounds(a, b time.Time) (lo, hi trace.Stamp) {
	lo, hi = math.MinInt64, math.MaxInt64
	if !a.IsZero() {
		lo = trace.StampOf(a)
	}
	if !b.IsZero() {
		hi = trace.StampOf(b)
	}
	return lo, hi
}

// meanClock is the mean SM clock over [a, b] (zero times: all of it), NaN without telemetry.
func meanClock(tel []trace.Telemetry, a, b time.Time) float64 { return meanClockOf(a, b, tel) }

// meanClockOf is meanClock over the telemetry slices one after the other.
func meanClockOf(a, b time.Time, tels ...[]trace.Telemetry) float64 {
	lo, hi := stampBounds(a, b)
	var sum, n float64
	for _, tel := range tels {
		for _, t := range tel {
			if !t.Time.Before(lo) && !t.Time.After(hi) && !math.IsNaN(t.SMClockHz) {
				sum += t.SMClockHz
				n++
			}
		}
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / n
}

// FitIdleTemperature fits idle power against temperature over (°C, W) points by least squares: the slope, its
// standard error, the intercept. ok is false with fewer than five points or under three degrees of spread.
func FitIdleTemperature(tempC, watts []float64) (fit manifest.TempFit, ok bool) {
	n := len(tempC)
	if n < 5 || len(watts) != n {
		return fit, false
	}
	lo, hi := slices.Min(tempC), slices.Max(tempC)
	if hi-lo < 3 {
		return fit, false
	}
	var mx, my float64
	for i := range tempC {
		mx += tempC[i]
		my += watts[i]
	}
	mx, my = mx/float64(n), my/float64(n)
	var sxx, sxy float64
	for i := range tempC {
		sxx += (tempC[i] - mx) * (tempC[i] - mx)
		sxy += (tempC[i] - mx) * (watts[i] - my)
	}
	b := sxy / sxx
	a := my - b*mx
	var rss float64
	for i := range tempC {
		r := watts[i] - a - b*tempC[i]
		rss += r * r
	}
	se := math.Sqrt(rss / float64(n-2) / sxx)
	return manifest.TempFit{SlopeWPerC: b, SlopeSE: se, InterceptW: a, Points: n, SpanC: hi - lo, MinC: lo, MaxC: hi}, true
}

// PStates summarises the performance states in the telemetry over [a, b] (zero times: all of it): the most
// common one (the state the GPU sat in) and the fastest one (P0 is the fastest). ok is false without any.
func PStates(tel []trace.Telemetry, a, b time.Time) (common, fastest float64, ok bool) {
	return pstatesOf(a, b, tel)
}

// pstatesOf is PStates over the telemetry slices one after the other.
func pstatesOf(a, b time.Time, tels ...[]trace.Telemetry) (common, fastest float64, ok bool) {
	lo, hi := stampBounds(a, b)
	var n [16]int
	fastest = math.Inf(1)
	for _, tel := range tels {
		for _, t := range tel {
			if math.IsNaN(t.PState) || t.PState < 0 || t.PState > 15 ||
				t.Time.Before(lo) || t.Time.After(hi) {
				continue
			}
			n[int(t.PState)]++
			fastest = min(fastest, t.PState)
			ok = true
		}
	}
	if !ok {
		return math.NaN(), math.NaN(), false
	}
	best := 0
	for i := range n {
		if n[i] > n[best] {
			best = i
		}
	}
	return float64(best), fastest, true
}
