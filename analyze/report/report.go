// Package report turns lem-run's run directories into per-run and per-experiment tables: energy raw and
// idle-adjusted, per phase, per token, with repetition statistics and the quality rules of `lem-analyze validate`.
package report

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/analyze/stats"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// Run is one loaded run directory.
type Run struct {
	Dir         string
	Manifest    *manifest.Manifest
	Uncertainty Uncertainty
	// Steady is each GPU's steady state over the run (from trace.parquet), keyed by GPU index.
	Steady map[int]energy.Steady
	// Power is each GPU's power from the baseline to the end, thinned for plotting.
	Power map[int][]trace.PowerSample
	// Attempts is how often the run was measured (Attempts: its run directory and the earlier attempts its
	// campaign kept); 0 for a run read from a trace.
	Attempts int
}

// maxPlotPoints bounds the points of a power plot.
const maxPlotPoints = 1500

func thin(ss []trace.PowerSample, t0, t1 time.Time) []trace.PowerSample {
	w := (&trace.Series{Samples: ss}).Window(t0, t1).Samples
	if len(w) <= maxPlotPoints {
		return slices.Clone(w)
	}
	step := float64(len(w)) / maxPlotPoints
	out := make([]trace.PowerSample, 0, maxPlotPoints)
	for i := 0.0; int(i) < len(w); i += step {
		out = append(out, w[int(i)])
	}
	return out
}

// Uncertainty is a run's error budget in joules (docs/METHODOLOGY.md).
type Uncertainty struct {
	// SensorGainJ is the board sensor's ±5 % gain: systematic, the same for every run on that GPU, so it cancels
	// in same-GPU comparisons and is kept apart.
	SensorGainJ float64 `json:"sensor_gain_j"`
	// BoundaryJ is what the two run edges can misplace: one sample period of power at each.
	BoundaryJ float64 `json:"boundary_j"`
	// BaselineJ is the idle baseline's spread over the run: IQR × duration (adjusted energy only).
	BaselineJ float64 `json:"baseline_j"`
	// RandomJ combines boundary and baseline errors in quadrature.
	RandomJ float64 `json:"random_j"`
}

// SensorGain is the vendor's accuracy of the board power sensor.
const SensorGain = 0.05

// budget computes a run's uncertainty from its manifest.
func budget(m *manifest.Manifest) Uncertainty {
	u := Uncertainty{SensorGainJ: SensorGain * m.Energy.HybridJ.Or(0)}
	period := energy.DefaultSamplePeriod.Seconds()
	for _, g := range m.GPUs {
		if g.Role == manifest.RoleObserved {
			continue // not in the result
		}
		u.BoundaryJ += 2 * period * g.MeanPowerW.Or(0)
		if g.Baseline != nil {
			u.BaselineJ += g.Baseline.IQRW * m.Times.DurationS
		}
	}
	u.RandomJ = math.Hypot(u.BoundaryJ, u.BaselineJ)
	return u
}

// fromTrace finds each GPU's steady state in the run's trace and keeps its power for plots.
func fromTrace(r *Run) error {
	t, err := runTrace(r.Dir)
	if err != nil {
		return err
	}
	m := r.Manifest
	from := m.Times.BaselineStart
	if from.IsZero() {
		from = m.Times.Start
	}
	detail(r, t, from)
	return nil
}

// detail finds each GPU's steady state over the run and keeps its power from `from` on, thinned, for plots.
func detail(r *Run, t *trace.Trace, from time.Time) {
	m := r.Manifest
	r.Steady, r.Power = map[int]energy.Steady{}, map[int][]trace.PowerSample{}
	for g, s := range t.GPUs {
		r.Steady[g] = energy.FindSteady(s.Window(m.Times.Start, m.Times.End).Samples, m.Times.Start, m.Times.End, energy.SteadyOptions{})
		r.Power[g] = thin(s.Samples, from, m.Times.End)
	}
}

// Problem is an input that could not be used; the others are still reported.
type Problem struct {
	Path string `json:"path"`
	Err  string `json:"error"`
}

// Load reads run directories: each path is a run directory (holding manifest.json) or a directory searched for
// them (a campaign's earlier attempts under .attempts/ are counted, not read: the run directory holds the current
// attempt). Unreadable manifests and duplicate run ids become problems naming the file.
func Load(paths []string) ([]Run, []Problem) { return load(paths, true) }

// LoadManifests is Load without the run directories' traces and without steady state and plots for trace
// inputs: for tables, audits and listings.
func LoadManifests(paths []string) ([]Run, []Problem) { return load(paths, false) }

