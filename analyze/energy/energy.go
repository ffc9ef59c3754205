// Package energy turns counter readings and 50 Hz power samples into joules over time windows: counter
// interpolation, trapezoid integration of samples, the hybrid of both, baselines and idle adjustment.
// docs/METHODOLOGY.md explains each method and its error terms. Everything here is pure: no IO, no clocks.
package energy

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"time"

	"github.com/lem-energy/lem/internal/parallel"
	"github.com/lem-energy/lem/internal/trace"
)

// ErrNoCoverage means the data does not cover the requested window.
var ErrNoCoverage = errors.New("data does not cover the window")

// DefaultSamplePeriod is the driver's power-sample period.
const DefaultSamplePeriod = 20 * time.Millisecond

// point is a counter value in joules on a continuous (reset-free) scale.
type point struct {
	t trace.Stamp
	j float64
}

// normalize turns counter readings (in time order) into a continuous joule scale: after a reset (driver reload)
// or wrap the counter restarts near zero, so later values are offset by the last value seen before it. The energy
// spent between the last read before the reset and the reset itself is unknowable and is lost; resets counts them.
func normalize(cs []trace.CounterReading) (pts []point, resets int) {
	return counterPoints(cs, false)
}

// distinctPoints is normalize of the readings with each run of equal values cut to its first (the value appeared
// at or before that read): the hybrid's points of a whole series without a deduplicated copy of its readings.
func distinctPoints(cs []trace.CounterReading) (pts []point, resets int) {
	return counterPoints(cs, true)
}

// counterPoints is normalize, or distinctPoints when distinct, in one pass and one exact allocation. A repeat
// equals the reading kept before it, so comparing each reading with its predecessor finds the same resets and
// offsets either way.
func counterPoints(cs []trace.CounterReading, distinct bool) (pts []point, resets int) {
	n := len(cs)
	if distinct {
		n = 0
		for i, c := range cs {
			if i == 0 || c.EnergyMJ != cs[i-1].EnergyMJ {
				n++
			}
		}
	}
	pts = make([]point, 0, n)
	var offset float64
	for i, c := range cs {
		if i > 0 {
			if distinct && c.EnergyMJ == cs[i-1].EnergyMJ {
				continue
			}
			if c.EnergyMJ < cs[i-1].EnergyMJ {
				resets++
				offset += cs[i-1].Joules()
			}
		}
		pts = append(pts, point{c.Time, c.Joules() + offset})
	}
	return pts, resets
}

// readingsAt is valueAt(normalize(cs), t) for t within the readings, without the normalized copy (a window per
// run, phase and GPU): the same offsets summed in the same order, so the same value to the bit.
func readingsAt(cs []trace.CounterReading, t trace.Stamp) float64 {
	i := sort.Search(len(cs), func(i int) bool { return !cs[i].Time.Before(t) })
	var offset float64 // normalize's offset at reading i-1
	for k := 1; k < i; k++ {
		if cs[k].EnergyMJ < cs[k-1].EnergyMJ {
			offset += cs[k-1].Joules()
		}
	}
	if i == 0 {
		return cs[0].Joules() + offset
	}
	a := cs[i-1].Joules() + offset
	if cs[i].EnergyMJ < cs[i-1].EnergyMJ {
		offset += cs[i-1].Joules()
	}
	b := cs[i].Joules() + offset
	if cs[i].Time.Equal(t) {
		return b
	}
	f := float64(t.Sub(cs[i-1].Time)) / float64(cs[i].Time.Sub(cs[i-1].Time))
	return a + f*(b-a)
}

// CounterResult is the counter's energy over a window.
type CounterResult struct {
	Joules float64
	// Updates is how many times the counter's value changed inside the window: fewer than 3 means the window
	// is too short for the counter's ~100 ms update period to resolve.
	Updates int
	// Resets is how many counter resets fall inside the window (energy around each is lost).
	Resets int
}

