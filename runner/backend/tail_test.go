package backend_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
)

// In container mode the last phase ends when the workload exits — at the container's finish time as the Engine
// reports it — not at lem-run's end bracket: what follows (the end bracket, the tail) is in no phase. A workload
// that prints "LEM_PHASE decode", sleeps 3 s and exits has a decode phase of 3.0 s: from the marker's log
// timestamp (taken by the runtime as it reads the pipe, late by a few ms — 25 ms seen on a busy 2-core host) to
// the exit (the workload's result line and exit, and the runtime seeing it, late by a few ms). The end bracket
// comes 0.1–0.4 s after the exit here, so the bound of 0.1 s with the exact end at the Engine's finish time tells
// the two apart. The manifest's environment.host is this host, as a process-mode run records it.
func TestContainerLastPhaseEndsAtExit(t *testing.T) {
	testutil.Workload(t, true)
	o := runOptions(t, io.Discard, "-phases", "decode:3s")
	o.Tail = 1500 * time.Millisecond // the default: long enough that a phase running into it could not pass
	removeContainers(t, backend.LabelRunID+"="+o.RunID)
	res, err := runner.Run(context.Background(), o, replay(t), nil, newDocker(t, backend.DockerOptions{Image: image, Keep: true}), slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	require.Equal(t, manifest.StatusOK, m.Status, m.Error)
	require.Len(t, m.Phases, 1)
	decode := m.Phases[0]
	require.Equal(t, "decode", decode.Name)
	require.Equal(t, 1, decode.Count)

	// The container's finish time, from the Engine itself (the container was kept for this).
	require.NotNil(t, m.Container)
	ins, err := engineClient(t).ContainerInspect(context.Background(), m.Container.ID, client.ContainerInspectOptions{})
	require.NoError(t, err)
	finished, err := time.Parse(time.RFC3339Nano, ins.Container.State.FinishedAt)
	require.NoError(t, err)
	require.False(t, ins.Container.State.Running)
	assert.True(t, decode.End.Equal(finished), "decode ends %s, the container finished %s", decode.End, finished)
	assert.True(t, decode.End.Before(m.Times.End), "decode ends (%s) before the end bracket (%s)", decode.End, m.Times.End)
	t.Logf("decode %.4f s; exit to end bracket %.4f s", decode.DurationS, m.Times.End.Sub(decode.End).Seconds())
	assert.InDelta(t, 3.0, decode.DurationS, 0.1, "the workload's 3 s sleep, within the stamps' latency")
	assert.InDelta(t, decode.End.Sub(decode.Start).Seconds(), decode.DurationS, 1e-9)

	// environment.host: this host (not the container's), as the process backend records it.
	h := m.Environment.Host
	hostname, err := os.Hostname()
	require.NoError(t, err)
	assert.Equal(t, hostname, h.Hostname)
	assert.NotEqual(t, ins.Container.Config.Hostname, h.Hostname, "the host's name, not the container's")
	kernel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSpace(string(kernel)), h.Kernel)
	assert.Equal(t, cpuModel(t), h.CPUModel)
	assert.Equal(t, runtime.NumCPU(), h.CPUCores)
	assert.Equal(t, runtime.GOARCH, h.Arch)
	assert.Positive(t, h.MemoryBytes)

	wl := testutil.Workload(t, false)
	po := runOptions(t, io.Discard, wl, "-phases", "a:100ms")
	pres, err := runner.Run(context.Background(), po, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	require.Equal(t, manifest.StatusOK, pres.Manifest.Status, pres.Manifest.Error)
	assert.Equal(t, pres.Manifest.Environment.Host, h, "container mode records the host as process mode does")
}

// cpuModel is /proc/cpuinfo's first "model name".
func cpuModel(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/cpuinfo")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("/proc/cpuinfo has no model name")
	return ""
}
