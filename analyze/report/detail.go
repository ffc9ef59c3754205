package report

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// detail adds what needs the run's trace (the whole trace, or the run's window of it): each GPU's steady state
// inside the workload's own phases, its power from `from` on (thinned, for plots), the time each phase spent
// power-capped, and the uncertainty budgets of the run and its phases with the lag term evaluated on lms (the
// whole trace's lag meters).
func detail(r *Run, t *trace.Trace, from time.Time, lms map[int]*lagMeter) {
	detailWith(r, t, from, lms, true, nil)
}

// detailWith is detail with the power plot's data only where plots is set, and the aliasing checks the run's
// accounting made with the same hybrids (nil: made here).
func detailWith(r *Run, t *trace.Trace, from time.Time, lms map[int]*lagMeter, plots bool, checks map[int]account.AliasCheck) {
	m := r.Manifest
	r.Steady, r.Power = map[int]energy.Steady{}, map[int][]trace.PowerSample{}
	occ := occurrences(m, t)
	for g, s := range t.GPUs {
		r.Steady[g] = steadyIn(s, m, g, occ)
		if plots { // only the HTML report draws them: thousands of runs would keep a plot's samples each
			r.Power[g] = thin(s.Samples, from, m.Times.End)
		}
	}
	r.PowerCappedS = powerCapped(m, t, occ)
	ev := evalRunChecked(m, lms, checks)
	if m.Times.End.After(m.Times.Start) {
		r.Uncertainty = traceBudget(m.Energy.HybridJ, m.Energy.AdjustedJ, []edgeWindow{{m.Times.Start, m.Times.End}}, 0, m, t, ev, 0)
	}
	r.PhaseUncertainty = map[string]Budget{}
	for _, p := range m.Phases {
		if ws := occ[p.Name]; len(ws) > 0 {
			short := ev.shortBelow
			if short == 0 && p.Short {
				short = math.MaxInt64 // the accounting found it short; no check here says by how much: every occurrence
			}
			r.PhaseUncertainty[p.Name] = traceBudget(p.Energy.HybridJ, p.Energy.AdjustedJ, ws, markerU(m), m, t, ev, short)
		}
	}
	// The budgets are made and keep none of the checks' intervals: their arrays go to the next run's checks.
	account.ReleaseChecks(checks, ev.checks)
}

// phaseBudgets are the phases' budgets from the manifest alone (lag not evaluated, edges at the phase's mean
// power), replaced by detail where the trace is read.
func phaseBudgets(m *manifest.Manifest) map[string]Budget {
	out := map[string]Budget{}
	for _, p := range m.Phases {
		var gpus []gpuInput
		for _, pg := range p.GPUs {
			gi := gpuInput{lagJ: math.NaN(), aliasJ: math.NaN()}
			for _, g := range m.GPUs {
				if g.Index == pg.Index {
					gi.baseline = g.Baseline
				}
			}
			pw := math.NaN()
			if p.DurationS > 0 {
				pw = pg.HybridJ.Or(math.NaN()) / p.DurationS
			}
			for range 2 * max(p.Count, 1) {
				gi.edgeW = append(gi.edgeW, pw)
			}
			gpus = append(gpus, gi)
		}
		out[p.Name] = makeBudget(p.Energy.HybridJ, p.Energy.AdjustedJ, p.DurationS, markerU(m), gpus)
	}
	return out
}

// occurrences lists each phase's occurrences inside the run from the trace's events (the manifest keeps only the
// first start and last end of each name), clipped to the run as the accounting clips them. A trace accounted as
// one run (no run marked) has its phases under no run id of the manifest's: then every phase event counts.
func occurrences(m *manifest.Manifest, t *trace.Trace) map[string][]edgeWindow {
	pick := func(all bool) []trace.Event {
		var evs []trace.Event
		for _, e := range t.Events {
			if (e.Type == trace.EventPhase || e.Type == trace.EventPhaseEnd || e.Type == trace.EventRunEnd) &&
				(all || e.RunID == m.RunID) {
				evs = append(evs, e)
			}
		}
		return evs
	}
	evs := pick(false)
	if len(evs) == 0 && len(m.Phases) > 0 {
		evs = pick(true)
	}
	out := map[string][]edgeWindow{}
	for _, p := range trace.Phases(evs, m.Times.End) {
		a, b := p.Start, p.End
		if a.Before(m.Times.Start) {
			a = m.Times.Start
		}
		if b.After(m.Times.End) {
			b = m.Times.End
		}
		if b.After(a) {
			out[p.Name] = append(out[p.Name], edgeWindow{a, b})
		}
	}
	return out
}

