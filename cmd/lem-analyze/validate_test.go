package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/manifest"
)

// captureStdout runs f with os.Stdout sent to a pipe and returns what it printed.
func captureStdout(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	ferr := f()
	os.Stdout = old
	require.NoError(t, w.Close())
	return <-done, ferr
}

// validate's verdicts, the report's ok column and its valid_runs are one decision: power-capped runs pass,
// thermal slowdowns, failed runs and negative energies fail.
func TestValidateAgreesWithReport(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for i, c := range []struct {
		id, status, warning string
		energy              float64
	}{
		{"ok1", manifest.StatusOK, "", 1000},
		{"ok2", manifest.StatusOK, "power_capped", 1100},
		{"hot", manifest.StatusOK, "throttling", 1200},
		{"failed", manifest.StatusFail, "", 900},
		{"negative", manifest.StatusOK, "", -3},
	} {
		s := start.Add(time.Duration(20*i) * time.Second)
		m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: c.id, Experiment: "x", Status: c.status,
			Backend: "process", Times: manifest.Times{Start: s, End: s.Add(10 * time.Second), DurationS: 10},
			GPUs: []manifest.GPU{{Index: 0, Role: manifest.RoleWorkload, UUID: "GPU-1", MeanPowerW: manifest.Num(c.energy / 10),
				PeakPowerW: manifest.Null, Energy: manifest.Energy{CounterJ: manifest.Num(c.energy), HybridJ: manifest.Num(c.energy),
					SampledJ: manifest.Null, AdjustedJ: manifest.Num(c.energy / 2)},
				Baseline: &manifest.Baseline{MedianW: 50, P25W: 49, P75W: 51, IQRW: 2, Samples: 500}}},
			Warnings: []manifest.Warning{}}
		m.Energy = m.GPUs[0].Energy
		if c.warning != "" {
			m.Warnings = append(m.Warnings, manifest.Warning{Code: c.warning, Message: "GPU 0: " + c.warning})
		}
		d := filepath.Join(dir, c.id)
		require.NoError(t, os.MkdirAll(d, 0o755))
		require.NoError(t, manifest.Write(d, m))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	out, err := captureStdout(t, func() error { return (&validateCmd{Paths: []string{dir}}).Run(context.Background(), log) })
	assert.ErrorIs(t, err, errInvalid)
	assert.ErrorContains(t, err, "3 of 5 inputs")
	var passed []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "ok" {
			passed = append(passed, f[1])
		}
	}
	assert.Equal(t, []string{"ok1", "ok2"}, passed)
	assert.Contains(t, out, "FAIL  hot (x): no thermal or hardware slowdown: GPU 0: throttling")
	assert.Contains(t, out, "FAIL  negative (x): no negative energy or duration: energy.hybrid_j is -3")

	// The report's CSV ok column.
	csvFile := filepath.Join(t.TempDir(), "runs.csv")
	_, err = captureStdout(t, func() error {
		return (&reportCmd{Paths: []string{dir}, Format: "csv", Table: "runs", Out: csvFile}).Run(context.Background(), log)
	})
	require.NoError(t, err)
	f, err := os.Open(csvFile)
	require.NoError(t, err)
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	require.NoError(t, err)
	var okCol int
	for i, h := range rows[0] {
		if h == "ok" {
			okCol = i
		}
	}
	var okRuns []string
	for _, row := range rows[1:] {
		if row[okCol] == "true" {
			okRuns = append(okRuns, row[0])
		}
	}
	sort.Strings(okRuns)
	assert.Equal(t, passed, okRuns)

	// The JSON's valid_runs and run ids.
	jsonFile := filepath.Join(t.TempDir(), "report.json")
	_, err = captureStdout(t, func() error {
		return (&reportCmd{Paths: []string{dir}, Format: "json", Out: jsonFile}).Run(context.Background(), log)
	})
	require.NoError(t, err)
	b, err := os.ReadFile(jsonFile)
	require.NoError(t, err)
	var rep struct {
		Experiments []struct {
			Valid int      `json:"valid_runs"`
			IDs   []string `json:"run_ids"`
		} `json:"experiments"`
	}
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Len(t, rep.Experiments, 1)
	assert.Equal(t, len(passed), rep.Experiments[0].Valid)
	assert.Equal(t, passed, rep.Experiments[0].IDs)
}
