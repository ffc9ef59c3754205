package stats

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// signed summarises a quantity that may take any sign (reports only have positive ones; the statistics cover both).
func signed(xs []float64) Summary { return summarize(xs, false, true) }

func TestTQuantile(t *testing.T) {
	// Two-sided 95 % critical values of Student's t (standard tables).
	for df, want := range map[float64]float64{1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 29: 2.045, 1000: 1.962} {
		assert.InDelta(t, want, TQuantile(df), 0.001, "df=%g", df)
	}
}

func TestSummarize(t *testing.T) {
	cases := []struct {
		name      string
		xs        []float64
		positive  bool
		mean, std float64
		lo, hi    float64 // NaN: no interval
		method    string
	}{
		// Student's t: 12 ± 4.303·2/√3.
		{"three cycles, signed", []float64{10, 12, 14}, false, 12, 2, 12 - 4.303*2/math.Sqrt(3), 12 + 4.303*2/math.Sqrt(3), MethodT},
		// Log scale: 12·exp(±4.303·(2/√3)/12) = 12·exp(±0.41405).
		{"three cycles, positive", []float64{10, 12, 14}, true, 12, 2, 12 * math.Exp(-0.41405), 12 * math.Exp(0.41405), MethodLogT},
		{"identical", []float64{5, 5, 5, 5}, true, 5, 0, 5, 5, MethodLogT},
		// n = 2: the values, no interval (t with 1 df once gave 1.000 [-11.709, 13.709] s).
		{"two runs", []float64{0.1, 1.9}, true, 1, math.Sqrt(1.62), math.NaN(), math.NaN(), ""},
		// A clamped adjusted energy (0) rules out the log scale: t with its lower end held at 0.
		{"positive with a zero", []float64{0, 1, 8}, true, 3, math.Sqrt(19), 0, 3 + 4.303*math.Sqrt(19)/math.Sqrt(3), MethodT},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := signed(tc.xs)
			if tc.positive {
				s = SummarizePositive(tc.xs)
			}
			assert.Equal(t, len(tc.xs), s.N)
			assert.Equal(t, tc.xs, s.Values)
			assert.InDelta(t, tc.mean, s.Mean, 1e-9)
			assert.InDelta(t, tc.std, s.Std, 1e-4)
			assert.Equal(t, tc.method, s.Method)
			if math.IsNaN(tc.lo) {
				assert.False(t, s.HasInterval())
				return
			}
			assert.InDelta(t, tc.lo, s.CILow, 2e-3)
			assert.InDelta(t, tc.hi, s.CIHigh, 2e-3)
			assert.False(t, s.HasBootstrap(), "no bootstrap below 10 values")
		})
	}
	one := signed([]float64{7})
	assert.Equal(t, 7.0, one.Mean)
	assert.False(t, one.HasInterval(), "no interval from one value")
	assert.True(t, math.IsNaN(signed(nil).Mean))

	// A skewed positive sample: the log-scale interval stays above zero where Student's t would not.
	sk := []float64{0.2, 0.3, 4}
	assert.Less(t, signed(sk).CILow, 0.0)
	assert.Greater(t, SummarizePositive(sk).CILow, 0.0)
}

func TestBootstrapT(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	s := signed(xs)
	require.True(t, s.HasBootstrap())
	assert.Less(t, s.BootLow, s.Mean)
	assert.Greater(t, s.BootHigh, s.Mean)
	// Symmetric data: the studentized bootstrap interval is about Student's t one (5.5 ± 2.17).
	assert.InDelta(t, 5.5-2.262*3.02765/math.Sqrt(10), s.BootLow, 0.35)
	assert.InDelta(t, 5.5+2.262*3.02765/math.Sqrt(10), s.BootHigh, 0.35)
	again := signed(xs)
	assert.Equal(t, s.BootLow, again.BootLow, "seeded: the same data give the same interval")
	// Right-skewed positive data: the interval reaches further up than down.
	p := SummarizePositive([]float64{1, 1.1, 1.2, 1.1, 1, 1.3, 1.2, 1.1, 3, 1.05})
	require.True(t, p.HasBootstrap())
	assert.Greater(t, p.BootHigh-p.Mean, p.Mean-p.BootLow)
	assert.Greater(t, p.BootLow, 0.0)
}

