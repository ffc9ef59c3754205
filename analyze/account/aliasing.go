package account

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// The aliasing check (docs/METHODOLOGY.md, "Aliasing and short phases"). The hybrid rescales the 50 Hz samples
// inside each counter interval by that interval's counter/sampled energy ratio, so totals hold whatever the
// samples miss; what the samples get wrong shows as intervals whose ratio departs from the run's. The noise of
// the ratio (counter update jitter, read timing) differs with the read cadence and the host, so the threshold is
// the run's own: a robust spread, not a constant.
const (
	// AliasZ is the modified z-score beyond which an interval's ratio is an outlier (Iglewicz and Hoaglin's
	// 3.5, on 1.4826·MAD, the normal-equivalent spread).
	AliasZ = 3.5
	// AliasFloor is the smallest relative departure that counts: the per-level medians of the ratio on the
	// shared H200 and H100 recordings agree within 0.3 % from idle to full load, so below 1 % a departure says
	// nothing about the load; with 1 s reads the MAD alone would put the threshold near 0.3 %.
	AliasFloor = 0.01
	// AliasMinSuspect and AliasMinFraction flag a phase: at least 3 suspect intervals inside it, and at least
	// 5 % of them — twice the 2.7 % of intervals a Laplace-distributed (heavier-tailed than normal) ratio noise
	// leaves beyond the threshold, so chance outliers (a read's timing slip) do not flag a phase.
	AliasMinSuspect  = 3
	AliasMinFraction = 0.05
	// ShortPhaseFloor is the shortest phase the data resolves even with dense counter reads: the counter updates
	// about every 100 ms, so a shorter phase always lies inside one counter interval.
	ShortPhaseFloor = 100 * time.Millisecond
)

// IntervalCheck is one counter interval checked against the run's median ratio.
type IntervalCheck struct {
	energy.Interval
	// Deviation is the interval's ratio over the run's median, minus 1.
	Deviation float64
	Suspect   bool
}

// AliasCheck is one GPU's samples checked against its counter, interval by interval, over a run.
type AliasCheck struct {
	Intervals []IntervalCheck
	// Median is the median counter/sampled ratio; Spread its robust relative spread (1.4826·MAD/median);
	// Threshold the relative departure beyond which an interval is suspect: max(AliasZ·Spread, AliasFloor).
	Median, Spread, Threshold float64
	Suspect                   int
	MaxDeviation              float64
	// Typical is the median length of a counter interval: what one counter reading resolves on this trace.
	Typical time.Duration
}

// CheckAliasing checks the hybrid's counter intervals that overlap [start, end]. Fewer than three intervals give
// an empty check (nothing to compare with).
func CheckAliasing(h *energy.Hybrid, start, end time.Time) AliasCheck {
	var c AliasCheck
	n, ivs := h.IntervalSeq(start, end)
	// One scratch array for the ratios, their sorted copy and the lengths (then the deviations), and the checks
	// filled straight from the hybrid's intervals: a check per run and GPU, thousands in a recording's report.
	sp := pooled[float64](&checkScratch, 3*n)
	defer checkScratch.Put(sp)
	scratch := (*sp)[:3*n]
	rs, sorted, lens := scratch[:0:n], scratch[n:n], scratch[2*n:2*n]
	c.Intervals = (*pooled[IntervalCheck](&checkArrays, n))[:0]
	for iv := range ivs {
		if r := iv.Ratio(); !math.IsNaN(r) && iv.CounterJ > 0 {
			c.Intervals = append(c.Intervals, IntervalCheck{Interval: iv})
			rs = append(rs, r)
			lens = append(lens, float64(iv.End.Sub(iv.Start)))
		}
	}
	if len(rs) < 3 {
		ReleaseChecks(map[int]AliasCheck{0: c})
		c.Intervals = nil
		return c
	}
	c.Median = median(append(sorted[:0], rs...))
	c.Typical = time.Duration(median(lens))
	dev := lens[:len(rs)] // the lengths are no longer needed
	for i, r := range rs {
		dev[i] = math.Abs(r - c.Median)
	}
	c.Spread = 1.4826 * median(dev) / c.Median
	c.Threshold = max(AliasZ*c.Spread, AliasFloor)
	for i := range c.Intervals {
		iv := &c.Intervals[i]
		iv.Deviation = rs[i]/c.Median - 1
		c.MaxDeviation = max(c.MaxDeviation, math.Abs(iv.Deviation))
		if math.Abs(iv.Deviation) > c.Threshold {
			iv.Suspect = true
			c.Suspect++
		}
	}
	return c
}

