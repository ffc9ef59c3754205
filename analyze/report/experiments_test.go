package report_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// synth describes a run directory written by hand: energies chosen by the test.
type synth struct {
	id, exp, campaign string
	cycle             int
	at                int     // start, seconds after an epoch
	raw, adj          float64 // adj NaN: no baseline
	tokens            int     // 0: no token count
	uuid              string
	status            string
	warnings          []string
	activeW           float64 // active idle power; 0: none measured
}

var epoch = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func writeSynth(t *testing.T, dir string, s synth) {
	t.Helper()
	if s.status == "" {
		s.status = manifest.StatusOK
	}
	if s.uuid == "" {
		s.uuid = "GPU-aaaa"
	}
	start := epoch.Add(time.Duration(s.at) * time.Second)
	end := start.Add(10 * time.Second)
	g := manifest.GPU{Index: 0, Role: manifest.RoleWorkload, UUID: s.uuid, Name: "NVIDIA H200", Method: "hybrid",
		MeanPowerW: manifest.Num(s.raw / 10), PeakPowerW: manifest.Num(s.raw / 5),
		Energy: manifest.Energy{CounterJ: manifest.Num(s.raw), HybridJ: manifest.Num(s.raw), SampledJ: manifest.Num(s.raw),
			AdjustedJ: manifest.Num(s.adj)},
		Lag: &manifest.Lag{MS: 65, Resolved: true, Contrast: 30, Intervals: 100}}
	g.IdleW, g.Energy.AdjustedActiveJ = manifest.Null, manifest.Null
	if !math.IsNaN(s.adj) {
		g.Baseline = &manifest.Baseline{Start: start.Add(-10 * time.Second), End: start, MedianW: (s.raw - s.adj) / 10,
			P25W: 80, P75W: 81, IQRW: 1, Samples: 500}
		g.IdleW = manifest.Num(g.Baseline.MedianW)
	}
	if s.activeW > 0 {
		g.ActiveIdle = &manifest.ActiveIdle{Source: "window", MedianW: s.activeW, Samples: 250, DurationS: 5}
		g.Energy.AdjustedActiveJ = manifest.Num(s.raw - 10*s.activeW)
	}
	m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: s.id, Experiment: s.exp, Campaign: s.campaign,
		Cycle: s.cycle, Status: s.status, Backend: "process", Command: []string{"bench"},
		Environment: meta.Environment{Devices: []meta.Device{{Index: 0, UUID: s.uuid, Name: "NVIDIA H200"}}},
		Times:       manifest.Times{Start: start, End: end, DurationS: 10}, GPUs: []manifest.GPU{g}, Energy: g.Energy,
		Phases: []manifest.Phase{{Name: "decode", Count: 1, Start: start.Add(time.Second), End: end, DurationS: 9,
			GPUs: []manifest.PhaseGPU{{Index: 0, HybridJ: manifest.Num(0.9 * s.raw), AdjustedJ: manifest.Num(0.9 * s.adj)}},
			Energy: manifest.Energy{CounterJ: manifest.Null, SampledJ: manifest.Null, HybridJ: manifest.Num(0.9 * s.raw), AdjustedJ: manifest.Num(0.9 * s.adj),
				AdjustedActiveJ: manifest.Null}}},
		Warnings: []manifest.Warning{}}
	if s.activeW > 0 {
		m.Phases[0].Energy.AdjustedActiveJ = manifest.Num(0.9*s.raw - 9*s.activeW)
	}
	for _, w := range s.warnings {
		m.Warnings = append(m.Warnings, manifest.Warning{Code: w, Message: "GPU 0: " + w})
	}
	if s.tokens > 0 {
		n := manifest.Num(s.tokens)
		m.Results = map[string]string{"output_tokens": fmt.Sprint(s.tokens)}
		m.Derived = &manifest.Derived{OutputTokens: n, Requests: manifest.Null,
			JPerOutputToken: manifest.Num(s.raw) / n, JPerOutputTokenAdj: manifest.Num(s.adj) / n,
			OutputTokensPerJ: n / manifest.Num(s.raw), OutputTokensPerJAdj: manifest.Null, JPerRequest: manifest.Null,
			JPerRequestAdj: manifest.Null}
	}
	require.NoError(t, manifest.Write(mkdir(t, filepath.Join(dir, s.id)), m))
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(p, 0o755))
	return p
}

