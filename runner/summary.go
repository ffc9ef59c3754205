package runner

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/lem-energy/lem/internal/manifest"
)

// J formats a measured value with one decimal, or "—" when it was not measured.
func J(n manifest.Num) string { return Fmt(n, 1) }

// Fmt formats a measured value with prec decimals, or "—" when it was not measured.
func Fmt(n manifest.Num, prec int) string {
	if !n.Valid() {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, float64(n))
}

// WriteSummary prints the run's table: raw and idle-adjusted energy per GPU and per phase, J per token, warnings.
func WriteSummary(w io.Writer, dir string, m *manifest.Manifest) error {
	fmt.Fprintf(w, "\nlem-run %s — %s, %s, %.2f s", m.RunID, m.Experiment, m.Status, m.Times.DurationS)
	if m.ExitCode != nil {
		fmt.Fprintf(w, ", exit %d", *m.ExitCode)
	}
	fmt.Fprintf(w, "\n")
	if m.Error != "" {
		fmt.Fprintf(w, "error: %s\n", m.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "GPU\tidle W\tcounter J\thybrid J\tadjusted J\tmean W\tpeak W\tsamples\t")
	for _, g := range m.GPUs {
		idle := "—"
		if g.Baseline != nil {
			idle = fmt.Sprintf("%.1f", g.Baseline.MedianW)
		}
		label := fmt.Sprint(g.Index)
		if g.Role == manifest.RoleObserved {
			label += " (observed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", label, idle, J(g.Energy.CounterJ), J(g.Energy.HybridJ),
			J(g.Energy.AdjustedJ), J(g.MeanPowerW), J(g.PeakPowerW), g.Capture.Samples)
	}
	if len(m.GPUs) > 1 {
		fmt.Fprintf(tw, "workload\t\t%s\t%s\t%s\t\t\t\t\n", J(m.Energy.CounterJ), J(m.Energy.HybridJ), J(m.Energy.AdjustedJ))
	}
	if o := m.ObservedEnergy; o != nil {
		fmt.Fprintf(tw, "observed\t\t%s\t%s\t%s\t\t\t\t\n", J(o.CounterJ), J(o.HybridJ), J(o.AdjustedJ))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(m.Phases) > 0 {
		// A phase that recurs (prefill, decode per batch) is one row, summed; the trace keeps each occurrence.
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "phase\ttimes\tseconds\thybrid J\tadjusted J\t")
		for _, p := range m.Phases {
			fmt.Fprintf(tw, "%s\t%d\t%.3f\t%s\t%s\t\n", p.Name, p.Count, p.DurationS, J(p.Energy.HybridJ), J(p.Energy.AdjustedJ))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if d := m.Derived; d != nil && d.OutputTokens.Valid() {
		fmt.Fprintf(w, "\n%.0f output tokens: %s J/token raw, %s J/token adjusted (%s tokens/J raw)\n",
			float64(d.OutputTokens), Fmt(d.JPerOutputToken, 4), Fmt(d.JPerOutputTokenAdj, 4), Fmt(d.OutputTokensPerJ, 2))
	}
	for _, wn := range m.Warnings {
		fmt.Fprintf(w, "warning [%s]: %s\n", wn.Code, wn.Message)
	}
	fmt.Fprintf(w, "run directory: %s\n", dir)
	return nil
}
