package precision_test

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/precision"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// phaseWindows finds each phase's window plainly: from its marker to the next phase marker.
func phaseWindows(t *trace.Trace) map[string][2]time.Time {
	var ph []trace.Event
	for _, e := range t.Events {
		if e.Type == trace.EventPhase {
			ph = append(ph, e)
		}
	}
	sort.SliceStable(ph, func(i, j int) bool { return ph[i].Time.Before(ph[j].Time) })
	out := map[string][2]time.Time{}
	for i := 0; i+1 < len(ph); i++ {
		out[ph[i].Name] = [2]time.Time{ph[i].Time, ph[i+1].Time}
	}
	return out
}

// The characterisation recorded on an H200 (GPU 2, scripts/gpu/precision.py under lem-run, 2026-11-28) gives the
// tables docs/RESULTS.md §5.3 prints, within their rounding; each wave's counter, 50 Hz and hybrid energies are
// also the plain re-implementations' over the phase's markers.
func TestPrecisionRecorded(t *testing.T) {
	tr, err := trace.ReadFile(testutil.TracePath("h200-precision"))
	require.NoError(t, err)
	require.Equal(t, []int{2}, tr.GPUIndices())
	s := tr.GPUs[2]
	sq, err := precision.Squares(tr, 2)
	require.NoError(t, err)

	// RESULTS §5.3, first table: period, counter J (0.1), 50 Hz %, hybrid %, 1 s-average % (0.01), suspect of all.
	want := []struct {
		period                 float64
		counterJ, sampled, hyb float64
		avg                    float64
		suspect, intervals     int
	}{
		{6, 1596.9, 0.68, -0.55, 4.35, 9, 29},
		{10, 1622.5, 13.94, 0.25, 0.55, 28, 28},
		{20, 1901.8, -14.03, -0.02, -2.54, 29, 29},
		{40, 1598.3, -1.17, -0.45, 2.97, 16, 29},
		{100, 1607.8, -2.09, -0.51, -2.15, 12, 28},
		{400, 1451.6, -0.81, -1.10, 2.72, 4, 31},
	}
	require.Len(t, sq, len(want))
	lag, _ := account.NewMeter(s).UsedLag()
	win := phaseWindows(tr)
	for i, w := range want {
		r := sq[i]
		name := fmt.Sprintf("sq_p%gms_d50", w.period)
		assert.Equal(t, name, r.Phase)
		assert.Equal(t, 50.0, r.DutyPct)
		assert.InDelta(t, w.counterJ, float64(r.CounterJ), 0.05, "%s counter J", name)
		assert.InDelta(t, w.sampled, float64(r.SampledPct), 0.005, "%s 50 Hz %%", name)
		assert.InDelta(t, w.hyb, float64(r.HybridPct), 0.005, "%s hybrid %%", name)
		assert.InDelta(t, w.avg, float64(r.AveragePct), 0.005, "%s 1 s-average %%", name)
		assert.Equal(t, [2]int{w.suspect, w.intervals}, [2]int{r.Suspect, r.Intervals}, "%s suspect intervals", name)

		ab, ok := win[name]
		require.True(t, ok, name)
		a, b := ab[0], ab[1]
		assert.InEpsilon(t, testutil.PlainCounter(s.Counters, a, b), float64(r.CounterJ), 1e-9, "%s plain counter", name)
		assert.InEpsilon(t, testutil.PlainSampled(s.Samples, a, b), float64(r.SampledJ), 1e-9, "%s plain 50 Hz", name)
		assert.InEpsilon(t, testutil.PlainHybrid(s.Counters, s.Samples, lag, a, b), float64(r.HybridJ), 1e-6, "%s plain hybrid", name)
	}

	bs, err := precision.BurstTable(tr, 2, precision.DefaultCadences)
	require.NoError(t, err)
	// RESULTS §5.3, second table: per burst length at the native (100 ms) counter, the mean kernels, the mean energy
	// above idle, its CV, the per-kernel bias against 200 ms bursts; and the CV from the samples alone.
	type key struct {
		length  float64
		cadence string
	}
	rows := map[key]precision.BurstRow{}
	for _, r := range bs {
		rows[key{r.LengthMS, r.Cadence}] = r
	}
	for _, w := range []struct {
		length                     float64
		kernels, meanJ, meanTol    float64
		cvPct, cvTol, bias, biasTo float64
		cvSamplesPct, cvSamplesTol float64
	}{
		{10, 12, 7.28, 0.005, 27, 0.5, -0.9, 0.05, 11, 0.5},
		{50, 61, 41.5, 0.05, 7.9, 0.05, 11, 0.5, 9.8, 0.05},
		// The reference row: its bias is 0 by definition. CV 1.748 % (RESULTS: 1.75 %).
		{200, 244, 149.3, 0.05, 1.75, 0.005, 0, 1e-9, 1.3, 0.05},
	} {
		r, ok := rows[key{w.length, "native"}]
		require.True(t, ok, "%g ms at the native cadence", w.length)
		assert.Equal(t, 8, r.N, "%g ms bursts", w.length)
		assert.InDelta(t, 100.0, float64(r.CounterMS), 0.5, "%g ms: the counter's interval", w.length)
		assert.Equal(t, w.kernels, float64(r.Kernels), "%g ms kernels", w.length)
		assert.InDelta(t, w.meanJ, float64(r.MeanJ), w.meanTol, "%g ms mean J", w.length)
		assert.InDelta(t, w.cvPct, 100*float64(r.CV), w.cvTol, "%g ms CV %%", w.length)
		assert.InDelta(t, w.bias, float64(r.BiasPct), w.biasTo, "%g ms bias %%", w.length)
		so, ok := rows[key{w.length, "50 Hz only"}]
		require.True(t, ok)
		assert.InDelta(t, w.cvSamplesPct, 100*float64(so.CV), w.cvSamplesTol, "%g ms CV from the samples alone", w.length)
	}
	assert.Len(t, bs, 3*len(precision.DefaultCadences))
}

