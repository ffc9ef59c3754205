package report

import (
	"maps"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/analyze/stats"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// The uncertainty model (GUM; docs/METHODOLOGY.md): each term is a standard uncertainty in the quantity's unit,
// the terms combine in quadrature, and every report gives the expanded uncertainty U = K·u_c.

// K is the coverage factor of every expanded uncertainty.
const K = 2.0

// SensorGain is the assumed bound of the board power sensor's error, ±5 % of the reading. NVML documents it for
// Fermi and Kepler boards only; for later boards it is an assumption until the board is calibrated against a meter.
const SensorGain = 0.05

// gainU is the standard uncertainty of the gain: a ±5 % bound read as a rectangular distribution, 5 %/√3.
var gainU = SensorGain / math.Sqrt(3)

// Term names.
const (
	TermGain       = "gain"           // sensor gain/offset: ±5 % of reading, assumed
	TermLag        = "lag"            // the counter lag's uncertainty from its fit
	TermBoundary   = "boundary"       // one sample period of power at each edge
	TermLatency    = "marker_latency" // when a marker line was stamped against when the workload printed it
	TermBaseline   = "baseline"       // error of the idle median × duration (adjusted only)
	TermAliasing   = "aliasing"       // energy the samples' shape places inside the counter intervals at the edges
	TermRepetition = "repetition"     // between runs: s/√n
)

// ShortShapeU is the relative error given to the samples' shape inside a counter interval when a phase occurrence
// of length d is shorter than one (short_phase), at least: 10 %, the spread (RMS) of the counter/sampled ratio over
// the 100 ms intervals of the aliased medium phase of the H200 known-shape recording — what the shape is worth over
// one counter interval when the load is faster than the samples resolve; and for the shortest occurrences the
// spread measured between identical matmul bursts on an H200 (scripts/gpu/precision.py: 27 % at 10 ms, 8 % at
// 50 ms, docs/RESULTS.md §5.3), log-linear in between.
func ShortShapeU(d time.Duration) float64 {
	const floor, at10, at50 = 0.10, 0.27, 0.08
	switch {
	case d <= 10*time.Millisecond:
		return at10
	case d >= 50*time.Millisecond:
		return floor
	}
	f := math.Log(float64(d)/float64(10*time.Millisecond)) / math.Log(5)
	return max(floor, at10*math.Pow(at50/at10, f))
}

// SampledAliasingU bounds the aliasing of a GPU whose energy is the samples' integral alone (no counter to rescale
// them): over 4 s square waves of 4–400 ms at 25–75 % duty on two H200s the samples were within 5.7 % of the
// counter wherever the period was not commensurate with the 20 ms sampling (docs/RESULTS.md §6.3). Commensurate
// loads went up to 31 % off; no fixed term covers those, and without a counter nothing can detect them.
const SampledAliasingU = 0.06

// Kinds of term.
const (
	Systematic = "systematic" // the same on every run of a setup: does not average out over repetitions
	Random     = "random"     // differs run to run: part of the repetition spread
)

// Term is one line of an uncertainty budget, standard uncertainties in joules.
type Term struct {
	Name      string       `json:"name"`
	Kind      string       `json:"kind"`
	RawJ      manifest.Num `json:"raw_j"`
	AdjustedJ manifest.Num `json:"adjusted_j"` // null where no baseline was measured
}

// Budget is the uncertainty of one energy (a run, or one phase of a run) raw and adjusted: its terms, the combined
// standard uncertainty u_c and the expanded uncertainty K·u_c. A combined value is null where a term could not
// be evaluated (the lag term needs the trace) or the energy was not measured.
type Budget struct {
	RawJ              manifest.Num `json:"raw_j"`
	AdjustedJ         manifest.Num `json:"adjusted_j"`
	Terms             []Term       `json:"terms"`
	URawJ             manifest.Num `json:"u_raw_j"`
	UAdjustedJ        manifest.Num `json:"u_adjusted_j"`
	K                 float64      `json:"k"`
	ExpandedRawJ      manifest.Num `json:"expanded_raw_j"`
	ExpandedAdjustedJ manifest.Num `json:"expanded_adjusted_j"`
}

// Term returns the named term (zero Term when absent).
func (b Budget) Term(name string) Term {
	for _, t := range b.Terms {
		if t.Name == name {
			return t
		}
	}
	return Term{Name: name, RawJ: manifest.Null, AdjustedJ: manifest.Null}
}

// combine fills the combined and expanded values from the terms.
func (b *Budget) combine() {
	b.K = K
	var raw, adj float64
	for _, t := range b.Terms {
		raw += float64(t.RawJ * t.RawJ)
		adj += float64(t.AdjustedJ * t.AdjustedJ)
	}
	b.URawJ, b.UAdjustedJ = manifest.Null, manifest.Null
	if b.RawJ.Valid() {
		b.URawJ = manifest.Num(math.Sqrt(raw)) // NaN when a term is null
	}
	if b.AdjustedJ.Valid() {
		b.UAdjustedJ = manifest.Num(math.Sqrt(adj))
	}
	b.ExpandedRawJ, b.ExpandedAdjustedJ = K*b.URawJ, K*b.UAdjustedJ
}

// edgeWindow is one interval of a run's energy (the whole run, or one occurrence of a phase).
type edgeWindow struct{ start, end time.Time }

// gpuInput is what one workload GPU contributes to a budget.
type gpuInput struct {
	baseline *manifest.Baseline
	// lagJ is E(lag + u) − E(lag − u) over the windows, summed (the same lag error moves every window the same
	// way); NaN when not evaluated.
	lagJ float64
	// edgeW holds the power at each window edge (mean power where the trace is not at hand).
	edgeW []float64
	// aliasJ is the GPU's aliasing term (aliasTerm); NaN when not evaluated.
	aliasJ float64
}

// medianU is the standard error of a baseline's median idle power: 1.2533·σ/√n with σ = IQR/1.349 (normal
// equivalents). The 50 Hz samples are correlated, so √n flatters; the baseline is also reused across runs where
// the campaign says so, which the experiment budget treats as systematic.
func medianU(b *manifest.Baseline) float64 {
	if b == nil || b.Samples < 2 {
		return math.NaN()
	}
	return 1.2533 * (b.IQRW / 1.349) / math.Sqrt(float64(b.Samples))
}

// StdoutMarkerU is the standard uncertainty of a marker line's time: lem-run stamps a line without at= when it
// reads it, measured 0.1 ms after the workload printed it (median), p90 0.13 ms on a quiet host and 2.2 ms on a
// loaded one (docs/BENCHMARKS.md, "Marker latency"); the loaded p90 is taken. A marker posted over HTTP, and a line
// with at=, carries the caller's own time.
const StdoutMarkerU = 2 * time.Millisecond

// markerU is the timing uncertainty of a run's phase edges: the stdout one where any marker came as a line
// without its own time (the manifest does not say which phase came which way), none where every marker was
// posted or stamped.
func markerU(m *manifest.Manifest) float64 {
	if m.Markers.Parsed > m.Markers.Stamped {
		return StdoutMarkerU.Seconds()
	}
	return 0
}

// makeBudget builds the budget of an energy measured over windows lasting durS seconds in total; latS is the
// timing uncertainty of the windows' edges (marker latency; 0 for a run's own edges, its bracketing reads).
func makeBudget(raw, adj manifest.Num, durS, latS float64, gpus []gpuInput) Budget {
	b := Budget{RawJ: raw, AdjustedJ: adj}
	adjOK := adj.Valid()
	both := func(name, kind string, v float64) Term {
		t := Term{Name: name, Kind: kind, RawJ: manifest.Num(v), AdjustedJ: manifest.Num(v)}
		if !adjOK {
			t.AdjustedJ = manifest.Null
		}
		return t
	}
	gain := Term{Name: TermGain, Kind: Systematic, RawJ: manifest.Num(gainU) * raw, AdjustedJ: manifest.Num(gainU) * adj}
	var lag2, edge2, lat2, base2, alias2 float64
	for _, g := range gpus {
		lag2 += (g.lagJ / 2) * (g.lagJ / 2)
		alias2 += g.aliasJ * g.aliasJ
		for _, p := range g.edgeW {
			// An edge resolves to one sample period: its energy lies within ±T·P, a rectangular ±T·P/√3.
			u := p * energy.DefaultSamplePeriod.Seconds() / math.Sqrt(3)
			edge2 += u * u
			lat2 += (p * latS) * (p * latS) // the edge's time uncertain by latS moves its power that long
		}
		if g.baseline != nil {
			u := medianU(g.baseline) * durS
			base2 += u * u
		}
	}
	baseKind := Random
	for _, g := range gpus {
		if g.baseline != nil && g.baseline.Reused {
			baseKind = Systematic
		}
	}
	base := Term{Name: TermBaseline, Kind: baseKind, RawJ: 0, AdjustedJ: manifest.Num(math.Sqrt(base2))}
	if !adjOK {
		base.AdjustedJ = manifest.Null
	}
	b.Terms = []Term{gain, both(TermLag, Systematic, math.Sqrt(lag2)), both(TermBoundary, Random, math.Sqrt(edge2)),
		both(TermLatency, Random, math.Sqrt(lat2)), base, both(TermAliasing, Systematic, math.Sqrt(alias2))}
	b.combine()
	return b
}

// budget is a run's budget from its manifest alone: edges at the GPUs' mean power, the lag and aliasing terms not
// evaluated (null) until the trace is read (detail).
func budget(m *manifest.Manifest) Budget {
	var gpus []gpuInput
	for _, g := range m.GPUs {
		if g.Role == manifest.RoleObserved {
			continue // not in the result
		}
		p := g.MeanPowerW.Or(math.NaN())
		gpus = append(gpus, gpuInput{baseline: g.Baseline, lagJ: math.NaN(), edgeW: []float64{p, p}, aliasJ: math.NaN()})
	}
	return makeBudget(m.Energy.HybridJ, m.Energy.AdjustedJ, m.Times.DurationS, 0, gpus)
}

// lagMeter is one GPU's hybrid refitted from the trace with its lag uncertainty: h at the lag the accounting
// used, lo and hi at that lag ± its uncertainty.
type lagMeter struct {
	est       energy.LagEstimate
	h, lo, hi *energy.Hybrid
}

// shift is E(lag + u) − E(lag − u) over [a, b]; NaN where the hybrid does not cover it.
func (l *lagMeter) shift(a, b time.Time) float64 {
	if l == nil {
		return 0 // no hybrid: the energy does not depend on a lag
	}
	hi, err1 := l.hi.Energy(a, b)
	lo, err2 := l.lo.Energy(a, b)
	if err1 != nil || err2 != nil {
		return math.NaN()
	}
	return hi.Joules - lo.Joules
}

// lagMeters fits each GPU's hybrid and its lag uncertainty; GPUs without a usable hybrid are absent (their energy
// came from samples or the counter alone, with no lag in it).
func lagMeters(t *trace.Trace) map[int]*lagMeter { return lagMetersOf(t, nil) }

// lagMetersOf is lagMeters reusing the hybrids the meters fitted on the same trace (the same fit: fitting again
// would double the costliest step of a whole read and hold a second running integral of every GPU's samples).
func lagMetersOf(t *trace.Trace, meters map[int]*account.Meter) map[int]*lagMeter {
	out := map[int]*lagMeter{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g, s := range t.GPUs { // one GPU's lag meters at a time held a whole-trace report on many cores
		wg.Go(func() {
			if lm := lagMeterOf(s, meters[g]); lm != nil {
				mu.Lock()
				out[g] = lm
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// lagMeterOf is one GPU's lag meter, from its meter m's hybrid where m fitted one (nil: fitted here); nil without
// a usable hybrid.
func lagMeterOf(s *trace.Series, m *account.Meter) *lagMeter {
	var h *energy.Hybrid
	var est energy.LagEstimate
	if m != nil && m.Method == account.MethodHybrid && m.Kept == nil {
		h, est = m.Hybrid(), m.Lag
	} else {
		var err error
		if h, est, err = energy.FitHybrid(s.Counters, s.Samples); err != nil {
			return nil
		}
	}
	return &lagMeter{est: est, h: h, lo: h.WithLag(est.Lag - est.U), hi: h.WithLag(est.Lag + est.U)}
}

// forRun is the trace's lag meters as a run used them: a GPU whose manifest says its lag came from the host's
// cache (the trace could not resolve its own) gets the hybrid at that lag, ± the uncertainty recorded with it.
func forRun(lms map[int]*lagMeter, m *manifest.Manifest) map[int]*lagMeter {
	out := maps.Clone(lms)
	for _, g := range m.GPUs {
		lm := lms[g.Index]
		l := g.Lag
		if lm == nil || l == nil || l.Source != manifest.LagCache || !l.UMS.Valid() {
			continue
		}
		lag, u := time.Duration(l.MS*1e6), time.Duration(float64(l.UMS)*1e6)
		out[g.Index] = &lagMeter{est: lm.est, h: lm.h.WithLag(lag), lo: lm.h.WithLag(lag - u), hi: lm.h.WithLag(lag + u)}
	}
	return out
}

// aliasTerm is one GPU's aliasing term over windows. Inside a counter interval the hybrid places energy by the
// samples' shape; the interval's total is the counter's. So only the counter intervals a window's edges fall in
// carry the shape's error, and of each only the smaller side of the split: u = min(E_in, E_out) · ρ/√3, read as a
// rectangular bound, intervals in quadrature. ρ is how far the samples are from the counter there: the largest of
// the interval's own departure from the run's median ratio, the RMS departure over the intervals the occurrence
// overlaps (an aliased stretch misdescribes its intervals' insides even where one interval's total happens to
// agree), account.AliasFloor, and ShortShapeU of its length where the occurrence is shorter than shortBelow.
func aliasTerm(h *energy.Hybrid, ck account.AliasCheck, ws []edgeWindow, shortBelow time.Duration) float64 {
	var s2 float64
	for _, w := range ws {
		short := w.end.Sub(w.start) < shortBelow
		rms := 0.0
		if ov := ck.Overlap(w.start, w.end); len(ov) > 0 {
			for _, iv := range ov {
				rms += iv.Deviation * iv.Deviation
			}
			rms = math.Sqrt(rms / float64(len(ov)))
		}
		for _, iv := range edgeIntervals(h, ck, w) {
			a, b := iv.Start.Time(), iv.End.Time()
			if a.Before(w.start) {
				a = w.start
			}
			if b.After(w.end) {
				b = w.end
			}
			in, err := h.Energy(a, b)
			if err != nil || !b.After(a) {
				continue
			}
			e := max(min(in.Joules, iv.CounterJ-in.Joules), 0)
			rho := max(math.Abs(iv.Deviation), rms, account.AliasFloor)
			if short {
				rho = max(rho, ShortShapeU(w.end.Sub(w.start)))
			}
			u := e * rho / math.Sqrt(3)
			s2 += u * u
		}
	}
	return math.Sqrt(s2)
}

// edgeIntervals are the counter intervals across a window's edges, with their departure where the run's check
// has them (a trace with too few intervals for a check: none known, 0).
func edgeIntervals(h *energy.Hybrid, ck account.AliasCheck, w edgeWindow) []account.IntervalCheck {
	if len(ck.Intervals) > 0 {
		return ck.Around(w.start, w.end)
	}
	var out []account.IntervalCheck
	a, b := trace.StampOf(w.start), trace.StampOf(w.end)
	for _, iv := range h.Intervals(w.start, w.end) {
		if iv.Start.Before(a) || iv.End.After(b) {
			out = append(out, account.IntervalCheck{Interval: iv})
		}
	}
	return out
}

// edgePower is the highest sample power within one sample period of t: the energy an edge misplaced by a period
// can move (at a load step, the higher side). NaN without samples there.
func edgePower(ss []trace.PowerSample, t time.Time) float64 {
	p := energy.DefaultSamplePeriod
	at := trace.StampOf(t)
	i := sort.Search(len(ss), func(i int) bool { return !ss[i].Time.Before(at.Add(-p)) })
	best := math.NaN()
	for ; i < len(ss) && !ss[i].Time.After(at.Add(p)); i++ {
		if math.IsNaN(best) || ss[i].PowerW > best {
			best = ss[i].PowerW
		}
	}
	return best
}

// runEval is what a run's budgets are evaluated with: its lag meters, its GPUs' aliasing checks over the run, and
// the occurrence length below which a phase is short (what one counter interval resolves).
type runEval struct {
	lms        map[int]*lagMeter
	checks     map[int]account.AliasCheck
	shortBelow time.Duration
}

// evalRunChecked prepares a run's budgets on its trace, with the checks the run's accounting made
// (account.FillChecked; nil: none), used where the run's lag meter checks with the accounting's own hybrid: the
// trace's fitted lag (a kept lag's hybrid is rebuilt here).
func evalRunChecked(m *manifest.Manifest, lms map[int]*lagMeter, known map[int]account.AliasCheck) runEval {
	ev := runEval{lms: forRun(lms, m), checks: map[int]account.AliasCheck{}}
	for _, g := range m.GPUs {
		lm := ev.lms[g.Index]
		if lm == nil || g.Role == manifest.RoleObserved || (g.Method != "" && g.Method != account.MethodHybrid) {
			continue
		}
		ck, ok := known[g.Index]
		if !ok || g.Lag == nil || g.Lag.Source == manifest.LagCache {
			ck = account.CheckAliasing(lm.h, m.Times.Start, m.Times.End)
		}
		ev.checks[g.Index] = ck
		if len(ck.Intervals) > 0 {
			ev.shortBelow = max(ev.shortBelow, ck.ShortPhase())
		}
	}
	return ev
}

// traceBudget is the budget of an energy over windows, evaluated on the trace: the lag term from the hybrids at
// lag ± u, the edges at the power found there, the aliasing term from the counter intervals at the edges.
// shortBelow: occurrences shorter than this are short (their shape counts at least ShortShapeU of their length).
func traceBudget(raw, adj manifest.Num, ws []edgeWindow, latS float64, m *manifest.Manifest, t *trace.Trace,
	ev runEval, shortBelow time.Duration) Budget {
	lms := ev.lms
	var dur float64
	for _, w := range ws {
		dur += w.end.Sub(w.start).Seconds()
	}
	var gpus []gpuInput
	for _, g := range m.GPUs {
		if g.Role == manifest.RoleObserved {
			continue
		}
		gi := gpuInput{baseline: g.Baseline}
		s := t.GPUs[g.Index]
		lm := lms[g.Index]
		if g.Method != "" && g.Method != "hybrid" {
			lm = nil // the GPU's energy was not placed by the hybrid: no lag in it
		}
		for _, w := range ws {
			gi.lagJ += lm.shift(w.start, w.end)
			for _, at := range []time.Time{w.start, w.end} {
				p := math.NaN()
				if s != nil {
					p = edgePower(s.Samples, at)
				}
				if math.IsNaN(p) {
					p = g.MeanPowerW.Or(math.NaN())
				}
				gi.edgeW = append(gi.edgeW, p)
			}
		}
		switch {
		case s == nil:
			gi.aliasJ = math.NaN()
		case lm != nil:
			gi.aliasJ = aliasTerm(lm.h, ev.checks[g.Index], ws, shortBelow)
		case g.Method == account.MethodSamples:
			// No counter rescales the samples: the whole energy carries their aliasing.
			var e float64
			for _, w := range ws {
				if r, err := energy.Sampled(s.Samples, w.start, w.end); err == nil {
					e += r.Joules
				}
			}
			gi.aliasJ = SampledAliasingU / math.Sqrt(3) * e
		}
		if s == nil || (lm == nil && g.Method == "hybrid") {
			gi.lagJ = math.NaN() // the trace lacks this GPU's data: not evaluated
			gi.aliasJ = math.NaN()
		}
		gpus = append(gpus, gi)
	}
	return makeBudget(raw, adj, dur, latS, gpus)
}

// Uncert is the uncertainty of an experiment-level figure (a mean over runs, or a ratio): the terms as standard
// uncertainties in the figure's unit, which of them are combined, u_c and K·u_c. A random per-run term is already
// in the repetition spread and is listed, not combined again.
type Uncert struct {
	Terms    []UTerm      `json:"terms"`
	U        manifest.Num `json:"u"`
	K        float64      `json:"k"`
	Expanded manifest.Num `json:"expanded"`
}

// UTerm is one line of an experiment-level budget.
type UTerm struct {
	Name     string       `json:"name"`
	Kind     string       `json:"kind"`
	U        manifest.Num `json:"u"`
	Combined bool         `json:"combined"`
}

// Term returns the named term (U null when absent).
func (u Uncert) Term(name string) UTerm {
	for _, t := range u.Terms {
		if t.Name == name {
			return t
		}
	}
	return UTerm{Name: name, U: manifest.Null}
}

func (u *Uncert) combine() {
	u.K = K
	var s float64
	for _, t := range u.Terms {
		if t.Combined {
			s += float64(t.U * t.U)
		}
	}
	u.U = manifest.Num(math.Sqrt(s))
	u.Expanded = K * u.U
}

// relTerms are a run's budget terms relative to its energy, for one quantity (raw or adjusted).
type relTerms map[string]float64

func relOf(b Budget, adjusted bool) relTerms {
	out := relTerms{}
	for _, t := range b.Terms {
		v, e := t.RawJ, b.RawJ
		if adjusted {
			v, e = t.AdjustedJ, b.AdjustedJ
		}
		if e > 0 && v.Valid() {
			out[t.Name] = float64(v / e)
		} else if v == 0 {
			out[t.Name] = 0
		} else {
			out[t.Name] = math.NaN()
		}
	}
	return out
}

// meanRel averages one relative term over runs (NaN if any run lacks it).
func meanRel(rs []relTerms, name string) float64 {
	if len(rs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, r := range rs {
		v, ok := r[name]
		if !ok {
			return math.NaN()
		}
		s += v
	}
	return s / float64(len(rs))
}

// meanUncert is the uncertainty of a mean over runs: repetition (s/√n, from three runs up) combined with the
// systematic terms, each the runs' mean relative term times the mean. The baseline is systematic only where runs
// reused one; random per-run terms (boundary, own baselines) are listed but already in the repetition.
func meanUncert(s stats.Summary, rs []relTerms, reused bool) Uncert {
	u := Uncert{K: K}
	if s.N == 0 || len(rs) == 0 {
		u.U, u.Expanded = manifest.Null, manifest.Null
		return u
	}
	for _, name := range []string{TermGain, TermLag, TermBoundary, TermLatency, TermBaseline, TermAliasing} {
		kind := Systematic
		if name == TermBoundary || (name == TermBaseline && !reused) {
			kind = Random
		}
		u.Terms = append(u.Terms, UTerm{Name: name, Kind: kind, U: manifest.Num(meanRel(rs, name) * s.Mean),
			Combined: kind == Systematic})
	}
	rep := manifest.Null
	if s.N >= stats.MinIntervalN {
		rep = manifest.Num(s.SE())
	}
	u.Terms = append(u.Terms, UTerm{Name: TermRepetition, Kind: Random, U: rep, Combined: true})
	u.combine()
	return u
}

// ratioUncert is the uncertainty of a ratio of means: repetition from the ratio's own (paired or independent)
// analysis, and each side's systematic terms in quadrature — except the gain, which cancels when both sides ran
// on the same boards (the same sensor reads both), and counts twice when they did not.
func ratioUncert(r stats.Ratio, a, b []relTerms, reusedA, reusedB, sameBoards bool) Uncert {
	u := Uncert{K: K}
	if !(r.Value > 0) {
		u.U, u.Expanded = manifest.Null, manifest.Null
		return u
	}
	for _, name := range []string{TermGain, TermLag, TermLatency, TermBaseline, TermAliasing} {
		var v float64
		switch {
		case name == TermGain && sameBoards:
			v = 0
		case name == TermBaseline:
			ra, rb := 0.0, 0.0
			if reusedA {
				ra = meanRel(a, name)
			}
			if reusedB {
				rb = meanRel(b, name)
			}
			v = math.Hypot(ra, rb)
		default:
			v = math.Hypot(meanRel(a, name), meanRel(b, name))
		}
		u.Terms = append(u.Terms, UTerm{Name: name, Kind: Systematic, U: manifest.Num(v * r.Value), Combined: true})
	}
	u.Terms = append(u.Terms, UTerm{Name: TermRepetition, Kind: Random, U: manifest.Num(r.RelSE * r.Value), Combined: true})
	u.combine()
	return u
}
