package energy_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// The per-phase table of shared/traces/README.md for the real H200 known-shape recording.
var shapeTable = []struct {
	phase            string
	counter, sampled float64
}{
	{"idle1", 482.0, 482.4},
	{"heavy", 2654.4, 2702.0},
	{"idle2", 544.6, 498.3},
	{"medium", 2037.8, 2057.9},
	{"idle3", 518.5, 488.4},
}

func loadShape(t *testing.T) (*trace.Trace, []trace.Phase) {
	t.Helper()
	tr, err := trace.ReadFile(testutil.TracePath("h200-shape"))
	require.NoError(t, err)
	_, end := tr.Span()
	phases := trace.Phases(tr.Events, end)
	require.Len(t, phases, len(shapeTable))
	return tr, phases
}

func TestShapeAcceptance(t *testing.T) {
	tr, phases := loadShape(t)
	s := tr.GPUs[0]
	rows, lag := energy.ByPhase(0, s, phases, energy.Options{})
	require.True(t, lag.OK)
	// The recording's counter lags its samples by ~85 ms at load changes (shared/traces/README.md).
	assert.InDelta(t, 85, lag.Lag.Seconds()*1000, 20, "estimated counter lag, ms")

	var hybridSum float64
	for i, want := range shapeTable {
		r := rows[i]
		assert.Equal(t, want.phase, r.Phase)
		assert.InDelta(t, want.counter, r.CounterJ, 0.5, "%s counter", want.phase)
		assert.InDelta(t, want.sampled, r.SampledJ, 1.0, "%s 50 Hz", want.phase)
		assert.GreaterOrEqual(t, r.CounterUpdates, 39, "%s: counter updates every ~100 ms", want.phase)
		hybridSum += r.HybridJ
	}
	// Hybrid phases partition the trace: they sum to the counter's total over the same span.
	total, err := energy.Counter(s.Counters, phases[0].Start, phases[len(phases)-1].End)
	require.NoError(t, err)
	assert.InDelta(t, total.Joules, hybridSum, total.Joules*0.001, "hybrid sum vs counter total")
	// And the hybrid follows the samples at the boundaries: heavy gets the energy the counter shows late.
	assert.InDelta(t, rows[1].SampledJ, rows[1].HybridJ, 0.01*rows[1].SampledJ, "heavy hybrid ≈ 50 Hz shape")
	assert.Greater(t, rows[1].HybridJ, rows[1].CounterJ+30)
}

func TestHybridPartitionsAnyWindows(t *testing.T) {
	tr, phases := loadShape(t)
	s := tr.GPUs[0]
	t0, t1 := phases[0].Start, phases[len(phases)-1].End
	h, err := energy.NewHybrid(s.Counters, s.Samples, 85*time.Millisecond)
	require.NoError(t, err)
	whole, err := h.Energy(t0, t1)
	require.NoError(t, err)
	// 37 ms slices, deliberately off the 20 ms and 100 ms grids.
	var sum float64
	for a := t0; a.Before(t1); a = a.Add(37 * time.Millisecond) {
		b := a.Add(37 * time.Millisecond)
		if b.After(t1) {
			b = t1
		}
		r, err := h.Energy(a, b)
		require.NoError(t, err)
		require.GreaterOrEqual(t, r.Joules, 0.0)
		sum += r.Joules
	}
	assert.InDelta(t, whole.Joules, sum, 1e-6*whole.Joules)
}

func at(ms int) time.Time { return time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond) }

func TestSampledTrapezoidExactEdges(t *testing.T) {
	// Power ramps 100 W → 200 W over 1 s: the energy over [0.25 s, 0.75 s] is exactly 75 J.
	var ss []trace.PowerSample
	for ms := 0; ms <= 1000; ms += 20 {
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(at(ms)), PowerW: 100 + float64(ms)/10})
	}
	r, err := energy.Sampled(ss, at(250), at(750))
	require.NoError(t, err)
	assert.InDelta(t, 75.0, r.Joules, 1e-9)
	assert.Equal(t, 25, r.N)
	assert.Zero(t, r.Gaps)

	// Dropping 4 samples leaves a 120 ms interval: one gap, 100 ms beyond the normal period, bridged linearly.
	holed := append(append([]trace.PowerSample{}, ss[:10]...), ss[15:]...)
	r, err = energy.Sampled(holed, at(0), at(1000))
	require.NoError(t, err)
	assert.Equal(t, 1, r.Gaps)
	assert.Equal(t, 100*time.Millisecond, r.GapTime)
	assert.InDelta(t, 150.0, r.Joules, 1e-9, "linear power: bridging is exact")

	_, err = energy.Sampled(ss, at(-10), at(500))
	assert.ErrorIs(t, err, energy.ErrNoCoverage)
	_, err = energy.Sampled(ss, at(500), at(500))
	assert.Error(t, err)
}

func TestCounterInterpolationAndResets(t *testing.T) {
	cs := []trace.CounterReading{
		{Time: trace.StampOf(at(0)), EnergyMJ: 10_000},
		{Time: trace.StampOf(at(100)), EnergyMJ: 20_000},
		{Time: trace.StampOf(at(200)), EnergyMJ: 30_000},
		{Time: trace.StampOf(at(300)), EnergyMJ: 5_000}, // driver reload: restarted from 0
		{Time: trace.StampOf(at(400)), EnergyMJ: 15_000},
	}
	cases := []struct {
		name    string
		t0, t1  int
		want    float64
		resets  int
		updates int
	}{
		{"inside one interval", 25, 75, 5, 0, 0},
		{"across reads", 50, 150, 10, 0, 1},
		{"across the reset", 150, 400, 5 + 5 + 10, 1, 3}, // 5 J to the last read, 5 J since the restart, 10 J after
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := energy.Counter(cs, at(tc.t0), at(tc.t1))
			require.NoError(t, err)
			assert.InDelta(t, tc.want, r.Joules, 1e-9)
			assert.Equal(t, tc.resets, r.Resets)
			assert.Equal(t, tc.updates, r.Updates)
		})
	}
	_, err := energy.Counter(cs, at(-1), at(100))
	assert.ErrorIs(t, err, energy.ErrNoCoverage)
}

