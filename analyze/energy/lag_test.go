package energy_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/trace"
)

// A synthetic GPU whose counter holds the energy up to 60 ms before each read: square-wave load (100 / 400 W,
// 1.31 s period, so the steps fall anywhere between two samples), samples every 20 ms with 1 % noise, the counter updated every 100 ms with ±4 ms jitter and read
// just after each update. The fit must find 60 ms within its stated uncertainty.
func TestLagUncertaintyCoversKnownLag(t *testing.T) {
	const lag = 60 * time.Millisecond
	power := func(ms float64) float64 {
		if math.Mod(ms, 1310) < 655 {
			return 100
		}
		return 400
	}
	r := rand.New(rand.NewPCG(3, 4))
	var ss []trace.PowerSample
	for ms := 0; ms <= 30000; ms += 20 {
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(at(ms)), PowerW: power(float64(ms)) * (1 + 0.01*r.NormFloat64())})
	}
	// The true energy up to t, integrated finely from the noiseless power.
	energyTo := func(ms float64) float64 {
		var e float64
		for x := 0.0; x < ms; x++ {
			e += power(x) / 1000
		}
		return e
	}
	var cs []trace.CounterReading
	for ms := 500; ms <= 29500; ms += 100 {
		read := float64(ms) + 4*(2*r.Float64()-1)
		cs = append(cs, trace.CounterReading{Time: trace.StampOf(at(0).Add(time.Duration(read * float64(time.Millisecond)))),
			EnergyMJ: uint64(1000 * energyTo(read-float64(lag.Milliseconds())))})
	}
	_, est, err := energy.FitHybrid(cs, ss)
	require.NoError(t, err)
	require.True(t, est.OK)
	assert.Greater(t, est.U, time.Duration(0))
	assert.Less(t, est.U, 10*time.Millisecond, "a clean square wave pins the lag down")
	assert.LessOrEqual(t, (est.Lag - lag).Abs(), 2*est.U+time.Millisecond, "lag %v ± %v, true %v", est.Lag, est.U, lag)

	// Flat power: the lag is not resolvable and carries the spread of setups' lags.
	var flat []trace.PowerSample
	var fc []trace.CounterReading
	for ms := 0; ms <= 5000; ms += 20 {
		flat = append(flat, trace.PowerSample{Time: trace.StampOf(at(ms)), PowerW: 100})
		if ms%100 == 0 {
			fc = append(fc, trace.CounterReading{Time: trace.StampOf(at(ms)), EnergyMJ: uint64(ms * 100)})
		}
	}
	_, est, _ = energy.FitHybrid(fc, flat)
	assert.False(t, est.OK)
	assert.Equal(t, energy.UnresolvedLagU, est.U)
}

func TestWithLag(t *testing.T) {
	// 100 W, then 400 W from 1 s; the counter (read every 100 ms) lags the samples by 100 ms.
	var ss []trace.PowerSample
	var cs []trace.CounterReading
	for ms := 0; ms <= 3000; ms += 20 {
		p := 100.0
		if ms >= 1000 {
			p = 400
		}
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(at(ms)), PowerW: p})
	}
	for ms := 0; ms <= 3000; ms += 100 {
		e := 0.1 * float64(min(ms-100, 1000)) // J up to ms−100 at 100 W …
		if ms-100 > 1000 {
			e += 0.4 * float64(ms-100-1000) // … and 400 W after 1 s
		}
		cs = append(cs, trace.CounterReading{Time: trace.StampOf(at(ms)), EnergyMJ: uint64(1000 * max(e, 0))})
	}
	h, err := energy.NewHybrid(cs, ss, 0)
	require.NoError(t, err)
	right, err := energy.NewHybrid(cs, ss, 100*time.Millisecond)
	require.NoError(t, err)
	before, _ := h.Energy(at(800), at(1200))
	beforeIvs := h.Intervals(at(0), at(3000))
	w := h.WithLag(100 * time.Millisecond)
	assert.Equal(t, 100*time.Millisecond, w.Lag)
	// The hybrids at other lags share h's readings: h places energy as before, and w exactly as one built at its
	// lag.
	after, _ := h.Energy(at(800), at(1200))
	assert.Equal(t, before, after)
	assert.Equal(t, beforeIvs, h.Intervals(at(0), at(3000)))
	require.Len(t, beforeIvs, 29) // 31 readings, the first two equal
	assert.Equal(t, right.Intervals(at(0), at(3000)), w.Intervals(at(0), at(3000)))
	assert.Equal(t, trace.StampOf(at(100)), w.Intervals(at(0), at(3000))[0].Start) // the read at 200 ms, moved back; at(0) less 100 ms has no samples
	for _, win := range [][2]int{{500, 1000}, {1000, 1500}, {800, 1200}} {
		a, err := w.Energy(at(win[0]), at(win[1]))
		require.NoError(t, err)
		b, err := right.Energy(at(win[0]), at(win[1]))
		require.NoError(t, err)
		assert.InDelta(t, b.Joules, a.Joules, 1e-9, "window %v", win)
	}
	// With the lag, [1000, 1500] ms holds 0.5 s at 400 W: 200 J.
	e, _ := w.Energy(at(1000), at(1500))
	assert.InDelta(t, 200, e.Joules, 1)
	back := w.WithLag(0)
	e0, _ := back.Energy(at(1000), at(1500))
	eh, _ := h.Energy(at(1000), at(1500))
	assert.InDelta(t, eh.Joules, e0.Joules, 1e-9)
}
