package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
)

// waitFile waits for a file the workload writes (its process group id) and returns its content.
func waitFile(t *testing.T, path string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "\n") {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not written within %s", path, within)
	return ""
}

// groupGone waits until no process of the group is left.
func groupGone(t *testing.T, pgid int, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// kill -9 of lem-run mid-run: the workload (and the processes it started) die with it, the run directory holds a
// manifest and the trace up to a few seconds before the kill, and lem-analyze reports the run as crashed with the
// energy measured so far.
func TestRunKill9(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-run")
	out := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "pgid")
	cmd := exec.Command(bin, "--replay", testutil.TracePath("h200-llm"), "--experiment", "k9", "--baseline", "1s",
		"--out", out, "--run-id", "r-k9", "--stop-grace", "2s", "--", "sh", "-c",
		"echo LEM_PHASE a; sleep 2; echo LEM_PHASE b; sleep 300 & echo $$ > "+pidFile+"; wait")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	pgid, err := strconv.Atoi(waitFile(t, pidFile, 20*time.Second))
	require.NoError(t, err)
	started := time.Now().Add(-2 * time.Second) // phase a lasted 2 s before the pid file
	time.Sleep(8 * time.Second)
	killed := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()

	assert.True(t, groupGone(t, pgid, 10*time.Second), "the workload and its background child die with lem-run\n%s", logs.String())
	dir := filepath.Join(out, "r-k9")
	require.Eventually(t, func() bool {
		m, err := manifest.Read(dir)
		return err == nil && m.Status == manifest.StatusCrashed
	}, 10*time.Second, 100*time.Millisecond, "the watchdog marks the run crashed")

	runs, probs := report.Load([]string{out})
	require.Empty(t, probs)
	require.Len(t, runs, 1)
	m := runs[0].Manifest
	assert.Equal(t, manifest.StatusCrashed, m.Status)
	require.True(t, m.Energy.HybridJ.Valid(), "energy so far, from the trace segments")
	assert.Greater(t, float64(m.Energy.HybridJ), 0.0)
	var names []string
	for _, p := range m.Phases {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"a", "b"}, names)
	// The closed segments hold all but the last flush interval and drain.
	lost := killed.Sub(started).Seconds() - m.Times.DurationS
	t.Logf("run %.1f s before the kill, %.1f s of it recovered", killed.Sub(started).Seconds(), m.Times.DurationS)
	assert.Less(t, lost, 7.5, "at most the flush interval (5 s), a drain and a tick lost")
	require.NotEmpty(t, report.Violations(m))
	assert.Contains(t, report.Violations(m)[0], "crashed")
}

// kill -9 of lem-run record: the command dies with it and the trace's closed segments are a readable trace.
func TestRecordKill9(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-run")
	path := filepath.Join(t.TempDir(), "rec.parquet")
	pidFile := filepath.Join(t.TempDir(), "pgid")
	cmd := exec.Command(bin, "record", "--replay", testutil.TracePath("h200-llm"), "-o", path, "--", "sh", "-c",
		"echo LEM_PHASE a; sleep 300 & echo $$ > "+pidFile+"; wait")
	require.NoError(t, cmd.Start())
	pgid, err := strconv.Atoi(waitFile(t, pidFile, 20*time.Second))
	require.NoError(t, err)
	time.Sleep(7 * time.Second)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()
	assert.True(t, groupGone(t, pgid, 15*time.Second), "the command dies with lem-run record")
	_, err = os.Stat(path)
	assert.True(t, errors.Is(err, os.ErrNotExist), "never merged")
	runs, probs := report.Load([]string{path})
	require.Empty(t, probs)
	require.Len(t, runs, 1)
	m := runs[0].Manifest
	assert.Equal(t, manifest.StatusIntr, m.Status, "a run still open when the recording ended")
	assert.Greater(t, m.Times.DurationS, 1.0)
	assert.Greater(t, float64(m.Energy.HybridJ), 0.0)
}

// SIGTERM ends lem-run record the way it ends lem-run: the command stopped, exit status 130, the trace complete.
func TestRecordSIGTERM(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-run")
	path := filepath.Join(t.TempDir(), "rec.parquet")
	cmd := exec.Command(bin, "record", "--replay", testutil.TracePath("h200-llm"), "-o", path, "--", "sh", "-c",
		"echo LEM_PHASE a; sleep 60")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	time.Sleep(3 * time.Second)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "exit error expected; logs:\n%s", logs.String())
	assert.Equal(t, 130, ee.ExitCode(), "as lem-run run exits on SIGTERM")
	runs, probs := report.Load([]string{path})
	require.Empty(t, probs)
	require.Len(t, runs, 1)
	assert.Equal(t, manifest.StatusIntr, runs[0].Manifest.Status)
}
