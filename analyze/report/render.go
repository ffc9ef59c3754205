package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/stats"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/parallel"
)

// missing is what tables show for a value that was not measured.
const missing = "—"

// num formats a value with prec decimals, or "—" when it was not measured (NaN or null).
func num[T ~float64](v T, prec int) string {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return missing
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}

// cell is num for CSV: an empty cell for a value that was not measured, so numeric columns stay numeric.
func cell[T ~float64](v T, prec int) string {
	f := float64(v)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return ""
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
	return missing
}

// ci shows a summary: "mean [low, high]" from three values on (with the bootstrap interval from ten), the values
// themselves below three.
func ci(s stats.Summary, prec int) string {
	if s.N == 0 {
		return missing
	}
	if !s.HasInterval() {
		vs := make([]string, len(s.Values))
		for i, v := range s.Values {
			vs[i] = num(v, prec)
		}
		return fmt.Sprintf("%s (n=%d: %s)", num(s.Mean, prec), s.N, strings.Join(vs, ", "))
	}
	out := fmt.Sprintf("%s [%s, %s]", num(s.Mean, prec), num(s.CILow, prec), num(s.CIHigh, prec))
	if s.HasBootstrap() {
		out += fmt.Sprintf(" boot [%s, %s]", num(s.BootLow, prec), num(s.BootHigh, prec))
	}
	return out
}

// pm shows an expanded uncertainty as "± U", or "—".
func pm[T ~float64](u T, prec int) string {
	if !manifest.Num(u).Valid() {
		return missing
	}
	return "± " + num(u, prec)
}

// ratioText shows a ratio with its 95 % interval (repetition) and expanded uncertainty.
func ratioText(r *RatioStats) string {
	if r == nil {
		return missing
	}
	out := num(r.Ratio.Value, 3)
	if !math.IsNaN(r.Ratio.CILow) {
		out += fmt.Sprintf(" [%s, %s]", num(r.Ratio.CILow, 3), num(r.Ratio.CIHigh, 3))
	}
	if r.Uncertainty.Expanded.Valid() {
		out += " " + pm(r.Uncertainty.Expanded, 3)
	}
	return out
}

// adjustedText shows an adjusted energy, marked where it was clamped at 0.
func adjustedText(v manifest.Num, clamped bool, prec int) string {
	if clamped {
		return num(v, prec) + " (clamped)"
	}
	return num(v, prec)
}

// runFigures are the per-run columns the tables share.
type runFigures struct {
	jt, jta, tpj, mean, peak manifest.Num
	steady                   string
	codes                    []string
}

