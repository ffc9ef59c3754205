package e2e_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/pull"
	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
)

// One run, four ways: lem-run measures it on a replayed H200 (through the LLM recording's switch from idle to
// batch-1 inference) and mirrors its markers to a lem-exporter replaying the same recording in step, which
// records to disk and streams to a real Prometheus. The run's manifest, its run directory's trace, the exporter's
// recording and the Prometheus pull then give the same numbers through the one accounting: identical where the
// inputs are the same samples and counter reads, within the counter reads' difference where they are not.
func TestOneRunFourWays(t *testing.T) {
	if testing.Short() {
		t.Skip("replays ~15 s of recording through exporter, runner and Prometheus")
	}
	// Both replays start 30 s into the recording at the same instant: idle with a context held, then bs1 at 35.6 s.
	start := time.Now().Add(-30 * time.Second)
	open := func() *gpu.ReplaySource {
		r, err := gpu.OpenReplay(testutil.TracePath("h200-llm"), gpu.ReplayOptions{Start: start})
		require.NoError(t, err)
		return r
	}
	ln := testutil.Listen(t)
	prom := testutil.StartPrometheus(t, fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lem\n    static_configs:\n      - targets: [%q]\n",
		ln.Addr().String()), "--web.enable-remote-write-receiver")
	recDir := t.TempDir()
	exp := testutil.StartExporterOn(t, ln, open(), exporter.Options{
		Record:      &recorder.DirOptions{Dir: recDir, FlushEvery: time.Second},
		RemoteWrite: &exporter.RemoteWriteOptions{URL: prom.URL + "/api/v1/write", Instance: ln.Addr().String()}})

	src := open()
	defer src.Close()
	opts := runner.Options{Experiment: "fourways", RunID: "fourways-1", OutDir: t.TempDir(), Baseline: time.Second,
		Tail: time.Second, BaselineCache: filepath.Join(t.TempDir(), "b.json"), ExporterURL: exp.URL,
		Stdout: io.Discard, Stderr: io.Discard, Progress: io.Discard, Command: []string{"sh", "-c",
			"echo LEM_PHASE warm; sleep 2; echo LEM_PHASE gen; sleep 2; echo LEM_PHASE gen2; sleep 2; echo LEM_RESULT output_tokens=128 requests=4"}}
	res, err := runner.Run(context.Background(), opts, src, nil, &backend.Process{Clock: src.Clock()}, slog.Default())
	require.NoError(t, err)
	a := res.Manifest
	require.Equal(t, manifest.StatusOK, a.Status, a.Error)
	require.NotNil(t, a.GPUs[0].Baseline)
	time.Sleep(2 * time.Second) // the exporter's recorder and stream catch up
	exp.Stop()

	// B: the run directory's trace, with the manifest's bracketing counter reads.
	tr, err := trace.ReadFile(filepath.Join(res.Dir, manifest.TraceFile))
	require.NoError(t, err)
	b := &manifest.Manifest{Environment: a.Environment}
	brackets := map[int]account.Bracket{}
	for _, g := range a.GPUs {
		brackets[g.Index] = account.Bracket{Start: g.CounterStart, End: g.CounterEnd}
	}
	account.Fill(b, account.Input{Trace: tr, RunID: a.RunID, Start: a.Times.Start, End: a.Times.End, Brackets: brackets})
	same(t, "run directory", a, b, 1e-9, 1e-9, 0)

	// C: the exporter's own recording (its own counter reads; the same driver samples).
	recRuns, probs := report.Load([]string{recDir})
	require.Empty(t, probs)
	c := find(t, recRuns, a.RunID)
	same(t, "exporter recording", a, c, 1e-9, 0.01, 0)

	// D: a Prometheus pull (the 50 Hz stream at millisecond resolution, the exporter's counter, the run's markers).
	cl, err := pull.New(pull.Options{URL: prom.URL, Chunk: 7 * time.Second})
	require.NoError(t, err)
	found, err := cl.FindRuns(context.Background(), start, time.Now())
	require.NoError(t, err)
	require.Len(t, found, 1)
	ptr, err := cl.Trace(context.Background(), found[0].Instance, found[0].Start.Add(-5*time.Second), found[0].End.Add(5*time.Second), &found[0])
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "pulled.parquet")
	require.NoError(t, trace.WriteFile(path, ptr))
	pulled, probs := report.Load([]string{path})
	require.Empty(t, probs)
	d := find(t, pulled, a.RunID)
	same(t, "Prometheus pull", a, d, 1e-4, 0.01, 1)
}

