package report_test

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/calibrate"
	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

var p0 = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

func pat(s float64) time.Time { return p0.Add(time.Duration(s * float64(time.Second))) }

func pev(s float64, typ, name string) trace.Event {
	return trace.Event{Time: pat(s), GPU: trace.NoGPU, Type: typ, RunID: "r", Name: name}
}

// runDir writes a run directory as lem-run does: the trace and the manifest the accounting fills from it.
func writeRunDir(t *testing.T, tr *trace.Trace, start, end time.Time, lags map[string]account.LagRecord) string {
	t.Helper()
	dir := mkdir(t, filepath.Join(t.TempDir(), "r"))
	require.NoError(t, trace.WriteFile(filepath.Join(dir, manifest.TraceFile), tr))
	m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: "r", Experiment: "e", Status: manifest.StatusOK,
		Backend: "process", Command: []string{"x"}, Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: start, End: end, FallbackLags: lags})
	require.NoError(t, manifest.Write(dir, m))
	return dir
}

func loadOne(t *testing.T, dir string) report.Run {
	t.Helper()
	runs, probs := report.Load([]string{dir})
	require.Empty(t, probs)
	require.Len(t, runs, 1)
	return runs[0]
}

// The aliased square wave (a 40 ms wave the samples read at 50 % duty for 25 %, between idles) with an exact
// counter, its two halves as phases that meet in the middle of a counter interval: each phase's hybrid energy
// misses the truth by no more than the terms that describe placing it (lag, boundary, aliasing) allow at k = 2;
// the halves' aliasing terms are over four times those of the same phases sampled without aliasing (each sample the
// mean power over its 20 ms).
func TestAliasingTermCoversPlacement(t *testing.T) {
	terms := map[bool]float64{}
	for _, alias := range []bool{true, false} {
		sq := testutil.Square{Start: p0, Duration: 16 * time.Second, Low: 100, High: 500, Period: 40 * time.Millisecond,
			Duty: 0.25, On: 6 * time.Second, Off: 10 * time.Second, SampleOffset: 5 * time.Millisecond}
		if !alias {
			sq.AverageWindow = 20 * time.Millisecond
		}
		tr := sq.Trace(pev(1, trace.EventRunStart, "e"), pev(1, trace.EventPhase, "idle1"), pev(6, trace.EventPhase, "sqA"),
			pev(8.05, trace.EventPhase, "sqB"), pev(10, trace.EventPhase, "idle2"), pev(15, trace.EventRunEnd, "e"))
		r := loadOne(t, writeRunDir(t, tr, pat(1), pat(15), nil))
		truth := map[string]float64{"idle1": sq.Energy(pat(1), pat(6)), "sqA": sq.Energy(pat(6), pat(8.05)),
			"sqB": sq.Energy(pat(8.05), pat(10)), "idle2": sq.Energy(pat(10), pat(15))}
		for _, p := range r.Manifest.Phases {
			b, ok := r.PhaseBudget(p.Name)
			require.True(t, ok)
			var place float64
			for _, name := range []string{report.TermLag, report.TermBoundary, report.TermAliasing} {
				v := float64(b.Term(name).RawJ)
				require.False(t, math.IsNaN(v), "%s: %s evaluated", p.Name, name)
				place += v * v
			}
			miss := math.Abs(float64(p.Energy.HybridJ) - truth[p.Name])
			assert.LessOrEqual(t, miss, 2*math.Sqrt(place), "%s: misses %.2f J, placement terms %.2f J", p.Name, miss, math.Sqrt(place))
			t.Logf("aliased %v %s: hybrid %.2f J, truth %.2f J, lag %.3f boundary %.3f aliasing %.3f J", alias, p.Name,
				float64(p.Energy.HybridJ), truth[p.Name], float64(b.Term(report.TermLag).RawJ),
				float64(b.Term(report.TermBoundary).RawJ), float64(b.Term(report.TermAliasing).RawJ))
		}
		b, _ := r.PhaseBudget("sqA")
		terms[alias] = float64(b.Term(report.TermAliasing).RawJ)
	}
	assert.Greater(t, terms[true], 4*terms[false], "the aliased phase carries the samples' departure")
}

