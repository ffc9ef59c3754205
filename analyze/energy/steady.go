package energy

import (
	"math"
	"sort"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// Steady is the steady-state part of a window: the longest stretch where power has settled.
type Steady struct {
	Found      bool
	Start, End time.Time
	MeanW      float64 // mean power over the stretch: the steady energy rate in J/s
	CV         float64 // coefficient of variation of the power over the stretch
}

// SteadyOptions tune FindSteady.
type SteadyOptions struct {
	Window time.Duration // rolling window (default 2 s)
	MaxCV  float64       // a window is settled when its power CV is below this (default 0.05)
	MinLen time.Duration // shortest stretch worth reporting (default half a window)
}

// FindSteady finds, within [t0, t1], the longest stretch in which every rolling window of samples has a
// coefficient of variation under MaxCV, from the centre of the first such window to the centre of the last:
// ramp-up and tail are excluded, as serving benchmarks report steady-state power. Found is false when no such
// stretch lasts MinLen.
func FindSteady(ss []trace.PowerSample, t0, t1 time.Time, o SteadyOptions) Steady {
	if o.Window <= 0 {
		o.Window = 2 * time.Second
	}
	if o.MaxCV <= 0 {
		o.MaxCV = 0.05
	}
	if o.MinLen <= 0 {
		o.MinLen = o.Window / 2
	}
	a0, a1 := trace.StampOf(t0), trace.StampOf(t1)
	lo := sort.Search(len(ss), func(i int) bool { return !ss[i].Time.Before(a0) })
	hi := sort.Search(len(ss), func(i int) bool { return ss[i].Time.After(a1) })
	w := ss[lo:hi]
	if len(w) < 3 {
		return Steady{}
	}
	// settled[i]: the window starting at sample i is settled.
	type seg struct{ a, b int } // sample index range [a, b]
	var best, cur seg
	in := false
	j := 0
	var sum, sq float64
	for i := range w {
		for j < len(w) && w[j].Time.Sub(w[i].Time) < o.Window {
			sum += w[j].PowerW
			sq += w[j].PowerW * w[j].PowerW
			j++
		}
		if w[j-1].Time.Sub(w[i].Time) < o.Window*9/10 { // window runs past the data
			break
		}
		n := float64(j - i)
		mean := sum / n
		cv := math.Sqrt(max(sq/n-mean*mean, 0)) / mean
		if mean > 0 && cv < o.MaxCV {
			// The stretch runs between the centres of the first and last settled windows: a window that only
			// grazes the ramp or the tail still settles, its centre does not reach them.
			c := (i + j - 1) / 2
			if !in {
				cur, in = seg{c, c}, true
			}
			cur.b = c
			if w[cur.b].Time.Sub(w[cur.a].Time) > w[best.b].Time.Sub(w[best.a].Time) {
				best = cur
			}
		} else {
			in = false
		}
		sum -= w[i].PowerW
		sq -= w[i].PowerW * w[i].PowerW
	}
	if w[best.b].Time.Sub(w[best.a].Time) < o.MinLen {
		return Steady{}
	}
	var s, q float64
	for _, x := range w[best.a : best.b+1] {
		s += x.PowerW
		q += x.PowerW * x.PowerW
	}
	n := float64(best.b - best.a + 1)
	mean := s / n
	return Steady{Found: true, Start: w[best.a].Time.Time(), End: w[best.b].Time.Time(), MeanW: mean,
		CV: math.Sqrt(math.Max(q/n-mean*mean, 0)) / mean}
}
