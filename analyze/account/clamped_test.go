package account_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// A phase whose power sits below the idle baseline (clocks parked below the baseline's state: 60 W against
// 80 W, twice) has its idle-adjusted energy clamped to 0, flagged on the phase and its GPU, and the manifest warns
// once, naming the phase and its occurrences; the loaded phase between keeps its adjusted energy (the exact
// integral minus the baseline over its duration) and is named in no warning. The run as a whole stays above idle:
// not clamped.
func TestPhaseAdjustedClamped(t *testing.T) {
	const idle = 80.0
	s := testutil.Synth{Start: t0, Duration: 12 * time.Second, Lag: 40 * time.Millisecond, ReadEvery: 100 * time.Millisecond,
		Levels: []testutil.Level{{At: 0, W: idle}, {At: 3 * time.Second, W: 60}, {At: 4 * time.Second, W: 450},
			{At: 6 * time.Second, W: 60}, {At: 7 * time.Second, W: idle}}}
	tr := s.Trace(ev(2, trace.EventRunStart, "exp", nil), ev(3, trace.EventPhase, "parked", nil),
		ev(4, trace.EventPhase, "load", nil), ev(6, trace.EventPhase, "parked", nil), ev(7, trace.EventPhaseEnd, "", nil),
		ev(9, trace.EventRunEnd, "exp", nil))
	m := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(2), End: at(9),
		Baselines: map[int]*manifest.Baseline{0: {MedianW: idle, P25W: idle, P75W: idle, Samples: 500}}})

	require.Len(t, m.Phases, 2)
	parked, load := m.Phases[0], m.Phases[1]
	require.Equal(t, "parked", parked.Name)
	require.Equal(t, "load", load.Name)

	// parked: 2 s at 60 W, plus the two 20 ms ramps that start in it (80→60 at 3 s: +0.2 J; 450→60 at 6 s:
	// +3.9 J), against 160 J of baseline: clamped to exactly 0.
	wantParked := s.Energy(at(3), at(4)) + s.Energy(at(6), at(7))
	assert.InDelta(t, 120+0.2+3.9, wantParked, 1e-4, "the curve's own integral")
	assert.Equal(t, 2, parked.Count)
	assert.InDelta(t, wantParked, float64(parked.Energy.HybridJ), 0.01*wantParked)
	assert.Equal(t, manifest.Num(0), parked.Energy.AdjustedJ)
	assert.True(t, parked.Energy.AdjustedClamped)
	require.Len(t, parked.GPUs, 1)
	assert.Equal(t, manifest.Num(0), parked.GPUs[0].AdjustedJ)
	assert.True(t, parked.GPUs[0].AdjustedClamped)

	// load: 2 s at 450 W less its 60→450 ramp (−3.9 J), less 2 s of baseline: not clamped.
	wantLoad := s.Energy(at(4), at(6)) - idle*2
	assert.InDelta(t, 900-3.9-160, wantLoad, 1e-4, "the curve's own integral")
	assert.InDelta(t, wantLoad, float64(load.Energy.AdjustedJ), 0.01*wantLoad)
	assert.False(t, load.Energy.AdjustedClamped)
	assert.False(t, load.GPUs[0].AdjustedClamped)

	// The run: 7 s, above idle over all of it.
	wantRun := s.Energy(at(2), at(9)) - idle*7
	assert.InDelta(t, wantRun, float64(m.Energy.AdjustedJ), 0.01*wantRun)
	assert.False(t, m.Energy.AdjustedClamped)

	var clamped []manifest.Warning
	for _, w := range m.Warnings {
		assert.NotEqual(t, "adjusted_clamped", w.Code, "the run is above idle")
		assert.NotContains(t, w.Message, "phase load", "the loaded phase is named in no warning")
		if w.Code == "phase_adjusted_clamped" {
			clamped = append(clamped, w)
		}
	}
	require.Len(t, clamped, 1, "one warning for the clamped phase: %v", m.Warnings)
	assert.Equal(t, "phase parked: energy below the idle baseline in 2 occurrence(s) was clamped to 0", clamped[0].Message)
	assert.Nil(t, clamped[0].GPU)

	// The manifest written carries it.
	dir := t.TempDir()
	m.SchemaVersion, m.RunID, m.Experiment, m.Status = manifest.SchemaVersion, "r", "exp", manifest.StatusOK
	require.NoError(t, manifest.Write(dir, m))
	back, err := manifest.Read(dir)
	require.NoError(t, err)
	var codes []string
	for _, w := range back.Warnings {
		if strings.HasPrefix(w.Message, "phase parked") {
			codes = append(codes, w.Code)
		}
	}
	assert.Equal(t, []string{"phase_adjusted_clamped"}, codes)
	assert.True(t, back.Phases[0].Energy.AdjustedClamped)
}

// A phase above its baseline everywhere (the same run with the parked level at 100 W) is not clamped and raises
// no phase_adjusted_clamped warning; its adjusted energy is the integral minus the baseline.
func TestPhaseAboveBaselineNotClamped(t *testing.T) {
	const idle = 80.0
	s := testutil.Synth{Start: t0, Duration: 12 * time.Second, Lag: 40 * time.Millisecond, ReadEvery: 100 * time.Millisecond,
		Levels: []testutil.Level{{At: 0, W: idle}, {At: 3 * time.Second, W: 100}, {At: 4 * time.Second, W: idle}}}
	tr := s.Trace(ev(2, trace.EventRunStart, "exp", nil), ev(3, trace.EventPhase, "light", nil),
		ev(4, trace.EventPhaseEnd, "", nil), ev(9, trace.EventRunEnd, "exp", nil))
	m := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(2), End: at(9),
		Baselines: map[int]*manifest.Baseline{0: {MedianW: idle, P25W: idle, P75W: idle, Samples: 500}}})
	require.Len(t, m.Phases, 1)
	p := m.Phases[0]
	want := s.Energy(at(3), at(4)) - idle
	assert.InDelta(t, 20-0.2, want, 1e-4, "the curve's own integral (its 80→100 ramp at 3 s: −0.2 J)")
	assert.InDelta(t, want, float64(p.Energy.AdjustedJ), 1)
	assert.False(t, p.Energy.AdjustedClamped)
	for _, w := range m.Warnings {
		assert.NotEqual(t, "phase_adjusted_clamped", w.Code)
	}
}
