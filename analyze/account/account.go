// Package account is lem's one accounting: from a trace, a run's span, its GPUs with their roles, its phase events,
// baselines and results it computes what a manifest reports — energy per GPU by method, totals per role, phases,
// per-token and per-request figures, capture quality and the data's warnings. lem-run, lem-run record and
// lem-analyze (run directories, traces, Prometheus pulls) all call Fill, so the same run gives the same numbers
// whichever way it was captured.
//
// Fallback order for a GPU's raw energy (manifest energy_method): the hybrid (counter totals placed by the 50 Hz
// shape); without a usable counter (fewer than two distinct readings), the 50 Hz samples' integral (warning
// no_counter); without samples, the counter difference interpolated linearly (warning no_samples); with neither,
// null. Phases use the same method as their GPU.
package account

import (
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/trace"
)

// Energy methods (manifest energy_method).
const (
	MethodHybrid  = "hybrid"
	MethodSamples = "samples"
	MethodCounter = "counter"
)

// Thresholds of the data's warnings (docs/METHODOLOGY.md lists each rule and its reason).
const (
	// ShortWindow: below this the counter's ~100 ms updates and the edges weigh heavily.
	ShortWindow = 5 * time.Second
	// MinCounterUpdates inside a run for the counter to resolve it.
	MinCounterUpdates = 3
	// UnstableBaseline: idle power's IQR above this fraction of its median.
	UnstableBaseline = 0.10
	// BusyBaseline: mean utilization during the baseline above this.
	BusyBaseline = 0.05
	// TemperatureDrift between the end of the baseline and the start of the run, °C.
	TemperatureDrift = 3.0
	// TogetherWithin: phase markers closer than this were delivered together (buffered output), not printed as
	// the phases happened — well below the 20 ms the samples resolve.
	TogetherWithin = 5 * time.Millisecond
)

// Meter is one GPU's energy over any window of a trace, by the GPU's best method.
type Meter struct {
	series *trace.Series
	hybrid *energy.Hybrid
	Lag    energy.LagEstimate // the fit on this trace
	Method string             // "" when the GPU has neither samples nor counter readings
	// Source is where the lag the hybrid uses came from: manifest.LagFit (Lag), manifest.LagCache (Kept, when
	// the trace could not resolve its own) or manifest.LagNone (unresolved, 0 used).
	Source string
	Kept   *LagRecord
}

// NewMeter fits a GPU's meter: the hybrid with its lag estimated from the series, or the fallback.
func NewMeter(s *trace.Series) *Meter {
	m := &Meter{series: s}
	if h, lag, err := energy.FitHybrid(s.Counters, s.Samples); err == nil {
		m.hybrid, m.Lag, m.Method, m.Source = h, lag, MethodHybrid, manifest.LagNone
		if lag.OK {
			m.Source = manifest.LagFit
		}
		return m
	}
	switch {
	case len(s.Samples) >= 2:
		m.Method = MethodSamples
	case len(s.Counters) >= 2:
		m.Method = MethodCounter
	}
	return m
}

// WithKept is the meter with a kept lag where the trace could not resolve its own; m itself where it could, or
// where it has no hybrid. Meters are shared by the runs of a trace: m is not changed.
func (m *Meter) WithKept(r LagRecord) *Meter {
	if m.Method != MethodHybrid || m.Lag.OK {
		return m
	}
	c := *m
	c.hybrid = m.hybrid.WithLag(time.Duration(r.MS * 1e6))
	c.Source, c.Kept = manifest.LagCache, &r
	return &c
}

// Hybrid is the meter's hybrid (nil when the GPU's energy is not the hybrid's).
func (m *Meter) Hybrid() *energy.Hybrid { return m.hybrid }

// UsedLag is the lag the meter's hybrid uses and its standard uncertainty.
func (m *Meter) UsedLag() (lag, u time.Duration) {
	if m.Source == manifest.LagCache && m.Kept != nil {
		return time.Duration(m.Kept.MS * 1e6), m.Kept.fallbackU()
	}
	return m.Lag.Lag, m.Lag.U
}

// Energy returns the energy over [t0, t1]; NaN when the data does not cover it.
func (m *Meter) Energy(t0, t1 time.Time) float64 {
	switch m.Method {
	case MethodHybrid:
		if r, err := m.hybrid.Energy(t0, t1); err == nil {
			return r.Joules
		}
	case MethodSamples:
		if r, err := energy.Sampled(m.series.Samples, t0, t1); err == nil {
			return r.Joules
		}
	case MethodCounter:
		if r, err := energy.Counter(m.series.Counters, t0, t1); err == nil {
			return r.Joules
		}
	}
	return math.NaN()
}

