// Package report turns lem-run's run directories into per-run and per-experiment tables: energy raw and
// idle-adjusted, per phase, per token, with repetition statistics and the quality rules of `lem-analyze validate`.
package report

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/trace"
)

// Run is one loaded run directory.
type Run struct {
	Dir      string
	Manifest *manifest.Manifest
	// Uncertainty is the run's energy budget (docs/METHODOLOGY.md); its lag term is evaluated once the trace is
	// read.
	Uncertainty Budget
	// PhaseUncertainty is each phase's budget, from the trace; nil: from the manifest alone (see PhaseBudget).
	PhaseUncertainty map[string]Budget
	// Steady is each GPU's steady state inside the workload's phases (from trace.parquet), keyed by GPU index.
	Steady map[int]energy.Steady
	// Power is each GPU's power from the baseline to the end, thinned for plots.
	Power map[int][]trace.PowerSample
	// PowerCappedS is, per phase, the time a workload GPU held its clocks under the software power cap.
	PowerCappedS map[string]float64
	// Attempts is how often the run was measured (Attempts: its run directory and the earlier attempts its
	// campaign kept); 0 for a run read from a trace.
	Attempts int
	// Calibrated is how Calibrate corrected the run's energies (nil: not corrected).
	Calibrated *Calibrated
}

// PhaseBudget is the uncertainty budget of one of the run's phases.
func (r *Run) PhaseBudget(name string) (Budget, bool) {
	if r.PhaseUncertainty == nil {
		r.PhaseUncertainty = phaseBudgets(r.Manifest)
	}
	b, ok := r.PhaseUncertainty[name]
	return b, ok
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

// fromTrace reads the run's trace for what needs it (detail).
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
	detail(r, t, from, lagMeters(t))
	return nil
}

// Problem is an input that could not be used; the others are still reported.
type Problem struct {
	Path string `json:"path"`
	Err  string `json:"error"`
}

// Load reads run directories: each path is a run directory (holding manifest.json) or a directory searched for
// them (a campaign's earlier attempts under .attempts/ are counted, not read: the run directory holds the current
// attempt). Unreadable manifests and duplicate run ids become problems naming the file.
func Load(paths []string) ([]Run, []Problem) { return load(paths, true, LoadOptions{}) }

// LoadWith is Load with a choice of how lem traces are read.
func LoadWith(paths []string, opts LoadOptions) ([]Run, []Problem) { return load(paths, true, opts) }

// LoadManifests is Load without the run directories' traces and without steady state and plots for trace
// inputs: for tables, audits and listings.
func LoadManifests(paths []string) ([]Run, []Problem) { return load(paths, false, LoadOptions{}) }

func load(paths []string, traces bool, opts LoadOptions) ([]Run, []Problem) {
	l := &loader{traces: traces, opts: opts, seen: map[string]string{}, earlier: map[string]map[string][]string{}}
	for _, p := range paths {
		l.addPath(p)
	}
	sort.Slice(l.runs, func(i, j int) bool { return l.runs[i].Manifest.Times.Start.Before(l.runs[j].Manifest.Times.Start) })
	return l.runs, l.probs
}

// loader gathers the runs of a load's inputs and the problems with them.
type loader struct {
	traces  bool
	opts    LoadOptions
	runs    []Run
	probs   []Problem
	seen    map[string]string              // run id → the input it came from
	earlier map[string]map[string][]string // campaign directory → its earlier attempts by run id
}

func (l *loader) problem(path, msg string) { l.probs = append(l.probs, Problem{Path: path, Err: msg}) }

// addPath adds one input: a trace (or the closed segments of one), a manifest, or a directory searched for them.
func (l *loader) addPath(p string) {
	st, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(p, ".parquet") {
		l.addTrace(p) // perhaps the closed segments of a recording whose writer died
		return
	}
	if err != nil {
		l.problem(p, err.Error())
		return
	}
	if !st.IsDir() {
		switch {
		case filepath.Base(p) == manifest.FileName:
			l.addManifest(p)
		case strings.HasSuffix(p, ".parquet"):
			l.addTrace(p)
		default:
			l.problem(p, "not a run directory, manifest.json or lem trace (.parquet)")
		}
		return
	}
	manifests, found, err := walk(p)
	for _, m := range manifests {
		l.addManifest(m)
	}
	for _, tp := range found {
		l.addTrace(tp)
	}
	if err != nil {
		l.problem(p, err.Error())
	} else if len(manifests)+len(found) == 0 {
		l.problem(p, "no manifest.json or lem trace found (not a lem-run output or recording directory?)")
	}
}

