package runner_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
)

// While the workload runs, the run directory's manifest is provisional (status running) and holds what a crash
// must not lose: the phases so far (the ended one with its end, the current one open), the start of the run, the
// start bracket's counter reads and the baselines — each equal to what the final manifest holds for it.
func TestProvisionalManifestWhileRunning(t *testing.T) {
	wl := build(t, false)
	opts := baseOpts(t, wl, "-phases", "a:400ms,b:4s")
	opts.RunID = "provisional"
	opts.Tail = 300 * time.Millisecond
	dir := filepath.Join(opts.OutDir, opts.RunID)

	type result struct {
		res *runner.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
		done <- result{res, err}
	}()

	// The manifest once the second phase has begun (it is refreshed every few seconds while markers arrive).
	var prov *manifest.Manifest
	deadline := time.After(time.Minute)
	for prov == nil {
		select {
		case r := <-done:
			t.Fatalf("the run ended (%v) before its provisional manifest held phase b", r.err)
		case <-deadline:
			t.Fatal("no provisional manifest with phase b within a minute")
		case <-time.After(50 * time.Millisecond): // a file has no change notification to wait on
		}
		m, err := manifest.Read(dir)
		if err == nil && m.Status == manifest.StatusRunning && len(m.Phases) == 2 {
			prov = m
		}
	}
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, manifest.StatusOK, r.res.Manifest.Status, r.res.Manifest.Error)
	final, err := manifest.Read(dir) // as written, so both sides went through the same JSON
	require.NoError(t, err)
	require.Equal(t, manifest.StatusOK, final.Status)

	assert.Equal(t, opts.RunID, prov.RunID)
	assert.False(t, prov.Times.Start.IsZero(), "the run's start")
	assert.True(t, prov.Times.Start.Equal(final.Times.Start), "start %s, final %s", prov.Times.Start, final.Times.Start)

	// Phases: a ended when b began, b still open.
	require.Len(t, final.Phases, 2)
	require.Len(t, prov.Phases, 2)
	for i, name := range []string{"a", "b"} {
		p, f := prov.Phases[i], final.Phases[i]
		assert.Equal(t, name, p.Name)
		assert.Equal(t, name, f.Name)
		assert.Equal(t, 1, p.Count, name)
		assert.True(t, p.Start.Equal(f.Start), "phase %s starts %s, final %s", name, p.Start, f.Start)
		assert.False(t, p.Start.Before(prov.Times.Start), "phase %s starts after the run", name)
	}
	a, b := prov.Phases[0], prov.Phases[1]
	assert.True(t, a.End.Equal(final.Phases[0].End), "phase a ends %s, final %s", a.End, final.Phases[0].End)
	assert.True(t, a.End.Equal(b.Start), "a ends where b begins")
	assert.InDelta(t, 0.4, a.DurationS, 0.2, "the workload slept 400 ms in a")
	assert.InDelta(t, final.Phases[0].DurationS, a.DurationS, 1e-9)
	assert.True(t, b.End.IsZero(), "b is open: %s", b.End)
	assert.Zero(t, b.DurationS, "no ended occurrence of b yet")
	assert.False(t, a.Energy.HybridJ.Valid(), "energies are the final accounting's, not a provisional guess")

	// The start bracket and the baselines, as the final manifest holds them.
	require.Len(t, final.GPUs, 1)
	require.Len(t, prov.GPUs, 1)
	pg, fg := prov.GPUs[0], final.GPUs[0]
	assert.Equal(t, fg.Index, pg.Index)
	assert.Equal(t, fg.UUID, pg.UUID)
	require.NotNil(t, pg.CounterStart, "the start bracket's counter read")
	require.NotNil(t, fg.CounterStart)
	assert.Positive(t, pg.CounterStart.EnergyMJ)
	assert.Equal(t, fg.CounterStart.EnergyMJ, pg.CounterStart.EnergyMJ)
	assert.True(t, pg.CounterStart.Time.Equal(fg.CounterStart.Time))
	assert.False(t, pg.CounterStart.Time.After(prov.Times.Start), "read before the workload starts")
	assert.Nil(t, pg.CounterEnd, "no end bracket while running")
	require.NotNil(t, fg.CounterEnd)
	require.NotNil(t, pg.Baseline, "the idle baseline")
	require.NotNil(t, fg.Baseline)
	assert.InDelta(t, 78, pg.Baseline.MedianW, 5, "idle H200")
	assert.Equal(t, *fg.Baseline, *pg.Baseline)
}
