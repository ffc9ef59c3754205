package energy

import (
	"fmt"
	"iter"
	"math"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/parallel"
	"github.com/lem-energy/lem/internal/trace"
)

// Hybrid combines the two sources: the counter gives the energy between its updates (the total is the counter's),
// and the 50 Hz samples say how that energy is spread inside each update interval, so a window edge falling
// between two counter updates resolves to the sample period instead of the counter's ~100 ms (or the read
// interval, when the counter is read rarely).
//
// The counter lags the samples (~85 ms at load changes on H200): a reading taken at host time t holds the energy
// up to about t-lag. The hybrid moves the readings back by Lag before allocating, so energy lands in the phase
// the samples put it in.
type Hybrid struct {
	// pts are the distinct counter values at the first read that showed each, at the reads' own times: shared,
	// never written, by the hybrids of one series at other lags (a whole series' copy per lag was most of a
	// report's fresh memory); pt moves one back by Lag.
	pts    []point
	in     *Integral
	gain   float64 // counter joules per sampled joule over the whole series (for the ends)
	Lag    time.Duration
	Resets int
}

// HybridResult is the hybrid energy over a window.
type HybridResult struct {
	Joules float64
	// Extrapolated is how much of the window lies outside the counter readings, where energy is the samples'
	// scaled by the counter-to-sample gain.
	Extrapolated time.Duration
}

// NewHybrid prepares hybrid integration over counter readings and samples (each in time order).
func NewHybrid(cs []trace.CounterReading, ss []trace.PowerSample, lag time.Duration) (*Hybrid, error) {
	pts, resets := distinctPoints(cs)
	return newHybrid(pts, resets, NewIntegral(ss), lag)
}

// FitHybrid estimates the counter's lag (the lag that best aligns counter increments with the samples) and prepares the hybrid with it, computing the samples'
// running integral and the counter's distinct values once for both.
func FitHybrid(cs []trace.CounterReading, ss []trace.PowerSample) (*Hybrid, LagEstimate, error) {
	var pts []point
	var resets int
	var wg sync.WaitGroup
	wg.Go(func() { pts, resets = distinctPoints(cs) }) // beside the integral: both are one pass over a whole series
	in := NewIntegral(ss)
	wg.Wait()
	lag := estimateLag(pts, in)
	h, err := newHybrid(pts, resets, in, lag.Lag)
	return h, lag, err
}

func newHybrid(pts []point, resets int, in *Integral, lag time.Duration) (*Hybrid, error) {
	if len(pts) < 2 {
		return nil, fmt.Errorf("hybrid energy needs at least two distinct counter readings, have %d", len(pts))
	}
	if len(in.ss) < 2 {
		return nil, fmt.Errorf("hybrid energy needs power samples, have %d", len(in.ss))
	}
	h := &Hybrid{pts: pts, in: in, Lag: lag, Resets: resets, gain: 1}
	// The counter's and the samples' energy over every interval between covered readings, summed: both telescope,
	// from the first reading the samples cover (moved back by the lag) to the last (as LagStream.Gain takes them).
	n, first, last := len(pts), in.ss[0].Time, in.ss[len(in.ss)-1].Time
	lo := sort.Search(n, func(i int) bool { return !h.pt(i).t.Before(first) })
	hi := sort.Search(n, func(i int) bool { return h.pt(i).t.After(last) }) - 1
	if lo < hi {
		a, b := h.pt(lo), h.pt(hi)
		h.gain = endGain(a, b, in.At(a.t), in.At(b.t))
	}
	return h, nil
}

// endGain is the counter's joules per sampled joule from covered reading a to covered reading b, whose samples'
// integrals are sa and sb (the interval sums telescope); 1 without energy on either side.
func endGain(a, b point, sa, sb float64) float64 {
	if dE, dS := b.j-a.j, sb-sa; dE > 0 && dS > 0 {
		return dE / dS
	}
	return 1
}

// WithLag is the same hybrid with the counter moved back by lag instead of h.Lag, sharing the samples' running
// integral: energies recomputed at the lag ± its uncertainty give the lag's share of the error budget.
func (h *Hybrid) WithLag(lag time.Duration) *Hybrid {
	w, _ := newHybrid(h.pts, h.Resets, h.in, lag) // h had two readings and samples, so w has too
	return w
}

// pt is counter point i moved back by the lag, where the hybrid places it. Searches move the query forward
// instead (t.Add(h.Lag)): the same comparisons, without moving every point.
func (h *Hybrid) pt(i int) point { return point{h.pts[i].t.Add(-h.Lag), h.pts[i].j} }

