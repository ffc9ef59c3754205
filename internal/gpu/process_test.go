package gpu_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/gpu/gputest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

const pidA, pidB = gputest.DefaultPID + 1, gputest.DefaultPID + 2

// The mocked driver's per-process samples: one a second per busy process, the latest only, none for an idle one.
func TestNVMLProcessUtilization(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		f := &gputest.Fault{Processes: []gputest.Load{{PID: pidA, SM: 60, Mem: 12, MemoryBytes: 874 << 20},
			{PID: pidB, SM: 40, Mem: 8, MemoryBytes: 638 << 20}, {PID: gputest.DefaultPID, MemoryBytes: 1 << 20}}}
		src, err := gpu.OpenNVML(gputest.MockNVML(f), nil)
		require.NoError(t, err)
		defer src.Close()
		d := src.Devices()[0]
		pu, ok := d.(gpu.ProcessUtilizer)
		require.True(t, ok, "NVML devices report per-process utilization")
		assert.True(t, d.Info().ProcessUtilization, "probed at open")

		grid := time.Now().Truncate(time.Second) // the driver's latest sample
		ss, err := pu.ProcessUtilization(time.Time{})
		require.NoError(t, err)
		assert.Equal(t, []trace.ProcessSample{{Time: grid, PID: pidA, SM: 0.6, Mem: 0.12}, {Time: grid, PID: pidB, SM: 0.4, Mem: 0.08}}, ss,
			"percent as ratios; the idle process has no sample")
		again, err := pu.ProcessUtilization(grid)
		require.NoError(t, err)
		assert.Empty(t, again, "nothing newer than the last seen")
		time.Sleep(time.Second)
		next, err := pu.ProcessUtilization(grid)
		require.NoError(t, err)
		require.Len(t, next, 2)
		assert.Equal(t, grid.Add(time.Second), next[0].Time)

		ps, err := d.Processes()
		require.NoError(t, err)
		assert.Equal(t, []gpu.Process{
			{PID: pidA, UsedMemoryBytes: 874 << 20, GPUInstance: -1, ComputeInstance: -1},
			{PID: pidB, UsedMemoryBytes: 638 << 20, GPUInstance: -1, ComputeInstance: -1},
			{PID: gputest.DefaultPID, UsedMemoryBytes: 1 << 20, GPUInstance: -1, ComputeInstance: -1},
		}, ps)
	})
}

// On MIG the driver gives no per-process utilization; the processes carry their GPU instance.
func TestNVMLProcessesOnMIG(t *testing.T) {
	f := &gputest.Fault{MIG: true, Processes: []gputest.Load{{PID: pidA, SM: 50, GPUInstance: 3}}}
	src, err := gpu.OpenNVML(gputest.MockNVML(f), nil)
	require.NoError(t, err)
	defer src.Close()
	d := src.Devices()[0]
	require.NotNil(t, d.Info().MIGMode)
	assert.True(t, *d.Info().MIGMode)
	assert.False(t, d.Info().ProcessUtilization)
	_, err = d.(gpu.ProcessUtilizer).ProcessUtilization(time.Time{})
	assert.ErrorIs(t, err, gpu.ErrNotSupported)
	ps, err := d.Processes()
	require.NoError(t, err)
	assert.Equal(t, []gpu.Process{{PID: pidA, GPUInstance: 3, ComputeInstance: 0}}, ps)
}