// A short phase (0.5 s prefill between 1 s counter reads) is placed by the samples' shape alone: its aliasing term
// counts the shape at 10 % at least (the same plain computation with that floor), where the same phase read every
// 100 ms is resolved and counts the 1 % floor. The report marks it short.
func TestShortPhaseWidened(t *testing.T) {
	var terms [2]float64
	for i, every := range []time.Duration{time.Second, 100 * time.Millisecond} {
		s := testutil.Synth{Start: p0, Duration: 12 * time.Second, Lag: 60 * time.Millisecond, ReadEvery: every,
			Levels: []testutil.Level{{At: 0, W: 80}, {At: 3 * time.Second, W: 450}, {At: 3500 * time.Millisecond, W: 300},
				{At: 8 * time.Second, W: 120}, {At: 9 * time.Second, W: 80}}}
		tr := s.Trace(pev(2, trace.EventRunStart, "e"), pev(3, trace.EventPhase, "prefill"), pev(3.5, trace.EventPhase, "decode"),
			pev(8, trace.EventPhaseEnd, ""), pev(10, trace.EventRunEnd, "e"))
		r := loadOne(t, writeRunDir(t, tr, pat(2), pat(10), nil))
		p := r.Manifest.Phases[0]
		require.Equal(t, "prefill", p.Name)
		assert.Equal(t, every == time.Second, p.Short)
		b, _ := r.PhaseBudget("prefill")
		floor := 0.01
		if p.Short {
			floor = report.ShortShapeU(500 * time.Millisecond)
		}
		lag := time.Duration(r.Manifest.GPUs[0].Lag.MS * 1e6)
		want := plainAliasingFloor(tr.GPUs[0], lag, pat(2), pat(10), pat(3), pat(3.5), floor)
		terms[i] = float64(b.Term(report.TermAliasing).RawJ)
		assert.InDelta(t, want, terms[i], 1e-6, "every %s", every)
		var md bytes.Buffer
		require.NoError(t, report.Markdown(&md, []report.Run{r}, nil, nil))
		if p.Short {
			assert.Contains(t, md.String(), "| r | prefill (short) | 1 |")
		} else {
			assert.Contains(t, md.String(), "| r | prefill | 1 |")
		}
	}
	assert.Greater(t, terms[0]/float64(0.01), 3*terms[1]/0.01, "short: widened")
	t.Logf("prefill aliasing term: %.2f J short (1 s reads), %.2f J resolved (100 ms reads)", terms[0], terms[1])
}

// A run whose lag came from the host's cache is budgeted at that lag ± the uncertainty recorded with it: the lag
// term is half the difference of the plain hybrid at 60 ± 10.1 ms.
func TestLagTermFromKeptLag(t *testing.T) {
	s := testutil.Synth{Start: p0, Duration: 8 * time.Second, Lag: 60 * time.Millisecond, Levels: []testutil.Level{
		{At: 0, W: 90}, {At: 5 * time.Second, W: 600}}}
	tr := s.Trace(pev(0.5, trace.EventRunStart, "e"), pev(0.5, trace.EventPhase, "before"), pev(5, trace.EventPhase, "after"),
		pev(7, trace.EventRunEnd, "e"))
	kept := map[string]account.LagRecord{"GPU-synthetic-0": {MS: 60, UMS: 1.5, Contrast: 30, Intervals: 400, At: p0.Add(-time.Hour)}}
	r := loadOne(t, writeRunDir(t, tr, pat(0.5), pat(7), kept))
	l := r.Manifest.GPUs[0].Lag
	require.Equal(t, manifest.LagCache, l.Source)
	u := time.Duration(float64(l.UMS) * 1e6)
	ser := tr.GPUs[0]
	plain := func(lag time.Duration, a, b float64) float64 {
		return testutil.PlainHybrid(ser.Counters, ser.Samples, lag, pat(a), pat(b))
	}
	b, _ := r.PhaseBudget("before")
	want := math.Abs(plain(60*time.Millisecond+u, 0.5, 5)-plain(60*time.Millisecond-u, 0.5, 5)) / 2
	assert.InDelta(t, want, float64(b.Term(report.TermLag).RawJ), 1e-6)
	assert.Greater(t, want, 1.0, "the step makes the lag matter")
}

