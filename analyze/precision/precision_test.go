package precision_test

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/precision"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

var t0 = time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// board is a synthetic GPU whose power is Idle except in the given pieces (start, end in seconds, watts), switching
// instantly. Its 50 Hz samples are instantaneous readings 5 ms into every 20 ms; its counter is exact, updated
// every 100 ms (37 ms past) and read 50 ms after each update; telemetry carries the 1 s-average power.
type board struct {
	idle   float64
	pieces [][3]float64
	dur    float64
}

func (b *board) power(s float64) float64 {
	i := sort.Search(len(b.pieces), func(i int) bool { return b.pieces[i][1] > s })
	if i < len(b.pieces) && b.pieces[i][0] <= s {
		return b.pieces[i][2]
	}
	return b.idle
}

// energy is the exact energy over [a, b] seconds.
func (b *board) energy(a, c float64) float64 {
	e := b.idle * (c - a)
	for _, p := range b.pieces {
		lo, hi := math.Max(a, p[0]), math.Min(c, p[1])
		if hi > lo {
			e += (p[2] - b.idle) * (hi - lo)
		}
	}
	return e
}

func (b *board) trace(events []trace.Event) *trace.Trace {
	sort.Slice(b.pieces, func(i, j int) bool { return b.pieces[i][0] < b.pieces[j][0] })
	tr := trace.New(testutil.SynthEnv(0))
	s := tr.Series(0)
	for ms := 5.0; ms/1000 <= b.dur; ms += 20 {
		s.Samples = append(s.Samples, trace.PowerSample{Time: trace.StampOf(at(ms / 1000)), PowerW: b.power(ms / 1000)})
	}
	for ms := 37.0; (ms+50)/1000 <= b.dur; ms += 100 {
		s.Counters = append(s.Counters, trace.CounterReading{Time: trace.StampOf(at((ms + 50) / 1000)),
			EnergyMJ: 1_000_000 + uint64(math.Floor(1000*b.energy(0, ms/1000)))})
	}
	for ms := 1000.0; ms/1000 <= b.dur; ms += 100 {
		tm := trace.NewTelemetry(trace.StampOf(at(ms / 1000)))
		tm.AveragePowerW = b.energy(ms/1000-1, ms/1000)
		s.Telemetry = append(s.Telemetry, tm)
	}
	tr.Events = events
	return tr
}

func ev(s float64, typ, name string, attrs map[string]string) trace.Event {
	return trace.Event{Time: at(s), GPU: trace.NoGPU, Type: typ, RunID: "p", Name: name, Attrs: attrs}
}