func find(t *testing.T, runs []report.Run, id string) *manifest.Manifest {
	t.Helper()
	for _, r := range runs {
		if r.Manifest.RunID == id {
			return r.Manifest
		}
	}
	require.FailNow(t, "run not found", "%s in %d runs", id, len(runs))
	return nil
}

// same compares two accountings of one run: the samples' energy within sampleTol (relative), counter and hybrid
// energies within counterTol, the samples counted within countTol (a millisecond stamp can fall across an edge),
// phases, results, derived figures and the data's warnings.
func same(t *testing.T, path string, want, got *manifest.Manifest, sampleTol, counterTol float64, countTol int) {
	t.Helper()
	near := func(what string, w, g manifest.Num, tol float64) {
		t.Helper()
		if !w.Valid() {
			assert.False(t, g.Valid(), "%s: %s unmeasured in the manifest, measured here", path, what)
			return
		}
		require.True(t, g.Valid(), "%s: %s not measured", path, what)
		assert.LessOrEqual(t, math.Abs(float64(g-w)), tol*math.Abs(float64(w))+1e-9, "%s: %s %.6f vs manifest %.6f", path, what, float64(g), float64(w))
	}
	assert.InDelta(t, want.Times.DurationS, got.Times.DurationS, 1e-3, path)
	require.Len(t, got.GPUs, len(want.GPUs), path)
	rel := func(g, w manifest.Num) float64 { return float64(g/w - 1) }
	t.Logf("%-18s hybrid %.4f J (%+.2e), samples %.4f J (%+.2e), counter %.4f J (%+.2e), adjusted %.4f J",
		path, float64(got.Energy.HybridJ), rel(got.Energy.HybridJ, want.Energy.HybridJ), float64(got.Energy.SampledJ),
		rel(got.Energy.SampledJ, want.Energy.SampledJ), float64(got.Energy.CounterJ), rel(got.Energy.CounterJ, want.Energy.CounterJ),
		float64(got.Energy.AdjustedJ))
	for i, wg := range want.GPUs {
		gg := got.GPUs[i]
		what := fmt.Sprintf("GPU %d", wg.Index)
		near(what+" samples", wg.Energy.SampledJ, gg.Energy.SampledJ, sampleTol)
		near(what+" counter", wg.Energy.CounterJ, gg.Energy.CounterJ, counterTol)
		near(what+" hybrid", wg.Energy.HybridJ, gg.Energy.HybridJ, counterTol)
		near(what+" adjusted", wg.Energy.AdjustedJ, gg.Energy.AdjustedJ, counterTol*float64(wg.Energy.HybridJ/wg.Energy.AdjustedJ))
		require.NotNil(t, gg.Baseline, "%s: %s baseline carried with the run", path, what)
		assert.Equal(t, wg.Baseline.MedianW, gg.Baseline.MedianW, path)
		assert.InDelta(t, wg.Capture.Samples, gg.Capture.Samples, float64(countTol), "%s: %s samples in the run", path, what)
	}
	require.Len(t, got.Phases, len(want.Phases), path)
	for i, wp := range want.Phases {
		gp := got.Phases[i]
		assert.Equal(t, wp.Name, gp.Name, path)
		assert.Equal(t, wp.Count, gp.Count, path)
		assert.InDelta(t, wp.DurationS, gp.DurationS, 1e-3, "%s: phase %s", path, wp.Name)
		near("phase "+wp.Name, wp.Energy.HybridJ, gp.Energy.HybridJ, counterTol)
	}
	assert.Equal(t, want.Results, got.Results, path)
	require.NotNil(t, got.Derived, path)
	assert.Equal(t, want.Derived.OutputTokens, got.Derived.OutputTokens, path)
	near("J/token", want.Derived.JPerOutputToken, got.Derived.JPerOutputToken, counterTol)
	if path == "run directory" {
		assert.Equal(t, codes(want), codes(got), "%s: the data's warnings", path)
		return
	}
	// Each sampler drains its own driver buffer: a drain late on a loaded host is that capture's own finding.
	assert.Equal(t, slices.DeleteFunc(codes(want), isCapture), slices.DeleteFunc(codes(got), isCapture), "%s: the data's warnings", path)
}

func isCapture(code string) bool { return code == "capture_gaps" }

// codes lists the warnings the accounting finds in the data (not the runner's own: pre-flight, cool-down, …).
func codes(m *manifest.Manifest) []string {
	runnerOnly := []string{"other_processes", "mig_whole_gpu", "cooldown_timeout", "timeout", "oom_killed",
		"cleanup_failed", "marker_rejected", "trace_incomplete", "exporter_url"}
	var out []string
	for _, w := range m.Warnings {
		if !slices.Contains(runnerOnly, w.Code) {
			out = append(out, w.Code)
		}
	}
	slices.Sort(out)
	return out
}
