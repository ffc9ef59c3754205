package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/stats"
	"github.com/lem-energy/lem/internal/manifest"
)

// num formats a value with prec decimals, or "–" when it was not measured (NaN or null).
func num[T ~float64](v T, prec int) string {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "–"
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}

// numAny is num for templates, which pass float64 and manifest.Num alike.
func numAny(v any, prec int) string {
	switch x := v.(type) {
	case float64:
		return num(x, prec)
	case manifest.Num:
		return num(x, prec)
	case int:
		return num(float64(x), prec)
	}
	return "–"
}

func ci(s stats.Summary, prec int) string {
	if s.N == 0 {
		return "–"
	}
	if s.N < 2 {
		return num(s.Mean, prec) + " (n=1)"
	}
	out := fmt.Sprintf("%s [%s, %s]", num(s.Mean, prec), num(s.CILow, prec), num(s.CIHigh, prec))
	if s.BootLow != 0 || s.BootHigh != 0 {
		out += fmt.Sprintf(" boot [%s, %s]", num(s.BootLow, prec), num(s.BootHigh, prec))
	}
	return out
}

// Markdown writes the report as Markdown tables.
func Markdown(w io.Writer, runs []Run, exps []Experiment, probs []Problem) error {
	fmt.Fprintf(w, "# lem report\n\n%d runs, %d experiments.\n\n## Runs\n\n", len(runs), len(exps))
	fmt.Fprintln(w, "| run | experiment | status | s | GPUs | energy J | adjusted J | ± J random (sensor gain) | J/token | J/token adj | tokens/J | mean W | peak W | steady W | warnings |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		m := r.Manifest
		jt, jta, tpj := manifest.Null, manifest.Null, manifest.Null
		if d := m.Derived; d != nil {
			jt, jta, tpj = d.JPerOutputToken, d.JPerOutputTokenAdj, d.OutputTokensPerJ
		}
		var mean manifest.Num
		peak := manifest.Null
		for _, g := range m.GPUs {
			if g.Role == manifest.RoleObserved {
				continue
			}
			mean += g.MeanPowerW
			if g.PeakPowerW.Valid() && (!peak.Valid() || g.PeakPowerW > peak) {
				peak = g.PeakPowerW
			}
		}
		codes := make([]string, 0, len(m.Warnings))
		for _, wn := range m.Warnings {
			codes = append(codes, wn.Code)
		}
		steadyW := "none"
		var found bool
		var sw float64
		for _, st := range r.Steady {
			if st.Found {
				found = true
				sw += st.MeanW
			}
		}
		if found {
			steadyW = num(sw, 1)
		} else if r.Steady == nil {
			steadyW = "–"
		}
		u := r.Uncertainty
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s |\n", m.RunID,
			m.Experiment, m.Status, num(m.Times.DurationS, 2), len(m.GPUs), num(m.Energy.HybridJ, 1),
			num(m.Energy.AdjustedJ, 1), num(u.RandomJ, 2), num(u.SensorGainJ, 1), num(jt, 4), num(jta, 4), num(tpj, 3),
			num(mean, 1), num(peak, 1), steadyW, strings.Join(codes, ", "))
	}
	fmt.Fprintln(w, "\n## Phases\n\n| run | phase | times | s | energy J | adjusted J |\n|---|---|---|---|---|---|")
	for _, r := range runs {
		for _, a := range r.Manifest.Phases {
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s |\n", r.Manifest.RunID, a.Name, a.Count, num(a.DurationS, 3),
				num(a.Energy.HybridJ, 1), num(a.Energy.AdjustedJ, 1))
		}
	}
	fmt.Fprint(w, "\n## Experiments (runs with status ok; mean [95 % t interval])\n\n")
	ExperimentTable(w, exps)
	if len(probs) > 0 {
		fmt.Fprint(w, "\n## Inputs not used\n\n")
		for _, p := range probs {
			fmt.Fprintf(w, "- `%s`: %s\n", p.Path, p.Err)
		}
	}
	return nil
}

