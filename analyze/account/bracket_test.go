package account_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/manifest"
)

// Where lem-run read the counter at the run's edges, the run's counter energy is those reads' difference, to the
// millijoule: not the trace's readings interpolated to the edges, which between 1 s reads across the prefill's
// 450 → 300 W step miss by joules. The reads here are the synthetic curve's exact energy at each edge.
func TestCounterFromBracketReads(t *testing.T) {
	s := inference(60 * time.Millisecond)
	tr := s.Trace(runEvents()...)
	start, end := at(3.25), at(7.75)
	read := func(x time.Time) *manifest.CounterRead {
		return &manifest.CounterRead{Time: x, EnergyMJ: 5_000_000 + uint64(math.Round(1000*s.Energy(t0, x)))}
	}
	br := account.Bracket{Start: read(start), End: read(end)}
	want := float64(br.End.EnergyMJ-br.Start.EnergyMJ) / 1000
	require.InDelta(t, s.Energy(start, end), want, 0.002, "the reads are the curve's")

	m := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: start, End: end,
		Brackets: map[int]account.Bracket{0: br}})
	require.Len(t, m.GPUs, 1)
	g := m.GPUs[0]
	require.NotNil(t, g.CounterStart)
	assert.Equal(t, br.Start.EnergyMJ, g.CounterStart.EnergyMJ)
	assert.InDelta(t, want, float64(g.Energy.CounterJ), 1e-9, "the reads' difference")
	assert.InDelta(t, want, float64(m.Energy.CounterJ), 1e-9, "the run's total, one GPU")

	// Without the reads the counter is interpolated from the trace's readings: the test above tells the two apart.
	m2 := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m2, account.Input{Trace: tr, RunID: "r", Start: start, End: end})
	assert.Greater(t, math.Abs(float64(m2.GPUs[0].Energy.CounterJ)-want), 0.5, "interpolated %.3f J, read %.3f J",
		float64(m2.GPUs[0].Energy.CounterJ), want)
}
