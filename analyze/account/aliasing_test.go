package account_test

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// aliased is an idle–square-wave–idle run: 100 W, then from 6 s to 10 s a 40 ms wave at 25 % duty up to 500 W,
// then 100 W again. The samples read the power instantaneously 5 ms into every 20 ms, which puts every other one
// inside the wave's 10 ms high part: they see 50 % duty (300 W) where the load averages 200 W. The counter is
// exact.
func aliased(readEvery time.Duration) testutil.Square {
	return testutil.Square{Start: t0, Duration: 16 * time.Second, Low: 100, High: 500, Period: 40 * time.Millisecond,
		Duty: 0.25, On: 6 * time.Second, Off: 10 * time.Second, SampleOffset: 5 * time.Millisecond, ReadEvery: readEvery}
}

func squareEvents() []trace.Event {
	return []trace.Event{ev(1, trace.EventRunStart, "exp", nil), ev(1, trace.EventPhase, "idle1", nil),
		ev(6, trace.EventPhase, "square", nil), ev(10, trace.EventPhase, "idle2", nil), ev(15, trace.EventRunEnd, "exp", nil)}
}

func warning(m *manifest.Manifest, code string) (manifest.Warning, bool) {
	for _, w := range m.Warnings {
		if w.Code == code {
			return w, true
		}
	}
	return manifest.Warning{}, false
}

// A square wave aliased by the 20 ms sampling, the counter exact: every counter interval inside the wave departs
// from the run's ratio by what the samples miss, computed here from the wave's exact energy and a plain trapezoid;
// the run is flagged naming the phase, the idle phases are not, and the hybrid still holds the phase's true energy
// where the samples alone are 50 % high.
func TestAliasingFlagged(t *testing.T) {
	for _, every := range []time.Duration{100 * time.Millisecond, time.Second} {
		t.Run(every.String(), func(t *testing.T) {
			sq := aliased(every)
			tr := sq.Trace(squareEvents()...)
			m := &manifest.Manifest{Environment: tr.Env}
			account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(1), End: at(15)})
			g := m.GPUs[0]
			require.NotNil(t, g.Lag)
			assert.InDelta(t, 0, g.Lag.MS, 5, "the counter is exact (the aliased samples may leave the lag unresolved: 0)")

			// The intervals wholly inside the wave, from the counter reads themselves (the lag is 0), and the
			// departure each should show: true energy over the samples' trapezoid.
			cs := tr.GPUs[0].Counters
			inside, worst := 0, 0.0
			for i := 1; i < len(cs); i++ {
				a, b := cs[i-1].Time, cs[i].Time
				if a.Before(trace.StampOf(at(6))) || b.After(trace.StampOf(at(10))) {
					continue
				}
				inside++
				d := sq.Energy(a.Time(), b.Time())/testutil.PlainSampled(tr.GPUs[0].Samples, a.Time(), b.Time()) - 1
				if math.Abs(d) > math.Abs(worst) {
					worst = d
				}
			}
			require.Greater(t, inside, 2)
			assert.Less(t, worst, -0.25, "the samples read about 300 W where the load averages 200 W")

			w, ok := warning(m, "aliasing_suspected")
			require.True(t, ok, "flagged: %v", m.Warnings)
			require.NotNil(t, w.GPU)
			assert.Equal(t, 0, *w.GPU)
			assert.Contains(t, w.Message, "in square (")
			assert.Contains(t, w.Message, " of "+strconv.Itoa(inside)+" intervals")
			assert.NotContains(t, w.Message, "idle1")
			assert.NotContains(t, w.Message, "idle2")
			require.NotNil(t, g.Aliasing)
			assert.GreaterOrEqual(t, g.Aliasing.Suspect, inside, "every interval inside the wave, and the edges")
			assert.InDelta(t, math.Abs(worst), g.Aliasing.MaxDeviation, 0.005)
			assert.InDelta(t, 1, g.Aliasing.MedianRatio, 0.001, "the idle majority sets the median")
			assert.Equal(t, account.AliasFloor, g.Aliasing.Threshold, "exact data: the floor")
			for _, p := range m.Phases {
				assert.Equal(t, p.Name == "square", p.Aliasing, p.Name)
			}

			sq2 := m.Phases[1]
			require.Equal(t, "square", sq2.Name)
			truth := sq.Energy(at(6), at(10))
			sampled := testutil.PlainSampled(tr.GPUs[0].Samples, at(6), at(10))
			assert.InDelta(t, 1.5, sampled/truth, 0.02, "the samples alone are half again too high")
			assert.Less(t, rel(sq2.Energy.HybridJ, truth), 0.02, "the hybrid holds the counter's truth: %.1f J vs %.1f J",
				float64(sq2.Energy.HybridJ), truth)
		})
	}
}

