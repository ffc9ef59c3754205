// Package testutil finds the repository's test data and says whether service-backed tests must run.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/lem-energy/lem/internal/testenv"
)

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// TracePath returns the path of a committed test trace (testdata/traces/NAME.parquet).
func TracePath(name string) string {
	return filepath.Join(Root(), "testdata", "traces", name+".parquet")
}

// BuildBinary builds the main package in the current directory (a command's tests run there) and returns its
// path.
func BuildBinary(t testing.TB, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_CFLAGS=-Wno-deprecated-declarations")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	return bin
}

// RequireServices and SkipOrFail: see internal/testenv.
var (
	RequireServices = testenv.RequireServices
	SkipOrFail      = testenv.SkipOrFail
)