func figures(r Run) runFigures {
	m := r.Manifest
	f := runFigures{jt: manifest.Null, jta: manifest.Null, tpj: manifest.Null, peak: manifest.Null}
	if d := m.Derived; d != nil {
		f.jt, f.jta, f.tpj = d.JPerOutputToken, d.JPerOutputTokenAdj, d.OutputTokensPerJ
	}
	for _, g := range m.GPUs {
		if g.Role == manifest.RoleObserved {
			continue
		}
		f.mean += g.MeanPowerW
		if g.PeakPowerW.Valid() && (!f.peak.Valid() || g.PeakPowerW > f.peak) {
			f.peak = g.PeakPowerW
		}
	}
	for _, wn := range m.Warnings {
		f.codes = append(f.codes, wn.Code)
	}
	f.steady = missing
	if r.Steady != nil {
		f.steady = "none"
		var sw float64
		found := false
		for _, st := range r.Steady {
			if st.Found {
				found = true
				sw += st.MeanW
			}
		}
		if found {
			f.steady = num(sw, 1)
		}
	}
	return f
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// calibrationNotes lists the runs whose energies a calibration file corrected, each with the fits used.
func calibrationNotes(w io.Writer, runs []Run) {
	first := true
	for _, r := range runs {
		if r.Calibrated == nil {
			continue
		}
		if first {
			fmt.Fprint(w, "\nEnergies corrected to the external meter's scale (docs/METHODOLOGY.md, \"Calibration\"); the gain "+
				"term of their budgets is the fit's:\n\n")
			first = false
		}
		fmt.Fprintf(w, "- %s: %s\n", r.Manifest.RunID, r.Calibrated)
	}
}

// phaseLabel is a phase's name with what the accounting flagged in it: short (shorter than one counter interval,
// warning short_phase) and aliasing (warning aliasing_suspected). Their budgets are wider for it.
func phaseLabel(p manifest.Phase) string {
	var flags []string
	if p.Short {
		flags = append(flags, "short")
	}
	if p.Aliasing {
		flags = append(flags, "aliasing")
	}
	if len(flags) == 0 {
		return p.Name
	}
	return p.Name + " (" + strings.Join(flags, ", ") + ")"
}

// perToken divides an energy's budget by the run's output tokens (exact counts: the relative terms carry over).
func perToken(u manifest.Num, m *manifest.Manifest) manifest.Num {
	if m.Derived == nil || !m.Derived.OutputTokens.Valid() {
		return manifest.Null
	}
	return u / m.Derived.OutputTokens
}

// Markdown writes the report as Markdown tables.
func Markdown(w io.Writer, runs []Run, exps []Experiment, probs []Problem) error {
	fmt.Fprintf(w, "# lem report\n\n%d runs, %d experiments. %s\n\n## Runs\n\n", len(runs), len(exps), uncertaintyNote)
	fmt.Fprintln(w, "| run | experiment | status | ok | s | GPUs | energy J | U J | adjusted J | U J | J/token | U | J/token adjusted | U | tokens/J | mean W | peak W | steady W | warnings |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		m := r.Manifest
		f := figures(r)
		u := r.Uncertainty
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			m.RunID, m.Experiment, m.Status, yesNo(Passes(m)), num(m.Times.DurationS, 2), len(m.GPUs),
			num(m.Energy.HybridJ, 1), pm(u.ExpandedRawJ, 1), adjustedText(m.Energy.AdjustedJ, m.Energy.AdjustedClamped, 1),
			pm(u.ExpandedAdjustedJ, 1), num(f.jt, 4), pm(perToken(u.ExpandedRawJ, m), 4), num(f.jta, 4),
			pm(perToken(u.ExpandedAdjustedJ, m), 4), num(f.tpj, 3), num(f.mean, 1), num(f.peak, 1), f.steady,
			strings.Join(f.codes, ", "))
	}
	calibrationNotes(w, runs)
	fmt.Fprint(w, "\n### Uncertainty budgets of the runs (standard uncertainties, J)\n\n")
	budgetHeader(w, "run")
	for _, r := range runs {
		budgetRows(w, r.Manifest.RunID, r.Uncertainty)
	}
	fmt.Fprintln(w, "\n## Phases\n\n| run | phase | times | s | energy J | U J | adjusted J | U J | power-capped s |\n|---|---|---|---|---|---|---|---|---|")
	for i := range runs {
		r := &runs[i]
		for _, p := range r.Manifest.Phases {
			b, _ := r.PhaseBudget(p.Name)
			capped := manifest.Null
			if r.Power != nil {
				capped = manifest.Num(r.PowerCappedS[p.Name])
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", r.Manifest.RunID, phaseLabel(p), p.Count,
				num(p.DurationS, 3), num(p.Energy.HybridJ, 1), pm(b.ExpandedRawJ, 1),
				adjustedText(p.Energy.AdjustedJ, p.Energy.AdjustedClamped, 1), pm(b.ExpandedAdjustedJ, 1), num(capped, 2))
		}
	}
	processesMarkdown(w, runs)
	fmt.Fprint(w, "\n## Experiments\n\n")
	ExperimentTable(w, exps)
	if len(probs) > 0 {
		fmt.Fprint(w, "\n## Inputs not used\n\n")
		for _, p := range probs {
			fmt.Fprintf(w, "- `%s`: %s\n", p.Path, p.Err)
		}
	}
	return nil
}

// uncertaintyNote says what the report's intervals and ± values are.
const uncertaintyNote = "Means carry 95 % intervals over the runs that pass `lem-analyze validate` (log scale for " +
	"positive quantities, studentized bootstrap from 10 runs; fewer than 3 runs are listed, not given an interval). " +
	"U is the expanded uncertainty (k = 2) of the GUM budget: sensor gain/offset (±5 % of reading, assumed: NVML " +
	"documents it for Fermi and Kepler boards only), counter lag, edges, baseline, repetition, aliasing (the 50 Hz " +
	"shape inside the counter intervals at the edges; at least 10 % of it for phases marked short) and marker " +
	"latency (0 until measured). Phases marked short are shorter than one counter interval; aliasing: the samples " +
	"disagreed with the counter inside them. System boundary: the GPU board only (no CPU, DRAM, PSU)."