func load(paths []string, traces bool) ([]Run, []Problem) {
	var runs []Run
	var probs []Problem
	seen := map[string]string{}
	earlier := map[string]map[string][]string{} // campaign directory → its earlier attempts by run id
	attempts := func(runDir, runID string) int {
		dir := campaignDirOf(runDir)
		e, ok := earlier[dir]
		if !ok {
			e, _ = EarlierAttempts(dir)
			earlier[dir] = e
		}
		return Attempts(dir, runID, e)
	}
	add := func(path string) {
		m, err := manifest.Read(path)
		if err != nil {
			probs = append(probs, Problem{Path: path, Err: err.Error()})
			return
		}
		if first, dup := seen[m.RunID]; dup {
			probs = append(probs, Problem{Path: path, Err: fmt.Sprintf("duplicate run %s (also in %s): ignored", m.RunID, first)})
			return
		}
		seen[m.RunID] = path
		if Unfinished(m) {
			if err := Recover(filepath.Dir(path), m); err != nil {
				probs = append(probs, Problem{Path: filepath.Dir(path), Err: "unfinished run, energy so far unknown: " + err.Error()})
			}
		}
		r := Run{Dir: filepath.Dir(path), Manifest: m, Uncertainty: budget(m)}
		r.Attempts = attempts(r.Dir, m.RunID)
		if !traces {
			runs = append(runs, r)
			return
		}
		if err := fromTrace(&r); err != nil {
			probs = append(probs, Problem{Path: filepath.Join(r.Dir, manifest.TraceFile),
				Err: "trace unreadable, steady state and plot left out: " + err.Error()})
		}
		runs = append(runs, r)
	}
	addTrace := func(p string) {
		trs, err := fromTraceFile(p, traces)
		if err != nil {
			probs = append(probs, Problem{Path: p, Err: err.Error()})
		}
		for _, r := range trs {
			if first, dup := seen[r.Manifest.RunID]; dup {
				probs = append(probs, Problem{Path: p, Err: fmt.Sprintf("duplicate run %s (also in %s): ignored", r.Manifest.RunID, first)})
				continue
			}
			seen[r.Manifest.RunID] = p
			runs = append(runs, r)
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(p, ".parquet") {
			addTrace(p) // perhaps the closed segments of a recording whose writer died
			continue
		}
		if err != nil {
			probs = append(probs, Problem{Path: p, Err: err.Error()})
			continue
		}
		if !st.IsDir() {
			switch {
			case filepath.Base(p) == manifest.FileName:
				add(p)
			case strings.HasSuffix(p, ".parquet"):
				addTrace(p)
			default:
				probs = append(probs, Problem{Path: p, Err: "not a run directory, manifest.json or lem trace (.parquet)"})
			}
			continue
		}
		manifests, found, err := walk(p)
		for _, m := range manifests {
			add(m)
		}
		for _, tp := range found {
			addTrace(tp)
		}
		if err != nil {
			probs = append(probs, Problem{Path: p, Err: err.Error()})
		} else if len(manifests)+len(found) == 0 {
			probs = append(probs, Problem{Path: p, Err: "no manifest.json or lem trace found (not a lem-run output or recording directory?)"})
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].Manifest.Times.Start.Before(runs[j].Manifest.Times.Start) })
	return runs, probs
}

// walk finds run directories' manifests under dir and, elsewhere, lem traces (a recording directory): a run
// directory's own trace and hidden segments are not separate inputs, nor are a campaign's earlier attempts
// (unless dir is its .attempts/ itself).
func walk(dir string) (manifests, traces []string, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && d.Name() == AttemptsDir && path != dir:
			return filepath.SkipDir
		case d.IsDir():
		case d.Name() == manifest.FileName:
			manifests = append(manifests, path)
		case strings.HasSuffix(d.Name(), ".parquet") && !strings.HasPrefix(d.Name(), "."):
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), manifest.FileName)); err != nil {
				traces = append(traces, path)
			}
		}
		return nil
	})
	return manifests, traces, err
}

// Rule is a quality rule of validate.
type Rule struct {
	Name  string
	Codes []string // manifest warning codes that break it
}

// Rules are the quality rules a publishable run passes.
var Rules = []Rule{
	{"status ok", nil},
	{"window ≥ 5 s", []string{"short_window"}},
	{"≥ 3 counter updates", []string{"few_counter_updates"}},
	{"no lost samples", []string{"capture_gaps"}},
	{"no counter reset", []string{"counter_reset"}},
	{"no throttling", []string{"throttling"}},
	{"stable idle baseline", []string{"unstable_baseline", "gpu_busy_baseline", "no_baseline", "temperature_drift"}},
	{"every marker accepted", []string{"marker_rejected"}},
}

// Violations lists the rules a run breaks, with the manifest's messages.
func Violations(m *manifest.Manifest) []string {
	var out []string
	if m.Status != manifest.StatusOK {
		out = append(out, fmt.Sprintf("status ok: run ended %s", m.Status))
	}
	for _, r := range Rules[1:] {
		for _, w := range m.Warnings {
			if slices.Contains(r.Codes, w.Code) {
				out = append(out, r.Name+": "+w.Message)
			}
		}
	}
	return out
}