// Meters fits every GPU's meter of a trace once, GPUs in parallel (the lag fit is the costly part): runs that
// share a trace share its meters.
func Meters(t *trace.Trace) map[int]*Meter { return MetersThen(t, nil) }

// MetersThen is Meters calling then (when not nil) with each GPU's meter as soon as it is fitted, on the GPU's
// own goroutine: work that needs one GPU's meter starts without waiting for the others'.
func MetersThen(t *trace.Trace, then func(g int, m *Meter)) map[int]*Meter {
	out := make(map[int]*Meter, len(t.GPUs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for g, s := range t.GPUs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m := NewMeter(s)
			mu.Lock()
			out[g] = m
			mu.Unlock()
			if then != nil {
				then(g, m)
			}
		}()
	}
	wg.Wait()
	return out
}

// GPU names a GPU of a run and its role.
type GPU struct {
	Index int
	Role  string // manifest.RoleWorkload or manifest.RoleObserved
}

// Bracket is a GPU's exact counter reads at the run's edges (lem-run reads them aligned on the update grid).
type Bracket struct {
	Start, End *manifest.CounterRead
}

// Input is one run to account.
type Input struct {
	Trace *trace.Trace
	// Meters are the trace's meters (Meters); nil fits them here.
	Meters map[int]*Meter
	// RunID selects the run's phase, result and baseline events; AllPhases takes every phase of the trace
	// instead (a recording with no run marked, accounted as one run).
	RunID     string
	AllPhases bool
	// Start and End bound the run.
	Start, End time.Time
	// GPUs are the run's GPUs with their roles; nil: every GPU of the trace, all workload.
	GPUs []GPU
	// Baselines per GPU index; nil: the run's baseline events in the trace. A workload GPU without one has no
	// adjusted energy (null) and a no_baseline warning.
	Baselines map[int]*manifest.Baseline
	// Brackets are exact counter reads at the edges (CounterJ is their difference); nil: interpolated.
	Brackets map[int]Bracket
	// Results are the run's results; nil: accumulated from its result events (marker.AddResults).
	Results map[string]string
	// FallbackLags are lags kept from earlier traces (LagCache), by GPU UUID or by the GPU's index in decimal: a
	// GPU whose lag this trace cannot resolve uses its entry, and its manifest counter_lag says so (source cache).
	FallbackLags map[string]LagRecord
}

// Fill accounts the run into m: Times (start, end, duration), GPUs (identity from m.Environment), Energy,
// ObservedEnergy, Phases, Results, Derived, and the data's warnings appended to m.Warnings. Whatever else m holds
// (ids, status, command, the runner's own warnings) is kept.
func Fill(m *manifest.Manifest, in Input) { FillChecked(m, in) }

// FillChecked is Fill that also returns the aliasing checks it made: each hybrid GPU's over [in.Start, in.End],
// checked with its meter's hybrid. A report's budgets use the same checks; making them once per run instead of
// twice halves the check's cost, the largest of a run's accounting.
func FillChecked(m *manifest.Manifest, in Input) map[int]AliasCheck {
	a := accounting{m: m, in: in, idle: map[int]float64{}, active: map[int]float64{}, checks: map[int]AliasCheck{}}
	a.run()
	return a.checks
}

type accounting struct {
	m  *manifest.Manifest
	in Input
	// Per GPU, what the phases subtract: deep idle at the run's temperature, and active idle.
	idle, active map[int]float64
	// checks are the hybrid GPUs' aliasing checks over the run.
	checks map[int]AliasCheck
}

func (a *accounting) warn(code string, g *int, format string, args ...any) {
	a.m.Warnings = append(a.m.Warnings, manifest.Warning{Code: code, GPU: g, Message: fmt.Sprintf(format, args...)})
}