// Counter returns the energy over [t0, t1] from counter readings, interpolated linearly between reads.
func Counter(cs []trace.CounterReading, t0, t1 time.Time) (CounterResult, error) {
	if !t1.After(t0) {
		return CounterResult{}, fmt.Errorf("empty window %s .. %s", t0.Format(time.RFC3339Nano), t1.Format(time.RFC3339Nano))
	}
	// Only the reads from the last at or before t0 to the first at or after t1 matter (a reset offset before
	// them cancels in the difference): long traces cost O(log n) per window.
	a0, a1 := trace.StampOf(t0), trace.StampOf(t1)
	lo := sort.Search(len(cs), func(i int) bool { return cs[i].Time.After(a0) }) - 1
	hi := sort.Search(len(cs), func(i int) bool { return !cs[i].Time.Before(a1) })
	if lo < 0 || hi >= len(cs) {
		pts, _ := normalize(cs)
		return CounterResult{}, fmt.Errorf("counter readings %s: %w", coverage(pts), ErrNoCoverage)
	}
	cs = cs[lo : hi+1]
	a, b := readingsAt(cs, a0), readingsAt(cs, a1)
	r := CounterResult{Joules: math.Max(b-a, 0)}
	for i := 1; i < len(cs); i++ {
		if cs[i].Time.Before(a0) || cs[i].Time.After(a1) {
			continue
		}
		if cs[i].EnergyMJ != cs[i-1].EnergyMJ {
			r.Updates++
		}
		if cs[i].EnergyMJ < cs[i-1].EnergyMJ {
			r.Resets++
		}
	}
	return r, nil
}

func coverage(pts []point) string {
	if len(pts) == 0 {
		return "none"
	}
	return fmt.Sprintf("cover %s .. %s", pts[0].t.Format(time.RFC3339Nano), pts[len(pts)-1].t.Format(time.RFC3339Nano))
}

// SampledResult is the energy of 50 Hz samples over a window.
type SampledResult struct {
	Joules float64
	// N is the number of samples inside the window.
	N int
	// Gaps counts sample intervals longer than twice the period inside the window; GapTime is their total
	// length beyond one period each (time bridged by interpolation).
	Gaps    int
	GapTime time.Duration
}

// powerAt interpolates the sample power at t (ss in time order, t within their span).
func powerAt(ss []trace.PowerSample, t trace.Stamp) float64 {
	i := sort.Search(len(ss), func(i int) bool { return !ss[i].Time.Before(t) })
	if i == 0 {
		return ss[0].PowerW
	}
	if i == len(ss) {
		return ss[len(ss)-1].PowerW
	}
	a, b := ss[i-1], ss[i]
	if b.Time.Equal(t) {
		return b.PowerW
	}
	f := float64(t.Sub(a.Time)) / float64(b.Time.Sub(a.Time))
	return a.PowerW + f*(b.PowerW-a.PowerW)
}

// Sampled integrates the samples over [t0, t1] with the trapezoid rule, the edges interpolated exactly.
func Sampled(ss []trace.PowerSample, t0, t1 time.Time) (SampledResult, error) {
	if !t1.After(t0) {
		return SampledResult{}, fmt.Errorf("empty window %s .. %s", t0.Format(time.RFC3339Nano), t1.Format(time.RFC3339Nano))
	}
	n := len(ss)
	a0, a1 := trace.StampOf(t0), trace.StampOf(t1)
	if n < 2 || a0.Before(ss[0].Time) || a1.After(ss[n-1].Time) {
		var cov string
		if n > 0 {
			cov = fmt.Sprintf(" (samples cover %s .. %s)", ss[0].Time.Format(time.RFC3339Nano), ss[n-1].Time.Format(time.RFC3339Nano))
		}
		return SampledResult{}, fmt.Errorf("power samples%s: %w", cov, ErrNoCoverage)
	}
	var r SampledResult
	i := sort.Search(n, func(i int) bool { return ss[i].Time.After(a0) })
	prevT, prevP := a0, powerAt(ss, a0)
	for ; i < n && !ss[i].Time.After(a1); i++ {
		r.N++
		r.Joules += trapezoid(prevT, prevP, ss[i].Time, ss[i].PowerW)
		if i > 0 {
			if d := ss[i].Time.Sub(ss[i-1].Time); d > 2*DefaultSamplePeriod {
				r.Gaps++
				r.GapTime += d - DefaultSamplePeriod
			}
		}
		prevT, prevP = ss[i].Time, ss[i].PowerW
	}
	r.Joules += trapezoid(prevT, prevP, a1, powerAt(ss, a1))
	return r, nil
}

func trapezoid(t0 trace.Stamp, p0 float64, t1 trace.Stamp, p1 float64) float64 {
	return (p0 + p1) / 2 * t1.Sub(t0).Seconds()
}

// Integral is the running integral of the samples, for O(log n) energy over any window (O(1) amortised for
// ascending queries through a Cursor). It reads the samples in place: a copy of their times and powers was a
// quarter of a whole read's memory.
type Integral struct {
	ss []trace.PowerSample // the samples, never written (the caller's)
	// The joules from the first sample to sample i are base[i>>shift] + own[i]: a block's running sum from zero on
	// the sum of the blocks before it.
	own   []float64
	base  []float64
	shift uint
}