// processTrace is 10 s of a GPU shared by two processes from t0: A busy 70 % every second, B 30 % at the odd
// seconds; the running processes polled every 500 ms until 6 s, when both exit.
func processTrace(t0 time.Time) *trace.Trace {
	tr := synthetic(t0)
	s := tr.Series(0)
	s.Samples, s.Counters = nil, nil
	for ms := 0; ms <= 10000; ms += 20 {
		s.Samples = append(s.Samples, trace.PowerSample{Time: trace.StampOf(t0.Add(time.Duration(ms) * time.Millisecond)), PowerW: 300})
	}
	for ms := 0; ms <= 10000; ms += 100 {
		s.Counters = append(s.Counters, trace.CounterReading{Time: trace.StampOf(t0.Add(time.Duration(ms) * time.Millisecond)), EnergyMJ: uint64(300 * ms)})
	}
	idA := trace.ProcessIdentity{Command: "python3", Runtime: "docker", ContainerID: "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00", ContainerName: "a"}
	for sec := 1; sec <= 6; sec++ {
		at := t0.Add(time.Duration(sec) * time.Second)
		s.ProcessSamples = append(s.ProcessSamples, trace.ProcessSample{Time: at, PID: 101, SM: 0.7, Mem: 0.1})
		if sec%2 == 1 {
			s.ProcessSamples = append(s.ProcessSamples, trace.ProcessSample{Time: at.Add(200 * time.Millisecond), PID: 202, SM: 0.3})
		}
	}
	for ms := 500; ms <= 6000; ms += 500 {
		at := t0.Add(time.Duration(ms) * time.Millisecond)
		s.Processes = append(s.Processes,
			trace.Process{Time: at, PID: 101, MemoryBytes: 1 << 30, GPUInstance: -1, ComputeInstance: -1, Identity: idA},
			trace.Process{Time: at, PID: 202, MemoryBytes: 1 << 29, GPUInstance: -1, ComputeInstance: -1})
	}
	return tr
}

// The replay plays the recorded per-process samples back like the driver (shifted, newer than the last seen, the
// latest per process) and the recorded processes with their recorded identities, until they exit.
func TestReplayProcesses(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		rec0 := time.Unix(1795735590, 0)
		start := time.Now()
		r, err := gpu.NewReplay(processTrace(rec0), "mem", gpu.ReplayOptions{Start: start})
		require.NoError(t, err)
		defer r.Close()
		d := r.Devices()[0]
		pu := d.(gpu.ProcessUtilizer)

		time.Sleep(3500 * time.Millisecond)
		ss, err := pu.ProcessUtilization(time.Time{})
		require.NoError(t, err)
		assert.Equal(t, []trace.ProcessSample{
			{Time: start.Add(3 * time.Second), PID: 101, SM: 0.7, Mem: 0.1},
			{Time: start.Add(3200 * time.Millisecond), PID: 202, SM: 0.3},
		}, ss, "the latest sample of each process, in replay time")
		ss, err = pu.ProcessUtilization(start.Add(3 * time.Second))
		require.NoError(t, err)
		assert.Equal(t, []uint32{202}, pids(ss), "only what is newer than the last seen")

		ps, err := d.Processes()
		require.NoError(t, err)
		require.Len(t, ps, 2, "the poll of 3.5 s")
		assert.Equal(t, "a", ps[0].Identity.ContainerName, "the recording's identity, not this host's")
		assert.Equal(t, uint64(1<<29), ps[1].UsedMemoryBytes)

		time.Sleep(4 * time.Second) // 7.5 s: the last poll with processes was at 6 s, 1.5 s ago
		ps, err = d.Processes()
		require.NoError(t, err)
		assert.Len(t, ps, 2, "a poll stays in force for up to 2 s")
		time.Sleep(time.Second)
		ps, err = d.Processes()
		require.NoError(t, err)
		assert.Empty(t, ps, "8.5 s: gone")
	})
}

func TestReplayWithoutProcessSamples(t *testing.T) {
	r, err := gpu.NewReplay(synthetic(time.Unix(1795735590, 0)), "mem", gpu.ReplayOptions{})
	require.NoError(t, err)
	defer r.Close()
	_, err = r.Devices()[0].(gpu.ProcessUtilizer).ProcessUtilization(time.Time{})
	assert.ErrorIs(t, err, gpu.ErrNotSupported, "a recording without them")
	_, err = r.Devices()[0].Processes()
	assert.ErrorIs(t, err, gpu.ErrNotSupported)
}

func pids(ss []trace.ProcessSample) []uint32 {
	var out []uint32
	for _, s := range ss {
		out = append(out, s.PID)
	}
	return out
}