// The full characterisation recorded on an H200 (GPU 0 of a one-GPU host, precision.py at its defaults under
// lem-run, 2026-11-28) gives the figures docs/RESULTS.md §6.3 quotes: every wave's counter, 50 Hz and hybrid
// energies are the plain re-implementations' over the phase's markers, and the quoted rows hold within rounding.
func TestPrecisionFullRecorded(t *testing.T) {
	tr, err := trace.ReadFile(testutil.TracePath("h200-precision-full"))
	require.NoError(t, err)
	require.Equal(t, []int{0}, tr.GPUIndices())
	s := tr.GPUs[0]
	sq, err := precision.Squares(tr, 0)
	require.NoError(t, err)
	require.Len(t, sq, 11*3, "11 periods × 3 duty cycles")
	lag, _ := account.NewMeter(s).UsedLag()
	win := phaseWindows(tr)
	worstHybrid := 0.0
	for _, r := range sq {
		ab, ok := win[r.Phase]
		require.True(t, ok, r.Phase)
		a, b := ab[0], ab[1]
		counter := testutil.PlainCounter(s.Counters, a, b)
		assert.InEpsilon(t, counter, float64(r.CounterJ), 1e-9, "%s plain counter", r.Phase)
		assert.InEpsilon(t, testutil.PlainSampled(s.Samples, a, b), float64(r.SampledJ), 1e-9, "%s plain 50 Hz", r.Phase)
		hyb := testutil.PlainHybrid(s.Counters, s.Samples, lag, a, b)
		assert.InEpsilon(t, hyb, float64(r.HybridJ), 1e-6, "%s plain hybrid", r.Phase)
		worstHybrid = max(worstHybrid, 100*abs(hyb-counter)/counter)
	}
	// RESULTS §6.3: the hybrid within 2.9 % of the counter on every wave (worst: 200 ms at 25 % duty).
	assert.InDelta(t, 2.88, worstHybrid, 0.005)
	byName := map[string]precision.SquareRow{}
	for _, r := range sq {
		byName[r.Phase] = r
	}
	for _, w := range []struct {
		phase                  string
		counterJ, sampled, hyb float64
		suspect                int
	}{
		{"sq_p4ms_d25", 1453.2, -10.29, -1.75, 39},
		{"sq_p20ms_d25", 1652.7, -10.58, -1.32, 38},
		{"sq_p20ms_d50", 2381.5, 10.75, 0.66, 39},
		{"sq_p40ms_d25", 1346.5, -11.79, -1.79, 39},
		{"sq_p400ms_d50", 1810.6, -0.02, -0.01, 2},
	} {
		r := byName[w.phase]
		assert.InDelta(t, w.counterJ, float64(r.CounterJ), 0.05, "%s counter J", w.phase)
		assert.InDelta(t, w.sampled, float64(r.SampledPct), 0.005, "%s 50 Hz %%", w.phase)
		assert.InDelta(t, w.hyb, float64(r.HybridPct), 0.005, "%s hybrid %%", w.phase)
		assert.Equal(t, w.suspect, r.Suspect, "%s suspect intervals", w.phase)
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
