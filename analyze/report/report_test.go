package report_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/png"
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
			start := first.Add(time.Duration(2+5*slot) * time.Second)
			slot++
			id := fmt.Sprintf("%s-c%d", exp, c+1)
			runDir(t, filepath.Join(dir, id), rec, id, exp, c+1, start)
		}
	}
}

func runDir(t *testing.T, dir string, rec *trace.Trace, id, exp string, cycle int, start time.Time) {
	t.Helper()
	end := start.Add(4 * time.Second)
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
	ev(4*time.Second, trace.EventRunEnd, exp, map[string]string{"status": "ok"})
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
		assert.Equal(t, 2, e.Valid)
		assert.Equal(t, 2, e.EnergyJ.N)
		// The replayed H200 idles at ~78 W before the model load: energy is power × duration.
		assert.InEpsilon(t, 78*e.DurationS.Mean, e.EnergyJ.Mean, 0.05, e.Name)
		assert.InEpsilon(t, e.EnergyJ.Mean/100, e.JPerToken.Mean, 1e-9, "J per output token")
		assert.LessOrEqual(t, e.EnergyJ.CILow, e.EnergyJ.Mean) // replays of the same span can give equal energies
	}
	b := exps[1]
	require.NotNil(t, b.VsReference)
	assert.InDelta(t, 1.0, b.VsReference.Value, 0.1, "same workload, same idle GPU")
	_, err = report.Experiments(loaded, "zzz")
	assert.ErrorContains(t, err, `"zzz"`)

	for _, r := range loaded {
		u := r.Uncertainty
		assert.InDelta(t, 0.05*float64(r.Manifest.Energy.HybridJ), u.SensorGainJ, 1e-9)
		assert.InDelta(t, 2*0.02*float64(r.Manifest.GPUs[0].MeanPowerW), u.BoundaryJ, 1e-9)
		assert.InDelta(t, r.Manifest.GPUs[0].Baseline.IQRW*r.Manifest.Times.DurationS, u.BaselineJ, 1e-9)
		require.Contains(t, r.Steady, 0)
		assert.True(t, r.Steady[0].Found, "idle replayed power is steady")
		assert.InDelta(t, 78, r.Steady[0].MeanW, 3)
	}

	var md bytes.Buffer
	require.NoError(t, report.Markdown(&md, loaded, exps, probs))
	for _, r := range loaded {
		assert.Contains(t, md.String(), r.Manifest.RunID)
	}
	assert.Contains(t, md.String(), "| decode | 1 |")
	assert.Contains(t, md.String(), "Inputs not used")

	checkHTML(t, loaded, exps, probs)

	var cs bytes.Buffer
	require.NoError(t, report.CSV(&cs, loaded))
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
		{Code: "throttling", Message: "sw_power_cap 3 s"}}
	m.Status = manifest.StatusFail
	v := report.Violations(m)
	assert.Equal(t, []string{"status ok: run ended failed", "window ≥ 5 s: the run lasted 1 s", "no throttling: sw_power_cap 3 s"}, v)
}

// checkHTML renders the HTML report and opens it in headless Chromium: the DOM has a power plot per run (trace,
// shaded phases, dashed baseline) and the experiment bars, and the screenshot is not blank.
func checkHTML(t *testing.T, runs []report.Run, exps []report.Experiment, probs []report.Problem) {
	t.Helper()
	var h bytes.Buffer
	require.NoError(t, report.HTML(&h, runs, exps, probs))
	html := h.String()
	assert.Equal(t, len(runs), strings.Count(html, `<svg class="power"`))
	assert.Equal(t, 1, strings.Count(html, `<svg class="bars"`))
	assert.Equal(t, len(runs)*2, strings.Count(html, `class="phase"`), "prefill and decode shaded in each run")
	assert.Contains(t, html, `class="baseline"`)
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
	assert.Equal(t, len(runs), strings.Count(string(dom), `class="trace"`), "rendered DOM has every power trace")
	shot := filepath.Join(dir, "report.png")
	out, err := exec.Command(bin, append(args, "--screenshot="+shot, "file://"+page)...).CombinedOutput()
	require.NoError(t, err, "chromium --screenshot: %s", out)
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
