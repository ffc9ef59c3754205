package report

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/trace"
)

// segPath is segment seq of the recording rec in dir.
func segPath(dir string, seq int) string {
	return filepath.Join(dir, fmt.Sprintf("%srec-%06d.parquet", recorder.SegmentPrefix, seq))
}

// copyFile copies a file byte for byte.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o644))
}

// loadBoth reports the inputs streamed and read whole; the two must agree on every number.
func loadBoth(t *testing.T, paths ...string) (runs []Run, probs []Problem) {
	t.Helper()
	whole, wprobs := LoadWith(paths, LoadOptions{Stream: StreamNever})
	streamed, sprobs := LoadWith(paths, LoadOptions{Stream: StreamAlways})
	var d differ
	d.cmp("runs", reflect.ValueOf(whole), reflect.ValueOf(streamed))
	assert.Empty(t, d.diffs, "streamed vs whole")
	assert.Equal(t, wprobs, sprobs, "streamed and whole name the same problems")
	return whole, wprobs
}

// A crashed host's recording directory: besides its good segments, one that cannot be used — empty, cut short
// (what a disk that lost its last writes leaves), or copied in from another host. Streamed or read whole, the
// report holds the good segments' runs (those of a directory holding only them) and names the one skipped.
// Before, streaming refused the whole recording for one bad segment, and a foreign segment's rows were mixed into
// the GPUs of the same index.
func TestRecordingWithAnUnusableSegment(t *testing.T) {
	base := t.TempDir()
	_, segmented := tiledRecording(t, base)
	src := filepath.Dir(segmented)
	// What the good segments alone report.
	good := filepath.Join(base, "good")
	require.NoError(t, os.MkdirAll(good, 0o755))
	copyFile(t, segPath(src, 0), segPath(good, 0))
	copyFile(t, segPath(src, 1), segPath(good, 1))
	want, wprobs := loadBoth(t, good)
	require.Empty(t, wprobs)
	require.NotEmpty(t, want)

	foreign, err := trace.ReadFile(segPath(src, 2))
	require.NoError(t, err)
	foreign.Env.Host.Hostname = "other-node"
	b2, err := os.ReadFile(segPath(src, 2))
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		bad  func(path string)
		why  string
	}{
		{"empty", func(p string) { require.NoError(t, os.WriteFile(p, nil, 0o644)) }, "Parquet"},
		{"cut short", func(p string) { require.NoError(t, os.WriteFile(p, b2[:len(b2)/2], 0o644)) }, "Parquet"},
		{"another host", func(p string) { require.NoError(t, trace.WriteFile(p, foreign)) }, `host "other-node"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "rec")
			require.NoError(t, os.MkdirAll(dir, 0o755))
			copyFile(t, segPath(src, 0), segPath(dir, 0))
			copyFile(t, segPath(src, 1), segPath(dir, 1))
			tc.bad(segPath(dir, 2))
			runs, probs := loadBoth(t, dir)
			require.Len(t, probs, 1, "%v", probs)
			assert.Contains(t, probs[0].Err, filepath.Base(segPath(dir, 2)), "names the segment skipped")
			assert.Contains(t, probs[0].Err, tc.why)
			require.Len(t, runs, len(want))
			for i := range runs {
				assert.Equal(t, want[i].Manifest.RunID, runs[i].Manifest.RunID)
				var d differ
				d.cmp("energy", reflect.ValueOf(want[i].Manifest.Energy), reflect.ValueOf(runs[i].Manifest.Energy))
				d.cmp("phases", reflect.ValueOf(want[i].Manifest.Phases), reflect.ValueOf(runs[i].Manifest.Phases))
				assert.Empty(t, d.diffs, runs[i].Manifest.RunID)
			}
		})
	}
}
