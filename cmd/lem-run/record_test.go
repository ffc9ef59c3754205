package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	assert.Contains(t, stderr.String(), "marker ignored", "a malformed marker is reported, not fatal")
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
			out, err := exec.Command(bin, tc.args...).CombinedOutput()
			require.Error(t, err)
			assert.Contains(t, string(out), tc.want)
		})
	}
}