func (a *accounting) run() {
	in, m := a.in, a.m
	end := in.End
	if end.Before(in.Start) {
		end = in.Start
	}
	m.Times.Start, m.Times.End = in.Start, end
	m.Times.DurationS = end.Sub(in.Start).Seconds()
	if m.Warnings == nil {
		m.Warnings = []manifest.Warning{}
	}
	if in.Meters == nil && in.Trace != nil {
		in.Meters = Meters(in.Trace)
		a.in.Meters = in.Meters
	}
	if len(in.FallbackLags) > 0 && in.Meters != nil {
		in.Meters = a.withKeptLags(in.Meters)
		a.in.Meters = in.Meters
	}
	gpus := in.GPUs
	if gpus == nil && in.Trace != nil {
		for _, g := range in.Trace.GPUIndices() {
			gpus = append(gpus, GPU{Index: g, Role: manifest.RoleWorkload})
		}
	}
	runEvents := a.runEvents()
	baselines := in.Baselines
	if baselines == nil {
		baselines = map[int]*manifest.Baseline{}
		for _, e := range runEvents {
			if b, ok := marker.BaselineOf(e); ok {
				baselines[e.GPU] = &b
			}
		}
	}
	dur := end.Sub(in.Start)
	if dur > 0 && dur < ShortWindow {
		a.warn("short_window", nil, "the run lasted %.2f s (< %s): counter updates every ~100 ms and edges weigh heavily",
			dur.Seconds(), ShortWindow)
	}
	m.GPUs = m.GPUs[:0]
	m.Energy, m.ObservedEnergy = manifest.Energy{}, nil
	for _, g := range gpus {
		mg := a.gpu(g, baselines[g.Index], runEvents)
		m.GPUs = append(m.GPUs, mg)
		if mg.Role == manifest.RoleObserved {
			if m.ObservedEnergy == nil {
				m.ObservedEnergy = &manifest.Energy{}
			}
			m.ObservedEnergy.Sum(mg.Energy)
		} else {
			m.Energy.Sum(mg.Energy)
		}
	}
	if len(gpus) == 0 {
		m.Energy = manifest.Unmeasured()
	}
	occ := a.phases(gpus, baselines)
	a.shortPhases(gpus, occ)
	a.aliasing(occ)
	a.windows(gpus, baselines, runEvents)
	a.requestWindows(gpus, baselines, runEvents)
	a.processes(gpus, baselines)
	a.results(runEvents)
	a.derive()
}

// runEvents are the trace's events of this run (all of them for a whole-trace run) plus the unattributed ones
// (gaps, errors) inside its span.
func (a *accounting) runEvents() []trace.Event {
	if a.in.Trace == nil {
		return nil
	}
	var out []trace.Event
	for _, e := range a.in.Trace.Events {
		switch {
		case e.RunID != "" && (e.RunID == a.in.RunID || a.in.AllPhases):
			out = append(out, e)
		case e.RunID == "" && !e.Time.Before(a.in.Start) && !e.Time.After(a.in.End):
			out = append(out, e)
		}
	}
	return out
}

func (a *accounting) gpu(g GPU, b *manifest.Baseline, events []trace.Event) manifest.GPU {
	in := a.in
	idx := g.Index
	mg := manifest.GPU{Index: idx, Role: g.Role, Baseline: b, Energy: manifest.Unmeasured(), MeanPowerW: manifest.Null,
		PeakPowerW: manifest.Null, IdleW: manifest.Null}
	if mg.Role == "" {
		mg.Role = manifest.RoleWorkload
	}
	if d, ok := a.m.Environment.Device(idx); ok {
		mg.UUID, mg.Name = d.UUID, d.Name
	} else if in.Trace != nil {
		if d, ok := in.Trace.Env.Device(idx); ok {
			mg.UUID, mg.Name = d.UUID, d.Name
		}
	}
	if br, ok := in.Brackets[idx]; ok {
		mg.CounterStart, mg.CounterEnd = br.Start, br.End
	}
	var s *trace.Series
	var meter *Meter
	if in.Trace != nil {
		s = in.Trace.GPUs[idx]
		meter = in.Meters[idx]
	}
	dur := in.End.Sub(in.Start)
	if s == nil || meter == nil || dur <= 0 {
		if b == nil && mg.Role == manifest.RoleWorkload {
			a.warn("no_baseline", &idx, "GPU %d: no idle baseline; adjusted energy is not reported", idx)
		}
		return mg
	}
	win := s.Window(in.Start, in.End)
	// Counter: the exact bracket difference where lem-run read it, else interpolated from the readings.
	if mg.CounterStart != nil && mg.CounterEnd != nil && mg.CounterEnd.EnergyMJ >= mg.CounterStart.EnergyMJ {
		mg.Energy.CounterJ = manifest.Num(float64(mg.CounterEnd.EnergyMJ-mg.CounterStart.EnergyMJ) / 1000)
	} else if c, err := energy.Counter(s.Counters, in.Start, in.End); err == nil {
		mg.Energy.CounterJ = manifest.Num(c.Joules)
	}
	if r, err := energy.Sampled(s.Samples, in.Start, in.End); err == nil {
		mg.Energy.SampledJ = manifest.Num(r.Joules)
	}
	a.method(&mg, meter)
	if mg.Energy.HybridJ.Valid() {
		mg.MeanPowerW = mg.Energy.HybridJ / manifest.Num(dur.Seconds())
	}
	if len(win.Samples) > 0 {
		peak := 0.0
		for _, x := range win.Samples {
			peak = max(peak, x.PowerW) // the builtin: math.Max is a call per sample
		}
		mg.PeakPowerW = manifest.Num(peak)
	}
	a.adjust(&mg, dur, meanTemp(win.Telemetry))
	if ai := activeIdle(idx, win, b, events, in.Start, in.End); ai != nil {
		mg.ActiveIdle = ai
		a.active[idx] = ai.MedianW
		if mg.Energy.HybridJ.Valid() {
			mg.Energy.AdjustedActiveJ = mg.Energy.HybridJ - manifest.Num(ai.MedianW*dur.Seconds())
		}
	}
	a.telemetry(&mg, win, s)
	a.capture(&mg, win, events)
	a.counterQuality(&mg, s)
	return mg
}

