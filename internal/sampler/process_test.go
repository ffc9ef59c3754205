package sampler_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/gpu/gputest"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

const pidA, pidB = gputest.DefaultPID + 1, gputest.DefaultPID + 2

// Two processes share a mocked GPU at 60 and 40 % SM; the sampler polls them every 500 ms for 9.75 s on the
// virtual clock, and the recording holds every driver sample (one a second each, from the grid's 0 s) and every
// poll's processes.
func TestProcessesThroughSampler(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		f := &gputest.Fault{Processes: []gputest.Load{{PID: pidA, SM: 60, Mem: 12, MemoryBytes: 874 << 20},
			{PID: pidB, SM: 40, Mem: 8, MemoryBytes: 638 << 20}}}
		src, err := gpu.OpenNVML(gputest.MockNVML(f), nil)
		require.NoError(t, err)
		defer src.Close()
		t0 := time.Now()
		s, err := sampler.New(src, nil, sampler.Config{}, nil)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "p.parquet")
		rec, err := recorder.Start(s, recorder.Options{Memory: true, Path: path, FlushEvery: 2 * time.Second})
		require.NoError(t, err)
		stop := run(t, s)
		time.Sleep(9750 * time.Millisecond)
		stop()
		tr, err := rec.Stop()
		require.NoError(t, err)

		ser := tr.GPUs[0]
		// Polls at 0.5, 1.0 … 9.5 s: 19. The first finds the sample of 0 s (nothing seen yet), each whole second's
		// poll the sample of that second: 0 … 9 s, ten per process.
		require.Len(t, ser.ProcessSamples, 20)
		for i, p := range ser.ProcessSamples {
			sec := time.Duration(i/2) * time.Second
			assert.Equal(t, t0.Add(sec), p.Time, "sample %d", i)
			want := map[uint32]float64{pidA: 0.6, pidB: 0.4}[p.PID]
			assert.Equal(t, want, p.SM, "sample %d of PID %d", i, p.PID)
		}
		require.Len(t, ser.Processes, 2*19)
		assert.Equal(t, t0.Add(500*time.Millisecond), ser.Processes[0].Time, "stamped at the poll")
		assert.Equal(t, t0.Add(9500*time.Millisecond), ser.Processes[37].Time)
		assert.Equal(t, uint64(638<<20), ser.Processes[1].MemoryBytes)
		assert.Equal(t, trace.NoInstance, ser.Processes[1].GPUInstance)

		st, _ := s.Stats(0)
		assert.Equal(t, uint64(19), st.ProcessPolls)
		assert.Equal(t, uint64(20), st.ProcessSamples)
		assert.Equal(t, 2, st.Processes)
		assert.Equal(t, uint64(19), st.Calls[sampler.CallProcessUtilization].Count)
		assert.Equal(t, uint64(19), st.Calls[sampler.CallProcesses].Count)

		// The file, merged from its segments, holds the same.
		file, err := trace.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, utcSamples(ser.ProcessSamples), file.GPUs[0].ProcessSamples)
		assert.Equal(t, utcProcesses(ser.Processes), file.GPUs[0].Processes)
	})
}

// On a MIG GPU the driver refuses per-process utilization: asked once, then only the processes are read.
func TestProcessesOnMIGThroughSampler(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		f := &gputest.Fault{MIG: true, Processes: []gputest.Load{{PID: pidA, SM: 60, GPUInstance: 2}}}
		src, err := gpu.OpenNVML(gputest.MockNVML(f), nil)
		require.NoError(t, err)
		defer src.Close()
		s, err := sampler.New(src, nil, sampler.Config{ProcessInterval: time.Second}, nil)
		require.NoError(t, err)
		rec, err := recorder.Start(s, recorder.Options{Memory: true})
		require.NoError(t, err)
		stop := run(t, s)
		time.Sleep(3500 * time.Millisecond)
		stop()
		tr, err := rec.Stop()
		require.NoError(t, err)
		ser := tr.GPUs[0]
		assert.Empty(t, ser.ProcessSamples)
		require.Len(t, ser.Processes, 3)
		assert.Equal(t, 2, ser.Processes[2].GPUInstance)
		st, _ := s.Stats(0)
		cs := st.Calls[sampler.CallProcessUtilization]
		assert.Equal(t, uint64(1), cs.Count)
		assert.Equal(t, uint64(1), cs.NotSupported)
		assert.Equal(t, uint64(3), st.Calls[sampler.CallProcesses].Count)
	})
}

func TestProcessIntervalChecked(t *testing.T) {
	src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}), nil)
	require.NoError(t, err)
	defer src.Close()
	_, err = sampler.New(src, nil, sampler.Config{ProcessInterval: 2 * time.Second}, nil)
	assert.ErrorContains(t, err, "process interval 2s must lie within 10ms..1s")
	_, err = sampler.New(src, nil, sampler.Config{ProcessInterval: 2 * time.Second, NoProcesses: true}, nil)
	assert.NoError(t, err, "off: the interval is not used")
}

// utcSamples and utcProcesses put the times in UTC, as the reader returns them.
func utcSamples(ps []trace.ProcessSample) []trace.ProcessSample {
	out := make([]trace.ProcessSample, len(ps))
	for i, p := range ps {
		p.Time = p.Time.UTC()
		out[i] = p
	}
	return out
}

func utcProcesses(ps []trace.Process) []trace.Process {
	out := make([]trace.Process, len(ps))
	for i, p := range ps {
		p.Time = p.Time.UTC()
		out[i] = p
	}
	return out
}
