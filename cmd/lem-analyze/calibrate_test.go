package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/calibrate"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// From a trace and a meter log to corrected reports: lem-analyze calibrate fits the synthetic board's known gain
// (1.03) and offset (−4 W) from a meter whose clock runs 1.5 s ahead, and lem-analyze report --calibration puts a
// run of that board on the meter's scale: energies gain·E + offset·T, adjusted gain·E, the gain term of the budget
// the fit's (with the meter's stated accuracy), others kept.
func TestCalibrateThenReport(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	s := testutil.Synth{Start: start, Duration: 4 * time.Minute, Lag: 60 * time.Millisecond}
	r := rand.New(rand.NewPCG(11, 12))
	for at := time.Duration(0); at < s.Duration; at += time.Duration(3000+r.IntN(5000)) * time.Millisecond {
		s.Levels = append(s.Levels, testutil.Level{At: at, W: 90 + 600*r.Float64()})
	}
	tr := s.Trace(trace.Event{Time: start.Add(30 * time.Second), GPU: trace.NoGPU, Type: trace.EventRunStart, RunID: "cal", Name: "e"},
		trace.Event{Time: start.Add(40 * time.Second), GPU: trace.NoGPU, Type: trace.EventPhase, RunID: "cal", Name: "load"},
		trace.Event{Time: start.Add(90 * time.Second), GPU: trace.NoGPU, Type: trace.EventRunEnd, RunID: "cal", Name: "e"})
	tracePath := filepath.Join(dir, "board.parquet")
	require.NoError(t, trace.WriteFile(tracePath, tr))

	var csv strings.Builder
	csv.WriteString("# bench meter, 1 s averages\nunix_ms,Power (W),Volts\n")
	for i := 1; time.Duration(i)*time.Second < s.Duration; i++ {
		b := start.Add(time.Duration(i) * time.Second)
		p := s.Energy(b.Add(-time.Second), b)
		fmt.Fprintf(&csv, "%d,%.3f,12.1\n", b.Add(1500*time.Millisecond).UnixMilli(), 1.03*p-4+2*r.NormFloat64())
	}
	meter := filepath.Join(dir, "meter.csv")
	require.NoError(t, os.WriteFile(meter, []byte(csv.String()), 0o644))

	calPath := filepath.Join(dir, "cal.json")
	cmd := &calibrateCmd{Input: tracePath, Meter: meter, Format: "auto", TimeZone: "UTC", MaxOffset: 10 * time.Second,
		Accuracy: 0.002, Out: calPath}
	out, err := captureStdout(t, func() error { return cmd.Run(context.Background(), slog.Default()) })
	require.NoError(t, err)
	assert.Contains(t, out, "GPU 0 (GPU-synthetic-0, Synthetic GPU): gain 1.0")
	assert.Contains(t, out, "meter clock +1.50")
	cal, err := calibrate.ReadFile(calPath)
	require.NoError(t, err)
	b := cal.Boards["GPU-synthetic-0"]
	q := 3.0
	assert.InDelta(t, 1.03, b.Gain, q*b.GainSE, "gain %.5f ± %.5f", b.Gain, b.GainSE)
	assert.InDelta(t, -4, b.OffsetW, q*b.OffsetSEW, "offset %.3f ± %.3f", b.OffsetW, b.OffsetSEW)
	assert.InDelta(t, 1.5, b.ClockS, 0.01)
	assert.InDelta(t, 0.002/math.Sqrt(3), b.MeterU, 1e-12)
	assert.Equal(t, calibrate.FormatCSV, b.Format)

	// A run of that board, as lem-run leaves it.
	runDir := filepath.Join(dir, "runs", "cal")
	require.NoError(t, os.MkdirAll(runDir, 0o755))
	require.NoError(t, trace.WriteFile(filepath.Join(runDir, manifest.TraceFile), tr))
	m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: "cal", Experiment: "e", Status: manifest.StatusOK,
		Backend: "process", Command: []string{"x"}, Environment: tr.Env}
	idle := 90.0
	account.Fill(m, account.Input{Trace: tr, RunID: "cal", Start: start.Add(30 * time.Second), End: start.Add(90 * time.Second),
		Baselines: map[int]*manifest.Baseline{0: {MedianW: idle, P25W: idle, P75W: idle, Samples: 500}},
		Results:   map[string]string{"output_tokens": "1000"}})
	require.NoError(t, manifest.Write(runDir, m))

	report := func(extra ...string) map[string]any {
		rc := &reportCmd{Paths: []string{filepath.Join(dir, "runs")}, Format: "json", Table: "runs"}
		if len(extra) > 0 {
			rc.Calibration = extra[0]
		}
		js, err := captureStdout(t, func() error { return rc.Run(context.Background(), slog.Default()) })
		require.NoError(t, err)
		var doc map[string]any
		require.NoError(t, json.Unmarshal([]byte(js), &doc))
		return doc["runs"].([]any)[0].(map[string]any)
	}
	plain, corrected := report(), report(calPath)
	get := func(run map[string]any, path ...string) float64 {
		var v any = run
		for _, p := range path {
			v = v.(map[string]any)[p]
		}
		return v.(float64)
	}
	e, adj, dur := get(plain, "manifest", "energy", "hybrid_j"), get(plain, "manifest", "energy", "adjusted_j"), 60.0
	assert.InDelta(t, b.Gain*e+b.OffsetW*dur, get(corrected, "manifest", "energy", "hybrid_j"), 1e-6)
	assert.InDelta(t, b.Gain*adj, get(corrected, "manifest", "energy", "adjusted_j"), 1e-6, "the offset cancels")
	assert.InDelta(t, (b.Gain*e+b.OffsetW*dur)/1000, get(corrected, "manifest", "derived", "j_per_output_token"), 1e-9)
	pe := plain["manifest"].(map[string]any)["phases"].([]any)[0].(map[string]any)
	pc := corrected["manifest"].(map[string]any)["phases"].([]any)[0].(map[string]any)
	assert.InDelta(t, b.Gain*get(pe, "energy", "hybrid_j")+b.OffsetW*get(pe, "duration_s"), get(pc, "energy", "hybrid_j"), 1e-6)

	term := func(run map[string]any, name, which string) float64 {
		for _, x := range run["uncertainty"].(map[string]any)["terms"].([]any) {
			if t := x.(map[string]any); t["name"] == name {
				return t[which].(float64)
			}
		}
		return math.NaN()
	}
	c := b.Gain*e + b.OffsetW*dur
	want := math.Sqrt(e*e*b.GainSE*b.GainSE + dur*dur*b.OffsetSEW*b.OffsetSEW + 2*e*dur*b.CovW + c*c*b.MeterU*b.MeterU)
	assert.InDelta(t, want, term(corrected, "gain", "raw_j"), 1e-9)
	assert.InDelta(t, 0.05/math.Sqrt(3)*e, term(plain, "gain", "raw_j"), 1e-9, "uncorrected: the assumed ±5 %")
	assert.Less(t, term(corrected, "gain", "raw_j"), term(plain, "gain", "raw_j")/3, "a fitted gain is known far better")
	assert.InDelta(t, math.Hypot(adj*b.GainSE, b.Gain*adj*b.MeterU), term(corrected, "gain", "adjusted_j"), 1e-9)
	assert.InDelta(t, term(plain, "boundary", "raw_j")*c/e, term(corrected, "boundary", "raw_j"), 1e-9, "scaled with the gain")
	assert.Equal(t, calPath, corrected["calibrated"].(map[string]any)["file"])
	assert.Nil(t, plain["calibrated"])
}