// at returns the cumulative hybrid energy at t, and how far t lies outside the readings.
func (h *Hybrid) at(t trace.Stamp) (float64, time.Duration, error) {
	n := len(h.pts)
	first, last := h.pt(0), h.pt(n-1)
	switch {
	case t.Before(first.t):
		if !h.in.Covers(t) {
			return 0, 0, fmt.Errorf("hybrid at %s: before counter and samples: %w", t.Format(time.RFC3339Nano), ErrNoCoverage)
		}
		return first.j - h.gain*(h.in.At(first.t)-h.in.At(t)), first.t.Sub(t), nil
	case t.After(last.t):
		if !h.in.Covers(t) {
			return 0, 0, fmt.Errorf("hybrid at %s: after counter and samples: %w", t.Format(time.RFC3339Nano), ErrNoCoverage)
		}
		return last.j + h.gain*(h.in.At(t)-h.in.At(last.t)), t.Sub(last.t), nil
	}
	tf := t.Add(h.Lag)
	k := sort.Search(n, func(i int) bool { return h.pts[i].t.After(tf) }) - 1
	if k == n-1 {
		return last.j, 0, nil
	}
	a, b := h.pt(k), h.pt(k+1)
	dE := b.j - a.j
	if h.in.Covers(a.t) && h.in.Covers(b.t) {
		s0, s1 := h.in.At(a.t), h.in.At(b.t)
		if s1 > s0 {
			return a.j + dE*(h.in.At(t)-s0)/(s1-s0), 0, nil
		}
	}
	f := float64(t.Sub(a.t)) / float64(b.t.Sub(a.t)) // no sample shape here: linear in time
	return a.j + f*dE, 0, nil
}

// Energy returns the hybrid energy over [t0, t1].
func (h *Hybrid) Energy(t0, t1 time.Time) (HybridResult, error) {
	if !t1.After(t0) {
		return HybridResult{}, fmt.Errorf("empty window %s .. %s", t0.Format(time.RFC3339Nano), t1.Format(time.RFC3339Nano))
	}
	a, xa, err := h.at(trace.StampOf(t0))
	if err != nil {
		return HybridResult{}, err
	}
	b, xb, err := h.at(trace.StampOf(t1))
	if err != nil {
		return HybridResult{}, err
	}
	return HybridResult{Joules: max(b-a, 0), Extrapolated: xa + xb}, nil
}

// LagEstimate is the counter lag that best aligns counter increments with the samples.
type LagEstimate struct {
	Lag time.Duration
	// OK is false when the data has too little structure (flat power) to tell lags apart; Lag is then 0.
	OK bool
	// Intervals is how many counter intervals the fit used.
	Intervals int
	// Contrast is the worst fit's residual over the best's: near 1 means the lag hardly matters.
	Contrast float64
	// U is the lag's standard uncertainty: the spread of the lags fitted with each of lagBlocks stretches of the
	// trace left out in turn (delete-a-block jackknife, so correlated residuals inside a stretch do not shrink it),
	// and the 5 ms grid of the search. Unresolved lags get UnresolvedLagU.
	U time.Duration
}

// UnresolvedLagU is the standard uncertainty given to a lag the data could not resolve (used as 0): about the
// spread of the lags measured on different setups (−5 to 85 ms).
const UnresolvedLagU = 50 * time.Millisecond

// Lag search range and step. The lag is relative between the two sensors and includes the reads' staleness, so
// a small negative value is possible (H100 reads phase-locked just after updates came out at the floor of 0).
const (
	MinLag  = -100 * time.Millisecond
	MaxLag  = 400 * time.Millisecond
	lagStep = 5 * time.Millisecond
)

// maxLagIntervals bounds the counter intervals the lag fit uses (about 80 min of 1 s reads, 8 min of 100 ms ones).
const maxLagIntervals = 5000

// minContrast is the worst-to-best residual ratio below which the lag counts as unresolvable. Load changes give
// 10–22 on H100/H200 recordings; idle power's small wobble gave up to ~2 with meaningless lags.
const minContrast = 3

// lagBlocks is the number of contiguous stretches of counter intervals the jackknife leaves out in turn.
const lagBlocks = 10

// lagInterval is one counter interval of the lag fit: the increment dE between two readings at a and b.
type lagInterval struct {
	a, b trace.Stamp
	dE   float64
}

// lagStride is the step between the counter intervals the lag fit uses, for a series of n distinct readings: the
// lag is the device's, and hours of counter intervals add cost, not information, so the fit takes an even spread
// of at most maxLagIntervals.
func lagStride(n int) int { return max(1, (n-1)/maxLagIntervals) }

// lagUsable says whether the interval from a to b enters the fit: usable at every candidate lag, so all
// candidates are scored on the same data.
func lagUsable(a, b point, in *Integral) bool {
	return b.j >= a.j && in.Covers(a.t.Add(-MaxLag)) && in.Covers(b.t.Add(-MinLag))
}