// ExperimentTable writes the per-experiment summary (mean [95 % t interval]) and, where runs have phases, the
// per-phase energies, as Markdown tables.
func ExperimentTable(w io.Writer, exps []Experiment) {
	fmt.Fprintln(w, "| experiment | runs (ok) | s | energy J | adjusted J | J/token | J/token adjusted | energy vs reference | J/token adj vs reference |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	ratio := func(r *stats.Ratio) string {
		if r == nil {
			return "–"
		}
		return fmt.Sprintf("%s [%s, %s]", num(r.Value, 3), num(r.CILow, 3), num(r.CIHigh, 3))
	}
	phases := false
	for _, e := range exps {
		fmt.Fprintf(w, "| %s | %d (%d) | %s | %s | %s | %s | %s | %s | %s |\n", e.Name, e.Runs, e.Valid, ci(e.DurationS, 2),
			ci(e.EnergyJ, 1), ci(e.AdjustedJ, 1), ci(e.JPerToken, 4), ci(e.JPerTokenAdj, 4), ratio(e.VsReferenceAdj), ratio(e.TokenVsRef))
		phases = phases || len(e.Phases) > 0
	}
	fmt.Fprintln(w, "\nAbsolute energies carry the GPU sensor's ±5 % gain (systematic per board); it cancels in ratios between experiments on the same GPU.")
	if !phases {
		return
	}
	fmt.Fprintln(w, "\n| experiment | phase | s | energy J | adjusted J |\n|---|---|---|---|---|")
	for _, e := range exps {
		for _, p := range e.Phases {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", e.Name, p.Name, ci(p.DurationS, 3), ci(p.EnergyJ, 1), ci(p.AdjustedJ, 1))
		}
	}
}

// JSON writes runs (their manifests), experiments and problems.
func JSON(w io.Writer, runs []Run, exps []Experiment, probs []Problem) error {
	type steadyOut struct {
		GPU   int       `json:"gpu"`
		Found bool      `json:"found"`
		Start time.Time `json:"start,omitzero"`
		End   time.Time `json:"end,omitzero"`
		MeanW float64   `json:"mean_w,omitempty"`
		CV    float64   `json:"cv,omitempty"`
	}
	type runOut struct {
		Dir         string      `json:"dir"`
		Manifest    any         `json:"manifest"`
		Uncertainty Uncertainty `json:"uncertainty"`
		Steady      []steadyOut `json:"steady_state"`
		Violations  []string    `json:"violations"`
		Attempts    int         `json:"attempts,omitempty"`
	}
	out := struct {
		Runs        []runOut     `json:"runs"`
		Experiments []Experiment `json:"experiments"`
		Problems    []Problem    `json:"problems"`
	}{Experiments: exps, Problems: probs}
	for _, r := range runs {
		ro := runOut{Dir: r.Dir, Manifest: r.Manifest, Uncertainty: r.Uncertainty, Violations: Violations(r.Manifest),
			Attempts: r.Attempts}
		for g, st := range r.Steady {
			ro.Steady = append(ro.Steady, steadyOut{GPU: g, Found: st.Found, Start: st.Start, End: st.End, MeanW: st.MeanW, CV: st.CV})
		}
		sort.Slice(ro.Steady, func(i, j int) bool { return ro.Steady[i].GPU < ro.Steady[j].GPU })
		out.Runs = append(out.Runs, ro)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// CSV writes one row per run and GPU, for spreadsheets and dataframes.
func CSV(w io.Writer, runs []Run) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"run_id", "experiment", "campaign", "cycle", "status", "start", "duration_s", "gpu", "role", "uuid",
		"baseline_w", "counter_j", "sampled_j", "hybrid_j", "adjusted_j", "mean_power_w", "peak_power_w", "output_tokens",
		"j_per_output_token", "j_per_output_token_adjusted", "warnings"})
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].Manifest.Times.Start.Before(runs[j].Manifest.Times.Start) })
	for _, r := range runs {
		m := r.Manifest
		tok, jt, jta := manifest.Null, manifest.Null, manifest.Null
		if d := m.Derived; d != nil {
			tok, jt, jta = d.OutputTokens, d.JPerOutputToken, d.JPerOutputTokenAdj
		}
		codes := make([]string, 0, len(m.Warnings))
		for _, wn := range m.Warnings {
			codes = append(codes, wn.Code)
		}
		for _, g := range m.GPUs {
			base := math.NaN()
			if g.Baseline != nil {
				base = g.Baseline.MedianW
			}
			cw.Write([]string{m.RunID, m.Experiment, m.Campaign, strconv.Itoa(m.Cycle), m.Status,
				m.Times.Start.Format("2006-01-02T15:04:05.000000000Z07:00"), num(m.Times.DurationS, 3), strconv.Itoa(g.Index),
				g.Role, g.UUID, num(base, 3), num(g.Energy.CounterJ, 3), num(g.Energy.SampledJ, 3), num(g.Energy.HybridJ, 3), num(g.Energy.AdjustedJ, 3),
				num(g.MeanPowerW, 3), num(g.PeakPowerW, 3), num(tok, 0), num(jt, 6), num(jta, 6), strings.Join(codes, ";")})
		}
	}
	cw.Flush()
	return cw.Error()
}
