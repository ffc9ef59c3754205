package main

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/testutil"
)

var updatePlot = flag.Bool("update-plot", false, "rewrite docs/img/precision-h200.svg from testdata/traces/h200-precision.parquet")

// lem-analyze precision --plot on the recorded H200 characterisation writes an SVG, the same bytes every time and
// those committed as docs/img/precision-h200.svg (go test -update-plot rewrites it); a plot name that is not .svg,
// or in no directory, is refused in one line before the trace is read, and nothing is written.
func TestPrecisionPlot(t *testing.T) {
	dir := t.TempDir()
	plot := func(path string) error {
		_, err := captureStdout(t, func() error {
			return (&precisionCmd{Input: testutil.TracePath("h200-precision"), Format: "md", Plot: path}).Run(context.Background(), slog.Default())
		})
		return err
	}
	a, b := filepath.Join(dir, "a.svg"), filepath.Join(dir, "b.SVG")
	require.NoError(t, plot(a))
	require.NoError(t, plot(b))
	got, err := os.ReadFile(a)
	require.NoError(t, err)
	again, err := os.ReadFile(b)
	require.NoError(t, err)
	assert.Greater(t, len(got), 1000)
	assert.True(t, bytes.HasPrefix(got, []byte(`<svg xmlns="http://www.w3.org/2000/svg"`)), "%.60q", got)
	assert.True(t, bytes.HasSuffix(got, []byte("</svg>\n")))
	assert.Contains(t, string(got), "NVIDIA H200 (GPU 2)")
	assert.Equal(t, got, again, "the same trace, the same plot")

	golden := filepath.Join(testutil.Root(), "docs", "img", "precision-h200.svg")
	if *updatePlot {
		require.NoError(t, os.WriteFile(golden, got, 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got), "docs/img/precision-h200.svg is what lem-analyze draws now (go test -update-plot)")

	for _, c := range []struct{ path, msg string }{
		{filepath.Join(dir, "p.png"), "the plot is written as SVG only"},
		{filepath.Join(dir, "p"), "the plot is written as SVG only"},
		{filepath.Join(dir, "missing", "p.svg"), "no directory " + filepath.Join(dir, "missing")},
		{filepath.Join(a, "p.svg"), "no directory " + a},
	} {
		err := plot(c.path)
		require.Error(t, err, c.path)
		assert.ErrorIs(t, err, cli.Usage, c.path)
		assert.Contains(t, err.Error(), "--plot "+c.path+": "+c.msg)
		assert.NotContains(t, err.Error(), "\n")
		_, statErr := os.Stat(c.path)
		assert.Error(t, statErr, "%s not written", c.path)
	}
}
