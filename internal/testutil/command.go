package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Commands built once per test binary (Command), removed by RemoveCommands from the package's TestMain: tests of
// what a user sees (one-line errors, kill -9) run the real binary, and building it per test would cost seconds
// each.
var built struct {
	sync.Mutex
	dir  string
	errs map[string]string
	done map[string]bool
}

// Command builds ./cmd/NAME once per test binary and returns its path.
func Command(t testing.TB, name string) string {
	t.Helper()
	built.Lock()
	defer built.Unlock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "lem-test-bin")
		if err != nil {
			t.Fatalf("building %s: %v", name, err)
		}
		built.dir, built.errs, built.done = dir, map[string]string{}, map[string]bool{}
	}
	bin := filepath.Join(built.dir, name)
	if !built.done[name] {
		built.done[name] = true
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
		cmd.Dir = Root()
		cmd.Env = append(os.Environ(), "CGO_CFLAGS=-Wno-deprecated-declarations")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.errs[name] = fmt.Sprintf("%v\n%s", err, out)
		}
	}
	if e := built.errs[name]; e != "" {
		t.Fatalf("building %s: %s", name, e)
	}
	return bin
}

// RemoveCommands removes what Command built; call it from TestMain after m.Run.
func RemoveCommands() {
	built.Lock()
	defer built.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
		built.dir = ""
	}
}
