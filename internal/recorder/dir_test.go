package recorder_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	lemtest "github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func TestDirRecorderRotatesBySizeAndRetains(t *testing.T) {
	src, err := gpu.OpenReplay(lemtest.TracePath("h200-shape"), gpu.ReplayOptions{Speed: 4})
	require.NoError(t, err)
	defer src.Close()
	s, err := sampler.New(src, nil, sampler.Config{DrainInterval: 100 * time.Millisecond}, nil)
	require.NoError(t, err)
	dir := t.TempDir()
	rec, err := recorder.StartDir(s, recorder.DirOptions{Dir: dir, FlushEvery: 200 * time.Millisecond,
		MaxBytes: 1, MaxFiles: 2, RotateEvery: time.Hour}, slog.Default())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	time.Sleep(1500 * time.Millisecond) // ~7 segments, each over the 1-byte limit: a file each
	cancel()
	wg.Wait()
	require.NoError(t, rec.Stop())

	files, _ := filepath.Glob(filepath.Join(dir, "lem-*.parquet"))
	assert.Len(t, files, 2, "retention keeps the newest two")
	for _, f := range files {
		tr, err := trace.ReadFile(f)
		require.NoError(t, err)
		assert.NotEmpty(t, tr.GPUs[0].Samples, f)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	assert.Empty(t, left)
}

// A crash loses at most the flush interval: while recording, the newest closed segment is never older than the
// flush interval (plus the time to write one, well under a tick).
func TestSegmentsCloseWithinTheFlushInterval(t *testing.T) {
	src, err := gpu.OpenReplay(lemtest.TracePath("h200-shape"), gpu.ReplayOptions{})
	require.NoError(t, err)
	defer src.Close()
	s, err := sampler.New(src, nil, sampler.Config{DrainInterval: 100 * time.Millisecond}, nil)
	require.NoError(t, err)
	dir := t.TempDir()
	flush := 500 * time.Millisecond
	rec, err := recorder.Start(s, recorder.Options{Path: filepath.Join(dir, "trace.parquet"), FlushEvery: flush})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	begin := time.Now()
	var worst time.Duration
	for time.Since(begin) < 3*time.Second {
		time.Sleep(25 * time.Millisecond)
		segs, err := recorder.Segments(dir, "trace")
		require.NoError(t, err)
		if len(segs) == 0 {
			continue
		}
		st, err := os.Stat(segs[len(segs)-1])
		require.NoError(t, err)
		if age := time.Since(st.ModTime()); time.Since(begin) > 2*flush && age > worst {
			worst = age
		}
	}
	cancel()
	wg.Wait()
	_, err = rec.Stop()
	require.NoError(t, err)
	t.Logf("newest closed segment at most %s old (flush interval %s)", worst.Round(time.Millisecond), flush)
	assert.LessOrEqual(t, worst, flush+flush/5, "a segment closes within its flush interval")
	_, err = trace.ReadFile(filepath.Join(dir, "trace.parquet"))
	assert.NoError(t, err, "merged at the end")
	left, _ := recorder.Segments(dir, "trace")
	assert.Empty(t, left)
}