// estimateLag finds the lag L in [MinLag, MaxLag] that makes each counter increment best proportional to the
// samples' energy over the same interval moved back by L (least squares, one gain for all intervals), and its
// uncertainty by a delete-a-block jackknife over the same candidate lags.
func estimateLag(pts []point, in *Integral) LagEstimate {
	stride := lagStride(len(pts))
	ivs := make([]lagInterval, 0, min(len(pts), maxLagIntervals+1))
	for i := 1; i < len(pts); i += stride {
		if a, b := pts[i-1], pts[i]; lagUsable(a, b, in) {
			ivs = append(ivs, lagInterval{a.t, b.t, b.j - a.j})
		}
	}
	return fitLag(ivs, in)
}

// fitLag scores the candidate lags on the chosen intervals; in must hold the samples around each interval.
func fitLag(ivs []lagInterval, in *Integral) LagEstimate {
	if len(ivs) < 10 {
		return LagEstimate{Intervals: len(ivs), U: UnresolvedLagU}
	}
	// block k holds intervals [edge[k], edge[k+1]).
	var edge [lagBlocks + 1]int
	for k := range edge {
		edge[k] = k * len(ivs) / lagBlocks
	}
	workers := 1
	if len(ivs) >= parallelLagIntervals {
		workers = runtime.GOMAXPROCS(0)
	}
	x := lagEnergies(ivs, in, workers)
	// Each candidate is scored on its own (in parallel for long fits: one GPU's fit was the serial part of a
	// whole-trace report on many cores), then the scores are compared in lag order as one loop would.
	scores := make([]lagScore, numLags)
	parallel.For(numLags, workers, func(c int) { scores[c] = scoreLag(ivs, x[c*len(ivs):(c+1)*len(ivs)], &edge) })
	best, worst := -1.0, 0.0
	var bestLag time.Duration
	var jkBest [lagBlocks]float64
	var jkLag [lagBlocks]time.Duration
	for k := range jkBest {
		jkBest[k] = -1
	}
	for c, sc := range scores {
		if !sc.ok {
			continue
		}
		lag := MinLag + time.Duration(c)*lagStep
		if best < 0 || sc.rss < best {
			best, bestLag = sc.rss, lag
		}
		worst = max(worst, sc.rss)
		for out := range lagBlocks {
			if sc.jkOK[out] && (jkBest[out] < 0 || sc.jk[out] < jkBest[out]) {
				jkBest[out], jkLag[out] = sc.jk[out], lag
			}
		}
	}
	return lagEstimate(len(ivs), best, worst, bestLag, jkLag)
}

// numLags is the number of candidate lags, MinLag to MaxLag by lagStep.
const numLags = int((MaxLag-MinLag)/lagStep) + 1

// parallelLagIntervals is the fit size from which candidates are scored in parallel (about 20 minutes of 1 s reads).
const parallelLagIntervals = 1000

// lagScore is one candidate lag's residual sum of squares over every interval (ok: the fit was defined) and with
// each block of intervals left out (jkOK: defined).
type lagScore struct {
	ok   bool
	rss  float64
	jk   [lagBlocks]float64
	jkOK [lagBlocks]bool
}

// lagEnergies is every interval's sampled energy at every candidate lag: x[c·n+i] for candidate c and interval i
// of n, the samples' integral from a−L to b−L. Each interval's edges walk back across the candidates (the lags are
// 5 ms apart, the samples 20 ms: a step or none), where a search per candidate and edge cost twenty probes; the
// same sample brackets as a search's, so the same values to the bit. workers share the intervals.
func lagEnergies(ivs []lagInterval, in *Integral, workers int) []float64 {
	n := len(ivs)
	x := make([]float64, numLags*n)
	last := func(ns int64) int { // the last sample at or before ns, or 0
		return max(sort.Search(len(in.ss), func(i int) bool { return int64(in.ss[i].Time) > ns })-1, 0)
	}
	parallel.For(n, workers, func(i int) {
		a, b := int64(ivs[i].a), int64(ivs[i].b)
		ka, kb := last(a-int64(MinLag)), last(b-int64(MinLag))
		for c := range numLags {
			l := int64(MinLag + time.Duration(c)*lagStep)
			for ka > 0 && in.ns(ka) > a-l {
				ka--
			}
			for kb > 0 && in.ns(kb) > b-l {
				kb--
			}
			x[c*n+i] = in.at(b-l, kb) - in.at(a-l, ka)
		}
	})
	return x
}

