package runner_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/runner"
)

// vanishingDaemon stands between lem-run and the real Docker Engine on a socket of its own; cut makes the
// Engine vanish for lem-run, mid-run, as when dockerd crashes, without harming the real daemon.
type vanishingDaemon struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newVanishingDaemon(t *testing.T) (*vanishingDaemon, string) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	v := &vanishingDaemon{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", "/var/run/docker.sock")
			if err != nil {
				c.Close()
				continue
			}
			v.mu.Lock()
			v.conns = append(v.conns, c, up)
			v.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return v, "unix://" + sock
}

func (v *vanishingDaemon) cut() {
	v.ln.Close()
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, c := range v.conns {
		c.Close()
	}
}

// The Docker daemon vanishing mid-run is reported in the manifest (status error, the daemon named), which is
// still written.
func TestDaemonVanishingMidRun(t *testing.T) {
	build(t, true)
	v, host := newVanishingDaemon(t)
	t.Setenv("DOCKER_HOST", host)
	opts := baseOpts(t, "-phases", "long:60s")
	opts.RunID = "daemon-vanishes"
	t.Cleanup(func() {
		ids, _ := exec.Command("docker", "-H", "unix:///var/run/docker.sock", "ps", "-aq", "--filter",
			"label=lem.run_id="+opts.RunID).Output()
		for _, id := range strings.Fields(string(ids)) {
			exec.Command("docker", "-H", "unix:///var/run/docker.sock", "rm", "-f", id).Run()
		}
	})
	go func() { time.Sleep(4 * time.Second); v.cut() }()
	res, err := runner.Run(context.Background(), opts, replay(t), nil, docker(t), slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	assert.Equal(t, manifest.StatusError, m.Status)
	assert.Contains(t, m.Error, "Docker daemon")
	assert.NotZero(t, res.ExitCode)
	back, err := manifest.Read(res.Dir)
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusError, back.Status)
	assert.Greater(t, back.Times.DurationS, 0.5)
}