// method records the GPU's energy by its meter's method over the run: the hybrid with the lag it used (and the
// aliasing check), or a fallback with its warning.
func (a *accounting) method(mg *manifest.GPU, meter *Meter) {
	in, idx := a.in, mg.Index
	mg.Method = meter.Method
	mg.Energy.HybridJ = manifest.Num(meter.Energy(in.Start, in.End))
	switch meter.Method {
	case MethodHybrid:
		lag, u := meter.UsedLag()
		mg.Lag = &manifest.Lag{MS: float64(lag) / 1e6, Resolved: meter.Lag.OK, Contrast: meter.Lag.Contrast,
			Intervals: meter.Lag.Intervals, UMS: manifest.Num(float64(u) / 1e6), Source: meter.Source}
		if meter.Kept != nil {
			at := meter.Kept.At
			mg.Lag.CacheDate = &at
		}
		a.checks[idx] = CheckAliasing(meter.hybrid, in.Start, in.End)
	case MethodSamples:
		a.warn("no_counter", &idx, "GPU %d: no usable energy counter; energy integrates the 50 Hz power samples", idx)
	case MethodCounter:
		a.warn("no_samples", &idx, "GPU %d: no power samples; energy is the counter difference only", idx)
	}
}

// adjust subtracts the GPU's idle power over the run, and checks the baseline.
func (a *accounting) adjust(mg *manifest.GPU, dur time.Duration, runTempC float64) {
	idx := mg.Index
	b := mg.Baseline
	if b == nil {
		if mg.Role == manifest.RoleWorkload {
			a.warn("no_baseline", &idx, "GPU %d: no idle baseline; adjusted energy is not reported", idx)
		}
		return
	}
	idle := idleAtRun(b, runTempC)
	mg.IdleW, a.idle[idx] = manifest.Num(idle), idle
	if b.DriftW != nil && math.Abs(*b.DriftW) > BaselineDrift {
		a.warn("baseline_drift", &idx, "GPU %d idle power moved %+.1f W between the baseline's halves: it had not settled", idx, *b.DriftW)
	}
	if mg.Energy.HybridJ.Valid() {
		adj, clamped := energy.Adjust(float64(mg.Energy.HybridJ), idle, dur)
		mg.Energy.AdjustedJ, mg.Energy.AdjustedClamped = manifest.Num(adj), clamped
		if clamped {
			a.warn("adjusted_clamped", &idx, "GPU %d used less than its idle baseline over the run: adjusted energy clamped to 0", idx)
		}
	}
	if b.MedianW > 0 && b.IQRW > UnstableBaseline*b.MedianW {
		a.warn("unstable_baseline", &idx, "GPU %d idle power varied (IQR %.1f W of %.1f W)", idx, b.IQRW, b.MedianW)
	}
	if b.UtilMean != nil && *b.UtilMean > BusyBaseline {
		a.warn("gpu_busy_baseline", &idx, "GPU %d was %.0f %% utilized during the baseline: it was not idle", idx, 100**b.UtilMean)
	}
}

