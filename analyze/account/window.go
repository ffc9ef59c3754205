package account

import (
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/trace"
)

// FittedMeter is a GPU's meter over a window of its series (a run and its margins, from a trace read in windows)
// with what the whole series gave: its method and, for the hybrid, the lag estimate and the gain at the series'
// ends (energy.LagStream). Inside the window its energies are those of NewMeter on the whole series.
func FittedMeter(w *trace.Series, method string, lag energy.LagEstimate, gain float64) *Meter {
	m := &Meter{series: w, Method: method}
	if method != MethodHybrid {
		return m
	}
	h, err := energy.NewHybridFitted(w.Counters, w.Samples, lag.Lag, gain)
	if err != nil {
		return &Meter{series: w} // the window lacks what the hybrid reads: no energy rather than another method's
	}
	m.hybrid, m.Lag = h, lag
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
