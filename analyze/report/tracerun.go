package report

import (
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
	byID := map[string]*Span{}
	var order []string
	for _, e := range t.Events {
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
	_, last := t.Span()
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
	first, last := t.Common()
	return []Span{{ID: name, Experiment: name, Status: manifest.StatusOK, Start: first, End: last, AllPhases: true}}
}

// fromTraceFile makes report runs from a lem trace file (lem-run record, the exporter's recorder, lem-analyze
// pull): one per run marked in it, or one spanning the whole trace when it marks none, each accounted by the one
// accounting with the baselines the run carries (lem-run posts them with its markers). It reads the trace (telemetry included: temperatures and throttling are part of the accounting);
// detailed adds each run's steady state and plot data.
func fromTraceFile(path string, detailed bool) ([]Run, error) {
	t0 := time.Now()
	t, err := trace.ReadFile(path)
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
	return runsOfTrace(t, path, detailed), nil
}

// runsOfTrace accounts every run of a trace: the GPUs' meters fitted once, the runs in parallel.
func runsOfTrace(t *trace.Trace, path string, detailed bool) []Run {
	spans := Spans(t, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	t1 := time.Now()
	meters := account.Meters(t)
	slog.Debug("meters fitted", "took", time.Since(t1))
	runs := make([]Run, len(spans))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(spans)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				runs[i] = traceRun(t, path, spans[i], meters, detailed)
			}
		}()
	}
	for i := range spans {
		next <- i
	}
	close(next)
	wg.Wait()
	return runs
}

// TraceManifest accounts one span of a trace into a manifest.
func TraceManifest(t *trace.Trace, path string, sp Span, meters map[int]*account.Meter) *manifest.Manifest {
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
	account.Fill(m, account.Input{Trace: t, Meters: meters, RunID: sp.ID, AllPhases: sp.AllPhases, Start: sp.Start,
		End: sp.End, GPUs: gpus})
	return m
}

// traceRun computes one run of a trace.
func traceRun(t *trace.Trace, path string, sp Span, meters map[int]*account.Meter, detailed bool) Run {
	m := TraceManifest(t, path, sp, meters)
	r := Run{Dir: path, Manifest: m, Uncertainty: budget(m)}
	if detailed {
		detail(&r, t, sp.Start)
	}
	return r
}
