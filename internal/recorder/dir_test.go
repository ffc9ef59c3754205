package recorder_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	lemtest "github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// replayShape makes a sampler (100 ms drains) over a replay of the h200-shape recording, read beforehand.
func replayShape(t *testing.T, tr *trace.Trace) *sampler.Sampler {
	t.Helper()
	src, err := gpu.NewReplay(tr, "h200-shape", gpu.ReplayOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { src.Close() })
	s, err := sampler.New(src, nil, sampler.Config{DrainInterval: 100 * time.Millisecond}, nil)
	require.NoError(t, err)
	return s
}

// run starts s and returns a stop function that waits for it.
func run(s *sampler.Sampler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	return func() { cancel(); wg.Wait() }
}

func TestDirRecorderRotatesBySizeAndRetains(t *testing.T) {
	tr, err := trace.ReadFile(lemtest.TracePath("h200-shape"))
	require.NoError(t, err)
	dir := t.TempDir()
	var begin time.Time
	lemtest.VirtualTime(t, func(t *testing.T) {
		begin = time.Now()
		s := replayShape(t, tr)
		rec, err := recorder.StartDir(s, recorder.DirOptions{Dir: dir, FlushEvery: 200 * time.Millisecond,
			MaxBytes: 1, MaxFiles: 2, RotateEvery: time.Hour}, slog.Default())
		require.NoError(t, err)
		stop := run(s)
		// Each segment is over the 1-byte limit, so each makes a file: opened by the record at a whole 200 ms
		// (drains every 100 ms), closed one 20 ms check before 200 ms later. Files start at 0, 200, … 1400 ms.
		time.Sleep(1500 * time.Millisecond)
		stop()
		require.NoError(t, rec.Stop())
	})

	files, _ := filepath.Glob(filepath.Join(dir, "lem-*.parquet"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	name := func(ms int) string {
		return "lem-" + begin.Add(time.Duration(ms)*time.Millisecond).UTC().Format("20060102T150405.000Z") + ".parquet"
	}
	assert.Equal(t, []string{name(1200), name(1400)}, names, "retention keeps the newest two")
	for _, f := range files {
		tr, err := trace.ReadFile(f)
		require.NoError(t, err)
		assert.NotEmpty(t, tr.GPUs[0].Samples, f)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	assert.Empty(t, left)
}

// A crash loses at most the flush interval: every segment is closed (renamed into place, a complete file) within
// the flush interval of its opening, i.e. of the first record it holds. The recorder checks every tenth of the
// interval and closes one check early, so never before 9/10 of it either.
func TestSegmentsCloseWithinTheFlushInterval(t *testing.T) {
	tr, err := trace.ReadFile(lemtest.TracePath("h200-shape"))
	require.NoError(t, err)
	dir := t.TempDir()
	flush := 500 * time.Millisecond
	var open []time.Duration // how long each closed segment was open
	lemtest.VirtualTime(t, func(t *testing.T) {
		s := replayShape(t, tr)
		rec, err := recorder.Start(s, recorder.Options{Path: filepath.Join(dir, "trace.parquet"), FlushEvery: flush})
		require.NoError(t, err)
		stop := run(s)
		// Records and the recorder's checks fall on a 5 ms grid (drains and telemetry every 100 ms, counter reads
		// at multiples of 5 ms, checks every 50 ms), so looking every 5 ms, once everything due has run, sees
		// each segment open and close at the instant it did.
		begin := time.Now()
		var openedAt time.Time
		closed := map[string]bool{}
		for ; time.Since(begin) < 3*time.Second; time.Sleep(5 * time.Millisecond) {
			synctest.Wait()
			segs, err := recorder.Segments(dir, "trace")
			require.NoError(t, err)
			for _, p := range segs {
				if !closed[p] {
					closed[p] = true
					require.False(t, openedAt.IsZero(), "segment %s closed without being seen open", p)
					open = append(open, time.Since(openedAt))
					openedAt = time.Time{}
				}
			}
			tmp, _ := filepath.Glob(filepath.Join(dir, "."+recorder.SegmentPrefix+"trace-*.tmp"))
			if len(tmp) > 0 && openedAt.IsZero() {
				openedAt = time.Now()
			}
		}
		stop()
		_, err = rec.Stop()
		require.NoError(t, err)
	})
	if t.Failed() {
		return
	}
	t.Logf("segments open for %v (flush interval %s)", open, flush)
	require.GreaterOrEqual(t, len(open), 5, "3 s of recording")
	for i, d := range open {
		assert.LessOrEqual(t, d, flush, "segment %d closes within its flush interval", i)
		assert.GreaterOrEqual(t, d, flush-flush/10, "segment %d closes at most one check early", i)
	}
	_, err = trace.ReadFile(filepath.Join(dir, "trace.parquet"))
	assert.NoError(t, err, "merged at the end")
	left, _ := recorder.Segments(dir, "trace")
	assert.Empty(t, left)
}

// The recorder counts the errors it meets (a directory gone under it: each segment it then closes fails) and
// reports the free space where it writes, as the file system reports it.
func TestDirStats(t *testing.T) {
	tr, err := trace.ReadFile(lemtest.TracePath("h200-shape"))
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "rec")
	lemtest.VirtualTime(t, func(t *testing.T) {
		s := replayShape(t, tr)
		rec, err := recorder.StartDir(s, recorder.DirOptions{Dir: dir, FlushEvery: 200 * time.Millisecond}, slog.Default())
		require.NoError(t, err)
		stop := run(s)
		time.Sleep(500 * time.Millisecond)
		st := rec.Stats()
		assert.Zero(t, st.Errors)
		var fs syscall.Statfs_t
		require.NoError(t, syscall.Statfs(dir, &fs))
		assert.InDelta(t, float64(fs.Bavail)*float64(fs.Bsize), st.FreeBytes, 256<<20, "what statfs says, give or take other writers")
		require.NoError(t, os.RemoveAll(dir))
		time.Sleep(500 * time.Millisecond)
		stop()
		rec.Stop()
		assert.NotZero(t, rec.Stats().Errors, "segments closed into a directory that is gone")
	})
}