// Samples that describe the power exactly (the synthetic inference GPU, read every 100 ms): no interval departs,
// nothing is flagged, the threshold is the floor.
func TestAliasingClean(t *testing.T) {
	s := inference(60 * time.Millisecond)
	s.ReadEvery = 100 * time.Millisecond
	tr := s.Trace(runEvents()...)
	m := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(2), End: at(10)})
	_, flagged := warning(m, "aliasing_suspected")
	assert.False(t, flagged, "%v", m.Warnings)
	a := m.GPUs[0].Aliasing
	require.NotNil(t, a)
	assert.Zero(t, a.Suspect)
	assert.Equal(t, account.AliasFloor, a.Threshold)
	assert.Less(t, a.MaxDeviation, 0.002, "millijoule steps and the lag grid only")
	assert.Equal(t, 81, a.Intervals, "8 s of 100 ms intervals, the first and last across the run's edges")
	for _, p := range m.Phases {
		assert.False(t, p.Aliasing, p.Name)
		assert.False(t, p.Short, "%s: ≥ one 100 ms interval", p.Name)
	}
}

// The shared recordings (real H200 and H100 data) through the check, at their 100 ms counter reads and thinned to
// the 1 s lem-run reads. What it finds: the ~50 % duty medium phase of the known-shape loads (matmuls on and off
// faster than the sampling resolves) departs by up to 19 % per interval, and batch-32 decode of the LLM trace by
// up to 6.5 %; nothing else.
func TestAliasingOnRecordings(t *testing.T) {
	cases := []struct {
		trace   string
		thin    int
		flagged []string
	}{
		{"h200-shape", 1, []string{"medium (27 of 39 intervals, up to -19.0 %)"}},
		{"h100-gpuload", 1, []string{"medium (36 of 39 intervals, up to -18.6 %)"}},
		{"h200-llm", 1, []string{"bs32 (17 of 110 intervals, up to +6.5 %)"}},
		{"h200-shape", 10, []string{"medium (3 of 3 intervals"}},
		{"h100-gpuload", 10, nil},
		{"h200-llm", 10, nil},
	}
	for _, c := range cases {
		t.Run(c.trace+"/"+strconv.Itoa(c.thin), func(t *testing.T) {
			tr, err := trace.ReadFile(testutil.TracePath(c.trace))
			require.NoError(t, err)
			if c.thin > 1 {
				s := tr.GPUs[0]
				var cs []trace.CounterReading
				for i, r := range s.Counters {
					if i%c.thin == 0 {
						cs = append(cs, r)
					}
				}
				s.Counters = cs
			}
			a, b := tr.GPUs[0].Common()
			m := &manifest.Manifest{Environment: tr.Env}
			account.Fill(m, account.Input{Trace: tr, AllPhases: true, Start: a, End: b})
			w, ok := warning(m, "aliasing_suspected")
			var got []string
			for _, p := range m.Phases {
				if p.Aliasing {
					got = append(got, p.Name)
				}
			}
			if c.flagged == nil {
				assert.False(t, ok, w.Message)
				assert.Empty(t, got)
				return
			}
			require.True(t, ok)
			for _, f := range c.flagged {
				assert.Contains(t, w.Message, f)
				assert.Contains(t, got, strings.Fields(f)[0])
			}
			assert.Len(t, got, len(c.flagged))
		})
	}
}

// Checks reuse the arrays of released ones: a check made after releases equals the same check made before any,
// and a check released twice (copies in two sets) goes back once, so two later checks never share an array.
func TestCheckAliasingReusesReleased(t *testing.T) {
	sq := aliased(100 * time.Millisecond)
	s := sq.Trace().GPUs[0]
	h, err := energy.NewHybrid(s.Counters, s.Samples, 0)
	require.NoError(t, err)
	short := account.CheckAliasing(h, at(6), at(8))
	want := slices.Clone(short.Intervals)
	require.Len(t, want, 21) // the 100 ms intervals (reads 87 ms past each 100 ms) overlapping 2 s of the wave
	var suspect int
	for _, iv := range want {
		if iv.Suspect {
			suspect++
		}
	}
	require.Equal(t, short.Suspect, suspect)

	long := account.CheckAliasing(h, at(1), at(15))
	require.Greater(t, len(long.Intervals), len(want))
	account.ReleaseChecks(map[int]account.AliasCheck{0: long}, map[int]account.AliasCheck{3: long})
	a := account.CheckAliasing(h, at(6), at(8))
	b := account.CheckAliasing(h, at(1), at(6))
	assert.Equal(t, want, a.Intervals, "a check in a released array")
	require.NotEmpty(t, b.Intervals)
	assert.NotSame(t, &a.Intervals[:1][0], &b.Intervals[:1][0])
	assert.Equal(t, short.Median, a.Median)
	assert.Equal(t, short.Threshold, a.Threshold)
}
