package report

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/lem-energy/lem/analyze/stats"
	"github.com/lem-energy/lem/internal/manifest"
)

// Experiment summarises the runs of one experiment across cycles. Only runs that pass the quality rules enter the
// statistics; the others are listed in Excluded with what they broke.
type Experiment struct {
	Name     string     `json:"experiment"`
	Runs     int        `json:"runs"`
	Valid    int        `json:"valid_runs"` // runs passing every rule: what `lem-analyze validate` passes
	Excluded []Excluded `json:"excluded_runs"`
	// Boards are the UUIDs of the GPUs the included runs measured on (workload GPUs).
	Boards       []string      `json:"boards"`
	DurationS    stats.Summary `json:"duration_s"`
	EnergyJ      stats.Summary `json:"energy_j"`
	AdjustedJ    stats.Summary `json:"adjusted_j"`
	JPerToken    stats.Summary `json:"j_per_output_token"`
	JPerTokenAdj stats.Summary `json:"j_per_output_token_adjusted"`
	// Idle is the two idle definitions side by side (docs/METHODOLOGY.md, "Two idles").
	Idle IdleStats `json:"idle"`
	// Uncertainties of the means: repetition and systematic terms combined (GUM), expanded with K.
	EnergyU       Uncert `json:"energy_uncertainty"`
	AdjustedU     Uncert `json:"adjusted_uncertainty"`
	JPerTokenU    Uncert `json:"j_per_output_token_uncertainty"`
	JPerTokenAdjU Uncert `json:"j_per_output_token_adjusted_uncertainty"`
	// Reference compares the experiment with the reference experiment (nil for the reference itself).
	Reference      *Comparison  `json:"vs_reference,omitempty"`
	Phases         []PhaseStats `json:"phases,omitempty"`
	IncludedRunIDs []string     `json:"run_ids"`
}

// IdleStats summarises, over the included runs, the two idles (the sum over the workload's GPUs) and the energy
// adjusted to active idle (Experiment.AdjustedJ is adjusted to deep idle): deep idle (the baseline: no context, clocks down) gives "what the workload adds to the host";
// active idle (the context held, nothing running) gives "what the computation adds".
type IdleStats struct {
	DeepW           stats.Summary `json:"deep_idle_w"`
	ActiveW         stats.Summary `json:"active_idle_w"`
	AdjustedActiveJ stats.Summary `json:"adjusted_active_j"` // may be negative: below active idle
}

// Excluded is a run left out of the statistics.
type Excluded struct {
	RunID      string   `json:"run_id"`
	Violations []string `json:"violations"`
}

// Comparison holds an experiment's ratios to the reference, raw and idle-adjusted apart. A ratio is nil where
// either side lacks the figure (no token counts, no baseline).
type Comparison struct {
	Reference string `json:"reference"`
	// Paired: the runs were paired by cycle (both experiments interleaved in one campaign); else independent.
	Paired bool `json:"paired"`
	// DifferentBoards: the two experiments did not run on the same GPUs, so the sensors' gains do not cancel
	// in the ratio (they are in its uncertainty twice).
	DifferentBoards bool        `json:"different_boards"`
	EnergyJ         *RatioStats `json:"energy_j"`
	AdjustedJ       *RatioStats `json:"adjusted_j"`
	JPerToken       *RatioStats `json:"j_per_output_token"`
	JPerTokenAdj    *RatioStats `json:"j_per_output_token_adjusted"`
}

// RatioStats is a ratio with its repetition interval and its combined uncertainty.
type RatioStats struct {
	Ratio       stats.Ratio `json:"ratio"`
	Uncertainty Uncert      `json:"uncertainty"`
}