func TestRatio(t *testing.T) {
	a := signed([]float64{20, 21, 19})
	b := signed([]float64{10, 10.5, 9.5})
	r := RatioOf(a, b)
	assert.InDelta(t, 2.0, r.Value, 1e-9)
	// Relative variances 1/(3·400) and 0.25/(3·100) are equal, so Welch's df is (2v)²/(2v²/2) = 4 and
	// log(2) ± 2.776·√(2/1200).
	assert.InDelta(t, 4, r.DF, 1e-9)
	h := 2.776 * math.Sqrt(2.0/1200)
	assert.InDelta(t, 2*math.Exp(-h), r.CILow, 1e-3)
	assert.InDelta(t, 2*math.Exp(h), r.CIHigh, 1e-3)
	assert.False(t, r.Paired)

	// Pairs (20,10) (21,10.5) (19,9.5) keep the ratio exactly 2 each cycle: the paired interval collapses.
	p := PairedRatioOf([]float64{20, 21, 19}, []float64{10, 10.5, 9.5})
	assert.True(t, p.Paired)
	assert.Equal(t, 3, p.Pairs)
	assert.InDelta(t, 2, p.CILow, 1e-9)
	assert.InDelta(t, 2, p.CIHigh, 1e-9)

	// Paired by hand: d_i = a_i/ā − b_i/b̄ for a = (10, 12, 14), b = (5, 5.5, 7): ā = 12, b̄ = 17.5/3.
	pa, pb := []float64{10, 12, 14}, []float64{5, 5.5, 7}
	bm := 17.5 / 3
	var ss float64
	for i := range pa {
		d := pa[i]/12 - pb[i]/bm
		ss += d * d
	}
	se := math.Sqrt(ss / 2 / 3)
	p = PairedRatioOf(pa, pb)
	assert.InDelta(t, 12/bm, p.Value, 1e-12)
	assert.InDelta(t, 12/bm*math.Exp(-4.303*se), p.CILow, 1e-3)
	assert.InDelta(t, 12/bm*math.Exp(4.303*se), p.CIHigh, 1e-3)

	// Two runs a side: the ratio, no interval (the delta method once gave [-1.297, 4.163]).
	two := RatioOf(signed([]float64{1, 3}), signed([]float64{1, 1.4}))
	assert.InDelta(t, 2/1.2, two.Value, 1e-12)
	assert.True(t, math.IsNaN(two.CILow))
	// A pair with a value missing is left out.
	assert.Equal(t, 2, PairedRatioOf([]float64{1, math.NaN(), 2}, []float64{1, 1, 1}).Pairs)
}

func TestJSONNullsAndRoundTrip(t *testing.T) {
	s := SummarizePositive([]float64{1, 2})
	b, err := json.Marshal(s)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	assert.Nil(t, m["ci_low"], "no interval: null, not 0")
	assert.Nil(t, m["boot_low"])
	assert.Equal(t, []any{1.0, 2.0}, m["values"])
	var back Summary
	require.NoError(t, json.Unmarshal(b, &back))
	assert.True(t, math.IsNaN(back.CILow))
	assert.Equal(t, 1.5, back.Mean)
	b, err = json.Marshal(RatioOf(signed(nil), signed(nil)))
	require.NoError(t, err)
	assert.Contains(t, string(b), `"value":null`)
}

// Known truth: synthetic repetitions with known true values and noise; the stated 95 % intervals must cover
// the truth 93–97 % of the time. Fixed seeds: the counts are reproducible.

// coverage counts how often in(truth) holds over reps draws.
func coverage(reps int, trial func(r *rand.Rand) bool) float64 {
	r := rand.New(rand.NewPCG(11, 13))
	hit := 0
	for range reps {
		if trial(r) {
			hit++
		}
	}
	return float64(hit) / float64(reps)
}

func draw(r *rand.Rand, n int, f func(*rand.Rand) float64) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = f(r)
	}
	return xs
}

