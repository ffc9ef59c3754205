package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// lem-analyze precision on a trace with one aliased square-wave phase: the JSON table names it, with its period,
// duty and the samples' departure from the counter the plain re-implementations give; a trace of anything else
// is refused in one line.
func TestPrecisionCommand(t *testing.T) {
	start := time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC)
	sq := testutil.Square{Start: start, Duration: 14 * time.Second, Low: 100, High: 500, Period: 40 * time.Millisecond,
		Duty: 0.25, On: 4 * time.Second, Off: 10 * time.Second, SampleOffset: 5 * time.Millisecond}
	ph := func(s float64, name string) trace.Event {
		return trace.Event{Time: start.Add(time.Duration(s * float64(time.Second))), GPU: trace.NoGPU, Type: trace.EventPhase, Name: name}
	}
	tr := sq.Trace(ph(2, "idle"), ph(4, "sq_p40ms_d25"), ph(10, "idle2"))
	path := filepath.Join(t.TempDir(), "p.parquet")
	require.NoError(t, trace.WriteFile(path, tr))
	out, err := captureStdout(t, func() error {
		return (&precisionCmd{Input: path, Format: "json"}).Run(context.Background(), slog.Default())
	})
	require.NoError(t, err)
	var doc struct {
		Squares []struct {
			Phase      string  `json:"phase"`
			PeriodMS   float64 `json:"period_ms"`
			DutyPct    float64 `json:"duty_pct"`
			SampledPct float64 `json:"sampled_pct"`
			Suspect    int     `json:"suspect"`
		} `json:"squares"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Len(t, doc.Squares, 1)
	s := doc.Squares[0]
	assert.Equal(t, "sq_p40ms_d25", s.Phase)
	assert.Equal(t, 40.0, s.PeriodMS)
	assert.Equal(t, 25.0, s.DutyPct)
	ser := tr.GPUs[0]
	a, b := start.Add(4*time.Second), start.Add(10*time.Second)
	assert.InDelta(t, 100*(testutil.PlainSampled(ser.Samples, a, b)/testutil.PlainCounter(ser.Counters, a, b)-1), s.SampledPct, 1e-6)
	assert.Greater(t, s.Suspect, 50)

	_, err = captureStdout(t, func() error {
		return (&precisionCmd{Input: testutil.TracePath("h200-shape"), Format: "md"}).Run(context.Background(), slog.Default())
	})
	assert.ErrorContains(t, err, "not a run of scripts/gpu/precision.py")
}
