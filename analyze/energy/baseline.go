package energy

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// Baseline is the idle power of one GPU over a window.
type Baseline struct {
	Start, End time.Time
	// MedianW is the idle power subtracted from runs; the median ignores short spikes.
	MedianW float64
	P25W    float64
	P75W    float64
	N       int
	// Temperatures over the window (NaN without telemetry).
	TempMeanC, TempStartC, TempEndC float64
}

// IQRW is the interquartile range of the idle power.
func (b Baseline) IQRW() float64 { return b.P75W - b.P25W }

// MinBaselineSamples is the fewest samples a baseline may rest on (0.2 s at 50 Hz).
const MinBaselineSamples = 10

// ComputeBaseline summarises the samples and telemetry inside [t0, t1].
func ComputeBaseline(ss []trace.PowerSample, tel []trace.Telemetry, t0, t1 time.Time) (Baseline, error) {
	b := Baseline{Start: t0, End: t1, TempMeanC: math.NaN(), TempStartC: math.NaN(), TempEndC: math.NaN()}
	var ps []float64
	a0, a1 := trace.StampOf(t0), trace.StampOf(t1)
	for _, s := range ss {
		if !s.Time.Before(a0) && !s.Time.After(a1) {
			ps = append(ps, s.PowerW)
		}
	}
	if len(ps) < MinBaselineSamples {
		return b, fmt.Errorf("baseline %s .. %s: %d power samples, need at least %d",
			t0.Format(time.RFC3339Nano), t1.Format(time.RFC3339Nano), len(ps), MinBaselineSamples)
	}
	slices.Sort(ps)
	b.N = len(ps)
	b.MedianW, b.P25W, b.P75W = Quantile(ps, 0.5), Quantile(ps, 0.25), Quantile(ps, 0.75)
	var sum float64
	var n int
	for _, t := range tel {
		if t.Time.Before(a0) || t.Time.After(a1) || math.IsNaN(t.TemperatureC) {
			continue
		}
		if n == 0 {
			b.TempStartC = t.TemperatureC
		}
		b.TempEndC = t.TemperatureC
		sum += t.TemperatureC
		n++
	}
	if n > 0 {
		b.TempMeanC = sum / float64(n)
	}
	return b, nil
}

// Quantile returns the q-quantile of sorted values by linear interpolation between order statistics
// (Hyndman & Fan type 7, the default of R and NumPy).
func Quantile(sorted []float64, q float64) float64 {
	return type7(len(sorted), q,
		func(k int) (float64, float64) { return sorted[k], sorted[k+1] },
		func() float64 { return sorted[len(sorted)-1] })
}

// Adjust subtracts idle power over d from raw energy. The result never goes below zero; clamped says it was
// clamped (the workload used less than the baseline: the baseline was not idle, or the GPU changed state).
func Adjust(rawJ, idleW float64, d time.Duration) (adjusted float64, clamped bool) {
	adj := rawJ - idleW*d.Seconds()
	if adj < 0 {
		return 0, true
	}
	return adj, false
}