// telemetry fills temperatures and throttling from the run's telemetry, and checks the temperature drift.
func (a *accounting) telemetry(mg *manifest.GPU, win *trace.Series, s *trace.Series) {
	idx := mg.Index
	var first, last *trace.Telemetry
	for i := range win.Telemetry {
		if math.IsNaN(win.Telemetry[i].TemperatureC) {
			continue
		}
		if first == nil {
			first = &win.Telemetry[i]
		}
		last = &win.Telemetry[i]
	}
	if first != nil {
		mg.TempStartC, mg.TempEndC = f64p(first.TemperatureC), f64p(last.TemperatureC)
	}
	if b := mg.Baseline; b != nil && mg.TempStartC != nil && b.TempEndC != nil &&
		math.Abs(*mg.TempStartC-*b.TempEndC) > TemperatureDrift {
		a.warn("temperature_drift", &idx, "GPU %d temperature moved %.0f °C between baseline and start", idx, *mg.TempStartC-*b.TempEndC)
	}
	mg.ThrottleS = throttleSeconds(s.Telemetry, a.in.Start, a.in.End)
	names := make([]string, 0, len(mg.ThrottleS))
	for reason := range mg.ThrottleS {
		names = append(names, reason)
	}
	sort.Strings(names)
	for _, reason := range names {
		sec := mg.ThrottleS[reason]
		switch reason {
		case "sw_power_cap":
			// Holding clocks under the power limit is normal at full load on H100/H200: reported, not a fault.
			a.warn("power_capped", &idx, "GPU %d: clocks held under the software power cap for %.1f s", idx, sec)
		default:
			a.warn("throttling", &idx, "GPU %d: clocks held back by %s for %.1f s", idx, reason, sec)
		}
	}
}

