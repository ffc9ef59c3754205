package report

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/parallel"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/trace"
)

// Span is one run marked in a trace: its id, experiment, status and bounds, and which GPUs were the workload's.
type Span struct {
	ID, Experiment, Status string
	Start, End             time.Time
	// Workload lists the workload's GPUs (the run's workload_gpus label); nil: every GPU.
	Workload map[int]bool
	// AllPhases: the whole recording as one run, every phase in it the run's.
	AllPhases bool
}

// Spans finds the runs marked in a trace (run_start/run_end events): a run still open when the recording ended
// ends there, interrupted; events of a run that started before the recording are ignored. A trace that marks no
// run gives one span over the whole recording (where every GPU has both samples and counter readings), named
// name.
func Spans(t *trace.Trace, name string) []Span {
	_, last := t.Span()
	first, end := t.Common()
	return spansOf(t.Events, last, first, end, name)
}

// spansOf is Spans from a trace's events, the last time of any sample or counter reading, and the span where every
// GPU has both.
func spansOf(events []trace.Event, last, commonFirst, commonLast time.Time, name string) []Span {
	byID := map[string]*Span{}
	var order []string
	for _, e := range events {
		if e.RunID == "" || (e.Type != trace.EventRunStart && e.Type != trace.EventRunEnd) {
			continue
		}
		sp := byID[e.RunID]
		if sp == nil {
			sp = &Span{ID: e.RunID, Status: manifest.StatusOK}
			byID[e.RunID] = sp
			order = append(order, e.RunID)
		}
		switch e.Type {
		case trace.EventRunStart:
			sp.Start, sp.Experiment = e.Time, e.Name
			w, ok := e.Attrs[trace.AttrWorkloadGPUs]
			sp.Workload = account.WorkloadGPUs(w, ok)
		case trace.EventRunEnd:
			sp.End = e.Time
			if s := e.Attrs["status"]; s != "" {
				sp.Status = s
			}
		}
	}
	var out []Span
	for _, id := range order {
		sp := byID[id]
		if sp.Start.IsZero() {
			continue
		}
		if sp.End.IsZero() {
			sp.End, sp.Status = last, manifest.StatusIntr
		}
		if sp.Experiment == "" {
			sp.Experiment = sp.ID
		}
		out = append(out, *sp)
	}
	if len(out) > 0 {
		return out
	}
	return []Span{{ID: name, Experiment: name, Status: manifest.StatusOK, Start: commonFirst, End: commonLast, AllPhases: true}}
}

// fromTraceFile makes report runs from a lem trace file (lem-run record, the exporter's recorder, lem-analyze
// pull), or from the closed segments of a recording whose writer died before merging them: one per run marked in
// it, or one spanning the whole trace when it marks none, each accounted by the one accounting with the baselines
// the run carries (lem-run posts them with its markers). Telemetry is read too: temperatures and throttling are
// part of the accounting. detailed adds each run's steady state, plot data and budgets evaluated on the trace.
// Traces too large for memory are streamed (stream.go).
func fromTraceFile(path string, detailed bool, opts LoadOptions) ([]Run, error) {
	paths := []string{path}
	var skipped error // segments that cannot be used: named, the others still read
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		segs, serr := recorder.UsableSegments(filepath.Dir(path), strings.TrimSuffix(filepath.Base(path), ".parquet"))
		if len(segs) == 0 {
			return nil, errors.Join(err, serr)
		}
		paths, skipped = segs, serr
	}
	t0 := time.Now()
	s, streamed := opts.open(paths)
	if s != nil {
		slog.Debug("trace opened", "path", path, "rows", s.Rows(), "streamed", streamed, "took", time.Since(t0))
	}
	if streamed {
		if s != nil {
			s.Close() // the passes open their own: its metadata is not held beside theirs
		}
		runs, err := streamRuns(context.Background(), paths, path, detailed, !opts.NoPlots)
		return runs, errors.Join(skipped, err)
	}
	t0 = time.Now()
	var t *trace.Trace
	var err error
	if s != nil && len(paths) == 1 && paths[0] == path {
		t, err = s.ReadWhole() // its footer already read to choose
	} else {
		t, err = trace.ReadFile(path)
	}
	if s != nil {
		s.Close()
	}
	if errors.Is(err, os.ErrNotExist) {
		// A recording whose writer died before merging it: its closed segments.
		var serr error
		if t, serr = recorder.ReadSegments(filepath.Dir(path), strings.TrimSuffix(filepath.Base(path), ".parquet")); t != nil {
			err = serr
		}
	}
	if t == nil {
		return nil, err
	}
	slog.Debug("trace read", "path", path, "took", time.Since(t0))
	return runsOfTrace(t, path, detailed, !opts.NoPlots), err
}

