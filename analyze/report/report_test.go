package report_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// runs makes run directories from windows of the real H200 LLM recording's idle stretch, as lem-run writes them:
// a baseline over the second before each run, the run's markers as events, the trace and the accounted manifest.
func runs(t *testing.T, dir string, exps map[string]int) {
	t.Helper()
	rec, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	first := rec.GPUs[0].Samples[0].Time
	names := make([]string, 0, len(exps))
	for e := range exps {
		names = append(names, e)
	}
	sort.Strings(names)
	slot := 0
	for _, exp := range names {
		for c := 0; c < exps[exp]; c++ {
			start := first.Add(time.Duration(2+6*slot) * time.Second)
			slot++
			id := fmt.Sprintf("%s-c%d", exp, c+1)
			runDir(t, filepath.Join(dir, id), rec, id, exp, c+1, start.Time())
		}
	}
}

func runDir(t *testing.T, dir string, rec *trace.Trace, id, exp string, cycle int, start time.Time) {
	t.Helper()
	end := start.Add(5500 * time.Millisecond) // past the 5 s window rule
	s := rec.GPUs[0]
	b, err := energy.ComputeBaseline(s.Samples, s.Telemetry, start.Add(-time.Second), start)
	require.NoError(t, err)
	mb := &manifest.Baseline{Start: b.Start, End: b.End, MedianW: b.MedianW, P25W: b.P25W, P75W: b.P75W, IQRW: b.IQRW(), Samples: b.N}
	tr := trace.New(rec.Env)
	*tr.Series(0) = *s.Window(start.Add(-2*time.Second), end.Add(2*time.Second))
	ev := func(at time.Duration, typ, name string, attrs map[string]string) {
		tr.Events = append(tr.Events, trace.Event{Time: start.Add(at), GPU: trace.NoGPU, Type: typ, RunID: id, Name: name, Attrs: attrs})
	}
	ev(0, trace.EventRunStart, exp, nil)
	ev(0, trace.EventPhase, "prefill", nil)
	ev(500*time.Millisecond, trace.EventPhase, "decode", nil)
	ev(3500*time.Millisecond, trace.EventResult, "", map[string]string{"output_tokens": "100", "requests": "2"})
	ev(5500*time.Millisecond, trace.EventRunEnd, exp, map[string]string{"status": "ok"})
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, trace.WriteFile(filepath.Join(dir, manifest.TraceFile), tr))
	m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: id, Experiment: exp, Cycle: cycle,
		Status: manifest.StatusOK, Backend: "process", Environment: rec.Env, Markers: manifest.Markers{Parsed: 3},
		Files: manifest.Files{Trace: manifest.TraceFile}}
	m.Times.BaselineStart, m.Times.BaselineEnd = b.Start, b.End
	account.Fill(m, account.Input{Trace: tr, RunID: id, Start: start, End: end, Baselines: map[int]*manifest.Baseline{0: mb}})
	require.NoError(t, manifest.Write(dir, m))
}

