package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// lem-run record reads the energy counter before it starts the command, so the command's first phase, which
// begins at once, lies between counter reads and has counter energy: in the trace (a read no later than the
// phase's start; the counter's energy over the phase, interpolated plainly, within a few % of the 50 Hz samples')
// and in the phase table lem-run prints (a number, not "-", close to the same 50 Hz energy). The sampler's own
// first periodic read comes too late for that: without the early read the table shows "-".
func TestRecordFirstPhaseHasCounterEnergy(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-run")
	out := filepath.Join(t.TempDir(), "rec.parquet")
	cmd := exec.Command(bin, "record", "--replay", testutil.TracePath("h200-shape"), "-o", out, "--",
		"sh", "-c", "echo LEM_PHASE a; sleep 2.5; echo LEM_PHASE b; sleep 1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr:\n%s", stderr.String())

	tr, err := trace.ReadFile(out)
	require.NoError(t, err)
	var starts []time.Time // a, b
	var runEnd time.Time
	for _, e := range tr.Events {
		switch {
		case e.Type == trace.EventPhase && (e.Name == "a" || e.Name == "b"):
			starts = append(starts, e.Time)
		case e.Type == trace.EventRunEnd:
			runEnd = e.Time
		}
	}
	require.Len(t, starts, 2, "phases a and b: %v", tr.Events)
	require.False(t, runEnd.IsZero(), "the run's end")
	aStart, aEnd := starts[0], starts[1]
	assert.InDelta(t, 2.5, aEnd.Sub(aStart).Seconds(), 0.3, "a lasts the command's 2.5 s sleep")

	s := tr.GPUs[0]
	require.NotNil(t, s)
	var before int
	for _, c := range s.Counters {
		if !c.Time.After(trace.StampOf(aStart)) {
			before++
		}
	}
	require.Positive(t, before, "a counter read no later than phase a's start (%s); first read %s", aStart, s.Counters[0].Time)
	counterJ := testutil.PlainCounter(s.Counters, aStart, aEnd)
	sampledJ := testutil.PlainSampled(s.Samples, aStart, aEnd)
	t.Logf("phase a: counter %.1f J, 50 Hz %.1f J", counterJ, sampledJ)
	assert.InDelta(t, 200, sampledJ, 20, "about 80 W for 2.5 s on the replayed H200")
	assert.InEpsilon(t, sampledJ, counterJ, 0.03, "counter vs 50 Hz over phase a")

	// The phase table: "phase seconds counter 50 Hz hybrid 1 s-avg power counter updates".
	row := regexp.MustCompile(`(?m)^\s+a\s+([0-9.]+)\s+(\S+)\s+([0-9.]+)\s+(\S+)\s`).FindStringSubmatch(stdout.String())
	require.NotNil(t, row, "phase a's row in the table:\n%s", stdout.String())
	require.NotEqual(t, "-", row[2], "phase a has counter energy in the table:\n%s", stdout.String())
	tableCounter, err := strconv.ParseFloat(row[2], 64)
	require.NoError(t, err)
	tableSampled, err := strconv.ParseFloat(row[3], 64)
	require.NoError(t, err)
	assert.InEpsilon(t, tableSampled, tableCounter, 0.03, "the table's counter vs 50 Hz for a")
	assert.InDelta(t, sampledJ, tableSampled, 1, "the table's 50 Hz energy is the samples' over a")
	assert.InDelta(t, counterJ, tableCounter, 0.02*counterJ, "the table's counter energy is the counter's over a")
}