// runsOfTrace accounts every run of a trace on its window: the GPUs' meters (and, detailed, the budget's lag
// meters) fitted once on the whole trace, the runs in parallel.
func runsOfTrace(t *trace.Trace, path string, detailed, plots bool) []Run {
	spans := Spans(t, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	t1 := time.Now()
	var lms map[int]*lagMeter
	var then func(g int, m *account.Meter)
	if detailed { // each GPU's lag meter as soon as its meter is fitted
		lms = map[int]*lagMeter{}
		var mu sync.Mutex
		then = func(g int, m *account.Meter) {
			if lm := lagMeterOf(t.GPUs[g], m); lm != nil {
				mu.Lock()
				lms[g] = lm
				mu.Unlock()
			}
		}
	}
	meters := account.MetersThen(t, then)
	sh := map[int]shifts{}
	for g, m := range meters {
		sh[g] = shiftsOf(m.Lag, m.Method == account.MethodHybrid)
	}
	slog.Debug("meters fitted", "took", time.Since(t1))
	runs := make([]Run, len(spans))
	t2 := time.Now()
	parallel.For(len(spans), runtime.GOMAXPROCS(0), func(i int) {
		w := windowOf(t, spans[i], sh)
		runs[i] = traceRun(w, path, spans[i], meters, lms, detailed, plots)
	})
	slog.Debug("runs accounted", "runs", len(spans), "took", time.Since(t2))
	return runs
}

// windowOf is a run's window of a whole trace in memory.
func windowOf(t *trace.Trace, sp Span, sh map[int]shifts) *trace.Trace {
	w := &trace.Trace{Env: t.Env, GPUs: make(map[int]*trace.Series, len(t.GPUs)), Events: runEvents(t.Events, sp)}
	end := maxT(sp.End, sp.Start)
	for g, s := range t.GPUs {
		x, _ := spanOf(s, sp.Start, end, sh[g], func(int) bool { return false })
		w.GPUs[g] = cut(s, x)
	}
	return w
}

// traceManifest accounts one span of a trace into a manifest, and returns the accounting's aliasing checks
// (account.FillChecked) with it.
func traceManifest(t *trace.Trace, path string, sp Span, meters map[int]*account.Meter) (*manifest.Manifest, map[int]account.AliasCheck) {
	m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: sp.ID, Experiment: sp.Experiment,
		Status: sp.Status, Backend: "trace", Environment: t.Env, Files: manifest.Files{Trace: filepath.Base(path)}}
	var gpus []account.GPU
	for _, g := range t.GPUIndices() {
		role := manifest.RoleWorkload
		if sp.Workload != nil && !sp.Workload[g] {
			role = manifest.RoleObserved
		}
		gpus = append(gpus, account.GPU{Index: g, Role: role})
	}
	checks := account.FillChecked(m, account.Input{Trace: t, Meters: meters, RunID: sp.ID, AllPhases: sp.AllPhases,
		Start: sp.Start, End: sp.End, GPUs: gpus})
	return m, checks
}

// traceRun computes one run of a trace from its window.
func traceRun(w *trace.Trace, path string, sp Span, meters map[int]*account.Meter, lms map[int]*lagMeter, detailed, plots bool) Run {
	m, checks := traceManifest(w, path, sp, meters)
	r := Run{Dir: path, Manifest: m, Uncertainty: budget(m)}
	if detailed {
		if sp.End.Before(sp.Start) {
			checks = nil // the accounting checked up to End, the budgets up to Start
		}
		detailWith(&r, w, sp.Start, lms, plots, checks)
	}
	return r
}