func TestReportOnReplayedRuns(t *testing.T) {
	dir := t.TempDir()
	runs(t, dir, map[string]int{"a": 2, "b": 2})
	// Bad inputs beside the good ones: each reported by path, the rest still analysed.
	bad := filepath.Join(dir, "broken")
	require.NoError(t, os.MkdirAll(bad, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(bad, "manifest.json"), []byte("{"), 0o644))
	old := filepath.Join(dir, "old")
	require.NoError(t, os.MkdirAll(old, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(old, "manifest.json"), []byte(`{"schema_version":"0"}`), 0o644))
	empty := t.TempDir()

	loaded, probs := report.Load([]string{dir, empty, "/nonexistent/runs", dir})
	require.Len(t, loaded, 4)
	var paths []string
	for _, p := range probs {
		paths = append(paths, p.Path+": "+p.Err)
	}
	joined := strings.Join(paths, "\n")
	assert.Contains(t, joined, filepath.Join(bad, "manifest.json"))
	assert.Contains(t, joined, `schema version "0"`)
	assert.Contains(t, joined, "no manifest.json or lem trace found")
	assert.Contains(t, joined, "/nonexistent/runs")
	assert.Contains(t, joined, "duplicate run", "the same directory given twice")

	exps, err := report.Experiments(loaded, "a")
	require.NoError(t, err)
	require.Len(t, exps, 2)
	for _, e := range exps {
		assert.Equal(t, 2, e.Valid, "%s: every run passes the rules", e.Name)
		assert.Empty(t, e.Excluded)
		assert.Equal(t, 2, e.EnergyJ.N)
		// The replayed H200 idles at ~78 W before the model load: energy is power × duration.
		assert.InEpsilon(t, 78*e.DurationS.Mean, e.EnergyJ.Mean, 0.05, e.Name)
		assert.InEpsilon(t, e.EnergyJ.Mean/100, e.JPerToken.Mean, 1e-9, "J per output token")
		assert.False(t, e.EnergyJ.HasInterval(), "two runs: the values, no interval")
		assert.Len(t, e.EnergyJ.Values, 2)
	}
	b := exps[1]
	require.NotNil(t, b.Reference)
	require.NotNil(t, b.Reference.EnergyJ)
	assert.InDelta(t, 1.0, b.Reference.EnergyJ.Ratio.Value, 0.1, "same workload, same idle GPU")
	assert.False(t, b.Reference.Paired, "no campaign: independent")
	assert.False(t, b.Reference.DifferentBoards, "both on the recording's one GPU")
	_, err = report.Experiments(loaded, "zzz")
	assert.ErrorContains(t, err, `"zzz"`)

	for _, r := range loaded {
		m := r.Manifest
		u := r.Uncertainty
		tr, err := trace.ReadFile(filepath.Join(r.Dir, manifest.TraceFile))
		require.NoError(t, err)
		ss := tr.GPUs[0].Samples
		// Independent of the code: gain 5 %/√3 of the energy; an edge's power is the highest sample within
		// 20 ms of it, misplaced by up to one period (rectangular: P·0.02/√3); the idle median's standard error
		// 1.2533·(IQR/1.349)/√n times the duration.
		edge := func(at time.Time) float64 {
			var p float64
			for _, x := range ss {
				if d := x.Time.Sub(trace.StampOf(at)); d >= -20*time.Millisecond && d <= 20*time.Millisecond {
					p = max(p, x.PowerW)
				}
			}
			return p
		}
		bl := m.GPUs[0].Baseline
		assert.InDelta(t, 0.05/math.Sqrt(3)*float64(m.Energy.HybridJ), float64(u.Term(report.TermGain).RawJ), 1e-9)
		assert.InDelta(t, 0.05/math.Sqrt(3)*float64(m.Energy.AdjustedJ), float64(u.Term(report.TermGain).AdjustedJ), 1e-9,
			"the gain applies to the adjusted energy itself, not the raw one")
		assert.InDelta(t, math.Hypot(edge(m.Times.Start), edge(m.Times.End))*0.02/math.Sqrt(3),
			float64(u.Term(report.TermBoundary).RawJ), 1e-9)
		assert.InDelta(t, 1.2533*bl.IQRW/1.349/math.Sqrt(float64(bl.Samples))*m.Times.DurationS,
			float64(u.Term(report.TermBaseline).AdjustedJ), 1e-9)
		assert.Zero(t, float64(u.Term(report.TermBaseline).RawJ), "raw energy has no baseline in it")
		assert.Zero(t, float64(u.Term(report.TermLatency).RawJ))
		assert.InDelta(t, plainAliasing(tr.GPUs[0], time.Duration(m.GPUs[0].Lag.MS*1e6), m.Times.Start, m.Times.End),
			float64(u.Term(report.TermAliasing).RawJ), 1e-6)
		assert.Greater(t, float64(u.Term(report.TermAliasing).RawJ), 0.0, "the run's edges fall inside counter intervals")
		assert.True(t, u.Term(report.TermLag).RawJ.Valid(), "lag term evaluated on the trace")
		var sq float64
		for _, term := range u.Terms {
			sq += float64(term.RawJ * term.RawJ)
		}
		assert.InDelta(t, math.Sqrt(sq), float64(u.URawJ), 1e-9)
		assert.InDelta(t, 2*float64(u.URawJ), float64(u.ExpandedRawJ), 1e-9)
		require.Contains(t, r.Steady, 0)
		assert.False(t, r.Steady[0].Found, "idle replayed power is never steady state")
	}

	var md bytes.Buffer
	require.NoError(t, report.Markdown(&md, loaded, exps, probs))
	for _, r := range loaded {
		assert.Contains(t, md.String(), r.Manifest.RunID)
	}
	assert.Contains(t, md.String(), "| decode | 1 |")
	assert.Contains(t, md.String(), "Inputs not used")
	assert.Contains(t, md.String(), "(n=2: ", "two runs: values listed")

	checkHTML(t, loaded, exps, probs)

	var cs bytes.Buffer
	require.NoError(t, report.CSV(&cs, report.TableRuns, loaded, exps))
	rows, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	assert.Len(t, rows, 1+4, "header and one row per run and GPU")
	assert.Equal(t, "sampled_j", rows[0][12])
	assert.Equal(t, "j_per_output_token", rows[0][18])

	var js bytes.Buffer
	require.NoError(t, report.JSON(&js, loaded, exps, probs))
	var parsed map[string]any
	require.NoError(t, json.Unmarshal(js.Bytes(), &parsed), "valid JSON (no NaN)")
	assert.Len(t, parsed["runs"], 4)
}

