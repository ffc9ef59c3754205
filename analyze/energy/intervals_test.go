package energy_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// The hybrid's counter intervals on the real H200 recording: consecutive, moved back by the lag, each holding the
// counter's increment and the samples' energy over the same span (a plain trapezoid), so their counter energies
// add up to the counter's over the span.
func TestHybridIntervals(t *testing.T) {
	tr, err := trace.ReadFile(testutil.TracePath("h200-shape"))
	require.NoError(t, err)
	s := tr.GPUs[0]
	h, est, err := energy.FitHybrid(s.Counters, s.Samples)
	require.NoError(t, err)
	a, _ := s.Common()
	t0, t1 := a.Add(5*time.Second), a.Add(15*time.Second)
	ivs := h.Intervals(t0, t1)
	require.Len(t, ivs, 100, "10 s of 100 ms updates (one of them missed: a 200 ms interval), one across an edge")
	assert.False(t, ivs[0].Start.After(trace.StampOf(t0)))
	assert.True(t, ivs[0].End.After(trace.StampOf(t0)))
	assert.False(t, ivs[len(ivs)-1].End.Before(trace.StampOf(t1)))
	var sum float64
	for i, iv := range ivs {
		if i > 0 {
			assert.True(t, iv.Start.Equal(ivs[i-1].End), "consecutive")
		}
		assert.InDelta(t, testutil.PlainSampled(s.Samples, iv.Start.Time(), iv.End.Time()), iv.SampledJ, 1e-6)
		sum += iv.CounterJ
	}
	first, last := ivs[0].Start.Add(est.Lag), ivs[len(ivs)-1].End.Add(est.Lag)
	assert.InDelta(t, testutil.PlainCounter(s.Counters, first.Time(), last.Time()), sum, 1e-6, "the reads' own times, the lag added back")
}
