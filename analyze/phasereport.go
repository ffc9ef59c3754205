package analyze

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/trace"
)

// GPUPhases is one GPU's capture quality and per-phase energies.
type GPUPhases struct {
	GPU     int
	Name    string
	Capture Capture
	Lag     energy.LagEstimate
	Phases  []energy.PhaseEnergy
}

// PhaseEnergies computes the per-phase table of every GPU in tr. Phases come from the trace's events; a trace
// without phase events gets one phase spanning it.
func PhaseEnergies(tr *trace.Trace, opts energy.Options) []GPUPhases {
	_, last := tr.Span()
	phases := trace.Phases(tr.Events, last)
	var out []GPUPhases
	for _, g := range tr.GPUIndices() {
		s := tr.GPUs[g]
		phases := phases
		if len(phases) == 0 {
			first, last := s.Common()
			phases = []trace.Phase{{Name: "all", Start: first, End: last}}
		}
		gp := GPUPhases{GPU: g, Capture: CaptureQuality(g, s, tr.Events)}
		if d, ok := tr.Env.Device(g); ok {
			gp.Name = d.Name
		}
		gp.Phases, gp.Lag = energy.ByPhase(g, s, phases, opts)
		out = append(out, gp)
	}
	return out
}

func joules(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// WritePhaseTables renders PhaseEnergies as plain-text tables.
func WritePhaseTables(w io.Writer, gps []GPUPhases) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "GPU\tsamples\texpected\tcapture\tgaps\tmissed\tgaps at drain\tcounter reads\tread median\tread p99\tread max\t")
	for _, gp := range gps {
		c := gp.Capture
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f%%\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", gp.GPU, c.Samples, c.Expected, 100*c.Ratio(),
			c.Gaps, c.Missed, c.DrainGaps, c.CounterReads, c.ReadMedian.Round(10*time.Microsecond), c.ReadP99.Round(10*time.Microsecond), c.ReadMax.Round(10*time.Microsecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "(gaps inside one drained batch are the driver's own; only gaps at a drain can be samples lem lost)")
	for _, gp := range gps {
		lag := "not resolvable (flat power)"
		if gp.Lag.OK {
			lag = gp.Lag.Lag.String()
		}
		fmt.Fprintf(w, "\nGPU %d %s — energy per phase (J); counter lag used by hybrid: %s\n", gp.GPU, gp.Name, lag)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "phase\tseconds\tcounter\t50 Hz\thybrid\t1 s-avg power\tcounter updates\t")
		var tc, ts, th float64
		for _, p := range gp.Phases {
			fmt.Fprintf(tw, "%s\t%.3f\t%s\t%s\t%s\t%s\t%d\t\n", p.Phase, p.Duration().Seconds(), joules(p.CounterJ),
				joules(p.SampledJ), joules(p.HybridJ), joules(p.AveragePowerJ), p.CounterUpdates)
			tc += p.CounterJ
			ts += p.SampledJ
			th += p.HybridJ
		}
		fmt.Fprintf(tw, "sum\t\t%s\t%s\t%s\t\t\t\n", joules(tc), joules(ts), joules(th))
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, p := range gp.Phases {
			for _, n := range p.Notes {
				fmt.Fprintf(w, "  note: %s: %s\n", p.Phase, n)
			}
		}
	}
	return nil
}
