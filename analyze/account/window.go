package account

import (
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// FittedMeter is a GPU's meter over a window of its series (a run and its margins, from a trace read in windows)
// with what the whole series gave: its method and, for the hybrid, the window's hybrid built with the whole
// series' lag and gain (energy.NewHybridsFitted) and the lag estimate. Inside the window its energies are those of
// NewMeter on the whole series.
func FittedMeter(w *trace.Series, method string, h *energy.Hybrid, lag energy.LagEstimate) *Meter {
	m := &Meter{series: w, Method: method}
	if method == MethodHybrid {
		if h == nil {
			return &Meter{series: w} // no hybrid over the window: no energy rather than another method's
		}
		m.hybrid, m.Lag, m.Source = h, lag, manifest.LagNone
		if lag.OK {
			m.Source = manifest.LagFit
		}
	}
	return m
}

// MethodOf is the method NewMeter chooses for a series of distinct distinct counter values (consecutive equal
// readings counted once), counters readings and samples samples.
func MethodOf(distinct, counters, samples int) string {
	switch {
	case distinct >= 2 && samples >= 2:
		return MethodHybrid
	case samples >= 2:
		return MethodSamples
	case counters >= 2:
		return MethodCounter
	}
	return ""
}