// idleFactor: power up to this multiple of the idle baseline counts as idle when looking for steady state.
const idleFactor = 1.1

// steadyIn finds a GPU's steady state inside the workload's own phases: the decode phase where there is one, else
// the phases that are not idle (by name, or by mean power within 10 % of the baseline), the longest stretch found
// in any of them; a run without phases is searched whole. Stretches at idle power are never steady state:
// ML-serving benchmarks report the rate under load, and an idle stretch (78 W on the H200 recording) is not it.
func steadyIn(s *trace.Series, m *manifest.Manifest, g int, occ map[string][]edgeWindow) energy.Steady {
	idle := idleLevel(s, m, g)
	var windows []edgeWindow
	if len(m.Phases) == 0 {
		windows = []edgeWindow{{m.Times.Start, m.Times.End}}
	}
	for _, name := range workloadPhases(m, g, idle) {
		windows = append(windows, occ[name]...)
	}
	var best energy.Steady
	for _, w := range windows {
		for _, st := range loadedStretches(s.Window(w.start, w.end).Samples, idle) {
			f := energy.FindSteady(st, st[0].Time.Time(), st[len(st)-1].Time.Time(), energy.SteadyOptions{})
			if f.Found && f.MeanW > idle && f.End.Sub(f.Start) > best.End.Sub(best.Start) {
				best = f
			}
		}
	}
	return best
}

// idleLevel is the power below which a GPU counts as idle: idleFactor × its baseline, or without one
// idleFactor × the 5th percentile of its power over the run.
func idleLevel(s *trace.Series, m *manifest.Manifest, g int) float64 {
	for _, mg := range m.GPUs {
		if mg.Index == g && mg.Baseline != nil && mg.Baseline.MedianW > 0 {
			return idleFactor * mg.Baseline.MedianW
		}
	}
	w := s.Window(m.Times.Start, m.Times.End).Samples
	if len(w) == 0 {
		return 0
	}
	buf := powerScratch.Get().(*[]float64)
	defer powerScratch.Put(buf)
	ps := slices.Grow((*buf)[:0], len(w))[:len(w)]
	*buf = ps
	for i, x := range w {
		ps[i] = x.PowerW
	}
	return idleFactor * energy.QuantileOf(ps, 0.05)
}

// powerScratch holds the power values idleLevel selects from, reused across runs: fresh memory for every run and
// GPU costs page faults, more than the selection.
var powerScratch = sync.Pool{New: func() any { return new([]float64) }}

// workloadPhases are the phases to look for steady state in: decode if present, else every phase that is not
// idle by name or by its mean power on GPU g.
func workloadPhases(m *manifest.Manifest, g int, idle float64) []string {
	var out []string
	for _, p := range m.Phases {
		if p.Name == "decode" {
			return []string{p.Name}
		}
		if strings.Contains(strings.ToLower(p.Name), "idle") || p.DurationS <= 0 {
			continue
		}
		loaded := true
		for _, pg := range p.GPUs {
			if pg.Index == g && pg.HybridJ.Valid() && float64(pg.HybridJ)/p.DurationS <= idle {
				loaded = false
			}
		}
		if loaded {
			out = append(out, p.Name)
		}
	}
	return out
}

// loadedStretches splits samples into runs of consecutive samples above the idle level.
func loadedStretches(ss []trace.PowerSample, idle float64) [][]trace.PowerSample {
	var out [][]trace.PowerSample
	start := -1
	for i, x := range ss {
		switch {
		case x.PowerW > idle && start < 0:
			start = i
		case x.PowerW <= idle && start >= 0:
			if i-start >= 3 {
				out = append(out, ss[start:i])
			}
			start = -1
		}
	}
	if start >= 0 && len(ss)-start >= 3 {
		out = append(out, ss[start:])
	}
	return out
}

// powerCapped sums, per phase, the time any workload GPU spent with its clocks held under the software power
// cap (clock-event reason sw_power_cap): reported, not a fault — H100/H200 reach it at full load.
func powerCapped(m *manifest.Manifest, t *trace.Trace, occ map[string][]edgeWindow) map[string]float64 {
	var bit uint64
	for _, cr := range gpu.ClockReasons {
		if cr.Name == "sw_power_cap" {
			bit = cr.Bit
		}
	}
	out := map[string]float64{}
	for _, g := range m.GPUs {
		s := t.GPUs[g.Index]
		if g.Role == manifest.RoleObserved || s == nil {
			continue
		}
		for name, ws := range occ {
			for _, w := range ws {
				if sec := account.ReasonSeconds(s.Telemetry, w.start, w.end, bit); sec > 0 {
					out[name] += sec
				}
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
