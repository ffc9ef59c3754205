package report_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/manifest"
)

// keepAside copies a run directory as an earlier attempt of its run, ended with status.
func keepAside(t *testing.T, campaignDir, runID string, n int, status string) string {
	t.Helper()
	dst := report.EarlierAttemptDir(campaignDir, runID, n)
	require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	require.NoError(t, os.CopyFS(dst, os.DirFS(filepath.Join(campaignDir, runID))))
	m, err := manifest.Read(dst)
	require.NoError(t, err)
	m.Status = status
	require.NoError(t, manifest.Write(dst, m))
	return dst
}

// A campaign directory after runs were redone: each run directory holds the current attempt, .attempts/ the
// earlier ones (which sort first in a directory walk). Load reports every run once, from its current attempt,
// and counts its attempts; an earlier attempt named on its own is read.
func TestEarlierAttemptsCountedNotReported(t *testing.T) {
	dir := t.TempDir()
	runs(t, dir, map[string]int{"a": 2, "b.x": 1}) // ids a-c1, a-c2, b.x-c1 (a dot in an id stays in it)
	keepAside(t, dir, "a-c1", 1, manifest.StatusFail)
	second := keepAside(t, dir, "a-c1", 2, manifest.StatusCrashed)
	keepAside(t, dir, "b.x-c1", 1, manifest.StatusIntr)

	loaded, probs := report.Load([]string{dir})
	require.Empty(t, probs)
	got := map[string]int{}
	for _, r := range loaded {
		id := r.Manifest.RunID
		got[id] = r.Attempts
		assert.Equal(t, filepath.Join(dir, id), r.Dir)
		assert.Equal(t, manifest.StatusOK, r.Manifest.Status, id)
	}
	assert.Equal(t, map[string]int{"a-c1": 3, "a-c2": 1, "b.x-c1": 2}, got)
	exps, err := report.Experiments(loaded, "")
	require.NoError(t, err)
	assert.Equal(t, 2, exps[0].Runs, "experiment a: its two runs, not their earlier attempts")
	assert.Equal(t, 2, exps[0].Valid)

	var out bytes.Buffer
	require.NoError(t, report.JSON(&out, loaded, exps, probs))
	var doc struct {
		Runs []struct {
			Dir      string `json:"dir"`
			Attempts int    `json:"attempts"`
		} `json:"runs"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &doc))
	for _, r := range doc.Runs {
		assert.Equal(t, got[filepath.Base(r.Dir)], r.Attempts, r.Dir)
	}

	old, probs := report.Load([]string{second})
	require.Empty(t, probs)
	require.Len(t, old, 1)
	assert.Equal(t, manifest.StatusCrashed, old[0].Manifest.Status, "history named on its own is read")
	assert.Equal(t, 3, old[0].Attempts)

	assert.Equal(t, 3, report.Attempts(dir, "a-c1", nil))
	assert.Equal(t, 0, report.Attempts(dir, "a-c3", nil), "never measured")
	require.NoError(t, os.Rename(filepath.Join(dir, "a-c2"), report.EarlierAttemptDir(dir, "a-c2", 1)))
	assert.Equal(t, 1, report.Attempts(dir, "a-c2", nil), "moved aside, not measured again yet")
}

func TestEarlierAttemptsNames(t *testing.T) {
	dir := t.TempDir()
	att := filepath.Join(dir, report.AttemptsDir)
	for _, d := range []string{"r-c1.2", "r-c1.10", "r-c1.1", "v1.2-c1.1", "x", "x.", "x.0", "x.01", ".3", "x.-1"} {
		require.NoError(t, os.MkdirAll(filepath.Join(att, d), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(att, "f.1"), nil, 0o644)) // a file, not an attempt
	got, err := report.EarlierAttempts(dir)
	require.NoError(t, err)
	assert.Equal(t, map[string][]string{
		"r-c1":    {filepath.Join(att, "r-c1.1"), filepath.Join(att, "r-c1.2"), filepath.Join(att, "r-c1.10")},
		"v1.2-c1": {filepath.Join(att, "v1.2-c1.1")},
	}, got)
	none, err := report.EarlierAttempts(t.TempDir())
	require.NoError(t, err)
	assert.Empty(t, none)
}
