package runner_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
)

// lem-run keeps each GPU's well-resolved counter lag beside its baseline cache, and a later run on the same GPU
// whose trace cannot resolve its own uses it: the manifest says so, with the date, and the run's energy is the
// plain hybrid at the kept lag. The GPU is synthetic (known 60 ms lag), replayed in real time.
func TestRunKeepsAndUsesLag(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "baselines.json")
	play := func(s testutil.Synth) gpu.Source {
		s.Start = time.Now().Truncate(time.Millisecond)
		r, err := gpu.NewReplay(s.Trace(), "synthetic", gpu.ReplayOptions{Start: s.Start})
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		return r
	}

	// First run: load steps at uneven instants (anywhere between two counter updates), the counter read every
	// 100 ms.
	steps := testutil.Synth{Duration: 12 * time.Second, Lag: 60 * time.Millisecond, ReadEvery: 100 * time.Millisecond}
	for i := range 30 {
		at := time.Duration(i)*390*time.Millisecond + time.Duration(i*i%7)*13*time.Millisecond
		steps.Levels = append(steps.Levels, testutil.Level{At: at, W: []float64{100, 450, 250}[i%3]})
	}
	// The sampler's free-running reads fall at a random phase of the replayed counter's updates, and the
	// jackknife's uncertainty on the 5 ms lag grid depends on it: over a 1.5 s run it exceeded the 10 ms kept-lag
	// bound at about one phase in five (10.05 or 11.7 ms); 3 s of steps keep it at 7.5 ms or below.
	opts := baseOpts(t, "sleep", "3")
	opts.BaselineCache, opts.Sampler = cache, sampler.Config{CounterInterval: 100 * time.Millisecond}
	res, err := runner.Run(context.Background(), opts, play(steps), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	first := res.Manifest.GPUs[0]
	require.NotNil(t, first.Lag)
	require.Equal(t, manifest.LagFit, first.Lag.Source, "the load steps resolve it: %+v", *first.Lag)
	// The counter's 60 ms, and the staleness of lem's phase-locked reads of a counter that the replay steps at the
	// recorded reads (up to one 100 ms update).
	assert.GreaterOrEqual(t, first.Lag.MS, 60.0-2*float64(first.Lag.UMS))
	assert.LessOrEqual(t, first.Lag.MS, 160.0+2*float64(first.Lag.UMS))
	assert.LessOrEqual(t, float64(first.Lag.UMS), 10.0)
	kept, err := account.LoadLagCache(filepath.Join(filepath.Dir(cache), account.LagCacheFile))
	require.NoError(t, err)
	require.Contains(t, kept.Lags, first.UUID)
	assert.Equal(t, first.Lag.MS, kept.Lags[first.UUID].MS)
	assert.True(t, kept.Lags[first.UUID].At.Equal(res.Manifest.Times.End))

	// Second run: the same GPU at flat power, read once a second: nothing to resolve a lag with.
	flat := testutil.Synth{Duration: 12 * time.Second, Lag: 60 * time.Millisecond, Levels: []testutil.Level{{W: 90}}}
	opts = baseOpts(t, "sleep", "1")
	opts.BaselineCache = cache
	res, err = runner.Run(context.Background(), opts, play(flat), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	l := m.GPUs[0].Lag
	require.NotNil(t, l)
	assert.False(t, l.Resolved)
	assert.Equal(t, manifest.LagCache, l.Source)
	assert.Equal(t, first.Lag.MS, l.MS)
	require.NotNil(t, l.CacheDate)
	assert.True(t, l.CacheDate.Equal(kept.Lags[first.UUID].At))
	tr, err := trace.ReadFile(filepath.Join(res.Dir, manifest.TraceFile))
	require.NoError(t, err)
	s := tr.GPUs[0]
	want := testutil.PlainHybrid(s.Counters, s.Samples, time.Duration(l.MS*1e6), m.Times.Start, m.Times.End)
	assert.InDelta(t, want, float64(m.Energy.HybridJ), 1e-6*want, "the plain hybrid at the kept lag")
}