// throttleSeconds sums, per clock-event reason that slows the GPU down, the time it was active in [start, end].
func throttleSeconds(tel []trace.Telemetry, start, end time.Time) map[string]float64 {
	out := map[string]float64{}
	for _, cr := range gpu.ClockReasons {
		if !slowsDown(cr.Name) {
			continue
		}
		if sec := ReasonSeconds(tel, start, end, cr.Bit); sec > 0 {
			out[cr.Name] = sec
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// ReasonSeconds is the time in [start, end] during which telemetry showed the clock-event bit.
func ReasonSeconds(tel []trace.Telemetry, startT, endT time.Time, bit uint64) float64 {
	start, end := trace.StampOf(startT), trace.StampOf(endT)
	var sec float64
	i := max(sort.Search(len(tel), func(i int) bool { return !tel[i].Time.Before(start) })-1, 0)
	for ; i+1 < len(tel) && tel[i].Time.Before(end); i++ {
		a, b := tel[i], tel[i+1]
		if !a.ClockReasonsValid || a.ClockReasons&bit == 0 {
			continue
		}
		t0, t1 := a.Time, b.Time
		if t0.Before(start) {
			t0 = start
		}
		if t1.After(end) {
			t1 = end
		}
		if t1.After(t0) {
			sec += t1.Sub(t0).Seconds()
		}
	}
	return sec
}

// slowsDown says whether a clock-event reason holds clocks below what the workload asks for.
func slowsDown(reason string) bool {
	switch reason {
	case "gpu_idle", "applications_clocks_setting", "sync_boost", "display_clock_setting":
		return false
	}
	return true
}

// capture counts the samples and gaps inside the run: gaps from the samples themselves (any source), drain gaps
// and overruns from the sampler's events (lem's own recordings).
func (a *accounting) capture(mg *manifest.GPU, win *trace.Series, events []trace.Event) {
	idx := mg.Index
	c := manifest.Capture{Samples: len(win.Samples)}
	for i := 1; i < len(win.Samples); i++ {
		if win.Samples[i].Time.Sub(win.Samples[i-1].Time) > 2*energy.DefaultSamplePeriod {
			c.Gaps++
		}
	}
	for _, e := range events {
		if e.GPU != idx || e.Time.Before(a.in.Start) || e.Time.After(a.in.End) {
			continue
		}
		switch e.Type {
		case trace.EventGap, trace.EventOverrun:
			if e.Attrs["where"] != trace.GapInBatch {
				c.DrainGaps++
			}
			if e.Type == trace.EventOverrun {
				c.Overruns++
			}
		case trace.EventDeviceError:
			a.warn("gpu_error", &idx, "GPU %d: %s", idx, e.Attrs["error"])
		}
	}
	mg.Capture = c
	// Samples are lost only when a drain comes too late for the driver's buffer (an overrun); other gaps are the
	// driver's own skipped samples, counted in the capture figures.
	if c.Overruns > 0 {
		a.warn("capture_gaps", &idx, "GPU %d: %d power-sample buffer overruns lost samples (%d gaps)", idx, c.Overruns, c.Gaps)
	}
}

func (a *accounting) counterQuality(mg *manifest.GPU, s *trace.Series) {
	idx := mg.Index
	c, err := energy.Counter(s.Counters, a.in.Start, a.in.End)
	if err != nil {
		return
	}
	if c.Updates < MinCounterUpdates && mg.Method == MethodHybrid {
		a.warn("few_counter_updates", &idx, "GPU %d: the counter changed %d times during the run (< %d)", idx, c.Updates, MinCounterUpdates)
	}
	if c.Resets > 0 {
		a.warn("counter_reset", &idx, "GPU %d: the energy counter reset during the run (driver reload?); energy around it is lost", idx)
	}
}

// phases accounts every phase occurrence of the run on the workload's GPUs and sums them per name; it returns the
// occurrences, clipped to the run, by name.
func (a *accounting) phases(gpus []GPU, baselines map[int]*manifest.Baseline) map[string][]trace.Phase {
	in, m := a.in, a.m
	m.Phases = nil
	if in.Trace == nil {
		return nil
	}
	occ := map[string][]trace.Phase{}
	var evs []trace.Event
	for _, e := range in.Trace.Events {
		if (e.Type == trace.EventPhase || e.Type == trace.EventPhaseEnd || e.Type == trace.EventRunEnd) &&
			(in.AllPhases || e.RunID == in.RunID) {
			evs = append(evs, e)
		}
	}
	a.buffered(evs)
	at := map[string]int{}
	for _, p := range trace.Phases(evs, in.End) {
		start, end := maxTime(p.Start, in.Start), minTime(p.End, in.End)
		if !end.After(start) {
			continue
		}
		i, ok := at[p.Name]
		if !ok {
			i = len(m.Phases)
			at[p.Name] = i
			m.Phases = append(m.Phases, manifest.Phase{Name: p.Name, Start: start})
		}
		mp := &m.Phases[i]
		occ[p.Name] = append(occ[p.Name], trace.Phase{Name: p.Name, RunID: p.RunID, Start: start, End: end})
		mp.Count++
		mp.End = end
		mp.DurationS += end.Sub(start).Seconds()
		for _, g := range gpus {
			if g.Role == manifest.RoleObserved {
				continue // observed GPUs' energy is reported apart, not in the workload's phases
			}
			pg := manifest.PhaseGPU{Index: g.Index, SMClockHz: manifest.Null, PState: manifest.Null}
			pg.HybridJ, pg.AdjustedJ, pg.AdjustedActiveJ, pg.AdjustedClamped = a.gpuEnergy(g.Index, baselines, start, end)
			if s := in.Trace.GPUs[g.Index]; s != nil {
				pg.SMClockHz = manifest.Num(meanClock(s.Telemetry, start, end) * end.Sub(start).Seconds()) // weighted: divided below
				if _, fastest, ok := PStates(s.Telemetry, start, end); ok {
					pg.PState = manifest.Num(fastest)
				}
			}
			addPhaseGPU(mp, pg)
		}
	}
	for i := range m.Phases {
		p := &m.Phases[i]
		p.Energy = manifest.Unmeasured()
		if len(p.GPUs) > 0 {
			p.Energy = manifest.Energy{CounterJ: manifest.Null, SampledJ: manifest.Null}
		}
		for j := range p.GPUs {
			g := &p.GPUs[j]
			g.SMClockHz /= manifest.Num(p.DurationS) // the time-weighted sum over occurrences, made a mean
			p.Energy.HybridJ += g.HybridJ
			p.Energy.AdjustedJ += g.AdjustedJ
			p.Energy.AdjustedActiveJ += g.AdjustedActiveJ
			p.Energy.AdjustedClamped = p.Energy.AdjustedClamped || g.AdjustedClamped
		}
		if p.Energy.AdjustedClamped {
			a.warn("phase_adjusted_clamped", nil, "phase %s: energy below the idle baseline in %d occurrence(s) was clamped to 0",
				p.Name, p.Count)
		}
	}
	return occ
}

// withKeptLags gives the GPUs whose lag the trace could not resolve the lag kept for them, in a copy of the
// trace's meters (other runs share them).
func (a *accounting) withKeptLags(ms map[int]*Meter) map[int]*Meter {
	out := maps.Clone(ms)
	for g, meter := range ms {
		uuid := ""
		if d, ok := a.m.Environment.Device(g); ok {
			uuid = d.UUID
		} else if a.in.Trace != nil {
			if d, ok := a.in.Trace.Env.Device(g); ok {
				uuid = d.UUID
			}
		}
		if r, ok := fallback(a.in.FallbackLags, uuid, g); ok {
			out[g] = meter.WithKept(r)
		}
	}
	return out
}

// buffered warns when the run's phase markers arrived together rather than as the phases happened: a workload
// whose output is buffered (Python without PYTHONUNBUFFERED writing to a pipe) delivers its marker lines in
// blocks or all at exit, and the phases' times are then wrong. Two or more markers within TogetherWithin of the
// one before, or all of them together, is that signature.
func (a *accounting) buffered(evs []trace.Event) {
	var ts []time.Time
	for _, e := range evs {
		if e.Type == trace.EventPhase { // phase starts: a phase's end may be lem's own (the workload's exit)
			ts = append(ts, e.Time)
		}
	}
	slices.SortFunc(ts, func(x, y time.Time) int { return x.Compare(y) })
	close := 0
	for i := 1; i < len(ts); i++ {
		if ts[i].Sub(ts[i-1]) < TogetherWithin {
			close++
		}
	}
	if close >= 2 || (len(ts) >= 2 && close == len(ts)-1) {
		a.warn("markers_buffered", nil, "%d of %d phase markers arrived within %s of the one before: the workload's output "+
			"is buffered (set PYTHONUNBUFFERED=1, flush stdout, or run with --pty), so the phases' times are wrong",
			close, len(ts), TogetherWithin)
	}
}

// windows accounts the run's windows: each begin paired with the next end of the same name and id; a window
// still open when the run ended ends there (counted as ended by the run). Occurrences are summed per name, with
// the median and 90th percentile of their raw energy.
func (a *accounting) windows(gpus []GPU, baselines map[int]*manifest.Baseline, events []trace.Event) {
	in, m := a.in, a.m
	m.Windows = nil
	order, byName := windowOccurrences(events, in.End)
	for _, name := range order {
		w := manifest.Window{Name: name, Energy: manifest.Energy{CounterJ: manifest.Null, SampledJ: manifest.Null}}
		var js []float64
		for _, o := range byName[name] {
			start, end := maxTime(o.start, in.Start), minTime(o.end, in.End)
			if end.Before(start) {
				continue
			}
			w.Count++
			if o.byRun {
				w.EndedByRun++
			}
			w.DurationS += end.Sub(start).Seconds()
			e, adj, active, clamped := a.workloadEnergy(gpus, baselines, start, end)
			w.Energy.HybridJ += e
			w.Energy.AdjustedJ += adj
			w.Energy.AdjustedActiveJ += active
			w.Energy.AdjustedClamped = w.Energy.AdjustedClamped || clamped
			if e.Valid() {
				js = append(js, float64(e))
			}
			if len(o.values) > 0 {
				if w.Values == nil {
					w.Values = map[string]string{}
				}
				marker.AddResults(w.Values, o.values)
			}
		}
		med, p90 := windowStats(js)
		w.MedianJ, w.P90J = manifest.Num(med), manifest.Num(p90)
		m.Windows = append(m.Windows, w)
	}
}

// windowOcc is one occurrence of a window: its span, whether the run's end ended it, the values it ended with.
type windowOcc struct {
	start, end time.Time
	byRun      bool
	values     map[string]string
}

// windowOccurrences pairs window begin and end events by name and id into occurrences, per name in the order
// names first end; windows never ended end at runEnd (after the others, in name order).
func windowOccurrences(events []trace.Event, runEnd time.Time) (order []string, byName map[string][]windowOcc) {
	open := map[string]time.Time{}
	byName = map[string][]windowOcc{}
	add := func(name string, o windowOcc) {
		if _, ok := byName[name]; !ok {
			order = append(order, name)
		}
		byName[name] = append(byName[name], o)
	}
	evs := slices.Clone(events)
	slices.SortStableFunc(evs, func(x, y trace.Event) int { return x.Time.Compare(y.Time) })
	for _, e := range evs {
		key := e.Name + "#" + e.Attrs[trace.AttrWindowID]
		switch e.Type {
		case trace.EventWindowBegin:
			open[key] = e.Time
		case trace.EventWindowEnd:
			start, ok := open[key]
			if !ok {
				continue
			}
			delete(open, key)
			values := maps.Clone(e.Attrs)
			delete(values, trace.AttrWindowID)
			byRun := values["ended_by"] == "run_end"
			delete(values, "ended_by")
			add(e.Name, windowOcc{start: start, end: e.Time, byRun: byRun, values: values})
		}
	}
	for _, key := range slices.Sorted(maps.Keys(open)) { // never ended: the run's end ends them
		name, _, _ := strings.Cut(key, "#")
		add(name, windowOcc{start: open[key], end: runEnd, byRun: true})
	}
	return order, byName
}

// workloadEnergy is the workload GPUs' energies over [start, end] (gpuEnergy's, summed: null where any GPU's is).
func (a *accounting) workloadEnergy(gpus []GPU, baselines map[int]*manifest.Baseline, start, end time.Time) (e, adj, active manifest.Num, clamped bool) {
	for _, g := range gpus {
		if g.Role == manifest.RoleObserved {
			continue
		}
		j, ad, ac, c := a.gpuEnergy(g.Index, baselines, start, end)
		e += j
		adj += ad
		active += ac
		clamped = clamped || c
	}
	return e, adj, active, clamped
}

// gpuEnergy is GPU g's energy over [start, end] (null without a meter, 0 over an empty interval), that energy above
// its deep idle (null without a baseline; clamped says it fell below and was clamped to 0) and above its active
// idle: what the computation adds over active idle, which may be negative (null without one). A phase and a window
// occurrence are accounted alike.
func (a *accounting) gpuEnergy(g int, baselines map[int]*manifest.Baseline, start, end time.Time) (e, adj, active manifest.Num, clamped bool) {
	e, adj, active = manifest.Null, manifest.Null, manifest.Null
	meter := a.in.Meters[g]
	switch {
	case meter == nil:
		return e, adj, active, false
	case end.After(start):
		e = manifest.Num(meter.Energy(start, end))
	default:
		e = 0
	}
	if !e.Valid() {
		return e, adj, active, false
	}
	d := end.Sub(start)
	if idle, ok := a.idle[g]; ok && baselines[g] != nil {
		v, c := energy.Adjust(float64(e), idle, d)
		adj, clamped = manifest.Num(v), c
	}
	if act, ok := a.active[g]; ok {
		active = e - manifest.Num(act*d.Seconds())
	}
	return e, adj, active, clamped
}

func addPhaseGPU(p *manifest.Phase, g manifest.PhaseGPU) {
	for i := range p.GPUs {
		if p.GPUs[i].Index == g.Index {
			p.GPUs[i].HybridJ += g.HybridJ
			p.GPUs[i].AdjustedJ += g.AdjustedJ
			p.GPUs[i].AdjustedActiveJ += g.AdjustedActiveJ
			p.GPUs[i].SMClockHz += g.SMClockHz
			if g.PState.Valid() && (!p.GPUs[i].PState.Valid() || g.PState < p.GPUs[i].PState) {
				p.GPUs[i].PState = g.PState
			}
			p.GPUs[i].AdjustedClamped = p.GPUs[i].AdjustedClamped || g.AdjustedClamped
			return
		}
	}
	p.GPUs = append(p.GPUs, g)
}

func (a *accounting) results(events []trace.Event) {
	if a.in.Results != nil {
		a.m.Results = a.in.Results
		return
	}
	acc := map[string]string{}
	for _, e := range events {
		if e.Type == trace.EventResult && e.RunID != "" {
			marker.AddResults(acc, e.Attrs)
		}
	}
	if len(acc) > 0 {
		a.m.Results = acc
	} else {
		a.m.Results = nil
	}
}

// derive computes per-token and per-request figures from the results: null where a count or an energy is
// missing.
func (a *accounting) derive() {
	m := a.m
	count := func(k string) manifest.Num {
		v, ok := marker.Number(m.Results[k])
		if !ok || v <= 0 {
			return manifest.Null
		}
		return manifest.Num(v)
	}
	tokens, reqs := count("output_tokens"), count("requests")
	if !tokens.Valid() && !reqs.Valid() {
		m.Derived = nil
		return
	}
	m.Derived = &manifest.Derived{OutputTokens: tokens, Requests: reqs}
	Derive(m)
}

// Derive computes a run's per-token and per-request figures from its energies and the counts in m.Derived (the
// accounting, and a report that corrected the energies afterwards): null where a count or an energy is missing.
func Derive(m *manifest.Manifest) {
	d := m.Derived
	if d == nil {
		return
	}
	per := func(e, n manifest.Num) manifest.Num {
		if !e.Valid() || !n.Valid() || n <= 0 {
			return manifest.Null
		}
		return e / n
	}
	inv := func(e, n manifest.Num) manifest.Num {
		if !e.Valid() || !n.Valid() || e <= 0 {
			return manifest.Null
		}
		return n / e
	}
	e, adj := m.Energy.HybridJ, m.Energy.AdjustedJ
	d.JPerOutputToken, d.JPerOutputTokenAdj = per(e, d.OutputTokens), per(adj, d.OutputTokens)
	d.OutputTokensPerJ, d.OutputTokensPerJAdj = inv(e, d.OutputTokens), inv(adj, d.OutputTokens)
	d.JPerRequest, d.JPerRequestAdj = per(e, d.Requests), per(adj, d.Requests)
}

// WorkloadGPUs reads a run's workload_gpus label ("0,2"); nil when the run has no such label (every GPU is the
// workload's).
func WorkloadGPUs(label string, ok bool) map[int]bool {
	if !ok {
		return nil
	}
	out := map[int]bool{}
	for _, f := range strings.Split(label, ",") {
		if g, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out[g] = true
		}
	}
	return out
}

func f64p(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
