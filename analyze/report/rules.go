package report

import (
	"fmt"
	"slices"

	"github.com/lem-energy/lem/internal/manifest"
)

// Rule is a quality rule a publishable run passes: broken by any of its warning codes, or by what its check
// finds. docs/METHODOLOGY.md lists each rule, its threshold and its reason.
type Rule struct {
	Name  string
	Codes []string // manifest warning codes that break it
	// Check returns what breaks the rule beyond warnings; nil: warnings only.
	Check func(m *manifest.Manifest) []string
}

// Rules are the quality rules of `lem-analyze validate`; the report's intervals use exactly the runs that pass
// them (Passes). Holding clocks under the software power cap (warning power_capped) is reported, not a rule: it
// is how H100/H200 run at full load. Thermal and hardware slowdowns (warning throttling) break a rule.
var Rules = []Rule{
	{Name: "status ok", Check: func(m *manifest.Manifest) []string {
		if m.Status != manifest.StatusOK {
			return []string{fmt.Sprintf("run ended %s", m.Status)}
		}
		return nil
	}},
	{Name: "window ≥ 5 s", Codes: []string{"short_window"}},
	{Name: "≥ 3 counter updates", Codes: []string{"few_counter_updates"}},
	{Name: "no lost samples", Codes: []string{"capture_gaps"}},
	{Name: "no counter reset", Codes: []string{"counter_reset"}},
	{Name: "no thermal or hardware slowdown", Codes: []string{"throttling"}},
	{Name: "stable idle baseline", Codes: []string{"unstable_baseline", "gpu_busy_baseline", "no_baseline", "temperature_drift",
		"baseline_drift"}},
	{Name: "every marker accepted", Codes: []string{"marker_rejected"}},
	{Name: "markers as they happened", Codes: []string{"markers_buffered"}},
	{Name: "no negative energy or duration", Check: negatives},
}

// Violations lists the rules a run breaks, each with what broke it.
func Violations(m *manifest.Manifest) []string {
	var out []string
	for _, r := range Rules {
		if r.Check != nil {
			for _, s := range r.Check(m) {
				out = append(out, r.Name+": "+s)
			}
		}
		for _, w := range m.Warnings {
			if slices.Contains(r.Codes, w.Code) {
				out = append(out, r.Name+": "+w.Message)
			}
		}
	}
	return out
}

// Passes says whether a run passes every rule: the one decision behind validate's verdict, the report's valid
// runs and which runs enter the intervals.
func Passes(m *manifest.Manifest) bool { return len(Violations(m)) == 0 }

// negatives finds energies and durations below zero: no measurement gives them, so the manifest is damaged or
// hand-edited.
func negatives(m *manifest.Manifest) []string {
	var out []string
	// The names are formatted only for a value found negative: every run is checked, by every report.
	neg := func(v manifest.Num, format string, a ...any) {
		if v.Valid() && v < 0 {
			out = append(out, fmt.Sprintf("%s is %g", fmt.Sprintf(format, a...), float64(v)))
		}
	}
	energy := func(e manifest.Energy, format string, a ...any) {
		neg(e.CounterJ, format+".counter_j", a...)
		neg(e.HybridJ, format+".hybrid_j", a...)
		neg(e.SampledJ, format+".sampled_j", a...)
		neg(e.AdjustedJ, format+".adjusted_j", a...)
	}
	neg(manifest.Num(m.Times.DurationS), "times.duration_s")
	energy(m.Energy, "energy")
	for _, g := range m.GPUs {
		energy(g.Energy, "gpus[%d].energy", g.Index)
	}
	for _, p := range m.Phases {
		neg(manifest.Num(p.DurationS), "phases[%s].duration_s", p.Name)
		energy(p.Energy, "phases[%s].energy", p.Name)
		for _, g := range p.GPUs {
			neg(g.HybridJ, "phases[%s].gpus[%d].hybrid_j", p.Name, g.Index)
			neg(g.AdjustedJ, "phases[%s].gpus[%d].adjusted_j", p.Name, g.Index)
		}
	}
	if d := m.Derived; d != nil {
		neg(d.JPerOutputToken, "derived.j_per_output_token")
		neg(d.JPerOutputTokenAdj, "derived.j_per_output_token_adjusted")
	}
	return out
}