// PhaseStats summarises one phase (all its occurrences in a run summed) across an experiment's runs.
type PhaseStats struct {
	Name      string        `json:"name"`
	DurationS stats.Summary `json:"duration_s"`
	EnergyJ   stats.Summary `json:"energy_j"`
	AdjustedJ stats.Summary `json:"adjusted_j"`
	EnergyU   Uncert        `json:"energy_uncertainty"`
	AdjustedU Uncert        `json:"adjusted_uncertainty"`
	// AdjustedActiveJ is the phase's energy above active idle (what the computation adds; may be negative), over
	// the runs that measured an active idle.
	AdjustedActiveJ stats.Summary `json:"adjusted_active_j"`
	// Clamped counts the runs in which the phase's adjusted energy was clamped at 0 in some occurrence
	// (warning phase_adjusted_clamped): its adjusted mean is biased up.
	Clamped int `json:"adjusted_clamped_runs"`
	// PowerCappedS is the mean time per run the phase spent under the software power cap (reported, not a fault).
	PowerCappedS manifest.Num `json:"power_capped_s"`
}

// ErrNoRuns means nothing usable was given.
var ErrNoRuns = errors.New("no usable runs")

// quantity is one figure of a run with its budget's relative terms.
type quantity struct {
	get      func(r *Run) manifest.Num
	adjusted bool
	budget   func(r *Run) (Budget, bool)
}

func runBudget(r *Run) (Budget, bool) { return r.Uncertainty, true }

var (
	qEnergy   = quantity{func(r *Run) manifest.Num { return r.Manifest.Energy.HybridJ }, false, runBudget}
	qAdjusted = quantity{func(r *Run) manifest.Num { return r.Manifest.Energy.AdjustedJ }, true, runBudget}
	qToken    = quantity{func(r *Run) manifest.Num {
		if d := r.Manifest.Derived; d != nil {
			return d.JPerOutputToken
		}
		return manifest.Null
	}, false, runBudget}
	qTokenAdj = quantity{func(r *Run) manifest.Num {
		if d := r.Manifest.Derived; d != nil {
			return d.JPerOutputTokenAdj
		}
		return manifest.Null
	}, true, runBudget}
)

// collect gathers a quantity over runs: values where measured, their relative budget terms, and whether any run
// reused its baseline.
func (q quantity) collect(runs []*Run) (xs []float64, rel []relTerms, reused bool) {
	for _, r := range runs {
		v := q.get(r)
		if !v.Valid() {
			continue
		}
		xs = append(xs, float64(v))
		b, ok := q.budget(r)
		if !ok {
			b = Budget{}
		}
		rel = append(rel, relOf(b, q.adjusted))
		for _, g := range r.Manifest.GPUs {
			if g.Role != manifest.RoleObserved && g.Baseline != nil && g.Baseline.Reused {
				reused = true
			}
		}
	}
	return xs, rel, reused
}

// summary summarises a quantity over runs with its uncertainty.
func (q quantity) summary(runs []*Run) (stats.Summary, Uncert) {
	xs, rel, reused := q.collect(runs)
	s := stats.SummarizePositive(xs)
	return s, meanUncert(s, rel, reused)
}

// Experiments groups runs by experiment and summarises those that pass the quality rules; reference, if set,
// names the experiment the others are compared with.
func Experiments(runs []Run, reference string) ([]Experiment, error) {
	by := map[string][]*Run{}
	var names []string
	out := map[string]*Experiment{}
	for i := range runs {
		r := &runs[i]
		m := r.Manifest
		e := out[m.Experiment]
		if e == nil {
			e = &Experiment{Name: m.Experiment, Excluded: []Excluded{}, Boards: []string{}, IncludedRunIDs: []string{}}
			out[m.Experiment] = e
			names = append(names, m.Experiment)
		}
		e.Runs++
		if v := Violations(m); len(v) > 0 {
			e.Excluded = append(e.Excluded, Excluded{RunID: m.RunID, Violations: v})
			continue
		}
		by[m.Experiment] = append(by[m.Experiment], r)
	}
	if len(names) == 0 {
		return nil, ErrNoRuns
	}
	sort.Strings(names)
	res := make([]Experiment, 0, len(names))
	for _, name := range names {
		e := out[name]
		rs := by[name]
		e.Valid = len(rs)
		var d []float64
		for _, r := range rs {
			e.IncludedRunIDs = append(e.IncludedRunIDs, r.Manifest.RunID)
			d = append(d, r.Manifest.Times.DurationS)
		}
		e.Boards = boards(rs)
		e.DurationS = stats.SummarizePositive(d)
		e.EnergyJ, e.EnergyU = qEnergy.summary(rs)
		e.AdjustedJ, e.AdjustedU = qAdjusted.summary(rs)
		e.JPerToken, e.JPerTokenU = qToken.summary(rs)
		e.JPerTokenAdj, e.JPerTokenAdjU = qTokenAdj.summary(rs)
		e.Phases = phaseStats(rs)
		e.Idle = idleStats(rs)
		res = append(res, *e)
	}
	if reference == "" {
		return res, nil
	}
	if !slices.Contains(names, reference) {
		return res, fmt.Errorf("--reference %q: no such experiment (have %s)", reference, strings.Join(names, ", "))
	}
	for i := range res {
		if res[i].Name != reference {
			res[i].Reference = compare(by[res[i].Name], by[reference], reference)
		}
	}
	return res, nil
}

