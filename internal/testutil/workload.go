package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// WorkloadImage is the FROM-scratch test image around the static test workload (runner/testdata/workload).
const WorkloadImage = "lem-test-workload:latest"

var (
	workloadOnce sync.Once
	workloadBin  string
	workloadErr  string // build failure output
	imageErr     string
)

// Workload builds the static test workload once per test binary and returns its path; with image, it also
// wraps it in WorkloadImage (no registry needed), skipping or failing (make test) without a Docker Engine.
func Workload(t testing.TB, image bool) string {
	t.Helper()
	workloadOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lem-workload")
		if err != nil {
			workloadErr = err.Error()
			return
		}
		workloadBin = filepath.Join(dir, "workload")
		cmd := exec.Command("go", "build", "-o", workloadBin, "./runner/testdata/workload")
		cmd.Dir = Root()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			workloadErr = err.Error() + "\n" + string(out)
			return
		}
		if _, err := exec.LookPath("docker"); err != nil {
			imageErr = err.Error()
			return
		}
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY workload /workload\nENTRYPOINT [\"/workload\"]\n"), 0o644)
		if out, err := exec.Command("docker", "build", "-q", "-t", WorkloadImage, dir).CombinedOutput(); err != nil {
			imageErr = "docker build: " + string(out)
		}
	})
	if workloadErr != "" {
		t.Fatalf("building the test workload: %s", workloadErr)
	}
	if image && imageErr != "" {
		SkipOrFail(t, "Docker Engine with image build: "+imageErr)
	}
	return workloadBin
}
