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
		trs, err := fromTraceFile(p, traces, opts)
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