// boards lists the workload GPUs' UUIDs of runs (sorted, each once).
func boards(rs []*Run) []string {
	out := []string{}
	for _, r := range rs {
		for _, g := range r.Manifest.GPUs {
			if g.Role != manifest.RoleObserved && g.UUID != "" && !slices.Contains(out, g.UUID) {
				out = append(out, g.UUID)
			}
		}
	}
	sort.Strings(out)
	return out
}

// compare computes a's ratios to the reference b, paired by cycle where both ran interleaved in one campaign.
func compare(a, b []*Run, reference string) *Comparison {
	ba, bb := boards(a), boards(b)
	c := &Comparison{Reference: reference, DifferentBoards: !slices.Equal(ba, bb) || len(ba) == 0}
	pairs := cyclePairs(a, b)
	c.Paired = pairs != nil
	ratio := func(q quantity) *RatioStats {
		xa, ra, reusedA := q.collect(a)
		xb, rb, reusedB := q.collect(b)
		if len(xa) == 0 || len(xb) == 0 {
			return nil
		}
		var r stats.Ratio
		if c.Paired {
			va, vb := make([]float64, len(pairs)), make([]float64, len(pairs))
			for i, p := range pairs {
				va[i], vb[i] = float64(q.get(p[0])), float64(q.get(p[1]))
			}
			r = stats.PairedRatioOf(va, vb)
		} else {
			r = stats.RatioOf(stats.SummarizePositive(xa), stats.SummarizePositive(xb))
		}
		return &RatioStats{Ratio: r, Uncertainty: ratioUncert(r, ra, rb, reusedA, reusedB, !c.DifferentBoards)}
	}
	c.EnergyJ, c.AdjustedJ = ratio(qEnergy), ratio(qAdjusted)
	c.JPerToken, c.JPerTokenAdj = ratio(qToken), ratio(qTokenAdj)
	return c
}

// cyclePairs pairs the runs of a and b by campaign cycle when that is sound: both from one campaign, each cycle
// at most once per experiment, and the campaign interleaved (every run of a cycle started before any run of the
// next cycle, so a cycle's runs shared the host's state). nil: compare as independent samples.
func cyclePairs(a, b []*Run) [][2]*Run {
	if len(a) == 0 || len(b) == 0 {
		return nil
	}
	campaign := a[0].Manifest.Campaign
	byCycle := func(rs []*Run) map[int]*Run {
		out := map[int]*Run{}
		for _, r := range rs {
			m := r.Manifest
			if m.Campaign == "" || m.Campaign != campaign || m.Cycle == 0 || out[m.Cycle] != nil {
				return nil
			}
			out[m.Cycle] = r
		}
		return out
	}
	ca, cb := byCycle(a), byCycle(b)
	if ca == nil || cb == nil {
		return nil
	}
	// Interleaved: cycles do not overlap in time.
	type span struct{ first, last float64 }
	spans := map[int]*span{}
	for _, rs := range [][]*Run{a, b} {
		for _, r := range rs {
			t := float64(r.Manifest.Times.Start.UnixNano())
			s := spans[r.Manifest.Cycle]
			if s == nil {
				spans[r.Manifest.Cycle] = &span{t, t}
				continue
			}
			s.first, s.last = math.Min(s.first, t), math.Max(s.last, t)
		}
	}
	cycles := make([]int, 0, len(spans))
	for c := range spans {
		cycles = append(cycles, c)
	}
	sort.Ints(cycles)
	for i := 1; i < len(cycles); i++ {
		if spans[cycles[i-1]].last >= spans[cycles[i]].first {
			return nil // grouped: a cycle's runs are not close in time
		}
	}
	var out [][2]*Run
	for _, c := range cycles {
		if ca[c] != nil && cb[c] != nil {
			out = append(out, [2]*Run{ca[c], cb[c]})
		}
	}
	return out
}

