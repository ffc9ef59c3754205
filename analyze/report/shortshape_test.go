package report_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// A phase shorter than one counter interval, inside a steady 300 W load read every 100 ms, is placed by the
// samples' shape alone: its aliasing term counts the shape at the short-phase error of its own length (27 % at
// 10 ms, log-linear to 8 % at 50 ms, never under 10 %), not at that of the 100 ms threshold that makes it short
// (10 %). The load is flat, so the intervals' own departures are nil and the shape term is the whole of ρ; the
// probe starts 40 ms after a counter interval does, so it lies inside that one interval and is its smaller side.
func TestShortPhaseShapeByLength(t *testing.T) {
	for _, c := range []struct {
		d     time.Duration
		shape float64 // the burst spreads' law, written out here
	}{
		{10 * time.Millisecond, 0.27},
		{20 * time.Millisecond, 0.27 * math.Pow(0.08/0.27, math.Log(2)/math.Log(5))},
		{30 * time.Millisecond, 0.27 * math.Pow(0.08/0.27, math.Log(3)/math.Log(5))},
	} {
		t.Run(c.d.String(), func(t *testing.T) {
			s := testutil.Synth{Start: p0, Duration: 12 * time.Second, Lag: 60 * time.Millisecond,
				ReadEvery: 100 * time.Millisecond, Levels: []testutil.Level{{At: 0, W: 80}, {At: 3 * time.Second, W: 300},
					{At: 9 * time.Second, W: 80}}}
			end := 5.04 + c.d.Seconds()
			tr := s.Trace(pev(2, trace.EventRunStart, "e"), pev(3, trace.EventPhase, "load"), pev(5.04, trace.EventPhase, "probe"),
				pev(end, trace.EventPhase, "rest"), pev(9, trace.EventPhaseEnd, ""), pev(10, trace.EventRunEnd, "e"))
			r := loadOne(t, writeRunDir(t, tr, pat(2), pat(10), nil))
			var short bool
			for _, p := range r.Manifest.Phases {
				if p.Name == "probe" {
					short = p.Short
				}
			}
			require.True(t, short, "a %s phase under 100 ms reads is short", c.d)
			b, ok := r.PhaseBudget("probe")
			require.True(t, ok)
			lag := time.Duration(r.Manifest.GPUs[0].Lag.MS * 1e6)
			want := plainAliasingFloor(tr.GPUs[0], lag, pat(2), pat(10), pat(5.04), pat(end), c.shape)
			// The phase's energy, 300 W × d, times ρ/√3: the plain computation agrees with the law written out.
			assert.InDelta(t, 300*c.d.Seconds()*c.shape/math.Sqrt(3), want, 0.02*want, "the plain computation")
			assert.InDelta(t, want, float64(b.Term(report.TermAliasing).RawJ), 1e-6)
		})
	}
}
