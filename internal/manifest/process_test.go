package manifest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/trace"
)

func withProcesses() *Manifest {
	m := valid()
	gi, ci := 2, 0
	m.Processes = &ProcessEnergy{Model: "busy_share", GPUs: []ProcessGPU{{Index: 0, Role: RoleWorkload, EnergyJ: 30000,
		IdleW: 80, IdleSource: IdleFromBaseline, IdleJ: 4800, UnattributedJ: 0, Processes: []ProcessShare{
			{PID: 4242, ProcessIdentity: trace.ProcessIdentity{Command: "python3", Runtime: "docker",
				ContainerID: "8054a716919473fbde6a1329bf20ac6a0317c6dd1c214c54df94f75f85051c90", ContainerName: "bench"},
				GPUInstance: &gi, ComputeInstance: &ci, EnergyJ: 25200, BusyS: 41.5, MaxMemoryBytes: 874 << 20,
				FirstSeen: m.Times.Start, LastSeen: m.Times.End.Add(-time.Second)}}}},
		Containers: []ContainerEnergy{{ContainerID: "8054a716919473fbde6a1329bf20ac6a0317c6dd1c214c54df94f75f85051c90",
			ContainerName: "bench", Runtime: "docker", EnergyJ: 25200, Processes: 1}}}
	return m
}

func TestProcessesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Write(dir, withProcesses()))
	m, err := Read(dir)
	require.NoError(t, err)
	require.NotNil(t, m.Processes)
	p := m.Processes.GPUs[0].Processes[0]
	assert.Equal(t, "bench", p.ContainerName, "the identity's fields sit in the process's object")
	assert.Equal(t, Num(25200), p.EnergyJ)
	assert.Equal(t, 2, *p.GPUInstance)
	assert.Equal(t, withProcesses().Processes.Containers, m.Processes.Containers)

	b, err := json.Marshal(withProcesses().Processes.GPUs[0].Processes[0])
	require.NoError(t, err)
	assert.Contains(t, string(b), `"pid":4242,"command":"python3","runtime":"docker","container_id":"8054a7`)

	bad := withProcesses()
	bad.Processes.GPUs[0].Index = 1024
	b, err = json.Marshal(bad)
	require.NoError(t, err)
	_, err = Parse("m.json", b)
	assert.EqualError(t, err, "manifest m.json: processes.gpus[0].index: 1024 outside 0..1023")

	old, err := json.Marshal(valid())
	require.NoError(t, err)
	m, err = Parse("old.json", old)
	require.NoError(t, err)
	assert.Nil(t, m.Processes, "absent from manifests before it")
}