var budgetTerms = []string{TermGain, TermLag, TermBoundary, TermLatency, TermBaseline, TermAliasing}

func budgetHeader(w io.Writer, first string) {
	fmt.Fprintf(w, "| %s | energy | gain | lag | boundary | marker latency | baseline | aliasing | u_c | U (k=2) |\n", first)
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
}

func budgetRows(w io.Writer, label string, b Budget) {
	for _, adj := range []bool{false, true} {
		what, uc, ex := "raw", b.URawJ, b.ExpandedRawJ
		if adj {
			what, uc, ex = "adjusted", b.UAdjustedJ, b.ExpandedAdjustedJ
		}
		cells := []string{label, what}
		for _, name := range budgetTerms {
			t := b.Term(name)
			v := t.RawJ
			if adj {
				v = t.AdjustedJ
			}
			cells = append(cells, num(v, 2))
		}
		cells = append(cells, num(uc, 2), num(ex, 2))
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

// idleTable shows the two idles and the energy adjusted to each, where any run measured an active idle.
func idleTable(w io.Writer, exps []Experiment) {
	if !slices.ContainsFunc(exps, func(e Experiment) bool { return e.Idle.ActiveW.N > 0 }) {
		return
	}
	fmt.Fprintln(w, "\n| experiment | deep idle W | adjusted J (adds to the host) | active idle W | adjusted to active idle J (the computation adds) |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, e := range exps {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", e.Name, ci(e.Idle.DeepW, 1), ci(e.AdjustedJ, 1),
			ci(e.Idle.ActiveW, 1), ci(e.Idle.AdjustedActiveJ, 1))
	}
	fmt.Fprintln(w, "\nDeep idle: the baseline before the workload (no context, clocks down), corrected to the run's temperature where")
	fmt.Fprintln(w, "the GPU's idle-temperature fit allows. Active idle: the GPU holding the workload's context with nothing running")
	fmt.Fprintln(w, "(its idle windows, or stretches of zero utilization). See docs/METHODOLOGY.md, \"Two idles\".")
}

// ExperimentTable writes the per-experiment summaries as Markdown: means with intervals and expanded
// uncertainties, runs left out, the comparison with the reference, phases, and the experiments' budgets.
func ExperimentTable(w io.Writer, exps []Experiment) {
	fmt.Fprintln(w, "| experiment | runs | ok | s | energy J | U J | adjusted J | U J | J/token | U | J/token adjusted | U |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	phases, refs, excluded := false, false, false
	for _, e := range exps {
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", e.Name, e.Runs, e.Valid,
			ci(e.DurationS, 2), ci(e.EnergyJ, 1), pm(e.EnergyU.Expanded, 1), ci(e.AdjustedJ, 1), pm(e.AdjustedU.Expanded, 1),
			ci(e.JPerToken, 4), pm(e.JPerTokenU.Expanded, 4), ci(e.JPerTokenAdj, 4), pm(e.JPerTokenAdjU.Expanded, 4))
		phases = phases || len(e.Phases) > 0
		refs = refs || e.Reference != nil
		excluded = excluded || len(e.Excluded) > 0
	}
	fmt.Fprintln(w, "\nok: runs that pass every quality rule (`lem-analyze validate`); only they enter the statistics.")
	if excluded {
		excludedList(w, exps)
	}
	if refs {
		referenceTable(w, exps)
	}
	idleTable(w, exps)
	if phases {
		experimentPhaseTable(w, exps)
	}
	meanBudgetTable(w, exps)
}

// excludedList names the runs left out of the statistics and the rules each broke.
func excludedList(w io.Writer, exps []Experiment) {
	fmt.Fprintln(w, "\nRuns left out of the statistics:")
	fmt.Fprintln(w)
	for _, e := range exps {
		for _, x := range e.Excluded {
			fmt.Fprintf(w, "- %s (%s): %s\n", x.RunID, e.Name, strings.Join(x.Violations, "; "))
		}
	}
}

// referenceTable writes each experiment's ratios to its reference, and whether the sensor gain cancels in them.
func referenceTable(w io.Writer, exps []Experiment) {
	fmt.Fprintln(w, "\n| experiment | vs | runs | energy (raw) | energy (adjusted) | J/token (raw) | J/token (adjusted) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	different := false
	for _, e := range exps {
		c := e.Reference
		if c == nil {
			continue
		}
		how := "independent"
		if c.Paired {
			how = "paired by cycle"
		}
		ref := c.Reference
		if c.DifferentBoards {
			ref += " (different boards)"
			different = true
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", e.Name, ref, how, ratioText(c.EnergyJ),
			ratioText(c.AdjustedJ), ratioText(c.JPerToken), ratioText(c.JPerTokenAdj))
	}
	fmt.Fprintln(w, "\nRatios: value [95 % interval over the runs] ± U (k = 2). On the same boards the sensor gain cancels in a ratio;")
	if different {
		fmt.Fprintln(w, "**different boards** (GPU UUIDs differ): the gain does not cancel, and both boards' gain terms are in U.")
	} else {
		fmt.Fprintln(w, "every comparison here ran on the same boards.")
	}
}

// experimentPhaseTable writes each experiment's phases: duration, energies and their uncertainties.
func experimentPhaseTable(w io.Writer, exps []Experiment) {
	fmt.Fprintln(w, "\n| experiment | phase | s | energy J | U J | adjusted J | U J | adjusted to active idle J | runs clamped | power-capped s |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, e := range exps {
		for _, p := range e.Phases {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |\n", e.Name, p.Name, ci(p.DurationS, 3),
				ci(p.EnergyJ, 1), pm(p.EnergyU.Expanded, 1), ci(p.AdjustedJ, 1), pm(p.AdjustedU.Expanded, 1),
				ci(p.AdjustedActiveJ, 1), p.Clamped, num(p.PowerCappedS, 2))
		}
	}
}

// meanBudgetTable writes the uncertainty budget of each experiment's mean figures, term by term.
func meanBudgetTable(w io.Writer, exps []Experiment) {
	fmt.Fprintln(w, "\nUncertainty budgets of the means (standard uncertainties in the figure's unit; terms in parentheses are random per run and already in the repetition):")
	fmt.Fprintln(w, "\n| experiment | figure | gain | lag | boundary | marker latency | baseline | aliasing | repetition | u_c | U (k=2) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, e := range exps {
		for _, f := range []struct {
			name string
			u    Uncert
			prec int
		}{{"energy J", e.EnergyU, 2}, {"adjusted J", e.AdjustedU, 2}, {"J/token", e.JPerTokenU, 5}, {"J/token adjusted", e.JPerTokenAdjU, 5}} {
			if len(f.u.Terms) == 0 {
				continue
			}
			cells := []string{e.Name, f.name}
			for _, name := range append(budgetTerms, TermRepetition) {
				t := f.u.Term(name)
				c := num(t.U, f.prec)
				if !t.Combined && t.U.Valid() {
					c = "(" + c + ")"
				}
				cells = append(cells, c)
			}
			cells = append(cells, num(f.u.U, f.prec), num(f.u.Expanded, f.prec))
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
	}
}

type steadyOut struct {
	GPU   int          `json:"gpu"`
	Found bool         `json:"found"`
	Start time.Time    `json:"start,omitzero"`
	End   time.Time    `json:"end,omitzero"`
	MeanW manifest.Num `json:"mean_w"`
	CV    manifest.Num `json:"cv"`
}

// JSON writes runs (their manifests, budgets, steady state and verdict), experiments and problems. Every value
// that was not measured is null.
func JSON(w io.Writer, runs []Run, exps []Experiment, probs []Problem) error {
	type runOut struct {
		Dir              string             `json:"dir"`
		Manifest         any                `json:"manifest"`
		OK               bool               `json:"ok"`
		Violations       []string           `json:"violations"`
		Attempts         int                `json:"attempts,omitempty"`
		Uncertainty      Budget             `json:"uncertainty"`
		PhaseUncertainty map[string]Budget  `json:"phase_uncertainty"`
		PowerCappedS     map[string]float64 `json:"power_capped_s"`
		Steady           []steadyOut        `json:"steady_state"`
		Calibrated       *Calibrated        `json:"calibrated,omitempty"`
	}
	out := struct {
		Runs        []runOut     `json:"runs"`
		Experiments []Experiment `json:"experiments"`
		Problems    []Problem    `json:"problems"`
	}{Runs: []runOut{}, Experiments: exps, Problems: probs}
	for i := range runs {
		r := &runs[i]
		v := Violations(r.Manifest)
		ro := runOut{Dir: r.Dir, Manifest: r.Manifest, OK: len(v) == 0, Violations: v, Attempts: r.Attempts, Uncertainty: r.Uncertainty,
			PhaseUncertainty: map[string]Budget{}, PowerCappedS: r.PowerCappedS, Calibrated: r.Calibrated}
		for _, p := range r.Manifest.Phases {
			ro.PhaseUncertainty[p.Name], _ = r.PhaseBudget(p.Name)
		}
		for g, st := range r.Steady {
			so := steadyOut{GPU: g, Found: st.Found, MeanW: manifest.Null, CV: manifest.Null}
			if st.Found {
				so.Start, so.End, so.MeanW, so.CV = st.Start, st.End, manifest.Num(st.MeanW), manifest.Num(st.CV)
			}
			ro.Steady = append(ro.Steady, so)
		}
		sort.Slice(ro.Steady, func(i, j int) bool { return ro.Steady[i].GPU < ro.Steady[j].GPU })
		out.Runs = append(out.Runs, ro)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// CSV tables (`lem-analyze report -f csv --table …`).
const (
	TableRuns        = "runs"
	TablePhases      = "phases"
	TableExperiments = "experiments"
	TableWindows     = "windows"
	TableProcesses   = "processes"
)

// Tables are the CSV tables, the default first.
var Tables = []string{TableRuns, TablePhases, TableExperiments, TableWindows, TableProcesses}

// CSV writes one table for spreadsheets and dataframes, a missing value as an empty cell: runs (one row per run
// and GPU), phases (per run and phase), experiments (one row per experiment and figure, ratios to the reference
// included) or windows (per run and window).
func CSV(w io.Writer, table string, runs []Run, exps []Experiment) error {
	cw := csv.NewWriter(w)
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].Manifest.Times.Start.Before(runs[j].Manifest.Times.Start) })
	switch table {
	case TableRuns, "":
		csvRuns(cw, runs)
	case TablePhases:
		csvPhases(cw, runs)
	case TableExperiments:
		csvExperiments(cw, exps)
	case TableWindows:
		csvWindows(cw, runs)
	case TableProcesses:
		csvProcesses(cw, runs)
	default:
		return fmt.Errorf("--table %q: want one of %s", table, strings.Join(Tables, ", "))
	}
	cw.Flush()
	return cw.Error()
}

// csvWindows is one row per run and window name (occurrences summed; median and p90 per occurrence), with the
// request attribution where the windows carried ids and token counts.
func csvWindows(cw *csv.Writer, runs []Run) {
	cw.Write([]string{"run_id", "experiment", "cycle", "window", "count", "ended_by_run", "duration_s", "hybrid_j",
		"adjusted_j", "adjusted_active_j", "median_j", "p90_j", "requests", "attributed_j", "unattributed_j",
		"median_j_per_output_token", "p90_j_per_output_token"})
	for _, r := range runs {
		m := r.Manifest
		for _, x := range m.Windows {
			req, at, un, mt, pt := "", manifest.Null, manifest.Null, manifest.Null, manifest.Null
			if a := x.Attribution; a != nil {
				req, at, un, mt, pt = strconv.Itoa(a.Requests), a.AttributedJ, a.UnattributedJ, a.MedianJPerOutputToken, a.P90JPerOutputToken
			}
			cw.Write([]string{m.RunID, m.Experiment, strconv.Itoa(m.Cycle), x.Name, strconv.Itoa(x.Count),
				strconv.Itoa(x.EndedByRun), cell(manifest.Num(x.DurationS), 3), cell(x.Energy.HybridJ, 3),
				cell(x.Energy.AdjustedJ, 3), cell(x.Energy.AdjustedActiveJ, 3), cell(x.MedianJ, 3), cell(x.P90J, 3),
				req, cell(at, 3), cell(un, 3), cell(mt, 6), cell(pt, 6)})
		}
	}
}

func csvRuns(cw *csv.Writer, runs []Run) {
	cw.Write([]string{"run_id", "experiment", "campaign", "cycle", "status", "start", "duration_s", "gpu", "role", "uuid",
		"baseline_w", "counter_j", "sampled_j", "hybrid_j", "adjusted_j", "mean_power_w", "peak_power_w", "output_tokens",
		"j_per_output_token", "j_per_output_token_adjusted", "warnings", "ok", "lag_ms", "lag_resolved", "energy_method",
		"run_hybrid_j", "run_adjusted_j", "run_u_raw_j", "run_expanded_raw_j", "run_u_adjusted_j", "run_expanded_adjusted_j",
		"idle_w", "active_idle_w", "active_idle_source", "adjusted_active_j", "baseline_pstate", "baseline_sm_clock_hz",
		"baseline_temp_c", "baseline_drift_w"})
	// The rows formatted on every core (a float's shortest text costs as much as the run's accounting did on one
	// core), then written in order.
	rows := make([][][]string, len(runs))
	parallel.For(len(runs), runtime.GOMAXPROCS(0), func(i int) { rows[i] = csvRunRows(runs[i]) })
	for _, rs := range rows {
		for _, row := range rs {
			cw.Write(row)
		}
	}
}

// csvRunRows is a run's rows of the runs table, one per GPU.
func csvRunRows(r Run) [][]string {
	m := r.Manifest
	ok := strconv.FormatBool(Passes(m))
	out := make([][]string, 0, len(m.GPUs))
	tok, jt, jta := manifest.Null, manifest.Null, manifest.Null
	if d := m.Derived; d != nil {
		tok, jt, jta = d.OutputTokens, d.JPerOutputToken, d.JPerOutputTokenAdj
	}
	codes := make([]string, 0, len(m.Warnings))
	for _, wn := range m.Warnings {
		codes = append(codes, wn.Code)
	}
	u := r.Uncertainty
	for _, g := range m.GPUs {
		base := math.NaN()
		if g.Baseline != nil {
			base = g.Baseline.MedianW
		}
		act, src, pst, clk, tmp, drift := math.NaN(), "", math.NaN(), math.NaN(), math.NaN(), math.NaN()
		if g.ActiveIdle != nil {
			act, src = g.ActiveIdle.MedianW, g.ActiveIdle.Source
		}
		if b := g.Baseline; b != nil {
			pst, clk, tmp, drift = orNaN(b.PState), orNaN(b.SMClockHz), orNaN(b.TempMeanC), orNaN(b.DriftW)
		}
		lag, resolved := math.NaN(), ""
		if g.Lag != nil {
			lag, resolved = g.Lag.MS, strconv.FormatBool(g.Lag.Resolved)
		}
		out = append(out, []string{m.RunID, m.Experiment, m.Campaign, strconv.Itoa(m.Cycle), m.Status,
			m.Times.Start.Format("2006-01-02T15:04:05.000000000Z07:00"), cell(m.Times.DurationS, 3), strconv.Itoa(g.Index),
			g.Role, g.UUID, cell(base, 3), cell(g.Energy.CounterJ, 3), cell(g.Energy.SampledJ, 3), cell(g.Energy.HybridJ, 3),
			cell(g.Energy.AdjustedJ, 3), cell(g.MeanPowerW, 3), cell(g.PeakPowerW, 3), cell(tok, 0), cell(jt, 6), cell(jta, 6),
			strings.Join(codes, ";"), ok, cell(lag, 1), resolved, g.Method,
			cell(m.Energy.HybridJ, 3), cell(m.Energy.AdjustedJ, 3), cell(u.URawJ, 3), cell(u.ExpandedRawJ, 3),
			cell(u.UAdjustedJ, 3), cell(u.ExpandedAdjustedJ, 3), cell(g.IdleW, 3), cell(act, 3), src,
			cell(g.Energy.AdjustedActiveJ, 3), cell(pst, 0), cell(clk, 0), cell(tmp, 1), cell(drift, 3)})
	}
	return out
}

// orNaN is *p, NaN for nil: an optional manifest figure as a cell.
func orNaN(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func csvPhases(cw *csv.Writer, runs []Run) {
	cw.Write([]string{"run_id", "experiment", "cycle", "ok", "phase", "count", "duration_s", "hybrid_j", "adjusted_j",
		"adjusted_clamped", "u_raw_j", "expanded_raw_j", "u_adjusted_j", "expanded_adjusted_j", "power_capped_s",
		"adjusted_active_j", "short", "aliasing_suspected"})
	for i := range runs {
		r := &runs[i]
		m := r.Manifest
		for _, p := range m.Phases {
			b, _ := r.PhaseBudget(p.Name)
			capped := math.NaN()
			if r.Power != nil {
				capped = r.PowerCappedS[p.Name]
			}
			cw.Write([]string{m.RunID, m.Experiment, strconv.Itoa(m.Cycle), strconv.FormatBool(Passes(m)), p.Name,
				strconv.Itoa(p.Count), cell(p.DurationS, 3), cell(p.Energy.HybridJ, 3), cell(p.Energy.AdjustedJ, 3),
				strconv.FormatBool(p.Energy.AdjustedClamped), cell(b.URawJ, 3), cell(b.ExpandedRawJ, 3),
				cell(b.UAdjustedJ, 3), cell(b.ExpandedAdjustedJ, 3), cell(capped, 3), cell(p.Energy.AdjustedActiveJ, 3),
				strconv.FormatBool(p.Short), strconv.FormatBool(p.Aliasing)})
		}
	}
}

func csvExperiments(cw *csv.Writer, exps []Experiment) {
	cw.Write([]string{"experiment", "phase", "figure", "runs", "valid_runs", "n", "mean", "ci_low", "ci_high", "method",
		"boot_low", "boot_high", "u", "expanded", "k", "values", "reference", "paired", "different_boards"})
	summary := func(e Experiment, phase, figure string, s stats.Summary, u *Uncert) {
		vs := make([]string, len(s.Values))
		for i, v := range s.Values {
			vs[i] = strconv.FormatFloat(v, 'g', -1, 64)
		}
		uc, ex, k := manifest.Null, manifest.Null, math.NaN()
		if u != nil {
			uc, ex, k = u.U, u.Expanded, u.K
		}
		cw.Write([]string{e.Name, phase, figure, strconv.Itoa(e.Runs), strconv.Itoa(e.Valid), strconv.Itoa(s.N),
			cell(s.Mean, 6), cell(s.CILow, 6), cell(s.CIHigh, 6), s.Method, cell(s.BootLow, 6), cell(s.BootHigh, 6),
			cell(uc, 6), cell(ex, 6), cell(k, 0), strings.Join(vs, ";"), "", "", ""})
	}
	for _, e := range exps {
		summary(e, "", "duration_s", e.DurationS, nil)
		summary(e, "", "energy_j", e.EnergyJ, &e.EnergyU)
		summary(e, "", "adjusted_j", e.AdjustedJ, &e.AdjustedU)
		summary(e, "", "j_per_output_token", e.JPerToken, &e.JPerTokenU)
		summary(e, "", "j_per_output_token_adjusted", e.JPerTokenAdj, &e.JPerTokenAdjU)
		summary(e, "", "deep_idle_w", e.Idle.DeepW, nil)
		summary(e, "", "active_idle_w", e.Idle.ActiveW, nil)
		summary(e, "", "adjusted_active_j", e.Idle.AdjustedActiveJ, nil)
		for _, p := range e.Phases {
			summary(e, p.Name, "duration_s", p.DurationS, nil)
			summary(e, p.Name, "energy_j", p.EnergyJ, &p.EnergyU)
			summary(e, p.Name, "adjusted_j", p.AdjustedJ, &p.AdjustedU)
		}
		if c := e.Reference; c != nil {
			for _, f := range []struct {
				name string
				r    *RatioStats
			}{{"energy_j", c.EnergyJ}, {"adjusted_j", c.AdjustedJ}, {"j_per_output_token", c.JPerToken},
				{"j_per_output_token_adjusted", c.JPerTokenAdj}} {
				if f.r == nil {
					continue
				}
				n := f.r.Ratio.Pairs
				cw.Write([]string{e.Name, "", f.name + "_ratio", strconv.Itoa(e.Runs), strconv.Itoa(e.Valid), strconv.Itoa(n),
					cell(f.r.Ratio.Value, 6), cell(f.r.Ratio.CILow, 6), cell(f.r.Ratio.CIHigh, 6), f.r.Ratio.Method, "", "",
					cell(f.r.Uncertainty.U, 6), cell(f.r.Uncertainty.Expanded, 6), cell(f.r.Uncertainty.K, 0), "",
					c.Reference, strconv.FormatBool(c.Paired), strconv.FormatBool(c.DifferentBoards)})
			}
		}
	}
}
