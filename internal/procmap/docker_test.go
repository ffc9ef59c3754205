package procmap_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/procmap"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// sleeperImage is a FROM-scratch image around testdata/sleeper.
const sleeperImage = "lem-test-procmap-sleeper:latest"

// dockerSleeper builds the image and starts a container of it named name; it returns the container's ID and the
// host PID of its process.
func dockerSleeper(t *testing.T, name string) (id string, pid uint32) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		testutil.SkipOrFail(t, "Docker CLI: "+err.Error())
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		testutil.SkipOrFail(t, "Docker Engine: "+err.Error())
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "sleeper"), "./testdata/sleeper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "Dockerfile"),
		[]byte("FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n"), 0o644))
	out, err = exec.Command("docker", "build", "-q", "-t", sleeperImage, dir).CombinedOutput()
	require.NoError(t, err, "docker build: %s", out)
	out, err = exec.Command("docker", "run", "-d", "--name", name, sleeperImage).CombinedOutput()
	require.NoError(t, err, "docker run: %s", out)
	id = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", id).Run() })
	out, err = exec.Command("docker", "inspect", "-f", "{{.State.Pid}}", id).CombinedOutput()
	require.NoError(t, err, "docker inspect: %s", out)
	p, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 32)
	require.NoError(t, err)
	require.NotZero(t, p, "the container's process runs")
	// The Engine reports the PID while runc is still starting it ("runc:[2:INIT]"): wait for the exec.
	comm := filepath.Join("/proc", strconv.FormatUint(p, 10), "comm")
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(comm)
		return err == nil && strings.TrimSpace(string(b)) == "sleeper"
	}, 10*time.Second, 10*time.Millisecond, "the container's process execs the sleeper")
	return id, uint32(p)
}

// A real container on this host's Docker Engine: its process's /proc/PID/cgroup names the container the Engine
// started, and the Engine names it.
func TestResolverDockerContainer(t *testing.T) {
	var b [4]byte
	rand.Read(b[:])
	name := "lem-procmap-" + hex.EncodeToString(b[:])
	id, pid := dockerSleeper(t, name)

	cg, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(int(pid)), "cgroup"))
	require.NoError(t, err)
	parsed := procmap.ParseCgroup(cg)
	assert.Equal(t, id, parsed.ContainerID, "cgroup file:\n%s", cg)
	assert.Equal(t, "docker", parsed.Runtime)

	r := procmap.New(procmap.Options{})
	defer r.Close()
	assert.Equal(t, trace.ProcessIdentity{Command: "sleeper", Runtime: "docker", ContainerID: id, ContainerName: name},
		r.Identify(pid))
	assert.Equal(t, name, r.Identify(pid).Container())

	// Without the Engine the container is still known by its ID.
	none := procmap.New(procmap.Options{DockerHost: "none"})
	defer none.Close()
	got := none.Identify(pid)
	assert.Equal(t, id, got.ContainerID)
	assert.Empty(t, got.ContainerName)
	assert.Equal(t, id[:12], got.Container())

	// This test process runs on the host, in no container of this Engine.
	self := r.Identify(uint32(os.Getpid()))
	assert.NotEqual(t, id, self.ContainerID)
	assert.Equal(t, filepath.Base(os.Args[0])[:min(15, len(filepath.Base(os.Args[0])))], self.Command, "comm is the first 15 bytes")
}
