// Package analyze turns traces into the numbers lem reports: capture quality, per-phase energy tables and
// (in sub-packages) the energy math itself.
package analyze

import (
	"slices"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/trace"
)

// Capture describes how completely one GPU's power samples and counter were captured.
type Capture struct {
	GPU      int
	Samples  int
	Expected int // samples the driver produced over the captured span, at its period
	Gaps     int
	GapTime  time.Duration
	// Missed estimates the samples the gaps should have held.
	Missed int
	// DrainGaps counts the gaps the sampler saw between two drains (recorded as gap/overrun events): only these
	// can be samples lem lost; the others the driver never produced.
	DrainGaps    int
	CounterReads int
	ReadMedian   time.Duration
	ReadP99      time.Duration
	ReadMax      time.Duration
}

// Ratio is captured over expected samples.
func (c Capture) Ratio() float64 {
	if c.Expected == 0 {
		return 0
	}
	return float64(c.Samples) / float64(c.Expected)
}

// CaptureQuality measures s: expected samples follow from the span and the driver's period.
func CaptureQuality(g int, s *trace.Series, events []trace.Event) Capture {
	c := Capture{GPU: g, Samples: len(s.Samples), CounterReads: len(s.Counters)}
	p := energy.DefaultSamplePeriod
	if n := len(s.Samples); n > 1 {
		span := s.Samples[n-1].Time.Sub(s.Samples[0].Time)
		c.Expected = int((span+p/2)/p) + 1
		for i := 1; i < n; i++ {
			if d := s.Samples[i].Time.Sub(s.Samples[i-1].Time); d > 2*p {
				c.Gaps++
				c.GapTime += d - p
				c.Missed += int((d+p/2)/p) - 1
			}
		}
	}
	for _, e := range events {
		if e.GPU == g && (e.Type == trace.EventGap || e.Type == trace.EventOverrun) && e.Attrs["where"] != trace.GapInBatch {
			c.DrainGaps++
		}
	}
	if len(s.Counters) > 0 {
		ds := make([]time.Duration, len(s.Counters))
		for i, r := range s.Counters {
			ds[i] = r.ReadDuration
		}
		slices.Sort(ds)
		c.ReadMedian, c.ReadP99, c.ReadMax = ds[len(ds)/2], ds[min(len(ds)-1, len(ds)*99/100)], ds[len(ds)-1]
	}
	return c
}
