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

// Long fits score the candidate lags in parallel: the estimate (lag, uncertainty, contrast) is the same bit for
// bit at any GOMAXPROCS as with one (where one goroutine scores every candidate in lag order), and finds the
// synthetic counter's 70 ms within its uncertainty.
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
		ss = append(ss, trace.PowerSample{Time: trace.StampOf(at(float64(ms))), PowerW: power(float64(ms)) * (1 + 0.01*r.NormFloat64())})
	}
	var cs []trace.CounterReading
	var e float64
	for ms, x := 500, 0.0; ms <= 159500; ms += 100 {
		read := float64(ms) + 4*(2*r.Float64()-1)
		for ; x < read-float64(lag.Milliseconds()); x++ {
			e += power(x) / 1000
		}
		cs = append(cs, trace.CounterReading{Time: trace.StampOf(at(read)), EnergyMJ: uint64(1000 * e)})
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
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(1)
	want := fitLag(ivs, in)
	require.True(t, want.OK)
	assert.LessOrEqual(t, (want.Lag - lag).Abs(), 2*want.U+time.Millisecond, "lag %v ± %v", want.Lag, want.U)
	assert.Greater(t, want.Contrast, 10.0, "a square wave tells the lags apart")
	for _, p := range []int{2, 5, 16} {
		runtime.GOMAXPROCS(p)
		assert.Equal(t, want, fitLag(ivs, in), "GOMAXPROCS %d", p)
	}
	// The walked energies are the integral's at each moved edge, found by search, to the bit; on both sides of
	// the samples too (edges moved outside them read as the first or last sample).
	edges := append([]lagInterval{{ss[0].Time.Add(-time.Second), ss[0].Time.Add(30 * time.Millisecond), 1},
		{ss[len(ss)-1].Time.Add(-10 * time.Millisecond), ss[len(ss)-1].Time.Add(time.Second), 1}}, ivs[:50]...)
	for _, workers := range []int{1, 3} {
		x := lagEnergies(edges, in, workers)
		for c := range numLags {
			l := MinLag + time.Duration(c)*lagStep
			for i, v := range edges {
				want := in.At(v.b.Add(-l)) - in.At(v.a.Add(-l))
				if got := x[c*len(edges)+i]; got != want {
					t.Fatalf("workers %d, lag %v, interval %d: %v, searched %v", workers, l, i, got, want)
				}
			}
		}
	}
}

// The running integral is the trapezoid sum of the samples, summed in blocks of integralBlock: each value equals
// a plain blocked sum to the bit (at any GOMAXPROCS) and the plain serial sum to 1e-12, over several blocks and a
// partial last one.
func TestIntegralBlockedSum(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	n := 3*integralBlock + 777
	ss := make([]trace.PowerSample, n)
	ns := int64(1_800_000_000e9)
	for i := range ss {
		ns += int64(20e6) + r.Int64N(2e6)
		ss[i] = trace.PowerSample{Time: trace.Stamp(ns), PowerW: 100 + 600*r.Float64()}
	}
	inc := func(i int) float64 {
		return (ss[i-1].PowerW + ss[i].PowerW) / 2 * float64(int64(ss[i].Time)-int64(ss[i-1].Time)) / 1e9
	}
	blocked := make([]float64, n)
	var base, own, serial float64
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, p := range []int{1, 4} {
		runtime.GOMAXPROCS(p)
		in := NewIntegral(ss)
		base, own, serial = 0, 0, 0
		for i := range ss {
			if i > 0 {
				serial += inc(i)
				if i%integralBlock == 0 {
					base, own = base+(own+inc(i)), 0
				} else {
					own += inc(i)
				}
			}
			blocked[i] = base + own
			if got := in.cum(i); got != blocked[i] {
				t.Fatalf("GOMAXPROCS %d sample %d: %v, blocked sum %v", p, i, got, blocked[i])
			}
			if math.Abs(blocked[i]-serial) > 1e-12*serial {
				t.Fatalf("sample %d: %v, serial sum %v", i, blocked[i], serial)
			}
		}
	}
	assert.Greater(t, serial, 1e5, "the sum is of hours of samples")
}