// NewIntegral precomputes the running integral of ss (in time order). ss must not change while it is used.
//
// The sum runs in blocks of integralBlock samples: each block's own running sum from zero, then the blocks' bases
// one after the other; a value is its block's base plus its own sum. The blocks run in parallel (a whole series'
// serial sum was the part of a large report no core could share), and the rounding is the blocks', whatever the
// cores: the streamed lag fit (LagStream) sums the same way and gets the same numbers.
func NewIntegral(ss []trace.PowerSample) *Integral {
	n := len(ss)
	blocks := max((n+integralBlock-1)/integralBlock, 1)
	in := &Integral{ss: ss, own: make([]float64, n), base: make([]float64, blocks), shift: integralShift}
	ends := make([]float64, blocks) // block b's increments, to the first sample of block b+1 included
	parallel.For(blocks, runtime.GOMAXPROCS(0), func(b int) {
		lo, hi := b*integralBlock, min((b+1)*integralBlock, n)
		for i := lo + 1; i < hi; i++ {
			in.own[i] = in.own[i-1] + increment(ss[i-1], ss[i])
		}
		if hi < n {
			ends[b] = in.own[hi-1] + increment(ss[hi-1], ss[hi])
		}
	})
	for b := 1; b < blocks; b++ {
		in.base[b] = in.base[b-1] + ends[b-1]
	}
	return in
}

// cum is the integral from the first sample to sample i.
func (in *Integral) cum(i int) float64 { return in.base[i>>in.shift] + in.own[i] }

// integralBlock is the samples of one block of NewIntegral's sum (about 5 min at 50 Hz).
const (
	integralShift = 14
	integralBlock = 1 << integralShift
)

// increment is the trapezoid's energy from sample a to sample b, joules.
func increment(a, b trace.PowerSample) float64 {
	return (a.PowerW + b.PowerW) / 2 * float64(int64(b.Time)-int64(a.Time)) / 1e9
}

// ns is sample i's time in Unix nanoseconds.
func (in *Integral) ns(i int) int64 { return int64(in.ss[i].Time) }

// Covers reports whether t lies within the samples.
func (in *Integral) Covers(t trace.Stamp) bool {
	n := len(in.ss)
	return n >= 2 && t >= in.ss[0].Time && t <= in.ss[n-1].Time
}

// at is the integral up to ns given k, the last sample at or before ns.
func (in *Integral) at(ns int64, k int) float64 {
	n := len(in.ss)
	if n < 2 || ns <= in.ns(0) {
		return 0
	}
	if ns >= in.ns(n-1) {
		return in.cum(n - 1)
	}
	a, b := in.ss[k], in.ss[k+1]
	t0, t1 := int64(a.Time), int64(b.Time)
	p0 := a.PowerW
	p := p0 + float64(ns-t0)/float64(t1-t0)*(b.PowerW-p0)
	return in.cum(k) + (p0+p)/2*float64(ns-t0)/1e9
}

// At returns the integral from the first sample to t (t clamped to the samples' span).
func (in *Integral) At(t trace.Stamp) float64 {
	k := sort.Search(len(in.ss), func(i int) bool { return in.ss[i].Time > t }) - 1
	return in.at(int64(t), max(k, 0))
}

// Cursor answers At for ascending times in amortised constant time.
type Cursor struct {
	in *Integral
	k  int
}

// Cursor starts a cursor at the first sample.
func (in *Integral) Cursor() *Cursor { return &Cursor{in: in} }

// At is Integral.At for a time not before the previous call's.
func (c *Cursor) At(t trace.Stamp) float64 { return c.atNS(int64(t)) }

func (c *Cursor) atNS(ns int64) float64 {
	xs, t := c.in.ss, trace.Stamp(ns)
	// Gallop forward from the last position, then binary-search the bracket: sparse queries over long series
	// cost O(log gap), dense ones O(1).
	lo, step := c.k, 1
	for lo+step < len(xs) && xs[lo+step].Time <= t {
		lo += step
		step *= 2
	}
	hi := min(lo+step, len(xs))
	c.k = lo + sort.Search(hi-lo, func(i int) bool { return xs[lo+i].Time > t }) - 1
	c.k = max(c.k, 0)
	return c.in.at(ns, c.k)
}
