package account_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// shortRun is an 8 s run read once a second: fewer than ten counter intervals, so its own lag fit cannot resolve
// the 60 ms lag its counter has, though a load step at 5 s, late in a counter interval, makes the lag matter to
// the phases around it.
func shortRun() (testutil.Synth, *trace.Trace) {
	s := testutil.Synth{Start: t0, Duration: 8 * time.Second, Lag: 60 * time.Millisecond, Levels: []testutil.Level{
		{At: 0, W: 90}, {At: 5 * time.Second, W: 600}}}
	return s, s.Trace(ev(0.5, trace.EventRunStart, "exp", nil), ev(0.5, trace.EventPhase, "before", nil),
		ev(5, trace.EventPhase, "after", nil), ev(7, trace.EventRunEnd, "exp", nil))
}

// A trace whose lag is unresolvable uses the lag kept for its GPU: the manifest says so (source cache, the kept
// lag's date, its uncertainty widened by the setup's), and every energy equals the plain hybrid at that lag.
// Without a kept lag it uses 0 (source none) and equals the plain hybrid at 0.
func TestKeptLagUsed(t *testing.T) {
	s, tr := shortRun()
	ser := tr.GPUs[0]
	kept := account.LagRecord{MS: 60, UMS: 1.5, Contrast: 30, Intervals: 400, At: t0.Add(-48 * time.Hour)}
	cases := []struct {
		name   string
		lags   map[string]account.LagRecord
		source string
		lag    time.Duration
		uMS    float64
	}{
		{"by uuid", map[string]account.LagRecord{"GPU-synthetic-0": kept}, manifest.LagCache, 60 * time.Millisecond, 10.112},
		{"by index", map[string]account.LagRecord{"0": kept}, manifest.LagCache, 60 * time.Millisecond, 10.112},
		{"other gpu", map[string]account.LagRecord{"GPU-other": kept}, manifest.LagNone, 0, 50},
		{"none", nil, manifest.LagNone, 0, 50},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := &manifest.Manifest{Environment: tr.Env}
			account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(0.5), End: at(7), FallbackLags: c.lags})
			g := m.GPUs[0]
			require.NotNil(t, g.Lag)
			assert.False(t, g.Lag.Resolved, "the trace alone cannot tell")
			assert.Equal(t, c.source, g.Lag.Source)
			assert.InDelta(t, float64(c.lag)/1e6, g.Lag.MS, 1e-9)
			assert.InDelta(t, c.uMS, float64(g.Lag.UMS), 0.001, "√(1.5² + 10²) ms for a kept lag")
			if c.source == manifest.LagCache {
				require.NotNil(t, g.Lag.CacheDate)
				assert.True(t, g.Lag.CacheDate.Equal(kept.At))
			} else {
				assert.Nil(t, g.Lag.CacheDate)
			}
			plain := func(a, b float64) float64 {
				return testutil.PlainHybrid(ser.Counters, ser.Samples, c.lag, at(a), at(b))
			}
			assert.InDelta(t, plain(0.5, 7), float64(m.Energy.HybridJ), 1e-6)
			require.Len(t, m.Phases, 2)
			assert.InDelta(t, plain(0.5, 5), float64(m.Phases[0].Energy.HybridJ), 1e-6, "before")
			assert.InDelta(t, plain(5, 7), float64(m.Phases[1].Energy.HybridJ), 1e-6, "after")
			if c.source == manifest.LagCache {
				// The right lag puts the step where it happened: both phases within 0.5 % of the truth.
				assert.Less(t, rel(m.Phases[0].Energy.HybridJ, s.Energy(at(0.5), at(5))), 0.005)
				assert.Less(t, rel(m.Phases[1].Energy.HybridJ, s.Energy(at(5), at(7))), 0.005)
			} else {
				// Without it 60 ms of the 510 W step land in the wrong counter interval, and the phase before the
				// step loses a share of them: about 19 J of its 405 J.
				assert.Greater(t, rel(m.Phases[0].Energy.HybridJ, s.Energy(at(0.5), at(5))), 0.03)
			}
		})
	}
}

// A resolvable trace keeps its own lag whatever is kept.
func TestKeptLagIgnoredWhenResolved(t *testing.T) {
	s := inference(60 * time.Millisecond)
	s.ReadEvery = 100 * time.Millisecond
	tr := s.Trace(runEvents()...)
	m := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(2), End: at(10),
		FallbackLags: map[string]account.LagRecord{"GPU-synthetic-0": {MS: -50, UMS: 1, At: t0}}})
	g := m.GPUs[0]
	assert.Equal(t, manifest.LagFit, g.Lag.Source)
	assert.True(t, g.Lag.Resolved)
	assert.InDelta(t, 60, g.Lag.MS, 5)
	assert.Less(t, float64(g.Lag.UMS), 5.0)
	assert.Nil(t, g.Lag.CacheDate)
}

