package energy

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/trace"
)

// gpuSeries simulates a GPU: power stepping between levels every few seconds, sampled every 20 ms (a sample
// skipped now and then), and an energy counter that follows the power lag late, updates every 100 ms and is read
// every read interval (so a read often repeats the last value). Samples and readings may start and end apart.
type gpuSeries struct {
	lag, read               time.Duration
	length                  time.Duration
	countersFrom, samplesTo time.Duration // offsets from the start; 0: the whole length
	resetAt                 time.Duration // the counter restarts near 0 here (a driver reload); 0: never
	seed                    uint64
}

func (g gpuSeries) make() ([]trace.CounterReading, []trace.PowerSample) {
	rng := rand.New(rand.NewPCG(g.seed, 7))
	t0 := time.Unix(1795735590, 0).UTC()
	levels := []float64{80, 650, 300, 700, 120}
	power := func(d time.Duration) float64 {
		k := int(d/(3*time.Second)+time.Duration(g.seed)) % len(levels)
		return levels[k] + 5*math.Sin(float64(d)/7e8)
	}
	var ss []trace.PowerSample
	to := g.length
	if g.samplesTo > 0 {
		to = g.samplesTo
	}
	for d := time.Duration(0); d <= to; d += 20 * time.Millisecond {
		if rng.IntN(200) == 0 {
			continue
		}
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(t0.Add(d + time.Duration(rng.IntN(300))*time.Microsecond)), PowerW: power(d)})
	}
	// Energy at each 100 ms update, from the power lag late (fine steps).
	var cs []trace.CounterReading
	var e float64
	var upd float64 // value at the last update
	next := time.Duration(0)
	step := time.Millisecond
	base := uint64(5e9)
	for d := time.Duration(0); d <= g.length; d += step {
		e += power(max(d-g.lag, 0)) * step.Seconds()
		if d%(100*time.Millisecond) == 0 {
			upd = e
		}
		if d >= next {
			next += g.read
			if d < g.countersFrom {
				continue
			}
			v := base + uint64(upd*1000)
			if g.resetAt > 0 && d >= g.resetAt {
				v = uint64(upd * 1000 / 3) // restarted lower
			}
			cs = append(cs, trace.CounterReading{Time: trace.StampOf(t0.Add(d)), EnergyMJ: v})
		}
	}
	return cs, ss
}

// streamFit feeds a series to a LagStream in random pieces by time, each piece's readings and samples together.
func streamFit(cs []trace.CounterReading, ss []trace.PowerSample, seed uint64) *LagStream {
	pts, _ := normalize(dedupe(cs))
	l := NewLagStream(len(pts))
	rng := rand.New(rand.NewPCG(seed, 3))
	i, j := 0, 0
	for i < len(cs) || j < len(ss) {
		var at time.Time
		switch {
		case i < len(cs) && j < len(ss):
			at = minTime(cs[i].Time.Time(), ss[j].Time.Time())
		case i < len(cs):
			at = cs[i].Time.Time()
		default:
			at = ss[j].Time.Time()
		}
		cut := at.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
		i2, j2 := i, j
		for i2 < len(cs) && cs[i2].Time.Before(trace.StampOf(cut)) {
			i2++
		}
		for j2 < len(ss) && ss[j2].Time.Before(trace.StampOf(cut)) {
			j2++
		}
		l.Add(cs[i:i2], ss[j:j2])
		i, j = i2, j2
	}
	return l
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// A lag fitted from a series handed over in pieces is FitHybrid's on the whole series, to the last bit (same
// intervals, same integrals), and so are the gains of the hybrids at the lag and at lag ± u, whichever way the
// series begins and ends.
func TestLagStreamEqualsFitHybrid(t *testing.T) {
	cases := map[string]gpuSeries{
		"100 ms reads, 85 ms lag":                {lag: 85 * time.Millisecond, read: 100 * time.Millisecond, length: 90 * time.Second},
		"1 s reads":                              {lag: 60 * time.Millisecond, read: time.Second, length: 10 * time.Minute, seed: 2},
		"reads faster than updates":              {lag: 40 * time.Millisecond, read: 30 * time.Millisecond, length: 40 * time.Second, seed: 3},
		"long: stride over 5000 intervals":       {lag: 70 * time.Millisecond, read: 100 * time.Millisecond, length: 20 * time.Minute, seed: 4},
		"counter starts late, samples end early": {lag: 85 * time.Millisecond, read: 100 * time.Millisecond, length: 60 * time.Second, countersFrom: 2400 * time.Millisecond, samplesTo: 50 * time.Second, seed: 5},
		"counter reset":                          {lag: 50 * time.Millisecond, read: 200 * time.Millisecond, length: 80 * time.Second, resetAt: 41 * time.Second, seed: 6},
		"negative lag":                           {lag: -5 * time.Millisecond, read: 100 * time.Millisecond, length: 60 * time.Second, seed: 7},
	}
	for name, g := range cases {
		t.Run(name, func(t *testing.T) {
			cs, ss := g.make()
			h, want, err := FitHybrid(cs, ss)
			require.NoError(t, err)
			for seed := range uint64(3) {
				l := streamFit(cs, ss, seed)
				got := l.Fit()
				require.Equal(t, want, got, "lag estimate")
				if g.resetAt == 0 {
					assert.True(t, want.OK, "the simulated lag is resolved")
					// The fitted lag includes the reads' staleness (up to a read interval after an update).
					assert.InDelta(t, g.lag.Seconds(), want.Lag.Seconds(), 0.025)
				}
				for _, lag := range []time.Duration{want.Lag, want.Lag - want.U, want.Lag + want.U} {
					gain, err := l.Gain(lag)
					require.NoError(t, err)
					wg := h.WithLag(lag).gain
					assert.Equal(t, wg, gain, "gain at lag %s: the same telescoped sums", lag)
				}
				// What the stream keeps is bounded by the intervals the fit uses, not the series' length.
				assert.Less(t, len(l.thin.in.ss), 60*min(maxLagIntervals+1, l.n))
				assert.Less(t, len(l.hist), 600)
				assert.Less(t, len(l.tailS.in.ss), 1200)
			}
		})
	}
}

// Gains are asked only for the lags a hybrid can use.
func TestLagStreamGainRange(t *testing.T) {
	cs, ss := gpuSeries{lag: 85 * time.Millisecond, read: 100 * time.Millisecond, length: 20 * time.Second}.make()
	l := streamFit(cs, ss, 0)
	_, err := l.Gain(MaxShift + time.Millisecond)
	assert.Error(t, err)
	_, err = l.Gain(MinShift - time.Millisecond)
	assert.Error(t, err)
}
