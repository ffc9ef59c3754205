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
	neg := func(what string, v manifest.Num) {
		if v.Valid() && v < 0 {
			out = append(out, fmt.Sprintf("%s is %g", what, float64(v)))
		}
	}
	energy := func(what string, e manifest.Energy) {
		neg(what+".counter_j", e.CounterJ)
		neg(what+".hybrid_j", e.HybridJ)
		neg(what+".sampled_j", e.SampledJ)
		neg(what+".adjusted_j", e.AdjustedJ)
	}
	neg("times.duration_s", manifest.Num(m.Times.DurationS))
	energy("energy", m.Energy)
	for _, g := range m.GPUs {
		energy(fmt.Sprintf("gpus[%d].energy", g.Index), g.Energy)
	}
	for _, p := range m.Phases {
		neg(fmt.Sprintf("phases[%s].duration_s", p.Name), manifest.Num(p.DurationS))
		energy(fmt.Sprintf("phases[%s].energy", p.Name), p.Energy)
		for _, g := range p.GPUs {
			neg(fmt.Sprintf("phases[%s].gpus[%d].hybrid_j", p.Name, g.Index), g.HybridJ)
			neg(fmt.Sprintf("phases[%s].gpus[%d].adjusted_j", p.Name, g.Index), g.AdjustedJ)
		}
	}
	if d := m.Derived; d != nil {
		neg("derived.j_per_output_token", d.JPerOutputToken)
		neg("derived.j_per_output_token_adjusted", d.JPerOutputTokenAdj)
	}
	return out
}