func TestCoverageOfMeans(t *testing.T) {
	type model struct {
		name     string
		positive bool
		draw     func(*rand.Rand) float64
		mean     float64
	}
	models := []model{
		// A quantity of either sign whose interval crosses zero.
		{"signed, normal", false, func(r *rand.Rand) float64 { return 0.5 + r.NormFloat64() }, 0.5},
		// Energies: 7 % normal noise (the LLM campaign's decode J/token CV), and 25 % lognormal noise
		// (mean 100·e^{σ²/2}).
		{"positive, normal 7 %", true, func(r *rand.Rand) float64 { return 100 * (1 + 0.07*r.NormFloat64()) }, 100},
		{"positive, lognormal 25 %", true, func(r *rand.Rand) float64 { return 100 * math.Exp(0.25*r.NormFloat64()) },
			100 * math.Exp(0.25*0.25/2)},
	}
	for _, m := range models {
		sum := signed
		if m.positive {
			sum = SummarizePositive
		}
		for _, n := range []int{3, 5, 10} {
			c := coverage(3000, func(r *rand.Rand) bool {
				s := summarize(draw(r, n, m.draw), m.positive, false)
				if m.positive && s.CILow <= 0 {
					t.Fatalf("%s: interval [%g, %g] reaches zero", m.name, s.CILow, s.CIHigh)
				}
				return s.CILow <= m.mean && m.mean <= s.CIHigh
			})
			t.Logf("%s, n=%d: %s interval covers %.1f %%", m.name, n, map[bool]string{true: MethodLogT, false: MethodT}[m.positive], 100*c)
			assert.InDelta(t, 0.95, c, 0.02, "%s n=%d", m.name, n)
		}
		// The bootstrap (n ≥ 10): fewer repetitions, each resamples 4,000 times.
		if raceEnabled {
			t.Log("bootstrap coverage left to the run without the race detector")
			continue
		}
		for _, n := range []int{10, 20} {
			c := coverage(1000, func(r *rand.Rand) bool {
				s := sum(draw(r, n, m.draw))
				return s.BootLow <= m.mean && m.mean <= s.BootHigh
			})
			t.Logf("%s, n=%d: bootstrap-t covers %.1f %%", m.name, n, 100*c)
			assert.InDelta(t, 0.95, c, 0.02, "%s bootstrap n=%d", m.name, n)
		}
	}
}

func TestCoverageOfRatios(t *testing.T) {
	const truth = 2.0
	// Independent experiments, 8 % normal noise each.
	for _, n := range []int{3, 5, 10} {
		c := coverage(3000, func(r *rand.Rand) bool {
			a := draw(r, n, func(r *rand.Rand) float64 { return 200 * (1 + 0.08*r.NormFloat64()) })
			b := draw(r, n, func(r *rand.Rand) float64 { return 100 * (1 + 0.08*r.NormFloat64()) })
			q := RatioOf(summarize(a, true, false), summarize(b, true, false))
			return q.CILow <= truth && truth <= q.CIHigh
		})
		t.Logf("independent, n=%d: covers %.1f %%", n, 100*c)
		assert.InDelta(t, 0.95, c, 0.02, "independent n=%d", n)
	}
	// An interleaved campaign: each cycle shifts both experiments by a common 10 % drift (host temperature,
	// time of day), each run adds 3 % of its own. Pairing by cycle removes the drift: the paired interval covers
	// 95 % and is narrower than the independent one, which ignores the covariance and over-covers.
	for _, n := range []int{3, 5, 10} {
		var wPaired, wIndep float64
		var indep int
		c := coverage(3000, func(r *rand.Rand) bool {
			a, b := make([]float64, n), make([]float64, n)
			for i := range n {
				drift := 1 + 0.10*r.NormFloat64()
				a[i] = 200 * drift * (1 + 0.03*r.NormFloat64())
				b[i] = 100 * drift * (1 + 0.03*r.NormFloat64())
			}
			p := PairedRatioOf(a, b)
			q := RatioOf(summarize(a, true, false), summarize(b, true, false))
			wPaired += math.Log(p.CIHigh / p.CILow)
			wIndep += math.Log(q.CIHigh / q.CILow)
			if q.CILow <= truth && truth <= q.CIHigh {
				indep++
			}
			return p.CILow <= truth && truth <= p.CIHigh
		})
		t.Logf("paired, n=%d: covers %.1f %% (independent interval: %.1f %%, %.1f× as wide)", n, 100*c,
			100*float64(indep)/3000, wIndep/wPaired)
		assert.InDelta(t, 0.95, c, 0.02, "paired n=%d", n)
		assert.Greater(t, wIndep, 1.5*wPaired, "pairing narrows the interval")
	}
}

// Summaries and ratios are read back from campaign state files: any bytes either decode into values that encode
// again, or fail cleanly.
func FuzzSummaryJSON(f *testing.F) {
	for _, seed := range []string{`{"n":2,"values":[1,2],"mean":1.5,"ci_low":null}`, `{"value":2,"ci_low":1.5,"ci_high":2.5,"paired":true,"pairs":3}`, `null`, `{"mean":"x"}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Summary
		if json.Unmarshal(b, &s) == nil {
			if _, err := json.Marshal(s); err != nil {
				t.Fatalf("summary decoded from %q does not encode: %v", b, err)
			}
		}
		var r Ratio
		if json.Unmarshal(b, &r) == nil {
			if _, err := json.Marshal(r); err != nil {
				t.Fatalf("ratio decoded from %q does not encode: %v", b, err)
			}
		}
	})
}
