package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testenv"
	"github.com/lem-energy/lem/internal/testutil"
)

var healthcheckLine = regexp.MustCompile(`(?m)^HEALTHCHECK .*CMD (\[.*\])$`)

// healthcheckCmd is the exec form of the Dockerfile's HEALTHCHECK.
func healthcheckCmd(t *testing.T, dockerfile string) string {
	t.Helper()
	m := healthcheckLine.FindStringSubmatch(dockerfile)
	require.NotNil(t, m, "a HEALTHCHECK in exec form")
	return m[1]
}

// The Dockerfile's HEALTHCHECK, in an image around a static exporter (no image can be pulled here, so the image
// is FROM scratch rather than the Dockerfile's Debian): healthy once the replayed GPU delivers samples; unhealthy
// when the exporter listens elsewhere than the health check asks; LEM_WEB_LISTEN_ADDRESS moves both.
func TestDockerHealthcheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a static binary and an image")
	}
	docker := testenv.Tool(t, "docker", "docker.io")
	if out, err := exec.Command(docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		testutil.SkipOrFail(t, "Docker Engine: "+strings.TrimSpace(string(out)))
	}
	df, err := os.ReadFile("docker/Dockerfile")
	require.NoError(t, err)
	hc := healthcheckLine.FindString(string(df))
	require.NotEmpty(t, hc)

	dir := t.TempDir()
	build := exec.Command("go", "build", "-tags", "netgo,osusergo", "-ldflags", "-linkmode external -extldflags -static",
		"-o", filepath.Join(dir, "lem-exporter"), "./cmd/lem-exporter")
	build.Dir = testutil.Root()
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-Wno-deprecated-declarations")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "static build:\n%s", out)
	trace, err := os.ReadFile(testutil.TracePath("h200-shape"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "trace.parquet"), trace, 0o644))
	dockerfile := strings.Join([]string{"FROM scratch",
		"COPY lem-exporter /usr/bin/lem-exporter",
		"COPY trace.parquet /usr/share/lem/trace.parquet",
		"USER 65532:65532",
		hc,
		`ENTRYPOINT ["/usr/bin/lem-exporter"]`, ""}, "\n")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644))
	suffix := make([]byte, 4)
	rand.Read(suffix)
	image := "lem-test-healthcheck:" + hex.EncodeToString(suffix)
	out, err = exec.Command(docker, "build", "-q", "-t", image, dir).CombinedOutput()
	require.NoError(t, err, "docker build:\n%s", out)
	t.Cleanup(func() { exec.Command(docker, "rmi", "-f", image).Run() })

	start := func(t *testing.T, env []string, args ...string) string {
		t.Helper()
		// The image's check, run more often than its 30 s so that the test is quick.
		runArgs := []string{"run", "-d", "--health-interval", "300ms", "--health-retries", "2", "--health-start-period", "1ms"}
		for _, e := range env {
			runArgs = append(runArgs, "-e", e)
		}
		runArgs = append(runArgs, image, "--replay", "/usr/share/lem/trace.parquet", "--loop")
		out, err := exec.Command(docker, append(runArgs, args...)...).CombinedOutput()
		require.NoError(t, err, "docker run:\n%s", out)
		id := strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command(docker, "rm", "-f", id).Run() })
		return id
	}
	// waitHealth polls Docker for the container's health until it is want or the deadline passes.
	waitHealth := func(t *testing.T, id, want string) string {
		t.Helper()
		var status string
		for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			out, err := exec.Command(docker, "inspect", "-f", "{{.State.Health.Status}}", id).CombinedOutput()
			require.NoError(t, err, "%s", out)
			if status = strings.TrimSpace(string(out)); status == want {
				break
			}
		}
		log, _ := exec.Command(docker, "inspect", "-f", "{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}", id).CombinedOutput()
		logs, _ := exec.Command(docker, "logs", id).CombinedOutput()
		require.Equal(t, want, status, "health log:\n%s\ncontainer log:\n%s", log, logs)
		return string(log)
	}

	t.Run("ready", func(t *testing.T) {
		waitHealth(t, start(t, nil), "healthy")
	})
	t.Run("listening elsewhere", func(t *testing.T) {
		log := waitHealth(t, start(t, nil, "--web.listen-address=:9700"), "unhealthy")
		assert.Contains(t, log, "connection refused")
	})
	t.Run("LEM_WEB_LISTEN_ADDRESS", func(t *testing.T) {
		waitHealth(t, start(t, []string{"LEM_WEB_LISTEN_ADDRESS=:9700"}), "healthy")
	})
}