// plainAliasingFloor is plainAliasing for the occurrence [pa, pb] of a run [a, b] with a given floor of the shape's
// relative error: the run's intervals give the median ratio; the ones across the occurrence's edges carry it.
func plainAliasingFloor(s *trace.Series, lag time.Duration, a, b, pa, pb time.Time, floor float64) float64 {
	type iv struct {
		a, b time.Time
		j    float64
	}
	var ivs []iv
	var prev *trace.CounterReading
	for i := range s.Counters {
		c := &s.Counters[i]
		if prev != nil && c.EnergyMJ == prev.EnergyMJ {
			continue
		}
		if prev != nil {
			x, y := prev.Time.Add(-lag), c.Time.Add(-lag)
			if y.After(trace.StampOf(a)) && x.Before(trace.StampOf(b)) && !x.Before(s.Samples[0].Time) && !y.After(s.Samples[len(s.Samples)-1].Time) {
				ivs = append(ivs, iv{x.Time(), y.Time(), c.Joules() - prev.Joules()})
			}
		}
		prev = c
	}
	ratios := make([]float64, len(ivs))
	var sorted []float64
	for i, v := range ivs {
		ratios[i] = v.j / testutil.PlainSampled(s.Samples, v.a, v.b)
		sorted = append(sorted, ratios[i])
	}
	for i := range sorted { // insertion sort: plain
		for j := i; j > 0 && sorted[j] < sorted[j-1]; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	n := len(sorted)
	med := sorted[n/2]
	if n%2 == 0 {
		med = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	var rms float64
	k := 0
	for i, v := range ivs {
		if v.b.After(pa) && v.a.Before(pb) {
			rms += (ratios[i]/med - 1) * (ratios[i]/med - 1)
			k++
		}
	}
	rms = math.Sqrt(rms / float64(k))
	if floor < 0 { // the edges' own departure and the 1 % floor only: what the spread adds is left out
		rms, floor = 0, 0.01
	}
	var s2 float64
	for i, v := range ivs {
		if !v.b.After(pa) || !v.a.Before(pb) || (!v.a.Before(pa) && !v.b.After(pb)) {
			continue
		}
		x, y := v.a, v.b
		if x.Before(pa) {
			x = pa
		}
		if y.After(pb) {
			y = pb
		}
		in := testutil.PlainHybrid(s.Counters, s.Samples, lag, x, y)
		u := math.Min(in, v.j-in) * math.Max(math.Max(math.Abs(ratios[i]/med-1), rms), floor) / math.Sqrt(3)
		s2 += u * u
	}
	return math.Sqrt(s2)
}

// A run on two boards of which the calibration file knows one: that board's energies go to the meter's scale and
// its gain term is the fit's; the other keeps its energy and the assumed ±5 %; the two add in quadrature.
func TestCalibrateOneOfTwoBoards(t *testing.T) {
	dir := mkdir(t, filepath.Join(t.TempDir(), "r2"))
	g := func(i int, uuid string, e, adj float64) manifest.GPU {
		return manifest.GPU{Index: i, Role: manifest.RoleWorkload, UUID: uuid, Method: "hybrid", IdleW: 80,
			MeanPowerW: manifest.Num(e / 10), PeakPowerW: manifest.Num(e / 5),
			Baseline: &manifest.Baseline{MedianW: 80, P25W: 79, P75W: 81, IQRW: 2, Samples: 500},
			Energy: manifest.Energy{CounterJ: manifest.Num(e), HybridJ: manifest.Num(e), SampledJ: manifest.Num(e),
				AdjustedJ: manifest.Num(adj), AdjustedActiveJ: manifest.Null}}
	}
	m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: "r2", Experiment: "e", Status: manifest.StatusOK,
		Backend: "process", Times: manifest.Times{Start: p0, End: p0.Add(10 * time.Second), DurationS: 10},
		GPUs: []manifest.GPU{g(0, "GPU-a", 3000, 2200), g(1, "GPU-b", 2000, 1200)}, Warnings: []manifest.Warning{},
		Phases: []manifest.Phase{{Name: "p", Count: 1, Start: p0, End: p0.Add(4 * time.Second), DurationS: 4,
			GPUs: []manifest.PhaseGPU{{Index: 0, HybridJ: 1000, AdjustedJ: 680, AdjustedActiveJ: manifest.Null, SMClockHz: manifest.Null, PState: manifest.Null},
				{Index: 1, HybridJ: 800, AdjustedJ: 480, AdjustedActiveJ: manifest.Null, SMClockHz: manifest.Null, PState: manifest.Null}},
			Energy: manifest.Energy{CounterJ: manifest.Null, SampledJ: manifest.Null, HybridJ: 1800, AdjustedJ: 1160, AdjustedActiveJ: manifest.Null}}}}
	m.Energy = manifest.Energy{CounterJ: 5000, HybridJ: 5000, SampledJ: 5000, AdjustedJ: 3400, AdjustedActiveJ: manifest.Null}
	require.NoError(t, manifest.Write(dir, m))
	runs, probs := report.LoadManifests([]string{dir})
	require.Empty(t, probs)
	cal := &calibrate.File{Boards: map[string]calibrate.Board{"GPU-a": {Gain: 0.98, GainSE: 0.002, OffsetW: 5, OffsetSEW: 1, CovW: -0.001}}}
	require.Equal(t, 1, report.Calibrate(runs, cal, "cal.json"))
	r := runs[0]
	a := cal.Boards["GPU-a"]
	assert.InDelta(t, 0.98*3000+5*10+2000, float64(r.Manifest.Energy.HybridJ), 1e-9)
	assert.InDelta(t, 0.98*2200+1200, float64(r.Manifest.Energy.AdjustedJ), 1e-9)
	assert.InDelta(t, 0.98*1000+5*4+800, float64(r.Manifest.Phases[0].Energy.HybridJ), 1e-9)
	_, ua := a.Correct(3000, 10)
	gainU := 0.05 / math.Sqrt(3)
	assert.InDelta(t, math.Hypot(ua, gainU*2000), float64(r.Uncertainty.Term(report.TermGain).RawJ), 1e-9)
	_, uda := a.CorrectDifference(2200)
	assert.InDelta(t, math.Hypot(uda, gainU*1200), float64(r.Uncertainty.Term(report.TermGain).AdjustedJ), 1e-9)
	pb, _ := r.PhaseBudget("p")
	_, upa := a.Correct(1000, 4)
	assert.InDelta(t, math.Hypot(upa, gainU*800), float64(pb.Term(report.TermGain).RawJ), 1e-9)
	assert.InDelta(t, 0.98*80+5, float64(r.Manifest.GPUs[0].IdleW), 1e-9)
	assert.Equal(t, manifest.Num(80), r.Manifest.GPUs[1].IdleW, "the board the file does not know")
	var md bytes.Buffer
	require.NoError(t, report.Markdown(&md, runs, nil, nil))
	assert.Contains(t, md.String(), "- r2: calibrated by cal.json: GPU 0 (GPU-a) gain 0.9800 ± 0.0040, offset +5.0 ± 2.0 W")
}

// A phase whose edges fall in idle counter intervals around an aliased wave: the edges' own intervals agree with
// the counter, but the intervals the phase overlaps depart by a third, and that spread is what the edges' shape
// is worth (the plain computation, and several times what the 1 % floor alone would give).
func TestAliasingTermUsesOccurrenceSpread(t *testing.T) {
	sq := testutil.Square{Start: p0, Duration: 16 * time.Second, Low: 100, High: 500, Period: 40 * time.Millisecond,
		Duty: 0.25, On: 6 * time.Second, Off: 10 * time.Second, SampleOffset: 5 * time.Millisecond}
	tr := sq.Trace(pev(1, trace.EventRunStart, "e"), pev(1, trace.EventPhase, "before"), pev(5.95, trace.EventPhase, "wave"),
		pev(10.05, trace.EventPhase, "after"), pev(15, trace.EventRunEnd, "e"))
	r := loadOne(t, writeRunDir(t, tr, pat(1), pat(15), nil))
	b, _ := r.PhaseBudget("wave")
	lag := time.Duration(r.Manifest.GPUs[0].Lag.MS * 1e6)
	want := plainAliasingFloor(tr.GPUs[0], lag, pat(1), pat(15), pat(5.95), pat(10.05), 0.01)
	floorOnly := plainAliasingFloor(tr.GPUs[0], lag, pat(1), pat(15), pat(5.95), pat(10.05), -1) // no spread, no floor
	assert.InDelta(t, want, float64(b.Term(report.TermAliasing).RawJ), 1e-6)
	assert.Greater(t, want, 5*floorOnly, "the occurrence's spread, not the edges' own agreement")
}

// The HTML report shows where a kept lag came from, with its date, and survives a manifest that names the cache
// without one.
func TestHTMLShowsKeptLag(t *testing.T) {
	s := testutil.Synth{Start: p0, Duration: 8 * time.Second, Lag: 60 * time.Millisecond, Levels: []testutil.Level{
		{At: 0, W: 90}, {At: 5 * time.Second, W: 600}}}
	tr := s.Trace(pev(0.5, trace.EventRunStart, "e"), pev(7, trace.EventRunEnd, "e"))
	kept := map[string]account.LagRecord{"GPU-synthetic-0": {MS: 60, UMS: 1.5, At: time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)}}
	r := loadOne(t, writeRunDir(t, tr, pat(0.5), pat(7), kept))
	var b bytes.Buffer
	require.NoError(t, report.HTML(&b, []report.Run{r}, nil, nil))
	assert.Contains(t, b.String(), "60 (kept from 2026-11-30)")
	r.Manifest.GPUs[0].Lag.CacheDate = nil
	b.Reset()
	require.NoError(t, report.HTML(&b, []report.Run{r}, nil, nil))
	assert.Contains(t, b.String(), "60 (kept)")
}