func loadSynth(t *testing.T, ss []synth, reference string) ([]report.Run, []report.Experiment) {
	t.Helper()
	dir := t.TempDir()
	for _, s := range ss {
		writeSynth(t, dir, s)
	}
	runs, probs := report.LoadManifests([]string{dir})
	require.Empty(t, probs)
	require.Len(t, runs, len(ss))
	exps, err := report.Experiments(runs, reference)
	require.NoError(t, err)
	return runs, exps
}

// logT is the log-scale 95 % interval of the mean, computed here from its definition.
func logT(xs []float64, t975 float64) (mean, lo, hi float64) {
	var s, ss float64
	for _, x := range xs {
		s += x
	}
	mean = s / float64(len(xs))
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	se := math.Sqrt(ss/float64(len(xs)-1)) / math.Sqrt(float64(len(xs)))
	return mean, mean * math.Exp(-t975*se/mean), mean * math.Exp(t975*se/mean)
}

func TestFailingRunsStayOutOfStatistics(t *testing.T) {
	runs, exps := loadSynth(t, []synth{
		{id: "a1", exp: "a", at: 0, raw: 1000, adj: 400, tokens: 100},
		{id: "a2", exp: "a", at: 20, raw: 1100, adj: 450, tokens: 100},
		{id: "a3", exp: "a", at: 40, raw: 1050, adj: 420, tokens: 100},
		// Power-capped at full load: reported, still valid.
		{id: "a4", exp: "a", at: 60, raw: 1020, adj: 410, tokens: 100, warnings: []string{"power_capped"}},
		{id: "a5", exp: "a", at: 80, raw: 5000, adj: 4400, tokens: 100, warnings: []string{"throttling"}},
		{id: "a6", exp: "a", at: 100, raw: 900, adj: 300, tokens: 100, status: manifest.StatusFail},
		{id: "a7", exp: "a", at: 120, raw: 990, adj: 390, tokens: 100, warnings: []string{"short_window"}},
	}, "")
	require.Len(t, exps, 1)
	e := exps[0]
	assert.Equal(t, 7, e.Runs)
	assert.Equal(t, 4, e.Valid)
	assert.Equal(t, []string{"a1", "a2", "a3", "a4"}, e.IncludedRunIDs)
	require.Len(t, e.Excluded, 3)
	assert.Equal(t, "a5", e.Excluded[0].RunID)
	assert.Equal(t, []string{"no thermal or hardware slowdown: GPU 0: throttling"}, e.Excluded[0].Violations)
	assert.Equal(t, []string{"status ok: run ended failed"}, e.Excluded[1].Violations)
	assert.Equal(t, []float64{1000, 1100, 1050, 1020}, e.EnergyJ.Values)
	mean, lo, hi := logT([]float64{1000, 1100, 1050, 1020}, 3.182446) // t(3) two-sided 95 %
	assert.InDelta(t, mean, e.EnergyJ.Mean, 1e-9)
	assert.InDelta(t, lo, e.EnergyJ.CILow, 0.01)
	assert.InDelta(t, hi, e.EnergyJ.CIHigh, 0.01)
	assert.Equal(t, "log-t", e.EnergyJ.Method)

	// The report's ok column, validate's verdict and the statistics are one decision.
	for _, r := range runs {
		included := false
		for _, id := range e.IncludedRunIDs {
			included = included || id == r.Manifest.RunID
		}
		assert.Equal(t, included, report.Passes(r.Manifest), r.Manifest.RunID)
	}
	var md bytes.Buffer
	require.NoError(t, report.Markdown(&md, runs, exps, nil))
	assert.Contains(t, md.String(), "| a | 7 | 4 |")
	assert.Contains(t, md.String(), "- a5 (a): no thermal or hardware slowdown: GPU 0: throttling")
	assert.Contains(t, md.String(), "| a4 | a | ok | yes |")
	assert.Contains(t, md.String(), "| a5 | a | ok | no |")
	var cs bytes.Buffer
	require.NoError(t, report.CSV(&cs, report.TableRuns, runs, exps))
	rows, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	okCol := col(t, rows[0], "ok")
	var oks int
	for _, row := range rows[1:] {
		if row[okCol] == "true" {
			oks++
		}
	}
	assert.Equal(t, e.Valid, oks)
}