// addManifest adds a run directory by its manifest: recovered if unfinished, its trace read if the load reads
// traces.
func (l *loader) addManifest(path string) {
	m, err := manifest.Read(path)
	if err != nil {
		l.problem(path, err.Error())
		return
	}
	if first, dup := l.seen[m.RunID]; dup {
		l.problem(path, fmt.Sprintf("duplicate run %s (also in %s): ignored", m.RunID, first))
		return
	}
	l.seen[m.RunID] = path
	if Unfinished(m) {
		if err := Recover(filepath.Dir(path), m); err != nil {
			l.problem(filepath.Dir(path), "unfinished run, energy so far unknown: "+err.Error())
		}
	}
	r := Run{Dir: filepath.Dir(path), Manifest: m, Uncertainty: budget(m)}
	r.Attempts = l.attempts(r.Dir, m.RunID)
	if l.traces {
		if err := fromTrace(&r); err != nil {
			l.problem(filepath.Join(r.Dir, manifest.TraceFile), "trace unreadable, steady state and plot left out: "+err.Error())
		}
	}
	l.runs = append(l.runs, r)
}

// attempts is how often the run was measured, its campaign's earlier attempts read once per campaign.
func (l *loader) attempts(runDir, runID string) int {
	dir := campaignDirOf(runDir)
	e, ok := l.earlier[dir]
	if !ok {
		e, _ = EarlierAttempts(dir)
		l.earlier[dir] = e
	}
	return Attempts(dir, runID, e)
}

// addTrace adds the runs marked in a lem trace.
func (l *loader) addTrace(p string) {
	trs, err := fromTraceFile(p, l.traces, l.opts)
	if err != nil {
		l.problem(p, err.Error())
	}
	for _, r := range trs {
		if first, dup := l.seen[r.Manifest.RunID]; dup {
			l.problem(p, fmt.Sprintf("duplicate run %s (also in %s): ignored", r.Manifest.RunID, first))
			continue
		}
		l.seen[r.Manifest.RunID] = p
		l.runs = append(l.runs, r)
	}
}

// walk finds run directories' manifests under dir and, elsewhere, lem traces (a recording directory): a run
// directory's own trace and hidden segments are not separate inputs, nor are a campaign's earlier attempts
// (unless dir is its .attempts/ itself), but the closed segments of a recording never merged (no final file beside
// them) are, read as the trace they make up.
func walk(dir string) (manifests, traces []string, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		switch {
		case d.IsDir() && name == AttemptsDir && path != dir:
			return filepath.SkipDir
		case d.IsDir():
		case name == manifest.FileName:
			manifests = append(manifests, path)
		case !strings.HasSuffix(name, ".parquet"):
		case !strings.HasPrefix(name, "."):
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), manifest.FileName)); err != nil {
				traces = append(traces, path)
			}
		case strings.HasPrefix(name, recorder.SegmentPrefix):
			// .seg-<name>-<seq>.parquet: the first segment stands for the recording <name>.parquet.
			base := strings.TrimSuffix(strings.TrimPrefix(name, recorder.SegmentPrefix), ".parquet")
			i := strings.LastIndex(base, "-")
			if i <= 0 {
				return nil
			}
			final := filepath.Join(filepath.Dir(path), base[:i]+".parquet")
			if _, err := os.Stat(final); err == nil || slices.Contains(traces, final) {
				return nil
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(path), manifest.FileName)); err == nil {
				return nil // a run directory's: its manifest is the input
			}
			traces = append(traces, final)
		}
		return nil
	})
	return manifests, traces, err
}