// The short-phase shape term follows the burst spreads measured on an H200: 27 % at 10 ms and below, 8 % at 50 ms
// (held to the 10 % floor), log-linear in between.
func TestShortShapeU(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want float64
	}{{5 * time.Millisecond, 0.27}, {10 * time.Millisecond, 0.27}, {20 * time.Millisecond, 0.27 * math.Pow(0.08/0.27, math.Log(2)/math.Log(5))},
		{40 * time.Millisecond, 0.10}, {500 * time.Millisecond, 0.10}} {
		assert.InDelta(t, c.want, report.ShortShapeU(c.d), 1e-12, "%s", c.d)
	}
}

// Without a counter the energy is the samples' integral, and nothing rescales their aliasing: the run's aliasing
// term is the whole sampled energy times the bound for loads not commensurate with 20 ms (5.7 % on two H200s,
// docs/RESULTS.md §6.3; 6 % rectangular), computed plainly here.
func TestSamplesOnlyAliasingTerm(t *testing.T) {
	s := testutil.Synth{Start: p0, Duration: 12 * time.Second, Levels: []testutil.Level{{At: 0, W: 80},
		{At: 3 * time.Second, W: 450}, {At: 8 * time.Second, W: 120}}}
	tr := s.Trace(pev(2, trace.EventRunStart, "e"), pev(3, trace.EventPhase, "work"), pev(8, trace.EventPhaseEnd, ""),
		pev(10, trace.EventRunEnd, "e"))
	tr.GPUs[0].Counters = nil
	r := loadOne(t, writeRunDir(t, tr, pat(2), pat(10), nil))
	require.Equal(t, account.MethodSamples, r.Manifest.GPUs[0].Method)
	e := testutil.PlainSampled(tr.GPUs[0].Samples, pat(2), pat(10))
	assert.InEpsilon(t, 0.06/math.Sqrt(3)*e, float64(r.Uncertainty.Term(report.TermAliasing).RawJ), 1e-9)
}
