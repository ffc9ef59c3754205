package energy

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestOrderStatsEqualSorting checks the selection against sorting for every k of arrays with and without ties,
// sorted, reversed and constant ones (quickselect's classic bad cases among them), and QuantileOf against
// Quantile of the sorted values, bit for bit.
func TestOrderStatsEqualSorting(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var inputs [][]float64
	for n := 1; n <= 70; n++ {
		for _, distinct := range []int{1, 3, 1000} {
			xs := make([]float64, n)
			for i := range xs {
				xs[i] = float64(rng.IntN(distinct)) + 0.25
			}
			inputs = append(inputs, xs)
		}
		asc := make([]float64, n)
		for i := range asc {
			asc[i] = float64(i) * 1.5
		}
		desc := slices.Clone(asc)
		slices.Reverse(desc)
		inputs = append(inputs, asc, desc)
	}
	big := make([]float64, 5000)
	for i := range big {
		big[i] = 300 + 50*rng.NormFloat64()
	}
	inputs = append(inputs, big)
	for _, xs := range inputs {
		sorted := slices.Clone(xs)
		slices.Sort(sorted)
		for k := range xs {
			a, b := OrderStats(slices.Clone(xs), k)
			wantB := math.NaN()
			if k+1 < len(sorted) {
				wantB = sorted[k+1]
			}
			if a != sorted[k] || (b != wantB && !(math.IsNaN(b) && math.IsNaN(wantB))) {
				t.Fatalf("n=%d k=%d: got %v, %v; sorted has %v, %v", len(xs), k, a, b, sorted[k], wantB)
			}
		}
		for _, q := range []float64{0, 0.05, 0.25, 0.5, 0.75, 0.95, 1} {
			if got, want := QuantileOf(slices.Clone(xs), q), Quantile(sorted, q); got != want {
				t.Fatalf("n=%d q=%v: %v, sorted gives %v", len(xs), q, got, want)
			}
		}
	}
	if !math.IsNaN(QuantileOf(nil, 0.5)) {
		t.Fatal("no values: want NaN")
	}
}