func TestViolations(t *testing.T) {
	m := &manifest.Manifest{Status: manifest.StatusOK}
	assert.Empty(t, report.Violations(m))
	m.Warnings = []manifest.Warning{{Code: "short_window", Message: "the run lasted 1 s"}, {Code: "adjusted_clamped", Message: "x"},
		{Code: "throttling", Message: "GPU 0: clocks held back by hw_thermal_slowdown for 3.0 s"},
		{Code: "power_capped", Message: "GPU 0: clocks held under the software power cap for 8.6 s"}}
	m.Status = manifest.StatusFail
	v := report.Violations(m)
	assert.Equal(t, []string{"status ok: run ended failed", "window ≥ 5 s: the run lasted 1 s",
		"no thermal or hardware slowdown: GPU 0: clocks held back by hw_thermal_slowdown for 3.0 s"}, v,
		"power_capped is reported, not a violation")

	// Negative energies or durations: a damaged manifest.
	m = &manifest.Manifest{Status: manifest.StatusOK, Energy: manifest.Energy{HybridJ: -5, AdjustedJ: manifest.Null},
		GPUs: []manifest.GPU{{Index: 3, Energy: manifest.Energy{CounterJ: 1, SampledJ: -2}}},
		Phases: []manifest.Phase{{Name: "decode", DurationS: -1, Energy: manifest.Unmeasured(),
			GPUs: []manifest.PhaseGPU{{Index: 3, HybridJ: 4, AdjustedJ: -0.5}}}}}
	assert.Equal(t, []string{"no negative energy or duration: energy.hybrid_j is -5",
		"no negative energy or duration: gpus[3].energy.sampled_j is -2",
		"no negative energy or duration: phases[decode].duration_s is -1",
		"no negative energy or duration: phases[decode].gpus[3].adjusted_j is -0.5"}, report.Violations(m))
	assert.False(t, report.Passes(m))
}

