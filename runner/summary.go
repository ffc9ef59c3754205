package runner

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/lem-energy/lem/internal/manifest"
)

// WriteSummary prints the run's table: raw and idle-adjusted energy per GPU and per phase, J per token, warnings.
func WriteSummary(w io.Writer, dir string, m *manifest.Manifest) error {
	fmt.Fprintf(w, "\nlem-run %s — %s, %s, %.2f s", m.RunID, m.Experiment, m.Status, m.Times.DurationS)
	if m.ExitCode != nil {
		fmt.Fprintf(w, ", exit %d", *m.ExitCode)
	}
	fmt.Fprintf(w, "\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "GPU\tidle W\tcounter J\thybrid J\tadjusted J\tmean W\tpeak W\tsamples\t")
	for _, g := range m.GPUs {
		idle := "-"
		if g.Baseline != nil {
			idle = fmt.Sprintf("%.1f", g.Baseline.MedianW)
		}
		label := fmt.Sprint(g.Index)
		if g.Role == manifest.RoleObserved {
			label += " (observed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t\n", label, idle, g.Energy.CounterJ, g.Energy.HybridJ,
			g.Energy.AdjustedJ, g.MeanPowerW, g.PeakPowerW, g.Capture.Samples)
	}
	if len(m.GPUs) > 1 {
		fmt.Fprintf(tw, "workload\t\t%.1f\t%.1f\t%.1f\t\t\t\t\n", m.Energy.CounterJ, m.Energy.HybridJ, m.Energy.AdjustedJ)
	}
	if o := m.ObservedEnergy; o != nil {
		fmt.Fprintf(tw, "observed\t\t%.1f\t%.1f\t%.1f\t\t\t\t\n", o.CounterJ, o.HybridJ, o.AdjustedJ)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(m.Phases) > 0 {
		// A phase that recurs (prefill, decode per batch) is shown once, summed; the manifest keeps each.
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "phase\ttimes\tseconds\thybrid J\tadjusted J\t")
		for _, a := range m.PhaseTotals() {
			fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.1f\t%.1f\t\n", a.Name, a.Count, a.DurationS, a.HybridJ, a.AdjustedJ)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if d := m.Derived; d != nil && d.OutputTokens > 0 {
		fmt.Fprintf(w, "\n%.0f output tokens: %.4f J/token raw, %.4f J/token adjusted (%.2f tokens/J raw)\n",
			d.OutputTokens, d.JPerOutputToken, d.JPerOutputTokenAdj, d.OutputTokensPerJ)
	}
	for _, wn := range m.Warnings {
		fmt.Fprintf(w, "warning [%s]: %s\n", wn.Code, wn.Message)
	}
	fmt.Fprintf(w, "run directory: %s\n", dir)
	return nil
}