// Arrays of the checks and their scratch, reused: a report checks every run and GPU, and under the batch tool's
// rare collections fresh arrays for each were fresh pages, their faults costing more than the check.
var checkArrays, checkScratch sync.Pool // *[]IntervalCheck, *[]float64

// pooled is an array of at least n elements from p (its contents whatever the last user left).
func pooled[T any](p *sync.Pool, n int) *[]T {
	if x, ok := p.Get().(*[]T); ok && cap(*x) >= n {
		*x = (*x)[:n]
		return x
	}
	x := make([]T, n)
	return &x
}

// ReleaseChecks hands the checks' interval arrays back for later checks: nothing may read them after. Checks
// holding the same array (copies of one check, in several sets) hand it back once.
func ReleaseChecks(sets ...map[int]AliasCheck) {
	seen := map[*IntervalCheck]bool{}
	for _, set := range sets {
		for _, c := range set {
			if cap(c.Intervals) == 0 {
				continue
			}
			a := c.Intervals[:cap(c.Intervals)]
			if p := &a[0]; !seen[p] {
				seen[p] = true
				checkArrays.Put(&a)
			}
		}
	}
}

// median of xs (xs is reordered).
func median(xs []float64) float64 {
	n := len(xs)
	if n%2 == 1 {
		m, _ := energy.OrderStats(xs, n/2)
		return m
	}
	a, b := energy.OrderStats(xs, n/2-1)
	return (a + b) / 2
}

// Inside counts the intervals lying wholly inside [a, b] (a phase's own; the ones across its edges belong to the
// boundary and lag terms), how many are suspect, and the largest departure among the suspect ones.
func (c AliasCheck) Inside(at, bt time.Time) (n, suspect int, worst float64) {
	a, b := trace.StampOf(at), trace.StampOf(bt)
	k := sort.Search(len(c.Intervals), func(i int) bool { return !c.Intervals[i].Start.Before(a) })
	for ; k < len(c.Intervals) && !c.Intervals[k].End.After(b); k++ {
		n++
		if iv := c.Intervals[k]; iv.Suspect {
			suspect++
			if math.Abs(iv.Deviation) > math.Abs(worst) {
				worst = iv.Deviation
			}
		}
	}
	return n, suspect, worst
}

// Overlap returns the checked intervals that overlap [a, b].
func (c AliasCheck) Overlap(at, bt time.Time) []IntervalCheck {
	a, b := trace.StampOf(at), trace.StampOf(bt)
	k := sort.Search(len(c.Intervals), func(i int) bool { return c.Intervals[i].End.After(a) })
	j := k
	for j < len(c.Intervals) && c.Intervals[j].Start.Before(b) {
		j++
	}
	return c.Intervals[k:j]
}

// Around returns the checked intervals that overlap [a, b] without lying wholly inside it: where a window's edges
// fall, so where its energy is placed by the samples' shape rather than by counter readings.
func (c AliasCheck) Around(at, bt time.Time) []IntervalCheck {
	a, b := trace.StampOf(at), trace.StampOf(bt)
	var out []IntervalCheck
	for _, iv := range c.Overlap(at, bt) {
		if iv.Start.Before(a) || iv.End.After(b) {
			out = append(out, iv)
		}
	}
	return out
}

// Flagged says whether n intervals of which suspect are suspect flag a phase (AliasMinSuspect, AliasMinFraction).
func Flagged(n, suspect int) bool {
	return suspect >= AliasMinSuspect && float64(suspect) >= AliasMinFraction*float64(n)
}

