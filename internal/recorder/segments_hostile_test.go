package recorder_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/recorder"
	lemtest "github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// segmentsOf cuts the h200-shape recording into n closed segments of recording name in dir, sequence numbers
// seqs (in time order), and returns the recording and the segments' paths.
func segmentsOf(t *testing.T, dir, name string, seqs ...int) (*trace.Trace, []string) {
	t.Helper()
	src, err := trace.ReadFile(lemtest.TracePath("h200-shape"))
	require.NoError(t, err)
	first, end := src.Span()
	step := end.Sub(first) / time.Duration(len(seqs))
	var paths []string
	for k, seq := range seqs {
		a, b := first.Add(time.Duration(k)*step), first.Add(time.Duration(k+1)*step)
		if k == len(seqs)-1 {
			b = end.Add(time.Second)
		}
		part := trace.New(src.Env)
		for g, s := range src.GPUs {
			*part.Series(g) = *s.Window(a, b.Add(-1))
		}
		p := filepath.Join(dir, fmt.Sprintf("%s%s-%06d.parquet", recorder.SegmentPrefix, name, seq))
		require.NoError(t, trace.WriteFile(p, part))
		paths = append(paths, p)
	}
	return src, paths
}

func samples(tr *trace.Trace) int {
	n := 0
	for _, s := range tr.GPUs {
		n += len(s.Samples)
	}
	return n
}

// Recordings "run" and "run-2" in one directory: each one's segments are its own. Before, ".seg-run-*" also took
// run-2's segments, so "run" read (and merged, and deleted) both.
func TestSegmentsOfOneRecordingOnly(t *testing.T) {
	dir := t.TempDir()
	src, own := segmentsOf(t, dir, "run", 0, 1)
	_, other := segmentsOf(t, dir, "run-2", 0, 1, 2)
	got, err := recorder.Segments(dir, "run")
	require.NoError(t, err)
	assert.Equal(t, own, got)
	got, err = recorder.Segments(dir, "run-2")
	require.NoError(t, err)
	assert.Equal(t, other, got)

	tr, err := recorder.ReadSegments(dir, "run")
	require.NoError(t, err)
	assert.Equal(t, samples(src), samples(tr), "run's samples once, none of run-2's")

	require.NoError(t, recorder.MergeSegments(dir, "run"))
	left, err := recorder.Segments(dir, "run-2")
	require.NoError(t, err)
	assert.Len(t, left, 3, "merging run leaves run-2's segments alone")
}

// Sequence numbers are ordered as numbers: past 999999 a seventh digit does not sort the newest segment first,
// and a recording resumed there does not overwrite it.
func TestSegmentsPastSixDigits(t *testing.T) {
	dir := t.TempDir()
	_, paths := segmentsOf(t, dir, "rec", 999998, 999999, 1000000)
	got, err := recorder.Segments(dir, "rec")
	require.NoError(t, err)
	assert.Equal(t, paths, got)
}

// A recording's name may hold a glob's characters: its segments are still found.
func TestSegmentsOfANameWithGlobCharacters(t *testing.T) {
	dir := t.TempDir()
	_, paths := segmentsOf(t, dir, "exp[1]", 0, 1)
	got, err := recorder.Segments(dir, "exp[1]")
	require.NoError(t, err)
	assert.Equal(t, paths, got)
}

// A segment of another host copied in beside a recording's (same name, next sequence number) is neither merged
// into it nor deleted: it is kept aside as ".bad", and the merged trace holds the recording's own rows.
func TestMergeKeepsAForeignSegmentAside(t *testing.T) {
	dir := t.TempDir()
	src, paths := segmentsOf(t, dir, "rec", 0, 1, 2)
	foreign, err := trace.ReadFile(paths[2])
	require.NoError(t, err)
	foreign.Env.Host.Hostname = "elsewhere"
	alien := filepath.Join(dir, recorder.SegmentPrefix+"rec-000003.parquet")
	require.NoError(t, trace.WriteFile(alien, foreign))

	_, err = recorder.ReadSegments(dir, "rec")
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Base(alien))
	assert.Contains(t, err.Error(), `host "elsewhere"`)

	require.NoError(t, recorder.MergeSegments(dir, "rec"))
	merged, err := trace.ReadFile(filepath.Join(dir, "rec.parquet"))
	require.NoError(t, err)
	assert.Equal(t, samples(src), samples(merged), "the recording's own samples, once")
	assert.FileExists(t, alien+".bad")
}
