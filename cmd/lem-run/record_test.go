package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// buildBinary builds this command into a temporary directory.

func TestRecordAroundCommand(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-run")
	out := filepath.Join(t.TempDir(), "run.parquet")
	script := `echo LEM_PHASE prefill; sleep 0.6; echo "not a marker"; echo LEM_PHASE decode; sleep 0.6;
		echo LEM_RESULT output_tokens=128; echo LEM_PHASE; exit 3`
	cmd := exec.Command(bin, "record", "--replay", testutil.TracePath("h200-shape"), "--speed", "4", "--tail", "300ms",
		"-o", out, "--", "sh", "-c", script)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "want an exit error, got %v; stderr:\n%s", err, stderr.String())
	assert.Equal(t, 3, ee.ExitCode(), "the command's exit code propagates")
	assert.Contains(t, stdout.String(), "not a marker", "output passed through")
	assert.Contains(t, stderr.String(), "malformed marker passed through", "a malformed marker is reported, not fatal")
	assert.Contains(t, stdout.String(), "prefill")

	tr, err := trace.ReadFile(out)
	require.NoError(t, err, "the trace is complete even though the command failed")
	var names []string
	for _, e := range tr.Events {
		switch e.Type {
		case trace.EventPhase:
			if e.Name == "prefill" || e.Name == "decode" {
				names = append(names, e.Name)
			}
		case trace.EventResult:
			if e.Attrs["output_tokens"] != "" {
				names = append(names, "result="+e.Attrs["output_tokens"])
			}
		}
	}
	assert.Equal(t, []string{"prefill", "decode", "result=128"}, names)
	s := tr.GPUs[0]
	assert.Greater(t, len(s.Samples), 200, "≥ 4 s of 50 Hz samples at 4x over ~1.5 s")
	assert.NotEmpty(t, s.Counters)
}

func TestRecordBadInput(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-run")
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.parquet")
	require.NoError(t, os.WriteFile(bad, []byte("not parquet"), 0o644))
	cases := map[string]struct {
		args []string
		want string
	}{
		"foreign trace":    {[]string{"record", "--replay", bad, "-o", filepath.Join(dir, "o.parquet")}, "bad.parquet"},
		"unknown GPU":      {[]string{"record", "--replay", testutil.TracePath("h200-shape"), "--gpus", "3"}, `GPU "3": no such device`},
		"negative speed":   {[]string{"record", "--replay", testutil.TracePath("h200-shape"), "--speed", "-1"}, "--speed"},
		"counter too fast": {[]string{"record", "--replay", testutil.TracePath("h200-shape"), "--counter-interval", "1ms"}, "counter interval"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Dir = t.TempDir() // nothing may be left behind (the default --out is ./runs)
			out, err := cmd.CombinedOutput()
			require.Error(t, err)
			assert.Contains(t, string(out), tc.want)
			left, _ := os.ReadDir(cmd.Dir)
			assert.Empty(t, left, "bad input creates no run directory")
		})
	}
}

// lem-run (process mode) on SIGTERM: the workload's process group is stopped, the manifest says interrupted,
// the trace is complete, and lem-run exits 130.
func TestRunSIGTERM(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-run")
	out := t.TempDir()
	cmd := exec.Command(bin, "--replay", testutil.TracePath("h200-llm"), "--experiment", "sig", "--baseline", "1s",
		"--out", out, "--run-id", "r-sig", "--", "sh", "-c", "echo LEM_PHASE wait; sleep 60")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	time.Sleep(4 * time.Second)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "exit error expected; logs:\n%s", logs.String())
	assert.Equal(t, 130, ee.ExitCode())
	m, err := manifest.Read(filepath.Join(out, "r-sig"))
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusIntr, m.Status)
	require.Len(t, m.Phases, 1)
	assert.Equal(t, "wait", m.Phases[0].Name)
	_, err = trace.ReadFile(filepath.Join(out, "r-sig", manifest.TraceFile))
	assert.NoError(t, err)
	assert.Contains(t, logs.String(), "interrupted")
}

func TestRunBadInput(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-run")
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no experiment": {[]string{"--replay", testutil.TracePath("h200-llm"), "--", "true"}, "--experiment"},
		"no command":    {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x"}, "nothing to run"},
		"bad env":       {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "-e", "NOEQUALS", "--", "true"}, "KEY=VALUE"},
		"bad cooldown":  {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "--cooldown", "warm", "--", "true"}, "--cooldown"},
		"bad run id":    {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "--run-id", "my run", "--", "true"}, `--run-id: invalid: run id "my run"`},
		"no such command": {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "--", "nosuchcmd-lem"},
			`command "nosuchcmd-lem": exec: "nosuchcmd-lem": executable file not found`},
		"unknown GPU": {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "--gpus", "7", "--", "true"}, `GPU "7": no such device`},
		"unwritable output": {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "--out", "/proc/lem-runs", "--", "true"},
			"output directory"},
		"bad exporter URL": {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "--exporter", "ftp://h", "--", "true"},
			"--exporter"},
		"CA file without exporter": {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "--exporter-ca-file",
			testutil.TracePath("h200-llm"), "--", "true"}, "--exporter-ca-file without --exporter"},
		"CA file without certificate": {[]string{"--replay", testutil.TracePath("h200-llm"), "--experiment", "x", "--exporter",
			"https://127.0.0.1:9636", "--exporter-ca-file", testutil.TracePath("h200-llm"), "--", "true"}, "no PEM certificate in it"},
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			cmd.Dir = t.TempDir() // nothing may be left behind (the default --out is ./runs)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			require.True(t, errors.As(err, &ee), "exit error expected: %v\n%s", err, out)
			assert.Equal(t, 2, ee.ExitCode(), "bad input: exit 2, whether the flag parser or the command refused it\n%s", out)
			assert.Contains(t, string(out), tc.want)
			assert.NotContains(t, string(out), "measuring idle baseline", "refused before the baseline")
			left, _ := os.ReadDir(cmd.Dir)
			assert.Empty(t, left, "bad input creates no run directory")
		})
	}
}
