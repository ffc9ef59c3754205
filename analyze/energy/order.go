package energy

import (
	"math"
	"math/bits"
	"slices"
)

// The accounting takes medians and quantiles of every run's values (interval ratios, idle power): a selection
// finds the one or two order statistics they read in linear time, where sorting the values took n log n.

// OrderStats reorders xs (finite values) and returns its k-th and (k+1)-th smallest values (0-based; the second
// is NaN when k is the last index): the values sorted xs would hold at k and k+1.
func OrderStats(xs []float64, k int) (float64, float64) {
	lo, hi := 0, len(xs)-1
	// Quickselect with a median-of-three pivot; past 2·log2(n) rounds (an unlucky input) the rest is sorted.
	for budget := 2 * bits.Len(uint(len(xs))); hi > lo; budget-- {
		if budget == 0 {
			slices.Sort(xs[lo : hi+1])
			break
		}
		i, j := partition(xs, lo, hi)
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			lo, hi = k, k // xs[j+1:i] all equal the pivot
		}
	}
	next := math.NaN()
	if k+1 < len(xs) {
		next = slices.Min(xs[k+1:])
	}
	return xs[k], next
}

// partition splits xs[lo..hi] around a median-of-three pivot (Hoare): afterwards xs[lo..j] ≤ pivot,
// xs[j+1..i-1] = pivot and xs[i..hi] ≥ pivot.
func partition(xs []float64, lo, hi int) (int, int) {
	mid := lo + (hi-lo)/2
	a, b, c := xs[lo], xs[mid], xs[hi]
	pivot := max(min(a, b), min(max(a, b), c))
	i, j := lo, hi
	for i <= j {
		for xs[i] < pivot {
			i++
		}
		for xs[j] > pivot {
			j--
		}
		if i <= j {
			xs[i], xs[j] = xs[j], xs[i]
			i++
			j--
		}
	}
	return i, j
}

// QuantileOf is Quantile of xs sorted, without sorting it (xs is reordered; finite values).
func QuantileOf(xs []float64, q float64) float64 {
	return type7(len(xs), q,
		func(k int) (float64, float64) { return OrderStats(xs, k) },
		func() float64 { return slices.Max(xs) })
}

// type7 is the type-7 q-quantile of n values, NaN of none: the k-th and (k+1)-th smallest values (stats) weighted
// by where q falls between them, or the largest (top) from the last. Quantile reads them from a sorted slice,
// QuantileOf selects them.
func type7(n int, q float64, stats func(k int) (float64, float64), top func() float64) float64 {
	if n == 0 {
		return math.NaN()
	}
	h := q * float64(n-1)
	lo := int(math.Floor(h))
	if lo >= n-1 {
		return top()
	}
	a, b := stats(lo)
	return a + (h-float64(lo))*(b-a)
}