func TestHybridAllocatesByShape(t *testing.T) {
	// The counter says 10 J between 0 and 100 ms; samples say all power came in the second half.
	cs := []trace.CounterReading{{Time: trace.StampOf(at(0)), EnergyMJ: 0}, {Time: trace.StampOf(at(100)), EnergyMJ: 10_000}, {Time: trace.StampOf(at(200)), EnergyMJ: 20_000}}
	var ss []trace.PowerSample
	for ms := 0; ms <= 200; ms += 10 {
		p := 0.0
		if ms >= 50 {
			p = 100
		}
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(at(ms)), PowerW: p})
	}
	h, err := energy.NewHybrid(cs, ss, 0)
	require.NoError(t, err)
	first, err := h.Energy(at(0), at(40))
	require.NoError(t, err)
	assert.InDelta(t, 0, first.Joules, 1e-9, "no power before 40 ms")
	second, err := h.Energy(at(60), at(100))
	require.NoError(t, err)
	// Sampled energy over [0,100] ms is 0.5 J (the 40-50 ms ramp) + 5 J; [60,100] holds 4 J of it.
	assert.InDelta(t, 10*4/5.5, second.Joules, 1e-9)
}

func TestBaselineAndAdjust(t *testing.T) {
	var ss []trace.PowerSample
	for i, p := range []float64{80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 300} { // one spike
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(at(20 * i)), PowerW: p})
	}
	tel := []trace.Telemetry{trace.NewTelemetry(trace.StampOf(at(0))), trace.NewTelemetry(trace.StampOf(at(100)))}
	tel[0].TemperatureC, tel[1].TemperatureC = 30, 32
	b, err := energy.ComputeBaseline(ss, tel, at(0), at(200))
	require.NoError(t, err)
	assert.Equal(t, 85.0, b.MedianW, "median ignores the spike")
	assert.Equal(t, 11, b.N)
	assert.InDelta(t, 5.0, b.IQRW(), 1e-9)
	assert.Equal(t, 31.0, b.TempMeanC)
	assert.Equal(t, 32.0, b.TempEndC)

	_, err = energy.ComputeBaseline(ss[:3], nil, at(0), at(200))
	assert.Error(t, err)

	adj, clamped := energy.Adjust(1000, 85, 10*time.Second)
	assert.InDelta(t, 150, adj, 1e-9)
	assert.False(t, clamped)
	adj, clamped = energy.Adjust(500, 85, 10*time.Second)
	assert.Zero(t, adj)
	assert.True(t, clamped)
}

func TestQuantile(t *testing.T) {
	xs := []float64{1, 2, 3, 4}
	for q, want := range map[float64]float64{0: 1, 0.25: 1.75, 0.5: 2.5, 1: 4} {
		assert.InDelta(t, want, energy.Quantile(xs, q), 1e-12, "q=%v", q)
	}
	assert.True(t, math.IsNaN(energy.Quantile(nil, 0.5)))
}

func TestLagNotResolvableOnFlatPower(t *testing.T) {
	var ss []trace.PowerSample
	var cs []trace.CounterReading
	for ms := 0; ms <= 5000; ms += 20 {
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(at(ms)), PowerW: 100})
		if ms%100 == 0 {
			cs = append(cs, trace.CounterReading{Time: trace.StampOf(at(ms)), EnergyMJ: uint64(ms * 100)})
		}
	}
	_, est, _ := energy.FitHybrid(cs, ss)
	assert.False(t, est.OK)
	assert.Zero(t, est.Lag)
}

func TestFindSteady(t *testing.T) {
	// 2 s ramp from 100 to 500 W, 10 s at 500 W (±1 %), 2 s tail down to 100 W.
	var ss []trace.PowerSample
	for ms := 0; ms <= 14000; ms += 20 {
		var p float64
		switch {
		case ms < 2000:
			p = 100 + 400*float64(ms)/2000
		case ms < 12000:
			p = 500 + 5*math.Sin(float64(ms)/37)
		default:
			p = 500 - 400*float64(ms-12000)/2000
		}
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(at(ms)), PowerW: p})
	}
	st := energy.FindSteady(ss, at(0), at(14000), energy.SteadyOptions{})
	require.True(t, st.Found)
	assert.InDelta(t, 500, st.MeanW, 2)
	assert.InDelta(t, 2000, float64(st.Start.Sub(at(0)).Milliseconds()), 700, "ramp excluded")
	assert.InDelta(t, 12000, float64(st.End.Sub(at(0)).Milliseconds()), 700, "tail excluded")
	assert.Less(t, st.CV, 0.02)

	// A sawtooth never settles.
	var saw []trace.PowerSample
	for ms := 0; ms <= 10000; ms += 20 {
		saw = append(saw, trace.PowerSample{Time: trace.StampOf(at(ms)), PowerW: 100 + float64(ms%1000)})
	}
	assert.False(t, energy.FindSteady(saw, at(0), at(10000), energy.SteadyOptions{}).Found)
}
