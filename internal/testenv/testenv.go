// Package testenv says whether tests that need a service (Docker, Prometheus, Slurm, promtool …) must fail or
// may skip when it is missing. It imports nothing of lem, so test binaries that must not link NVML (those that
// link Helm, whose kustomize dependency imports plugin and so binds every symbol at start) can use it.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireServices reports whether service-backed tests must fail rather than skip (LEM_REQUIRE_SERVICES=1, set
// by make test).
func RequireServices() bool { return os.Getenv("LEM_REQUIRE_SERVICES") == "1" }

// SkipOrFail skips a test whose service is missing, or fails it under make test.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if RequireServices() {
		t.Fatalf("required service unavailable: %s", why)
	}
	t.Skipf("SKIPPED (service unavailable; make test requires it): %s", why)
}

// Tool is the path of a command a test needs (from Debian package pkg); missing, the test skips or fails.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, name+" not installed (Debian package "+pkg+")")
	}
	return p
}

// Run runs bin in dir and returns its combined output; a failure fails the test with the output.
func Run(t testing.TB, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}
