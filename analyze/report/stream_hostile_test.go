package report

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

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

// writeParts writes parts as the closed segments 0, 1, … of recording rec in dir; reversed writes each part's rows
// latest first (a writer that did not keep time order inside a row group).
func writeParts(t *testing.T, dir string, parts []*trace.Trace, reversed bool) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for k, part := range parts {
		if !reversed {
			require.NoError(t, trace.WriteFile(segPath(dir, k), part))
			continue
		}
		w, err := trace.Create(segPath(dir, k), part.Env)
		require.NoError(t, err)
		for _, g := range part.GPUIndices() {
			s := part.GPUs[g]
			for i := len(s.Samples) - 1; i >= 0; i-- {
				require.NoError(t, w.WriteSamples(g, s.Samples[i:i+1]))
			}
			for i := len(s.Counters) - 1; i >= 0; i-- {
				require.NoError(t, w.WriteCounter(g, s.Counters[i]))
			}
			for i := len(s.Telemetry) - 1; i >= 0; i-- {
				require.NoError(t, w.WriteTelemetry(g, s.Telemetry[i]))
			}
		}
		for i := len(part.Events) - 1; i >= 0; i-- {
			require.NoError(t, w.WriteEvent(part.Events[i]))
		}
		require.NoError(t, w.Close())
	}
	return filepath.Join(dir, "rec.parquet")
}

// thirds cuts a trace into three parts by time.
func thirds(all *trace.Trace) []*trace.Trace {
	first, end := all.Span()
	step := end.Sub(first) / 3
	var parts []*trace.Trace
	for k := range 3 {
		a, b := first.Add(time.Duration(k)*step), first.Add(time.Duration(k+1)*step)
		if k == 2 {
			b = end.Add(time.Hour)
		}
		part := trace.New(all.Env)
		for g, s := range all.GPUs {
			*part.Series(g) = *s.Window(a, b.Add(-1))
		}
		for _, e := range all.Events {
			if !e.Time.Before(a) && e.Time.Before(b) {
				part.Events = append(part.Events, e)
			}
		}
		parts = append(parts, part)
	}
	return parts
}

// Inputs a hostile writer or a crashed host leaves, each as segments and read streamed and whole: the two agree
// on every number, and on the runs a whole read of the same rows in one file finds.
func TestStreamedAgreesWithWholeOnHostileRecordings(t *testing.T) {
	base := t.TempDir()
	file, _ := tiledRecording(t, base)
	all, err := trace.ReadFile(file)
	require.NoError(t, err)
	wantRuns, _ := LoadWith([]string{file}, LoadOptions{Stream: StreamNever})
	require.Len(t, wantRuns, 16)
	parts := thirds(all)

	t.Run("segments out of time order", func(t *testing.T) {
		p := writeParts(t, filepath.Join(base, "swapped"), []*trace.Trace{parts[2], parts[0], parts[1]}, false)
		runs, probs := loadBoth(t, p)
		assert.Empty(t, probs)
		sameRuns(t, wantRuns, runs)
	})
	t.Run("rows latest first inside each segment", func(t *testing.T) {
		p := writeParts(t, filepath.Join(base, "reversed"), parts, true)
		runs, probs := loadBoth(t, p)
		assert.Empty(t, probs)
		sameRuns(t, wantRuns, runs)
	})
	t.Run("a segment copied under the next number", func(t *testing.T) {
		dir := filepath.Join(base, "dup")
		p := writeParts(t, dir, parts, false)
		copyFile(t, segPath(dir, 1), segPath(dir, 3))
		runs, probs := loadBoth(t, p)
		require.Len(t, probs, 1)
		assert.Contains(t, probs[0].Err, filepath.Base(segPath(dir, 3)))
		assert.Contains(t, probs[0].Err, "copy of")
		sameRuns(t, wantRuns, runs)
	})
	t.Run("overlapping segments", func(t *testing.T) {
		// The middle third written twice over: once alone, once inside the last segment.
		last := trace.New(all.Env)
		for g := range all.GPUs {
			s := last.Series(g)
			for _, p := range parts[1:] {
				ps := p.GPUs[g]
				s.Samples = append(s.Samples, ps.Samples...)
				s.Counters = append(s.Counters, ps.Counters...)
				s.Telemetry = append(s.Telemetry, ps.Telemetry...)
			}
		}
		last.Events = append(append(last.Events, parts[1].Events...), parts[2].Events...)
		runs, probs := loadBoth(t, writeParts(t, filepath.Join(base, "overlap"), []*trace.Trace{parts[0], parts[1], last}, false))
		assert.Empty(t, probs)
		// Counter, hybrid and sampled energies are those of the recording; the active-idle adjustment and the mean
		// clocks weigh the rows written twice twice (run-5: 6495.995 J adjusted active, not 6650.529 J).
		t.Skip("known: rows identical in every column, written twice, are counted twice by the adjustment and the telemetry means")
		sameRuns(t, wantRuns, runs)
	})
}

// sameRuns: the runs of the hostile input are the runs of the recording, with its energies.
func sameRuns(t *testing.T, want, got []Run) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range got {
		assert.Equal(t, want[i].Manifest.RunID, got[i].Manifest.RunID)
		var d differ
		d.cmp("energy", reflect.ValueOf(want[i].Manifest.Energy), reflect.ValueOf(got[i].Manifest.Energy))
		d.cmp("phases", reflect.ValueOf(want[i].Manifest.Phases), reflect.ValueOf(got[i].Manifest.Phases))
		assert.Empty(t, d.diffs, got[i].Manifest.RunID)
	}
}