// Bad input to calibrate and report --calibration: one line, exit status 2.
func TestCalibrateRefuses(t *testing.T) {
	dir := t.TempDir()
	tr := testutil.Synth{Start: time.Unix(1e9, 0), Duration: 20 * time.Second, Levels: []testutil.Level{{W: 100}}}.Trace()
	tp := filepath.Join(dir, "t.parquet")
	require.NoError(t, trace.WriteFile(tp, tr))
	meter := filepath.Join(dir, "m.csv")
	require.NoError(t, os.WriteFile(meter, []byte("when,how\n1,2\n"), 0o644))
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"schema":"lem-calibration/1","boards":{"GPU-a":{"gain":9}}}`), 0o644))
	cases := []struct {
		run  func() error
		want string
	}{
		{(&calibrateCmd{Input: tp, Meter: meter, TimeZone: "Mars/Olympus"}).runner(), `--meter-timezone "Mars/Olympus"`},
		{(&calibrateCmd{Input: tp, Meter: meter, TimeZone: "UTC", GPU: ptr(3)}).runner(), "--gpu 3: the trace holds GPUs [0]"},
		{(&calibrateCmd{Input: tp, Meter: meter, TimeZone: "UTC"}).runner(), `meter log ` + meter + `: header "when,how" lacks`},
		{(&calibrateCmd{Input: tp, Meter: meter, TimeZone: "UTC", Accuracy: 2}).runner(), "--meter-accuracy 2"},
		{func() error {
			return (&reportCmd{Paths: []string{tp}, Format: "md", Calibration: bad}).Run(context.Background(), slog.Default())
		}, "--calibration: calibration " + bad + ": board GPU-a: gain 9 outside 0.5–2"},
	}
	for _, c := range cases {
		err := c.run()
		require.Error(t, err, c.want)
		assert.Contains(t, err.Error(), c.want)
		assert.NotContains(t, err.Error(), "\n")
		assert.ErrorIs(t, err, cli.Usage, c.want)
	}
}

func ptr(i int) *int { return &i }

func (c *calibrateCmd) runner() func() error {
	return func() error { return c.Run(context.Background(), slog.Default()) }
}