// Experiment summarises the runs of one experiment across cycles.
type Experiment struct {
	Name           string        `json:"experiment"`
	Runs           int           `json:"runs"`
	Valid          int           `json:"valid_runs"`
	DurationS      stats.Summary `json:"duration_s"`
	EnergyJ        stats.Summary `json:"energy_j"`
	AdjustedJ      stats.Summary `json:"adjusted_j"`
	JPerToken      stats.Summary `json:"j_per_output_token"`
	JPerTokenAdj   stats.Summary `json:"j_per_output_token_adjusted"`
	VsReference    *stats.Ratio  `json:"energy_vs_reference,omitempty"`
	VsReferenceAdj *stats.Ratio  `json:"adjusted_vs_reference,omitempty"`
	TokenVsRef     *stats.Ratio  `json:"j_per_token_vs_reference,omitempty"`
	Phases         []PhaseStats  `json:"phases,omitempty"`
	SensorGainNote string        `json:"sensor_gain_note"`
	IncludedRunIDs []string      `json:"run_ids"`
}

// PhaseStats summarises one phase (all its occurrences in a run summed) across an experiment's runs.
type PhaseStats struct {
	Name      string        `json:"name"`
	DurationS stats.Summary `json:"duration_s"`
	EnergyJ   stats.Summary `json:"energy_j"`
	AdjustedJ stats.Summary `json:"adjusted_j"`
}

// phaseStats summarises the phases every run has, in the first run's order.
func phaseStats(ms []*manifest.Manifest) []PhaseStats {
	if len(ms) == 0 {
		return nil
	}
	var out []PhaseStats
	for _, first := range ms[0].Phases {
		var d, e, a []float64
		for _, m := range ms {
			for _, p := range m.Phases {
				if p.Name == first.Name {
					d = append(d, p.DurationS)
					e, a = appendValid(e, p.Energy.HybridJ), appendValid(a, p.Energy.AdjustedJ)
				}
			}
		}
		out = append(out, PhaseStats{Name: first.Name, DurationS: stats.Summarize(d), EnergyJ: stats.Summarize(e),
			AdjustedJ: stats.Summarize(a)})
	}
	return out
}

// ErrNoRuns means nothing usable was given.
var ErrNoRuns = errors.New("no usable runs")

// Experiments groups runs with status ok by experiment and summarises them; reference, if set, names the
// experiment the others are compared with.
func Experiments(runs []Run, reference string) ([]Experiment, error) {
	by := map[string][]*manifest.Manifest{}
	total := map[string]int{}
	var names []string
	for _, r := range runs {
		m := r.Manifest
		if _, ok := total[m.Experiment]; !ok {
			names = append(names, m.Experiment)
		}
		total[m.Experiment]++
		if m.Status == manifest.StatusOK {
			by[m.Experiment] = append(by[m.Experiment], m)
		}
	}
	if len(names) == 0 {
		return nil, ErrNoRuns
	}
	sort.Strings(names)
	out := make([]Experiment, 0, len(names))
	for _, name := range names {
		ms := by[name]
		e := Experiment{Name: name, Runs: total[name], Valid: len(ms),
			SensorGainNote: "±5 % board sensor gain (systematic) applies to absolute values; it cancels in same-GPU ratios"}
		var d, en, adj, jt, jta []float64
		for _, m := range ms {
			e.IncludedRunIDs = append(e.IncludedRunIDs, m.RunID)
			d = append(d, m.Times.DurationS)
			en = appendValid(en, m.Energy.HybridJ)
			adj = appendValid(adj, m.Energy.AdjustedJ)
			if m.Derived != nil {
				jt = appendValid(jt, m.Derived.JPerOutputToken)
				jta = appendValid(jta, m.Derived.JPerOutputTokenAdj)
			}
		}
		e.DurationS, e.EnergyJ, e.AdjustedJ = stats.Summarize(d), stats.Summarize(en), stats.Summarize(adj)
		e.JPerToken, e.JPerTokenAdj = stats.Summarize(jt), stats.Summarize(jta)
		e.Phases = phaseStats(ms)
		out = append(out, e)
	}
	if reference != "" {
		var ref *Experiment
		for i := range out {
			if out[i].Name == reference {
				ref = &out[i]
			}
		}
		if ref == nil {
			return out, fmt.Errorf("--reference %q: no such experiment (have %v)", reference, names)
		}
		for i := range out {
			if out[i].Name == reference {
				continue
			}
			r1 := stats.RatioOf(out[i].EnergyJ, ref.EnergyJ)
			r2 := stats.RatioOf(out[i].AdjustedJ, ref.AdjustedJ)
			out[i].VsReference, out[i].VsReferenceAdj = &r1, &r2
			if out[i].JPerToken.N > 0 && ref.JPerToken.N > 0 {
				r3 := stats.RatioOf(out[i].JPerTokenAdj, ref.JPerTokenAdj)
				out[i].TokenVsRef = &r3
			}
		}
	}
	return out, nil
}

// appendValid appends v to xs when it was measured: unmeasured values stay out of statistics.
func appendValid(xs []float64, v manifest.Num) []float64 {
	if v.Valid() {
		return append(xs, float64(v))
	}
	return xs
}