// scoreLag fits one gain over the intervals with their sampled energies xs at one lag, and again with each block
// left out.
func scoreLag(ivs []lagInterval, xs []float64, edge *[lagBlocks + 1]int) lagScore {
	var sc lagScore
	var sxy, sxx float64
	var bxy, bxx [lagBlocks]float64
	k := 0
	for i, v := range ivs {
		for i >= edge[k+1] {
			k++
		}
		bxy[k] += xs[i] * v.dE
		bxx[k] += xs[i] * xs[i]
	}
	for k := range bxy {
		sxy += bxy[k]
		sxx += bxx[k]
	}
	if sxx == 0 {
		return sc
	}
	// Residuals summed directly: syy - sxy²/sxx cancels catastrophically when the fit is near perfect.
	g := sxy / sxx
	for i, v := range ivs {
		r := v.dE - g*xs[i]
		sc.rss += r * r
	}
	sc.ok = true
	// The same fit with each block left out.
	for out := range lagBlocks {
		ox, oxx := sxy-bxy[out], sxx-bxx[out]
		if oxx <= 0 {
			continue
		}
		g, r2 := ox/oxx, 0.0
		for i, v := range ivs {
			if i >= edge[out] && i < edge[out+1] {
				continue
			}
			r := v.dE - g*xs[i]
			r2 += r * r
		}
		sc.jk[out], sc.jkOK[out] = r2, true
	}
	return sc
}

// lagEstimate is the fit's result from the search: the best lag where the residuals' contrast over the lags tried
// resolves one, with its jackknife uncertainty over the blocks left out.
func lagEstimate(n int, best, worst float64, bestLag time.Duration, jkLag [lagBlocks]time.Duration) LagEstimate {
	est := LagEstimate{Intervals: n, U: UnresolvedLagU}
	if best < 0 || worst == 0 {
		return est
	}
	est.Contrast = worst / max(best, worst*1e-12)
	if est.Contrast < minContrast {
		return est
	}
	est.Lag, est.OK = bestLag, true
	// Jackknife variance: (K−1)/K Σ (L_k − mean)², with the search grid's own resolution (step²/12) added.
	var mean, ss float64
	for _, l := range jkLag {
		mean += float64(l) / lagBlocks
	}
	for _, l := range jkLag {
		ss += (float64(l) - mean) * (float64(l) - mean)
	}
	step := float64(lagStep)
	est.U = time.Duration(math.Sqrt(ss*(lagBlocks-1)/lagBlocks + step*step/12))
	return est
}

// Interval is one counter interval as the hybrid allocates it: between two distinct counter values, both moved
// back by the lag, with the counter's energy over it and the samples' energy over the same span.
type Interval struct {
	Start, End trace.Stamp
	CounterJ   float64
	SampledJ   float64
}

// Ratio is the interval's counter energy over its sampled energy (NaN without sampled energy): the factor by which
// the hybrid rescales the samples inside it.
func (iv Interval) Ratio() float64 {
	if iv.SampledJ <= 0 {
		return math.NaN()
	}
	return iv.CounterJ / iv.SampledJ
}

// Intervals lists the counter intervals that overlap [t0, t1] and that the samples cover, in time order.
func (h *Hybrid) Intervals(t0, t1 time.Time) []Interval {
	n, seq := h.IntervalSeq(t0, t1)
	out := make([]Interval, 0, n)
	for iv := range seq {
		out = append(out, iv)
	}
	return out
}

// IntervalSeq yields Intervals(t0, t1) one at a time, with an upper bound on their number: a caller keeping its
// own record per interval (the aliasing check, for every run and GPU) sizes that once and skips the copy.
func (h *Hybrid) IntervalSeq(t0, t1 time.Time) (int, iter.Seq[Interval]) {
	n := len(h.pts)
	w0, w1 := trace.StampOf(t0), trace.StampOf(t1)
	f0, f1 := w0.Add(h.Lag), w1.Add(h.Lag)
	k0 := max(sort.Search(n, func(i int) bool { return h.pts[i].t.After(f0) })-1, 0)
	// At most one interval per reading from k0 to the first at or after t1.
	end := k0 + sort.Search(n-k0, func(i int) bool { return !h.pts[k0+i].t.Before(f1) })
	return min(end, n-1) - k0 + 1, func(yield func(Interval) bool) {
		cur := h.in.Cursor()
		next := -1 // the reading whose integral s1 holds: an interval's end is the next one's start
		var s1 float64
		for k := k0; k+1 < n && h.pts[k].t.Before(f1); k++ {
			a, b := h.pt(k), h.pt(k+1)
			if !b.t.After(w0) || !h.in.Covers(a.t) || !h.in.Covers(b.t) {
				continue
			}
			s0 := s1
			if next != k {
				s0 = cur.At(a.t)
			}
			s1, next = cur.At(b.t), k+1
			if !yield(Interval{Start: a.t, End: b.t, CounterJ: b.j - a.j, SampledJ: s1 - s0}) {
				return
			}
		}
	}
}
