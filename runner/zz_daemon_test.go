package runner_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/runner"
)

// The Docker daemon dying mid-run (a crash: SIGKILL) is reported in the manifest (status error, the cause named)
// and lem-run still writes it. The test kills the real dockerd and starts it again, so it runs last (file name)
// and only under make test as root, where scripts/services.sh started the daemon.
func TestDaemonDyingMidRun(t *testing.T) {
	if !testutil.RequireServices() || os.Geteuid() != 0 {
		t.Skip("SKIPPED: stops and restarts dockerd; runs under make test as root only")
	}
	out, err := exec.Command("pidof", "dockerd").Output()
	if err != nil {
		t.Skip("SKIPPED: dockerd is not a process here (managed elsewhere)")
	}
	pid, err := strconv.Atoi(strings.Fields(string(out))[0])
	require.NoError(t, err)
	build(t, true)
	var runID string
	t.Cleanup(func() {
		restartDockerd(t)
		// The container outlived the daemon (its shim kept it running): remove it.
		if runID != "" {
			ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=lem.run_id="+runID).Output()
			for _, id := range strings.Fields(string(ids)) {
				exec.Command("docker", "rm", "-f", id).Run()
			}
		}
	})

	opts := baseOpts(t, "-phases", "long:60s")
	opts.RunID = "daemon-dies"
	runID = opts.RunID
	go func() {
		time.Sleep(4 * time.Second)
		syscall.Kill(pid, syscall.SIGKILL)
	}()
	res, err := runner.Run(context.Background(), opts, replay(t), nil, docker(t), slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	assert.Equal(t, manifest.StatusError, m.Status)
	assert.Contains(t, m.Error, "Docker daemon")
	assert.NotZero(t, res.ExitCode)
	back, err := manifest.Read(res.Dir)
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusError, back.Status)
	assert.Greater(t, back.Times.DurationS, 1.0)
}

func restartDockerd(t *testing.T) {
	for i := 0; i < 100; i++ { // let the old daemon finish exiting
		if exec.Command("pidof", "dockerd").Run() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd := exec.Command("dockerd")
	logf, _ := os.OpenFile("/tmp/lem-dockerd.log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, cmd.Start())
	cmd.Process.Release()
	for i := 0; i < 120; i++ {
		if exec.Command("docker", "info").Run() == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatal("dockerd did not come back")
}
