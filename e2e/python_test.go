package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testutil"
)

// The Python client (python/lem) is tested by its own suite (standard-library unittest, python/tests) against
// lem-exporter, lem-run and lem-analyze built from this tree, so make test covers it like any package: windows'
// energies against lem-analyze's, runs killed with windows open, no server, stdout markers, vLLM's counters.
func TestPythonClient(t *testing.T) {
	if testing.Short() {
		t.Skip("replays about 30 s of recording through lem-exporter and lem-run")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		testutil.SkipOrFail(t, "python3 is not installed (scripts/services.sh installs it)")
	}
	if out, err := exec.Command(py, "-c", "import sys; print(sys.version_info >= (3, 9))").Output(); err != nil ||
		strings.TrimSpace(string(out)) != "True" {
		testutil.SkipOrFail(t, "python3 is older than 3.9, the client's oldest: "+strings.TrimSpace(string(out)))
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(os.PathSeparator), "./cmd/lem-exporter", "./cmd/lem-run",
		"./cmd/lem-analyze")
	build.Dir = testutil.Root()
	build.Env = append(os.Environ(), "CGO_CFLAGS=-Wno-deprecated-declarations")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the binaries: %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-m", "unittest", "discover", "-s", "tests", "-t", "tests", "-v")
	cmd.Dir = filepath.Join(testutil.Root(), "python")
	cmd.Env = append(os.Environ(), "LEM_BIN="+bin, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	out, err := cmd.CombinedOutput()
	t.Logf("python3 -m unittest (python/tests):\n%s", out)
	require.NoError(t, err, "the Python suite failed (its output is above)")
	m := regexp.MustCompile(`(?m)^Ran (\d+) tests? in `).FindSubmatch(out)
	require.NotNil(t, m, "no unittest summary")
	n, _ := strconv.Atoi(string(m[1]))
	assert.GreaterOrEqual(t, n, 30, "tests run")
	if testutil.RequireServices() {
		assert.NotContains(t, string(out), "skipped=", "make test runs every Python test")
	}
}
