package stats

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTQuantile(t *testing.T) {
	// Two-sided 95 % critical values of Student's t (standard tables).
	for df, want := range map[int]float64{1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 29: 2.045, 1000: 1.962} {
		assert.InDelta(t, want, TQuantile(df), 0.001, "df=%d", df)
	}
}

func TestSummarize(t *testing.T) {
	cases := []struct {
		name      string
		xs        []float64
		mean, std float64
		lo, hi    float64
		bootstrap bool
	}{
		{"three cycles", []float64{10, 12, 14}, 12, 2, 12 - 4.303*2/math.Sqrt(3), 12 + 4.303*2/math.Sqrt(3), false},
		{"identical", []float64{5, 5, 5, 5}, 5, 0, 5, 5, false},
		{"ten", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 5.5, 3.02765, 5.5 - 2.262*3.02765/math.Sqrt(10), 5.5 + 2.262*3.02765/math.Sqrt(10), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := Summarize(tc.xs)
			assert.Equal(t, len(tc.xs), s.N)
			assert.InDelta(t, tc.mean, s.Mean, 1e-9)
			assert.InDelta(t, tc.std, s.Std, 1e-4)
			assert.InDelta(t, tc.lo, s.CILow, 1e-2)
			assert.InDelta(t, tc.hi, s.CIHigh, 1e-2)
			if tc.bootstrap {
				assert.Less(t, s.BootLow, s.Mean)
				assert.Greater(t, s.BootHigh, s.Mean)
				assert.InDelta(t, s.Mean, (s.BootLow+s.BootHigh)/2, 0.5)
			} else {
				assert.Zero(t, s.BootLow)
			}
		})
	}
	one := Summarize([]float64{7})
	assert.Equal(t, 7.0, one.Mean)
	assert.True(t, math.IsNaN(one.CILow), "no interval from one value")
	assert.True(t, math.IsNaN(Summarize(nil).Mean))
}

func TestRatio(t *testing.T) {
	a := Summarize([]float64{20, 21, 19})
	b := Summarize([]float64{10, 10.5, 9.5})
	r := RatioOf(a, b)
	assert.InDelta(t, 2.0, r.Value, 1e-9)
	assert.Less(t, r.CILow, 2.0)
	assert.Greater(t, r.CIHigh, 2.0)
	assert.InDelta(t, 2.0, (r.CILow+r.CIHigh)/2, 1e-9, "symmetric")
	same := RatioOf(Summarize([]float64{3, 3}), Summarize([]float64{3, 3}))
	assert.Equal(t, 1.0, same.Value)
	assert.Equal(t, 1.0, same.CILow)
}
