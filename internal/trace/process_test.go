package trace

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/meta"
)

// processRows are a small trace of one GPU shared by two processes: power, counter, the driver's per-process
// samples and the processes seen at each poll.
func processRows() []row {
	rows := validRows()
	for i := range 4 {
		ts := t0.Add(time.Duration(i) * time.Second)
		rows = append(rows,
			processSampleRow(0, ProcessSample{Time: ts, PID: 4242, SM: 0.6, Mem: 0.12}),
			processSampleRow(0, ProcessSample{Time: ts.Add(200 * time.Millisecond), PID: 4343, SM: 0.4, Mem: 0.08, Dec: 0.01}),
			processRow(0, Process{Time: ts, PID: 4242, MemoryBytes: 874 << 20, GPUInstance: NoInstance, ComputeInstance: NoInstance,
				Identity: ProcessIdentity{Command: "python3", Runtime: "docker", ContainerID: containerID, ContainerName: "bench-a"}}),
			processRow(0, Process{Time: ts, PID: 4343, MemoryBytes: 638 << 20, GPUInstance: 1, ComputeInstance: 0,
				Identity: ProcessIdentity{Command: "vllm", Runtime: "containerd", ContainerID: containerID, PodUID: podUID,
					PodNamespace: "llm", PodName: "vllm-0"}}))
	}
	return rows
}

const (
	containerID = "8054a716919473fbde6a1329bf20ac6a0317c6dd1c214c54df94f75f85051c90"
	podUID      = "1b6fd1d8-7c9e-4bde-9f43-2a14d0f5e3a1"
)

func TestProcessRowsRoundTrip(t *testing.T) {
	tr, err := read(bytes.NewReader(rowsFile(t, processRows())), int64(len(rowsFile(t, processRows()))), ReadOptions{})
	require.NoError(t, err)
	s := tr.GPUs[0]
	require.Len(t, s.ProcessSamples, 8)
	require.Len(t, s.Processes, 8)
	assert.Equal(t, ProcessSample{Time: t0.UTC(), PID: 4242, SM: 0.6, Mem: 0.12}, s.ProcessSamples[0])
	assert.Equal(t, ProcessSample{Time: t0.Add(200 * time.Millisecond).UTC(), PID: 4343, SM: 0.4, Mem: 0.08, Dec: 0.01},
		s.ProcessSamples[1])
	assert.Equal(t, 0.6, s.ProcessSamples[0].Busy(), "the largest engine share")
	a, b := s.Processes[0], s.Processes[1]
	assert.Equal(t, uint32(4242), a.PID)
	assert.Equal(t, uint64(874<<20), a.MemoryBytes)
	assert.Equal(t, NoInstance, a.GPUInstance, "no MIG: null, read back as NoInstance")
	assert.Equal(t, ProcessIdentity{Command: "python3", Runtime: "docker", ContainerID: containerID, ContainerName: "bench-a"}, a.Identity)
	assert.Equal(t, "bench-a", a.Identity.Container())
	assert.Equal(t, 1, b.GPUInstance)
	assert.Equal(t, 0, b.ComputeInstance)
	assert.Equal(t, "llm", b.Identity.PodNamespace)
	assert.Equal(t, "8054a7169194", b.Identity.Container(), "the short ID where the name is unknown")
	assert.Empty(t, tr.GPUs[1].Processes, "GPU 1 had no process")
	checkInvariants(t, tr)

	// Through the file writer too, and the window sees process rows like any other.
	path := filepath.Join(t.TempDir(), "p.parquet")
	require.NoError(t, WriteFile(path, tr))
	back, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, s.ProcessSamples, back.GPUs[0].ProcessSamples)
	assert.Equal(t, s.Processes, back.GPUs[0].Processes)
	w := back.GPUs[0].Window(t0.Add(time.Second), t0.Add(2*time.Second))
	assert.Len(t, w.ProcessSamples, 3, "4242 at 1 s and 2 s, 4343 at 1.2 s")
	assert.Len(t, w.Processes, 4, "both processes at the polls of 1 s and 2 s")
}

func TestOldTracesHaveNoProcessRows(t *testing.T) {
	b := rowsFile(t, validRows())
	tr, err := read(bytes.NewReader(b), int64(len(b)), ReadOptions{})
	require.NoError(t, err)
	for g, s := range tr.GPUs {
		assert.Empty(t, s.ProcessSamples, "GPU %d", g)
		assert.Empty(t, s.Processes, "GPU %d", g)
	}
}

func TestProcessRowsChecked(t *testing.T) {
	w, err := NewStreamWriter(&bytes.Buffer{}, meta.Environment{})
	require.NoError(t, err)
	err = w.WriteProcessSamples(0, []ProcessSample{{Time: t0, PID: 1, SM: math.NaN()}})
	assert.ErrorContains(t, err, "process sample of GPU 0, PID 1: sm utilization NaN outside 0..10")
	err = w.WriteProcesses(0, []Process{{Time: t0, PID: 2, MemoryBytes: math.MaxUint64}})
	assert.ErrorContains(t, err, "process of GPU 0, PID 2: memory 18446744073709551615 bytes out of range")

	for _, c := range []struct {
		name string
		mod  func(*row)
		want string
	}{
		{"no pid", func(r *row) { r.PID = nil }, "column pid: row 281: process_sample at 2026-11-26 23:26:30 +0000 UTC without a valid PID"},
		{"pid over 32 bits", func(r *row) { p := int64(1) << 33; r.PID = &p }, "without a valid PID"},
		{"negative ratio", func(r *row) { v := -0.5; r.ProcMem = &v }, "column process_mem_ratio: row 281: PID 4242 at 2026-11-26 23:26:30 +0000 UTC: mem utilization -0.5 outside 0..10"},
		{"infinite ratio", func(r *row) { v := math.Inf(1); r.ProcSM = &v }, "column process_sm_ratio: row 281: PID 4242 at 2026-11-26 23:26:30 +0000 UTC: sm utilization +Inf outside 0..10"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rows := validRows()
			r := processSampleRow(0, ProcessSample{Time: t0, PID: 4242, SM: 0.5})
			c.mod(&r)
			b := rowsFile(t, append(rows, r))
			_, err := read(bytes.NewReader(b), int64(len(b)), ReadOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	rows := validRows()
	r := processRow(0, Process{Time: t0, PID: 7})
	neg := int64(-1)
	r.ProcMemoryBytes = &neg
	b := rowsFile(t, append(rows, r))
	_, err = read(bytes.NewReader(b), int64(len(b)), ReadOptions{})
	assert.ErrorContains(t, err, "column process_memory_bytes: row 281: -1 bytes")
}
