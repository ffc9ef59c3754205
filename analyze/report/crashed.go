package report

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/trace"
)

// Unfinished says whether a run directory's manifest is provisional: its run is in progress, or its runner died
// (crashed).
func Unfinished(m *manifest.Manifest) bool {
	return m.Status == manifest.StatusRunning || m.Status == manifest.StatusCrashed
}

// Recover accounts an unfinished run directory from what reached the disk: the trace (or, when the runner died
// before merging it, its closed segments), from the run's start to the last sample recorded, with the provisional
// manifest's GPUs, baselines and start bracket. A run still "running" whose runner is gone is crashed.
func Recover(dir string, m *manifest.Manifest) error {
	if m.Status == manifest.StatusRunning && m.Runner != nil && m.Runner.Gone() {
		m.Status = manifest.StatusCrashed
		if m.Error == "" {
			m.Error = fmt.Sprintf("lem-run (pid %d on %s) is gone and the run never finished", m.Runner.PID, m.Runner.Host)
		}
	}
	t, err := runTrace(dir)
	if err != nil {
		return err
	}
	if m.Times.Start.IsZero() || t == nil {
		return nil // the workload never started: nothing to account
	}
	_, last := t.Span()
	if !last.After(m.Times.Start) {
		return nil
	}
	var gpus []account.GPU
	baselines := map[int]*manifest.Baseline{}
	brackets := map[int]account.Bracket{}
	for _, g := range m.GPUs {
		gpus = append(gpus, account.GPU{Index: g.Index, Role: g.Role})
		if g.Baseline != nil {
			baselines[g.Index] = g.Baseline
		}
		brackets[g.Index] = account.Bracket{Start: g.CounterStart}
	}
	keep := m.Warnings
	m.Warnings = nil
	account.Fill(m, account.Input{Trace: t, RunID: m.RunID, Start: m.Times.Start, End: last, GPUs: gpus,
		Baselines: baselines, Brackets: brackets})
	m.Warnings = append(keep, m.Warnings...)
	m.Warnings = append(m.Warnings, manifest.Warning{Code: "unfinished", Message: fmt.Sprintf(
		"the run is %s: energy up to the last sample recorded (%.1f s after the start)", m.Status, m.Times.DurationS)})
	return nil
}

// runTrace reads a run directory's trace, or its closed segments when the runner did not merge them.
func runTrace(dir string) (*trace.Trace, error) {
	t, err := trace.ReadFile(filepath.Join(dir, manifest.TraceFile))
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	t, serr := recorder.ReadSegments(dir, strings.TrimSuffix(manifest.TraceFile, ".parquet"))
	if t == nil && serr == nil {
		return nil, fmt.Errorf("%s: no trace and no trace segments", dir)
	}
	return t, serr
}