func col(t *testing.T, header []string, name string) int {
	t.Helper()
	for i, h := range header {
		if h == name {
			return i
		}
	}
	t.Fatalf("no column %q in %v", name, header)
	return -1
}

func TestReferenceRatios(t *testing.T) {
	// b uses twice a's raw energy and three times its adjusted energy, a on board 1, b on board 2; a has tokens and
	// no baseline, so its adjusted figures are missing and no adjusted ratio exists.
	var ss []synth
	for i, v := range []float64{1000, 1100, 1050} {
		ss = append(ss, synth{id: fmt.Sprintf("a%d", i), exp: "a", at: 20 * i, raw: v, adj: math.NaN(), tokens: 100, uuid: "GPU-1"})
		ss = append(ss, synth{id: fmt.Sprintf("b%d", i), exp: "b", at: 20*i + 100, raw: 2 * v, adj: 3 * v / 2, tokens: 100, uuid: "GPU-2"})
	}
	runs, exps := loadSynth(t, ss, "a")
	require.Len(t, exps, 2)
	c := exps[1].Reference
	require.NotNil(t, c)
	assert.Equal(t, "a", c.Reference)
	assert.False(t, c.Paired)
	assert.True(t, c.DifferentBoards)
	require.NotNil(t, c.EnergyJ)
	assert.InDelta(t, 2, c.EnergyJ.Ratio.Value, 1e-12)
	require.NotNil(t, c.JPerToken, "raw J/token compared: both have token counts")
	assert.InDelta(t, 2, c.JPerToken.Ratio.Value, 1e-12)
	assert.Nil(t, c.AdjustedJ, "a has no baseline: no adjusted ratio")
	assert.Nil(t, c.JPerTokenAdj)
	// Different boards: both gains stay in the ratio's budget, 5 %/√3 each.
	assert.InDelta(t, math.Sqrt(2)*0.05/math.Sqrt(3)*2, float64(c.EnergyJ.Uncertainty.Term(report.TermGain).U), 1e-9)

	var md bytes.Buffer
	require.NoError(t, report.Markdown(&md, runs, exps, nil))
	assert.Regexp(t, `\| b \| a \(different boards\) \| independent \| 2\.000 \[[0-9.]+, [0-9.]+\]( ± [0-9.]+)? \| — \| 2\.000 `, md.String())
	assert.Contains(t, md.String(), "**different boards**")

	// The same boards: the gain cancels.
	for i := range ss {
		ss[i].uuid = "GPU-1"
	}
	_, exps = loadSynth(t, ss, "a")
	assert.False(t, exps[1].Reference.DifferentBoards)
	assert.Zero(t, float64(exps[1].Reference.EnergyJ.Uncertainty.Term(report.TermGain).U))
}

