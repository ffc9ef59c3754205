package exporter_test

import (
	"context"
	"log/slog"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// The exporter fits each GPU's lag on its ring buffer and keeps the well-resolved one, in memory and in the
// recording directory beside what it kept before; an energy query whose 3 s of context cannot resolve a lag uses
// the kept one: its answer is the plain hybrid at that lag. The replayed H200 known-shape recording, on a virtual
// clock.
func TestLagKeeper(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, account.LagCacheFile)
	before := &account.LagCache{Lags: map[string]account.LagRecord{"GPU-other": {MS: 40, UMS: 2, At: time.Unix(1e9, 0).UTC()}}}
	require.NoError(t, before.Save(path))
	testutil.VirtualTime(t, func(t *testing.T) {
		src, err := gpu.OpenReplay(testutil.TracePath("h200-shape"), gpu.ReplayOptions{})
		require.NoError(t, err)
		defer src.Close()
		s, err := sampler.New(src, nil, sampler.Config{}, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { s.Run(ctx) })
		defer wg.Wait()
		defer cancel()

		k := exporter.NewLagKeeper(s, s.Config().RingSpan, dir, slog.Default())
		assert.Contains(t, k.Lags(), "GPU-other", "what the directory kept")
		time.Sleep(20 * time.Second) // the idle, heavy, idle and medium phases are in the ring
		synctest.Wait()
		k.Fit()
		uuid := s.Devices()[0].UUID
		lags := k.Lags()
		require.Contains(t, lags, uuid, "the load steps resolve it")
		kept := lags[uuid]
		assert.LessOrEqual(t, kept.UMS, 10.0)
		// The recording's 85 ms, and the staleness of reading once a second a counter that the replay steps at
		// the recorded 100 ms reads: up to one update more.
		assert.GreaterOrEqual(t, kept.MS, 85.0-2*kept.UMS)
		assert.LessOrEqual(t, kept.MS, 185.0+2*kept.UMS)
		onDisk, err := account.LoadLagCache(path)
		require.NoError(t, err)
		assert.Equal(t, kept, onDisk.Lags[uuid])
		assert.Contains(t, onDisk.Lags, "GPU-other", "kept beside the others")

		// An interval across the step to full load, seen with 3 s of context: a few counter reads, not enough
		// for a lag of its own.
		rec, err := trace.ReadFile(testutil.TracePath("h200-shape"))
		require.NoError(t, err)
		var heavy time.Time
		for _, e := range rec.Events {
			if e.Name == "heavy" {
				heavy = src.ToReplayTime(e.Time)
			}
		}
		require.False(t, heavy.IsZero())
		a, b := heavy.Add(-1500*time.Millisecond), heavy.Add(700*time.Millisecond)
		im := &account.IntervalMeter{Src: s, Context: 3 * time.Second, Fallback: k.Lags}
		ans, err := im.Energy(ctx, marker.EnergyQuery{Start: a, End: b})
		require.NoError(t, err)
		w, err := s.Window(0, a.Add(-3*time.Second), b.Add(5*time.Second))
		require.NoError(t, err)
		want := testutil.PlainHybrid(w.Counters, w.Samples, time.Duration(kept.MS*1e6), a, b)
		assert.InDelta(t, want, float64(ans.EnergyJ), 1e-6*want, "the plain hybrid at the kept lag")
		without := &account.IntervalMeter{Src: s, Context: 3 * time.Second}
		ans0, err := without.Energy(ctx, marker.EnergyQuery{Start: a, End: b})
		require.NoError(t, err)
		assert.InDelta(t, testutil.PlainHybrid(w.Counters, w.Samples, 0, a, b), float64(ans0.EnergyJ), 1e-6*want,
			"without it: unresolved, 0")
		t.Logf("kept lag %.0f ± %.1f ms; interval %.1f J at the kept lag, %.1f J at 0", kept.MS, kept.UMS,
			float64(ans.EnergyJ), float64(ans0.EnergyJ))
		assert.Greater(t, math.Abs(float64(ans.EnergyJ-ans0.EnergyJ)), 0.01*want, "the lag matters across the step")
	})
}
