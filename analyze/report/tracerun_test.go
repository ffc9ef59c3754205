package report_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func TestReportOnTraceFile(t *testing.T) {
	// A recording without runs: one run over the span every GPU covers, phases from its events (the same
	// hybrid numbers lem-analyze phases prints for it).
	runs, probs := report.Load([]string{testutil.TracePath("h200-shape")})
	require.Empty(t, probs)
	require.Len(t, runs, 1)
	m := runs[0].Manifest
	assert.Equal(t, "h200-shape", m.RunID)
	var codes []string
	for _, w := range m.Warnings {
		codes = append(codes, w.Code)
	}
	assert.Contains(t, codes, "no_baseline", "a recording carries no baseline")
	assert.Contains(t, codes, "power_capped", "the heavy phase ran at the power limit")
	want := map[string]float64{"idle1": 482.2, "heavy": 2701.7, "idle2": 495.7, "medium": 2070.0, "idle3": 488.1}
	require.Len(t, m.Phases, 5)
	for _, p := range m.Phases {
		assert.InDelta(t, want[p.Name], float64(p.Energy.HybridJ), 0.05, p.Name)
	}
	assert.InDelta(t, 7852.0, float64(m.Energy.CounterJ), 0.1)
	assert.InDelta(t, float64(m.Energy.CounterJ), float64(m.Energy.HybridJ), 0.5)

	// A recording with runs marked in it (tiled from the real LLM trace): one report run per marked run.
	src, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "tiled.parquet")
	w, err := trace.Create(path, src.Env)
	require.NoError(t, err)
	n, err := trace.WriteTiled(w, src, 3, 2)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	assert.Equal(t, 3*2*len(src.GPUs[0].Window(src.GPUs[0].Common()).Samples), n)
	runs, probs = report.Load([]string{path, path})
	require.Len(t, runs, 3)
	require.Len(t, probs, 3, "the second copy of each run is a duplicate")
	assert.Contains(t, probs[0].Err, "duplicate run run-0")
	exps, err := report.Experiments(runs, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"exp-0", "exp-1", "exp-2"}, []string{exps[0].Name, exps[1].Name, exps[2].Name})
	for i, r := range runs {
		m := r.Manifest
		require.Len(t, m.GPUs, 2)
		// Every copy is the same recording: the same energies on both GPUs and in every run (to 0.01 J of 16 kJ;
		// 0.5 J for the last copy, whose end lies past its last counter reading, where the hybrid extrapolates by
		// its gain, while the others' end lies between their last reading and the next copy's first).
		tol := 0.01
		if i == len(runs)-1 {
			tol = 0.5
		}
		assert.InDelta(t, float64(runs[0].Manifest.Energy.HybridJ), float64(m.Energy.HybridJ), tol, "run %d", i)
		assert.InDelta(t, float64(m.GPUs[0].Energy.CounterJ), float64(m.GPUs[1].Energy.CounterJ), 1e-9)
		assert.InDelta(t, float64(m.GPUs[0].Energy.CounterJ), float64(m.GPUs[0].Energy.HybridJ), 0.5)
		assert.Equal(t, manifest.Num(1000), m.Derived.OutputTokens)
		assert.InDelta(t, float64(m.Energy.HybridJ)/1000, float64(m.Derived.JPerOutputToken), 1e-9)
		assert.Equal(t, []string{"load", "idle", "bs1", "bs8", "bs32"}, phaseNames(m.Phases))
	}
}

func phaseNames(ps []manifest.Phase) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}