// A characterisation run with known truth: three square waves (a 40 ms wave at 25 % duty that the samples read
// at 50 %, aliased; 26 and 100 ms waves at 50 %) and bursts of 400 W above a 100 W idle, 10 to 200 ms long. The
// square table gives each method against the counter as the plain re-implementations do, the aliased phase
// flagged and the hybrid within 1 % of the truth everywhere (the samples alone 50 % off); the burst table gives, at
// the trace's 100 ms reads, the known energy per burst within 1 % and the per-kernel bias of short bursts (their
// first 5 ms at half power) against the 200 ms ones; read every 2 s, the 10 ms bursts the samples can miss scatter.
func TestPrecisionTables(t *testing.T) {
	b := &board{idle: 100}
	var evs []trace.Event
	cur := 2.0
	for _, c := range []struct{ period, duty float64 }{{40, 25}, {26, 50}, {100, 50}} {
		name := "sq_p" + strconv.FormatFloat(c.period, 'g', -1, 64) + "ms_d" + strconv.FormatFloat(c.duty, 'g', -1, 64)
		evs = append(evs, ev(cur, trace.EventPhase, name, nil))
		for x := cur; x < cur+4-1e-9; x += c.period / 1000 {
			b.pieces = append(b.pieces, [3]float64{x, x + c.period/1000*c.duty/100, 500})
		}
		cur += 4
	}
	evs = append(evs, ev(cur, trace.EventPhase, "bursts", nil))
	cur += 1
	lengths := []float64{10, 20, 50, 100, 200}
	id := 0
	for rep := range 8 {
		for _, l := range lengths {
			start := cur + 0.013*float64(rep) + 0.0071*l // anywhere on the counter's 100 ms grid
			// The clocks come up in the first 5 ms (half the power above idle), so short bursts cost less per kernel.
			b.pieces = append(b.pieces, [3]float64{start, start + 0.005, 300}, [3]float64{start + 0.005, start + l/1000, 500})
			n := strconv.Itoa(id)
			evs = append(evs, ev(start-0.003, trace.EventWindowBegin, "burst_"+strconv.FormatFloat(l, 'g', -1, 64)+"ms",
				map[string]string{trace.AttrWindowID: n}),
				ev(start+l/1000+0.002, trace.EventWindowEnd, "burst_"+strconv.FormatFloat(l, 'g', -1, 64)+"ms",
					map[string]string{trace.AttrWindowID: n, "kernels": strconv.Itoa(int(l))}))
			id++
			cur += 0.9
		}
	}
	evs = append(evs, ev(cur, trace.EventPhaseEnd, "", nil))
	b.dur = cur + 3
	tr := b.trace(evs)

	sq, err := precision.Squares(tr, 0)
	require.NoError(t, err)
	require.Len(t, sq, 3)
	ser := tr.GPUs[0]
	for i, r := range sq {
		a, e := at(2+4*float64(i)), at(6+4*float64(i))
		counter := testutil.PlainCounter(ser.Counters, a, e)
		assert.InDelta(t, counter, float64(r.CounterJ), 1e-6, r.Phase)
		truth := b.energy(2+4*float64(i), 6+4*float64(i))
		assert.InDelta(t, truth, float64(r.CounterJ), 0.01*truth, "%s: the counter (interpolated at the edges)", r.Phase)
		assert.InDelta(t, 100*(testutil.PlainSampled(ser.Samples, a, e)/counter-1), float64(r.SampledPct), 1e-6, r.Phase)
		assert.InDelta(t, truth, float64(r.HybridJ), 0.01*truth, "%s: the hybrid holds the truth", r.Phase)
		assert.True(t, r.AveragePct.Valid(), r.Phase)
	}
	assert.Equal(t, 40.0, sq[0].PeriodMS)
	assert.Equal(t, 25.0, sq[0].DutyPct)
	assert.InDelta(t, 50, float64(sq[0].SampledPct), 2, "the samples read 300 W where the load averages 200 W")
	assert.GreaterOrEqual(t, sq[0].Suspect, sq[0].Intervals-2, "every interval inside the aliased wave is suspect")
	assert.Greater(t, sq[0].Intervals, 30)

	bs, err := precision.BurstTable(tr, 0, precision.DefaultCadences)
	require.NoError(t, err)
	row := func(l float64, cadence string) precision.BurstRow {
		for _, r := range bs {
			if r.LengthMS == l && r.Cadence == cadence {
				return r
			}
		}
		t.Fatalf("no row %g ms %s", l, cadence)
		return precision.BurstRow{}
	}
	perKernel := func(l float64) float64 { return (0.4*l - 1) / l } // 200 W above idle for 5 ms, then 400 W
	for _, l := range lengths {
		r := row(l, "native")
		assert.Equal(t, 8, r.N)
		assert.InDelta(t, 0.4*l-1, float64(r.MeanJ), 0.01*0.4*l, "%g ms: 200 W above idle for 5 ms, 400 W for the rest", l)
		assert.InDelta(t, perKernel(l), float64(r.PerKernelJ), 0.004, "%g ms", l)
		assert.InDelta(t, 100*(perKernel(l)/perKernel(200)-1), float64(r.BiasPct), 1.0, "%g ms: against the 200 ms bursts", l)
		assert.Less(t, float64(r.CV), 0.01, "%g ms", l)
		assert.InDelta(t, 100, float64(r.CounterMS), 1)
	}
	// Read every 2 s, a 10 ms burst is placed inside its counter interval by samples that catch it (a 40 ms
	// triangle: twice its energy) or miss it (spread over the 2 s): burst to burst it scatters.
	assert.Greater(t, float64(row(10, "2s").CV), float64(10*row(10, "native").CV+0.1))
	t.Logf("10 ms bursts: native CV %.2f %%, bias %+.2f %%; 2 s reads CV %.1f %%, bias %+.1f %%; 50 Hz only CV %.1f %%, bias %+.1f %%",
		float64(100*row(10, "native").CV), float64(row(10, "native").BiasPct), float64(100*row(10, "2s").CV),
		float64(row(10, "2s").BiasPct), float64(100*row(10, "50 Hz only").CV), float64(row(10, "50 Hz only").BiasPct))
	assert.InDelta(t, 2000, float64(row(10, "2s").CounterMS), 50)
	md := precision.Markdown(sq, bs)
	assert.Contains(t, md, "| sq_p40ms_d25 | 40 | 25 |")
	assert.Contains(t, md, "| 10 | 2s | 2000 | 8 |")
	assert.Equal(t, 4+len(sq)+len(bs), strings.Count(md, "\n|"), "two header lines per table and one row each")
}