// phaseStats summarises the phases of runs, in the first run's order; a phase missing from a run is missing
// from that run's values.
func phaseStats(rs []*Run) []PhaseStats {
	if len(rs) == 0 {
		return nil
	}
	var out []PhaseStats
	for _, first := range rs[0].Manifest.Phases {
		name := first.Name
		find := func(r *Run) *manifest.Phase {
			for i := range r.Manifest.Phases {
				if r.Manifest.Phases[i].Name == name {
					return &r.Manifest.Phases[i]
				}
			}
			return nil
		}
		pb := func(r *Run) (Budget, bool) { return r.PhaseBudget(name) }
		qe := quantity{func(r *Run) manifest.Num {
			if p := find(r); p != nil {
				return p.Energy.HybridJ
			}
			return manifest.Null
		}, false, pb}
		qa := quantity{func(r *Run) manifest.Num {
			if p := find(r); p != nil {
				return p.Energy.AdjustedJ
			}
			return manifest.Null
		}, true, pb}
		ps := PhaseStats{Name: name, PowerCappedS: manifest.Null}
		var d, act []float64
		var capped float64
		withTrace := 0
		for _, r := range rs {
			p := find(r)
			if p == nil {
				continue
			}
			d = append(d, p.DurationS)
			if v := float64(p.Energy.AdjustedActiveJ); p.Energy.AdjustedActiveJ.Valid() && !math.IsInf(v, 0) {
				act = append(act, v)
			}
			if p.Energy.AdjustedClamped {
				ps.Clamped++
			}
			if r.Power != nil { // the trace was read
				withTrace++
				capped += r.PowerCappedS[name]
			}
		}
		if withTrace > 0 {
			ps.PowerCappedS = manifest.Num(capped / float64(withTrace))
		}
		ps.DurationS = stats.SummarizePositive(d)
		ps.AdjustedActiveJ = stats.Summarize(act)
		ps.EnergyJ, ps.EnergyU = qe.summary(rs)
		ps.AdjustedJ, ps.AdjustedU = qa.summary(rs)
		out = append(out, ps)
	}
	return out
}

// idleStats sums each run's workload GPUs' idles (a run missing one of them has no value) and summarises them.
func idleStats(rs []*Run) IdleStats {
	var deep, active, adjAct []float64
	for _, r := range rs {
		d, a := 0.0, 0.0
		for _, g := range r.Manifest.GPUs {
			switch {
			case g.Role == manifest.RoleObserved:
				continue
			case g.Baseline == nil:
				d = math.NaN() // NaN spreads: no deep idle for this run
			default:
				d += float64(g.IdleW)
			}
			if g.ActiveIdle == nil {
				a = math.NaN()
			} else {
				a += g.ActiveIdle.MedianW
			}
		}
		act := float64(r.Manifest.Energy.AdjustedActiveJ)
		if math.IsNaN(a) {
			act = math.NaN()
		}
		for _, x := range []struct {
			dst *[]float64
			v   float64
		}{{&deep, d}, {&active, a}, {&adjAct, act}} {
			if !math.IsNaN(x.v) && !math.IsInf(x.v, 0) {
				*x.dst = append(*x.dst, x.v)
			}
		}
	}
	return IdleStats{DeepW: stats.SummarizePositive(deep), ActiveW: stats.SummarizePositive(active),
		AdjustedActiveJ: stats.Summarize(adjAct)}
}