// checkHTML renders the HTML report and opens it in headless Chromium: every power plot has its trace, shaded
// phases, dashed baseline, ticks with units, axis titles and a legend; the experiment chart has raw and adjusted
// as two series with a legend; the per-experiment phase table is there; and the screenshot is not blank. The
// screenshot is kept in the test's artifact directory (go test -artifacts keeps it).
func checkHTML(t *testing.T, runs []report.Run, exps []report.Experiment, probs []report.Problem) {
	t.Helper()
	var h bytes.Buffer
	require.NoError(t, report.HTML(&h, runs, exps, probs))
	html := h.String()
	checkDOM := func(doc string) {
		t.Helper()
		assert.Equal(t, len(runs), strings.Count(doc, `<svg class="power"`))
		assert.Equal(t, len(runs), strings.Count(doc, `class="trace"`), "every power trace")
		assert.Equal(t, 1, strings.Count(doc, `<svg class="bars"`))
		assert.Equal(t, len(runs)*2, strings.Count(doc, `class="phase"`), "prefill and decode shaded in each run")
		assert.Contains(t, doc, `class="baseline"`)
		// Ticks with units: power and time axes on every plot, the chart's value axis.
		assert.Equal(t, len(runs)+1, strings.Count(doc, ">power (W)<")+strings.Count(doc, "(J/token)<"), "axis titles with units")
		assert.Equal(t, len(runs), strings.Count(doc, ">time since the baseline started (s)<"))
		assert.GreaterOrEqual(t, strings.Count(doc, `class="tick y"`), 3*(len(runs)+1))
		assert.GreaterOrEqual(t, strings.Count(doc, `class="tick x"`), 3*len(runs))
		// Legends name every series.
		assert.Equal(t, len(runs), strings.Count(doc, ">GPU 0 power (50 Hz)<"))
		assert.Equal(t, len(runs), strings.Count(doc, ">idle baseline (median)<"))
		assert.Equal(t, len(runs), strings.Count(doc, ">phase decode<"))
		// Raw and adjusted are separate series, one bar each per experiment, never one in place of the other.
		assert.Equal(t, len(exps), strings.Count(doc, `class="bar raw"`))
		assert.Equal(t, len(exps), strings.Count(doc, `class="bar adjusted"`))
		assert.Contains(t, doc, ">idle-adjusted<")
		// The per-experiment phase table: one row per experiment and phase.
		i := strings.Index(doc, `class="experiment-phases"`)
		require.Positive(t, i)
		table := doc[i : i+strings.Index(doc[i:], "</table>")]
		var rows int
		for _, e := range exps {
			rows += len(e.Phases)
			assert.Contains(t, table, "<td>"+e.Name+"</td><td>decode</td>")
		}
		assert.Equal(t, rows+1, strings.Count(table, "<tr>"))
	}
	checkDOM(html)
	assert.NotContains(t, html, "ZgotmplZ", "no value escaped away by html/template")

	bin, err := exec.LookPath("chromium")
	if err != nil {
		testutil.SkipOrFail(t, "chromium not installed (Debian package chromium)")
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	require.NoError(t, os.WriteFile(page, h.Bytes(), 0o644))
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--window-size=1000,1600"}
	dom, err := exec.Command(bin, append(args, "--dump-dom", "file://"+page)...).Output()
	require.NoError(t, err, "chromium --dump-dom")
	checkDOM(string(dom))
	shot := filepath.Join(t.ArtifactDir(), "report.png")
	out, err := exec.Command(bin, append(args, "--screenshot="+shot, "file://"+page)...).CombinedOutput()
	require.NoError(t, err, "chromium --screenshot: %s", out)
	t.Logf("screenshot of the HTML report: %s", shot)
	f, err := os.Open(shot)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	var inked int
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y; y += 2 {
		for x := bnd.Min.X; x < bnd.Max.X; x += 2 {
			r, g, b, _ := img.At(x, y).RGBA()
			if r < 0xd000 || g < 0xd000 || b < 0xd000 {
				inked++
			}
		}
	}
	assert.Greater(t, inked, 5000, "the screenshot shows tables and plots, not a blank page")
}

// plainAliasing is the aliasing term of one GPU's energy over [a, b] written plainly (docs/METHODOLOGY.md): the
// counter's distinct readings moved back by the lag make the intervals; each interval's ratio of counter to
// sampled energy against their median gives its departure; at each interval across an edge, the smaller side of
// the hybrid's split times the largest of |departure|, the RMS departure over the window's intervals and 1 %, over
// √3; in quadrature.
func plainAliasing(s *trace.Series, lag time.Duration, a, b time.Time) float64 {
	return plainAliasingFloor(s, lag, a, b, a, b, 0.01)
}