func TestCyclePairing(t *testing.T) {
	// Four cycles with a common drift per cycle (×1.0, ×1.3, ×0.8, ×1.1): b is 1.5 × a in every cycle up to 1 %.
	drift := []float64{1.0, 1.3, 0.8, 1.1}
	jitter := []float64{1.0, 1.01, 0.99, 1.0}
	build := func(interleaved bool) []synth {
		var ss []synth
		for c := range drift {
			atA, atB := 40*c, 40*c+20 // interleaved: a then b in each cycle
			if !interleaved {
				atA, atB = 20*c, 200+20*c // grouped: every a, then every b
			}
			ss = append(ss, synth{id: fmt.Sprintf("a%d", c), exp: "a", campaign: "k", cycle: c + 1, at: atA, raw: 1000 * drift[c], adj: 500 * drift[c]},
				synth{id: fmt.Sprintf("b%d", c), exp: "b", campaign: "k", cycle: c + 1, at: atB, raw: 1500 * drift[c] * jitter[c], adj: 750 * drift[c] * jitter[c]})
		}
		return ss
	}
	_, exps := loadSynth(t, build(true), "a")
	c := exps[1].Reference
	require.True(t, c.Paired, "interleaved campaign: paired by cycle")
	assert.Equal(t, 4, c.EnergyJ.Ratio.Pairs)
	// By hand: d_i = a_i/ā − b_i/b̄, se = sd(d)/√n, ratio·exp(±t(3)·se).
	var a, b []float64
	for i := range drift {
		a, b = append(a, 1000*drift[i]), append(b, 1500*drift[i]*jitter[i])
	}
	ma, mb := mean(a), mean(b)
	var ss float64
	for i := range a {
		d := a[i]/ma - b[i]/mb
		ss += d * d
	}
	se := math.Sqrt(ss/3) / 2
	r := mb / ma
	// The experiment compared is b against a: b over a.
	assert.InDelta(t, r, c.EnergyJ.Ratio.Value, 1e-12)
	assert.InDelta(t, r*math.Exp(-3.182446*se), c.EnergyJ.Ratio.CILow, 1e-3)
	assert.InDelta(t, r*math.Exp(3.182446*se), c.EnergyJ.Ratio.CIHigh, 1e-3)
	paired := c.EnergyJ.Ratio.CIHigh - c.EnergyJ.Ratio.CILow

	_, exps = loadSynth(t, build(false), "a")
	c = exps[1].Reference
	assert.False(t, c.Paired, "grouped campaign: a cycle's runs are not side by side, compared as independent")
	assert.Greater(t, c.EnergyJ.Ratio.CIHigh-c.EnergyJ.Ratio.CILow, 5*paired, "the drift between cycles widens the independent interval")
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func TestNoBaselineNoAdjusted(t *testing.T) {
	runs, exps := loadSynth(t, []synth{
		{id: "n1", exp: "n", at: 0, raw: 1000, adj: math.NaN(), tokens: 10},
		{id: "n2", exp: "n", at: 20, raw: 1010, adj: math.NaN(), tokens: 10},
		{id: "n3", exp: "n", at: 40, raw: 990, adj: math.NaN(), tokens: 10},
	}, "")
	// The synthetic runs have no baseline, so the rule fails them; keep them in to see every output path.
	for i := range runs {
		runs[i].Manifest.Warnings = nil
	}
	// One window in the first run: its unmeasured adjusted energies are empty cells too.
	runs[0].Manifest.Windows = []manifest.Window{{Name: "req", Count: 2, DurationS: 1.5,
		Energy: manifest.Energy{CounterJ: manifest.Null, HybridJ: 300, SampledJ: 299, AdjustedJ: manifest.Null,
			AdjustedActiveJ: manifest.Null}, MedianJ: 150, P90J: 170}}
	exps, err := report.Experiments(runs, "")
	require.NoError(t, err)
	e := exps[0]
	assert.Equal(t, 3, e.Valid)
	assert.Zero(t, e.AdjustedJ.N)

	var js bytes.Buffer
	require.NoError(t, report.JSON(&js, runs, exps, nil))
	var out struct {
		Runs []struct {
			Manifest struct {
				Energy  map[string]any `json:"energy"`
				Derived map[string]any `json:"derived"`
			} `json:"manifest"`
			Uncertainty map[string]any `json:"uncertainty"`
		} `json:"runs"`
		Experiments []map[string]any `json:"experiments"`
	}
	require.NoError(t, json.Unmarshal(js.Bytes(), &out))
	for _, r := range out.Runs {
		assert.Nil(t, r.Manifest.Energy["adjusted_j"])
		assert.Nil(t, r.Manifest.Derived["j_per_output_token_adjusted"])
		assert.Nil(t, r.Uncertainty["u_adjusted_j"])
		assert.Nil(t, r.Uncertainty["expanded_adjusted_j"])
		assert.NotNil(t, r.Uncertainty["raw_j"])
	}
	adj := out.Experiments[0]["adjusted_j"].(map[string]any)
	assert.Nil(t, adj["mean"], "no adjusted energy: null, never 0")
	assert.Equal(t, 0.0, adj["n"])
	assert.Nil(t, out.Experiments[0]["adjusted_uncertainty"].(map[string]any)["expanded"])

	var md bytes.Buffer
	require.NoError(t, report.Markdown(&md, runs, exps, nil))
	// Without the trace the lag term is not evaluated, so no combined uncertainty either: "—", never 0.
	assert.Contains(t, md.String(), "| n1 | n | ok | yes | 10.00 | 1 | 1000.0 | — | — | — | 100.0000 | — | — | — |")
	assert.NotContains(t, md.String(), "–", "missing values are an em dash")

	for _, table := range report.Tables {
		var cs bytes.Buffer
		require.NoError(t, report.CSV(&cs, table, runs, exps))
		assert.NotContains(t, cs.String(), "—", table)
		assert.NotContains(t, cs.String(), "–", table)
		assert.NotContains(t, cs.String(), "NaN", table)
		rows, err := csv.NewReader(&cs).ReadAll()
		require.NoError(t, err, table)
		switch table {
		case report.TableRuns:
			require.Len(t, rows, 4)
			assert.Equal(t, "", rows[1][col(t, rows[0], "adjusted_j")])
			assert.Equal(t, "", rows[1][col(t, rows[0], "run_expanded_adjusted_j")])
			assert.Equal(t, "1000.000", rows[1][col(t, rows[0], "hybrid_j")])
		case report.TablePhases:
			require.Len(t, rows, 4, "one row per run and phase")
			assert.Equal(t, "decode", rows[1][col(t, rows[0], "phase")])
			assert.Equal(t, "900.000", rows[1][col(t, rows[0], "hybrid_j")])
			assert.Equal(t, "", rows[1][col(t, rows[0], "adjusted_j")])
		case report.TableExperiments:
			// duration, energy, adjusted, J/token, J/token adjusted, the two idles and the energy adjusted to active
			// idle (none measured: no baseline, no active idle), and the decode phase's three.
			require.Len(t, rows, 1+5+3+3)
			for _, row := range rows[1:] {
				switch row[col(t, rows[0], "figure")] {
				case "deep_idle_w", "active_idle_w", "adjusted_active_j":
					assert.Equal(t, "0", row[col(t, rows[0], "n")], row)
				}
				if row[col(t, rows[0], "figure")] == "adjusted_j" {
					assert.Equal(t, "", row[col(t, rows[0], "mean")])
					assert.Equal(t, "0", row[col(t, rows[0], "n")])
				}
				if row[col(t, rows[0], "figure")] == "energy_j" && row[1] == "" {
					assert.Equal(t, "1000.000000", row[col(t, rows[0], "mean")])
					assert.Equal(t, "1000;1010;990", row[col(t, rows[0], "values")])
				}
			}
		case report.TableWindows:
			require.Len(t, rows, 2, "one row per run and window name")
			for name, want := range map[string]string{"run_id": "n1", "window": "req", "count": "2", "duration_s": "1.500",
				"hybrid_j": "300.000", "adjusted_j": "", "adjusted_active_j": "", "median_j": "150.000", "p90_j": "170.000",
				"requests": "", "attributed_j": ""} {
				assert.Equal(t, want, rows[1][col(t, rows[0], name)], name)
			}
		}
	}
	assert.ErrorContains(t, report.CSV(&bytes.Buffer{}, "gpus", runs, exps), `--table "gpus"`)
}

// On the real H200 LLM recording accounted as one run, steady state lies inside one of the workload's generate
// phases (bs1, bs8, bs32; at batch 32 power swings ±10 % and never settles), not in the deep idle before the model
// load (78 W) nor in the phase named idle after it.
func TestSteadyStateInsideWorkloadPhase(t *testing.T) {
	path := testutil.TracePath("h200-llm")
	runs, probs := report.Load([]string{path})
	require.Empty(t, probs)
	require.Len(t, runs, 1)
	st, ok := runs[0].Steady[0]
	require.True(t, ok)
	require.True(t, st.Found)
	tr, err := trace.ReadFile(path)
	require.NoError(t, err)
	_, end := tr.Span()
	var in string
	for _, p := range trace.Phases(tr.Events, end) {
		if !st.Start.Before(p.Start) && !st.End.After(p.End) {
			in = p.Name
		}
	}
	assert.Contains(t, []string{"bs1", "bs8", "bs32"}, in, "inside a generate phase")
	var sum float64
	var n int
	for _, x := range tr.GPUs[0].Window(st.Start, st.End).Samples {
		sum += x.PowerW
		n++
	}
	assert.InDelta(t, sum/float64(n), st.MeanW, 1e-6, "the mean power of the samples in the stretch")
	assert.Greater(t, st.MeanW, 1.2*78, "well above deep idle")
	assert.GreaterOrEqual(t, st.End.Sub(st.Start), time.Second)

	var md bytes.Buffer
	exps, err := report.Experiments(runs, "")
	require.NoError(t, err)
	require.NoError(t, report.Markdown(&md, runs, exps, probs))
	assert.Contains(t, md.String(), fmt.Sprintf("| %.1f |", st.MeanW))
	assert.True(t, strings.Contains(md.String(), "| bs32 (aliasing) |"), "batch-32 decode departs from the counter")
	t.Logf("steady state in %s: %.1f W over %s", in, st.MeanW, st.End.Sub(st.Start))
}

// The uncertainty of a mean over runs combines the repetition (s/√n) with the systematic terms (gain, lag, marker
// latency, aliasing; the baseline only where it was reused), each the runs' mean relative term times the mean;
// random per-run terms are already in the repetition. Per token, everything scales by the token count.
func TestExperimentUncertaintyCombination(t *testing.T) {
	dir := t.TempDir()
	runs(t, dir, map[string]int{"a": 3})
	loaded, probs := report.Load([]string{dir})
	require.Empty(t, probs)
	exps, err := report.Experiments(loaded, "")
	require.NoError(t, err)
	e := exps[0]
	require.Equal(t, 3, e.Valid)
	var xs, lagRel, aliasRel []float64
	for _, r := range loaded {
		x := float64(r.Manifest.Energy.HybridJ)
		xs = append(xs, x)
		lagRel = append(lagRel, float64(r.Uncertainty.Term(report.TermLag).RawJ)/x)
		aliasRel = append(aliasRel, float64(r.Uncertainty.Term(report.TermAliasing).RawJ)/x)
	}
	m := mean(xs)
	var ss float64
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	rep := math.Sqrt(ss/2) / math.Sqrt(3)
	gain := 0.05 / math.Sqrt(3) * m
	lag := mean(lagRel) * m
	alias := mean(aliasRel) * m
	want := math.Sqrt(rep*rep + gain*gain + lag*lag + alias*alias)
	assert.InDelta(t, rep, float64(e.EnergyU.Term(report.TermRepetition).U), 1e-9)
	assert.InDelta(t, want, float64(e.EnergyU.U), 1e-9)
	assert.InDelta(t, 2*want, float64(e.EnergyU.Expanded), 1e-9)
	assert.False(t, e.EnergyU.Term(report.TermBoundary).Combined, "boundary is random per run: in the repetition")
	assert.InDelta(t, want/100, float64(e.JPerTokenU.U), 1e-9, "100 tokens per run")
}

// The H200 known-shape recording holds its clocks under the software power cap during the heavy and medium
// phases: the report gives that time per phase, adding up to the accounting's own total for the run, and the
// power_capped warning breaks no rule.
func TestPowerCappedTimePerPhase(t *testing.T) {
	runs, probs := report.Load([]string{testutil.TracePath("h200-shape")})
	require.Empty(t, probs)
	require.Len(t, runs, 1)
	r := runs[0]
	total := r.Manifest.GPUs[0].ThrottleS["sw_power_cap"]
	require.Greater(t, total, 8.0, "the accounting saw 8.5 s power-capped")
	var sum float64
	for _, s := range r.PowerCappedS {
		sum += s
	}
	assert.InDelta(t, total, sum, 0.05, "the phases cover the capped time")
	assert.Greater(t, r.PowerCappedS["heavy"], 3.0)
	assert.Greater(t, r.PowerCappedS["medium"], 3.0)
	assert.Zero(t, r.PowerCappedS["idle1"], "before the first load step")
	for _, v := range report.Violations(r.Manifest) {
		assert.NotContains(t, v, "power cap")
	}
	exps, err := report.Experiments(runs, "")
	require.NoError(t, err)
	var md bytes.Buffer
	require.NoError(t, report.Markdown(&md, runs, exps, probs))
	assert.Regexp(t, fmt.Sprintf(`\| heavy \| 1 \| [0-9.]+ \| [0-9.]+ \| ± [0-9.]+ \| — \| — \| %.2f \|`, r.PowerCappedS["heavy"]), md.String())
}

// The two idles side by side: deep idle and active idle summed over the workload's GPUs, the energy adjusted to
// each; active-idle adjusted energy may be negative and keeps its sign.
func TestTwoIdles(t *testing.T) {
	runs, exps := loadSynth(t, []synth{
		{id: "i1", exp: "i", at: 0, raw: 1500, adj: 720, activeW: 120},  // deep 78 W, active 120 W: 300 J above it
		{id: "i2", exp: "i", at: 20, raw: 1520, adj: 740, activeW: 121}, // 310 J
		{id: "i3", exp: "i", at: 40, raw: 1480, adj: 700, activeW: 119}, // 290 J
		{id: "q1", exp: "q", at: 60, raw: 1100, adj: 320, activeW: 120}, // below active idle: −100 J
		{id: "q2", exp: "q", at: 80, raw: 1150, adj: 370},               // no active idle measured
	}, "")
	require.Len(t, exps, 2)
	i, q := exps[0].Idle, exps[1].Idle
	assert.InDeltaSlice(t, []float64{78, 78, 78}, i.DeepW.Values, 1e-9)
	assert.InDeltaSlice(t, []float64{120, 121, 119}, i.ActiveW.Values, 1e-9)
	assert.InDeltaSlice(t, []float64{300, 310, 290}, i.AdjustedActiveJ.Values, 1e-9)
	assert.InDelta(t, 300, i.AdjustedActiveJ.Mean, 1e-9)
	assert.Equal(t, []float64{-100}, q.AdjustedActiveJ.Values, "the run without active idle has no value, not 0")
	// Per phase too: the decode's 9 s above each run's active idle.
	dec := exps[0].Phases[0]
	require.Equal(t, "decode", dec.Name)
	assert.InDeltaSlice(t, []float64{0.9*1500 - 9*120, 0.9*1520 - 9*121, 0.9*1480 - 9*119}, dec.AdjustedActiveJ.Values, 1e-9)
	assert.InDeltaSlice(t, []float64{0.9*1100 - 9*120}, exps[1].Phases[0].AdjustedActiveJ.Values, 1e-9,
		"the run without active idle has no value, not 0")
	assert.Equal(t, 2, q.DeepW.N)

	var md bytes.Buffer
	report.ExperimentTable(&md, exps)
	assert.Contains(t, md.String(), "| i | 78.0 [78.0, 78.0] | 720.0 [")
	assert.Contains(t, md.String(), "| 120.0 [")
	assert.Contains(t, md.String(), "| 300.0 [")
	var page bytes.Buffer
	require.NoError(t, report.HTML(&page, runs, exps, nil))
	assert.Contains(t, page.String(), "<td>i</td><td>78.0 [78.0, 78.0]</td>")
	var cs bytes.Buffer
	require.NoError(t, report.CSV(&cs, report.TableRuns, runs, exps))
	rows, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	assert.Equal(t, "120.000", rows[1][col(t, rows[0], "active_idle_w")])
	assert.Equal(t, "window", rows[1][col(t, rows[0], "active_idle_source")])
	assert.Equal(t, "300.000", rows[1][col(t, rows[0], "adjusted_active_j")])
	assert.Equal(t, "78.000", rows[1][col(t, rows[0], "idle_w")])
}

// A phase whose edges came as stdout lines carries the marker-latency term: each edge's power times the lines'
// timing uncertainty, in quadrature; posted markers and stamped lines carry the caller's time and no such term.
func TestMarkerLatencyTerm(t *testing.T) {
	runs, _ := loadSynth(t, []synth{{id: "m1", exp: "m", at: 0, raw: 1000, adj: 400, tokens: 10}}, "")
	r := runs[0]
	latency := func() float64 {
		r.PhaseUncertainty = nil // from the manifest alone
		b, ok := r.PhaseBudget("decode")
		require.True(t, ok)
		for _, term := range b.Terms {
			if term.Name == report.TermLatency {
				return float64(term.RawJ)
			}
		}
		t.Fatal("no marker latency term")
		return 0
	}
	r.Manifest.Markers = manifest.Markers{Parsed: 4}
	p := 900.0 / 9 // the decode phase's mean power at both its edges
	assert.InDelta(t, math.Sqrt(2)*p*report.StdoutMarkerU.Seconds(), latency(), 1e-9)
	r.Manifest.Markers = manifest.Markers{HTTP: 4}
	assert.Zero(t, latency())
	// Lines stamped with the workload's own clock (at=) are as exact as posted markers; one unstamped line among
	// them brings the term back.
	r.Manifest.Markers = manifest.Markers{Parsed: 4, Stamped: 4}
	assert.Zero(t, latency())
	r.Manifest.Markers = manifest.Markers{Parsed: 4, Stamped: 3}
	assert.InDelta(t, math.Sqrt(2)*p*report.StdoutMarkerU.Seconds(), latency(), 1e-9)
}