// ShortPhase is the shortest phase occurrence the data resolves with a check's counter cadence: one counter
// interval, and never less than ShortPhaseFloor. A shorter phase lies inside one or two counter intervals, so its
// energy is placed by the samples' shape alone.
func (c AliasCheck) ShortPhase() time.Duration {
	return max(c.Typical, ShortPhaseFloor)
}

// manifestAliasing is the check's summary for the manifest.
func (c AliasCheck) manifestAliasing() *manifest.Aliasing {
	if len(c.Intervals) == 0 {
		return nil
	}
	return &manifest.Aliasing{Intervals: len(c.Intervals), Suspect: c.Suspect,
		Fraction: float64(c.Suspect) / float64(len(c.Intervals)), MedianRatio: c.Median, Spread: c.Spread,
		Threshold: c.Threshold, MaxDeviation: c.MaxDeviation}
}

// aliasing checks every hybrid GPU's samples against its counter over the run, records each check in the manifest
// and flags the phases (or, without phases, the run) where suspect intervals are more than chance: warning
// aliasing_suspected per GPU, naming the phases, how many intervals and how far.
func (a *accounting) aliasing(occ map[string][]trace.Phase) {
	m := a.m
	for i := range m.GPUs {
		mg := &m.GPUs[i]
		ck, ok := a.checks[mg.Index]
		if !ok {
			continue
		}
		mg.Aliasing = ck.manifestAliasing()
		if mg.Aliasing == nil || mg.Role == manifest.RoleObserved {
			continue
		}
		idx := mg.Index
		var found []string
		if len(m.Phases) == 0 {
			if n, s, worst := ck.Inside(a.in.Start, a.in.End); Flagged(n, s) {
				found = append(found, fmt.Sprintf("the run (%d of %d intervals, up to %+.1f %%)", s, n, 100*worst))
			}
		}
		for j := range m.Phases {
			p := &m.Phases[j]
			var n, s int
			var worst float64
			for _, o := range occ[p.Name] {
				on, os, ow := ck.Inside(o.Start, o.End)
				n, s = n+on, s+os
				if math.Abs(ow) > math.Abs(worst) {
					worst = ow
				}
			}
			if Flagged(n, s) {
				p.Aliasing = true
				found = append(found, fmt.Sprintf("%s (%d of %d intervals, up to %+.1f %%)", p.Name, s, n, 100*worst))
			}
		}
		if len(found) > 0 {
			a.warn("aliasing_suspected", &idx, "GPU %d: the 50 Hz samples disagree with the counter beyond the noise "+
				"(threshold ±%.1f %% of the median ratio) in %s: a load faster than the 20 ms sampling is aliased; totals "+
				"and whole counter intervals hold (the counter), energy placed inside an interval may not",
				idx, 100*ck.Threshold, strings.Join(found, ", "))
		}
	}
}

// shortPhases flags phases with an occurrence shorter than the data resolves on the workload GPUs (the longest
// ShortPhase among them): warning short_phase, once per phase name.
func (a *accounting) shortPhases(gpus []GPU, occ map[string][]trace.Phase) {
	var limit time.Duration
	for _, g := range gpus {
		if ck, ok := a.checks[g.Index]; ok && g.Role != manifest.RoleObserved {
			limit = max(limit, ck.ShortPhase())
		}
	}
	if limit == 0 {
		return // no counter intervals: nothing says what the data resolves
	}
	for j := range a.m.Phases {
		p := &a.m.Phases[j]
		short, shortest := 0, time.Duration(math.MaxInt64)
		for _, o := range occ[p.Name] {
			if d := o.End.Sub(o.Start); d < limit {
				short++
				shortest = min(shortest, d)
			}
		}
		if short > 0 {
			p.Short = true
			a.warn("short_phase", nil, "phase %s: %d of %d occurrence(s) shorter than one counter interval (%s), the "+
				"shortest %s: its energy is placed by the 50 Hz samples' shape alone (see its aliasing term)",
				p.Name, short, len(occ[p.Name]), limit.Round(time.Millisecond), shortest.Round(time.Millisecond))
		}
	}
}
