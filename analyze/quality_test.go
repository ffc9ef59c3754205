package analyze_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/lem-energy/lem/analyze"
	"github.com/lem-energy/lem/internal/trace"
)

// Capture over a known series: 10 s at 50 Hz with two holes (one sample, the next 3 ms late as the driver's own
// skips are, then five), a gap event at a drain, and 200 counter reads taking 1 … 200 ms.
func TestCaptureQuality(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := &trace.Series{}
	for i := range 501 {
		if i == 100 || (i >= 300 && i < 305) {
			continue
		}
		at := t0.Add(time.Duration(i) * 20 * time.Millisecond)
		if i == 101 {
			at = at.Add(3 * time.Millisecond)
		}
		s.Samples = append(s.Samples, trace.PowerSample{Time: trace.StampOf(at), PowerW: 100})
	}
	for i := range 200 {
		s.Counters = append(s.Counters, trace.CounterReading{Time: trace.StampOf(t0.Add(time.Duration(i) * 50 * time.Millisecond)),
			EnergyMJ: uint64(i), ReadDuration: time.Duration(i+1) * time.Millisecond})
	}
	ev := []trace.Event{{GPU: 0, Type: trace.EventGap, Attrs: map[string]string{"where": trace.GapAtDrain}},
		{GPU: 0, Type: trace.EventGap, Attrs: map[string]string{"where": trace.GapInBatch}},
		{GPU: 1, Type: trace.EventGap}}
	c := analyze.CaptureQuality(0, s, ev)
	assert.Equal(t, 495, c.Samples)
	assert.Equal(t, 501, c.Expected)
	assert.Equal(t, 2, c.Gaps)
	assert.Equal(t, 6, c.Missed)
	assert.Equal(t, 1, c.DrainGaps, "only the gap at a drain, on this GPU")
	assert.Equal(t, 200, c.CounterReads)
	assert.Equal(t, 101*time.Millisecond, c.ReadMedian)
	assert.Equal(t, 199*time.Millisecond, c.ReadP99)
	assert.Equal(t, 200*time.Millisecond, c.ReadMax)
}