// The cache file: kept lags round-trip, only well-resolved fits are kept (source fit, u ≤ 10 ms), the newer lag
// of a GPU wins, a missing file is an empty cache and a damaged one an empty cache with an error naming it;
// entries out of range are dropped on reading.
func TestLagCacheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", account.LagCacheFile)
	c, err := account.LoadLagCache(path)
	require.NoError(t, err, "missing: empty")
	assert.Empty(t, c.Lags)

	end := t0.Add(time.Hour)
	m := &manifest.Manifest{Times: manifest.Times{End: end}, GPUs: []manifest.GPU{
		{Index: 0, UUID: "GPU-a", Lag: &manifest.Lag{MS: 85, Resolved: true, Contrast: 36, Intervals: 390, UMS: 1.4, Source: manifest.LagFit}},
		{Index: 1, UUID: "GPU-b", Lag: &manifest.Lag{MS: 20, Resolved: true, Contrast: 4, Intervals: 12, UMS: 25, Source: manifest.LagFit}},
		{Index: 2, UUID: "GPU-c", Lag: &manifest.Lag{MS: 60, Source: manifest.LagCache, UMS: 10}},
		{Index: 3, UUID: "GPU-d", Lag: &manifest.Lag{MS: 0, Source: manifest.LagNone, UMS: 50}},
		{Index: 4, UUID: "GPU-e", Lag: &manifest.Lag{MS: 40, Resolved: true, Source: manifest.LagFit, UMS: manifest.Null}},
		{Index: 5, UUID: "GPU-f"},
	}}
	assert.Equal(t, 1, c.KeepFrom(m), "only GPU-a's fit is well resolved")
	c.Keep("GPU-a", account.LagRecord{MS: 10, UMS: 1, At: t0}) // older: ignored
	require.NoError(t, c.Save(path))
	back, err := account.LoadLagCache(path)
	require.NoError(t, err)
	require.Len(t, back.Lags, 1)
	r := back.Lags["GPU-a"]
	assert.Equal(t, 85.0, r.MS)
	assert.Equal(t, 1.4, r.UMS)
	assert.Equal(t, 390, r.Intervals)
	assert.True(t, r.At.Equal(end))

	require.NoError(t, os.WriteFile(path, []byte(`{"lags":{"GPU-a":{"ms":85,"u_ms":1},"GPU-x":{"ms":9000,"u_ms":1},`+
		`"GPU-y":{"ms":50,"u_ms":40},"":{"ms":1,"u_ms":1}}}`), 0o644))
	back, err = account.LoadLagCache(path)
	require.NoError(t, err)
	assert.Len(t, back.Lags, 1, "a lag beyond the search range, a loose one and a nameless one are dropped")

	require.NoError(t, os.WriteFile(path, []byte("{not json"), 0o644))
	back, err = account.LoadLagCache(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Empty(t, back.Lags)
}

// Short phases: shorter than one counter interval of the trace (1 s reads: the 0.5 s prefill), never shorter than
// 100 ms (dense reads: a 60 ms phase, not the 0.5 s one).
func TestShortPhase(t *testing.T) {
	cases := []struct {
		every time.Duration
		short []string
	}{
		{time.Second, []string{"prefill", "blip"}},
		{100 * time.Millisecond, []string{"blip"}},
	}
	for _, c := range cases {
		t.Run(c.every.String(), func(t *testing.T) {
			s := inference(60 * time.Millisecond)
			s.ReadEvery = c.every
			tr := s.Trace(ev(2, trace.EventRunStart, "exp", nil), ev(3, trace.EventPhase, "prefill", nil),
				ev(3.5, trace.EventPhase, "decode", nil), ev(5, trace.EventPhase, "blip", nil),
				ev(5.06, trace.EventPhase, "decode", nil), ev(8, trace.EventPhaseEnd, "", nil), ev(10, trace.EventRunEnd, "exp", nil))
			m := &manifest.Manifest{Environment: tr.Env}
			account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(2), End: at(10)})
			var got []string
			for _, p := range m.Phases {
				if p.Short {
					got = append(got, p.Name)
				}
			}
			assert.ElementsMatch(t, c.short, got)
			n := 0
			for _, w := range m.Warnings {
				if w.Code == "short_phase" {
					n++
					assert.Contains(t, w.Message, "shorter than one counter interval ("+c.every.String()+")")
				}
			}
			assert.Equal(t, len(c.short), n, "one warning per phase name")
		})
	}
}
