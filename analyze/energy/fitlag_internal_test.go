package energy

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/trace"
)

// fitLagSerial is the lag search written as one loop over the candidates (how fitLag scored them before it
// scored them in parallel): the reference fitLag must equal bit for bit.
func fitLagSerial(ivs []lagInterval, in *Integral) LagEstimate {
	if len(ivs) < 10 {
		return LagEstimate{Intervals: len(ivs), U: UnresolvedLagU}
	}
	var edge [lagBlocks + 1]int
	for k := range edge {
		edge[k] = k * len(ivs) / lagBlocks
	}
	best, worst := -1.0, 0.0
	var bestLag time.Duration
	var jkBest [lagBlocks]float64
	var jkLag [lagBlocks]time.Duration
	for k := range jkBest {
		jkBest[k] = -1
	}
	xs := make([]float64, len(ivs))
	for lag := MinLag; lag <= MaxLag; lag += lagStep {
		var sxy, sxx float64
		var bxy, bxx [lagBlocks]float64
		ca, cb := in.Cursor(), in.Cursor()
		k := 0
		for i, v := range ivs {
			for i >= edge[k+1] {
				k++
			}
			xs[i] = cb.atNS(v.b.UnixNano()-int64(lag)) - ca.atNS(v.a.UnixNano()-int64(lag))
			bxy[k] += xs[i] * v.dE
			bxx[k] += xs[i] * xs[i]
		}
		for k := range bxy {
			sxy += bxy[k]
			sxx += bxx[k]
		}
		if sxx == 0 {
			continue
		}
		g, rss := sxy/sxx, 0.0
		for i, v := range ivs {
			r := v.dE - g*xs[i]
			rss += r * r
		}
		if best < 0 || rss < best {
			best, bestLag = rss, lag
		}
		worst = max(worst, rss)
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
			if jkBest[out] < 0 || r2 < jkBest[out] {
				jkBest[out], jkLag[out] = r2, lag
			}
		}
	}
	return lagEstimate(len(ivs), best, worst, bestLag, jkLag)
}

// Long fits score the candidate lags in parallel: the estimate (lag, uncertainty, contrast) is the serial
// search's, bit for bit, at any GOMAXPROCS, and finds the synthetic counter's 70 ms.
func TestFitLagParallelEqualsSerial(t *testing.T) {
	const lag = 70 * time.Millisecond
	power := func(ms float64) float64 { // steps falling anywhere between two samples
		if math.Mod(ms, 1310) < 655 {
			return 120
		}
		return 450
	}
	t0 := time.Unix(5000, 0)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	r := rand.New(rand.NewPCG(7, 8))
	var ss []trace.PowerSample
	for ms := 0; ms <= 160000; ms += 20 {
		ss = append(ss, trace.PowerSample{Time: at(float64(ms)), PowerW: power(float64(ms)) * (1 + 0.01*r.NormFloat64())})
	}
	var cs []trace.CounterReading
	var e float64
	for ms, x := 500, 0.0; ms <= 159500; ms += 100 {
		read := float64(ms) + 4*(2*r.Float64()-1)
		for ; x < read-float64(lag.Milliseconds()); x++ {
			e += power(x) / 1000
		}
		cs = append(cs, trace.CounterReading{Time: at(read), EnergyMJ: uint64(1000 * e)})
	}
	pts, _ := distinctPoints(cs)
	in := NewIntegral(ss)
	var ivs []lagInterval
	for i := 1; i < len(pts); i++ {
		if a, b := pts[i-1], pts[i]; lagUsable(a, b, in) {
			ivs = append(ivs, lagInterval{a.t, b.t, b.j - a.j})
		}
	}
	require.GreaterOrEqual(t, len(ivs), parallelLagIntervals, "long enough to be scored in parallel")
	want := fitLagSerial(ivs, in)
	require.True(t, want.OK)
	assert.LessOrEqual(t, (want.Lag - lag).Abs(), 2*want.U+time.Millisecond, "lag %v ± %v", want.Lag, want.U)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, p := range []int{1, 2, 5, 16} {
		runtime.GOMAXPROCS(p)
		assert.Equal(t, want, fitLag(ivs, in), "GOMAXPROCS %d", p)
	}
	assert.Equal(t, fitLagSerial(ivs[:300], in), fitLag(ivs[:300], in), "a short fit, scored in one goroutine")
}
