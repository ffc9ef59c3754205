package parallel

import (
	"sync/atomic"
	"testing"
)

// Every index runs exactly once, at any number of workers, none and fewer indices than workers included.
func TestForEachIndexOnce(t *testing.T) {
	for _, c := range []struct{ n, workers int }{{0, 4}, {1, 4}, {3, 8}, {1000, 1}, {1000, 7}, {5, 0}} {
		counts := make([]atomic.Int32, c.n)
		For(c.n, c.workers, func(i int) { counts[i].Add(1) })
		for i := range counts {
			if got := counts[i].Load(); got != 1 {
				t.Fatalf("n %d, workers %d: index %d ran %d times", c.n, c.workers, i, got)
			}
		}
	}
}
