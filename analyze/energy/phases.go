package energy

import (
	"math"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// PhaseEnergy is one GPU's energy over one phase by every method. A method without data is NaN, with the reason
// in Notes.
type PhaseEnergy struct {
	GPU      int
	RunID    string
	Phase    string
	Start    time.Time
	End      time.Time
	CounterJ float64
	// CounterUpdates is how often the counter changed inside the phase.
	CounterUpdates int
	SampledJ       float64
	Samples        int
	Gaps           int
	HybridJ        float64
	// AveragePowerJ integrates the driver's 1 s-average power reading, the method most polling tools use;
	// reported for comparison only.
	AveragePowerJ float64
	Notes         []string
}

// Duration of the phase.
func (p PhaseEnergy) Duration() time.Duration { return p.End.Sub(p.Start) }

// Options tune ByPhase.
type Options struct {
	// Lag is the counter lag for the hybrid; nil estimates it from the data (FitHybrid).
	Lag *time.Duration
}

// AveragePowerSeries turns the telemetry's 1 s-average power readings into a sample series.
func AveragePowerSeries(tel []trace.Telemetry) []trace.PowerSample {
	out := make([]trace.PowerSample, 0, len(tel))
	for _, t := range tel {
		if !math.IsNaN(t.AveragePowerW) {
			out = append(out, trace.PowerSample{Time: t.Time, PowerW: t.AveragePowerW})
		}
	}
	return out
}

// ByPhase computes every method's energy for each phase on one GPU's series, and the lag the hybrid used.
func ByPhase(gpuIndex int, s *trace.Series, phases []trace.Phase, opts Options) ([]PhaseEnergy, LagEstimate) {
	var lag LagEstimate
	var hyb *Hybrid
	var herr error
	if opts.Lag != nil {
		lag = LagEstimate{Lag: *opts.Lag, OK: true}
		hyb, herr = NewHybrid(s.Counters, s.Samples, lag.Lag)
	} else {
		hyb, lag, herr = FitHybrid(s.Counters, s.Samples)
	}
	avg := AveragePowerSeries(s.Telemetry)
	nan := math.NaN()
	out := make([]PhaseEnergy, 0, len(phases))
	for _, ph := range phases {
		pe := PhaseEnergy{GPU: gpuIndex, RunID: ph.RunID, Phase: ph.Name, Start: ph.Start, End: ph.End,
			CounterJ: nan, SampledJ: nan, HybridJ: nan, AveragePowerJ: nan}
		if c, err := Counter(s.Counters, ph.Start, ph.End); err == nil {
			pe.CounterJ, pe.CounterUpdates = c.Joules, c.Updates
		} else {
			pe.Notes = append(pe.Notes, "counter: "+err.Error())
		}
		if r, err := Sampled(s.Samples, ph.Start, ph.End); err == nil {
			pe.SampledJ, pe.Samples, pe.Gaps = r.Joules, r.N, r.Gaps
		} else {
			pe.Notes = append(pe.Notes, "samples: "+err.Error())
		}
		switch {
		case herr != nil:
			pe.Notes = append(pe.Notes, "hybrid: "+herr.Error())
		default:
			if r, err := hyb.Energy(ph.Start, ph.End); err == nil {
				pe.HybridJ = r.Joules
			} else {
				pe.Notes = append(pe.Notes, "hybrid: "+err.Error())
			}
		}
		if r, err := Sampled(avg, ph.Start, ph.End); err == nil {
			pe.AveragePowerJ = r.Joules
		}
		out = append(out, pe)
	}
	return out, lag
}
