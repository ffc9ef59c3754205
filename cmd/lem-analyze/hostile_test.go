package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testutil"
)

// Absurd values of report's and pull's flags: refused before anything is read or queried, exit status 2, one line
// naming the flag. Before, --memory-limit 1 set the collector's limit to 768 KiB (it
// then ran without pause), 2^44 overflowed to a limit of 0 bytes; --chunk 1ns listed 3.6e12 chunks before the first
// query; --workers 1000 held a thousand chunks; and every one of them exited 1.
func TestAbsurdFlagsRefused(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-analyze")
	trace := testutil.TracePath("h200-shape")
	pull := []string{"pull", "--prometheus", "http://127.0.0.1:1", "--out", t.TempDir()}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"report", "--memory-limit", "1", trace}, "--memory-limit 1"},
		{[]string{"report", "--memory-limit=-5", trace}, "--memory-limit -5"},
		{[]string{"report", "--memory-limit", "17592186044416", trace}, "--memory-limit 17592186044416"},
		{[]string{"report", "--memory-limit", "9223372036854775807", trace}, "--memory-limit 9223372036854775807"},
		{append(pull, "--workers", "0"), "--workers 0"},
		{append(pull, "--workers=-1"), "--workers -1"},
		{append(pull, "--workers", "1000"), "--workers 1000"},
		{append(pull, "--chunk", "0s"), "--chunk 0s"},
		{append(pull, "--chunk", "1ns"), "--chunk 1ns"},
		{append(pull, "--chunk", "1ms"), "--chunk 1ms"},
		{append(pull, "--chunk", "1s", "--since", "87600h"), "315360000 chunks"},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			require.True(t, errors.As(err, &ee), "exits non-zero: %v", err)
			assert.Equal(t, 2, ee.ExitCode(), "%s", stderr.String())
			assert.Contains(t, stderr.String(), tc.want)
			assert.NotContains(t, stderr.String(), "127.0.0.1:1", "refused before any query")
		})
	}
	// Values the flag parser itself refuses: the same exit status 2, an error naming the flag.
	for _, args := range [][]string{{"report", "--stream", "sometimes", trace}, append(pull, "--chunk", "1y")} {
		var stderr strings.Builder
		cmd := exec.Command(bin, args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "exits non-zero: %v", err)
		assert.Equal(t, 2, ee.ExitCode(), "%s", stderr.String())
		assert.Contains(t, stderr.String(), args[len(args)-2], "names the flag")
	}
	// The bounds themselves are accepted.
	out, err := exec.Command(bin, "report", "-f", "csv", "--memory-limit", "64", "--stream", "always", trace).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "h200-shape")
}

// SIGINT in the middle of a pull of a long window: the command stops with an error and leaves no trace file —
// neither one under the final name that looks complete nor a partial temporary one.
func TestPullInterruptedLeavesNoFile(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testutil.SkipOrFail(t, "promtool not installed (Debian package prometheus)")
	}
	bin := testutil.BuildBinary(t, "lem-analyze")
	dir := t.TempDir()
	// 20 minutes of one GPU at 50 Hz, a counter every second.
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	om := filepath.Join(dir, "long.om")
	f, err := os.Create(om)
	require.NoError(t, err)
	w := bufio.NewWriter(f)
	lbl := `instance="long:9464",gpu="0",uuid="GPU-0"`
	fmt.Fprintln(w, "# TYPE lem_gpu_power_watts gauge")
	for i := range 20 * 60 * 50 {
		at := t0.Add(time.Duration(i) * 20 * time.Millisecond)
		fmt.Fprintf(w, "lem_gpu_power_watts{source=\"sample\",%s} %d %d.%03d\n", lbl, 100+i%50, at.Unix(), at.Nanosecond()/1e6)
	}
	fmt.Fprintln(w, "# TYPE lem_gpu_energy_joules counter")
	for i := range 20 * 60 {
		fmt.Fprintf(w, "lem_gpu_energy_joules_total{%s} %d %d\n", lbl, 1000+125*i, t0.Add(time.Duration(i)*time.Second).Unix())
	}
	fmt.Fprintln(w, "# EOF")
	require.NoError(t, w.Flush())
	require.NoError(t, f.Close())
	data := filepath.Join(dir, "data")
	b, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", om, data).CombinedOutput()
	require.NoError(t, err, "%s", b)
	prom := testutil.StartPrometheus(t, "global:\n  scrape_interval: 1m\n", "--storage.tsdb.path="+data,
		"--storage.tsdb.retention.time=10y")

	out := filepath.Join(dir, "pulled")
	cmd := exec.Command(bin, "pull", "--prometheus", prom.URL, "--instance", "long:9464", "--out", out,
		"--from", t0.UTC().Format(time.RFC3339), "--to", t0.Add(20*time.Minute).UTC().Format(time.RFC3339),
		"--chunk", "1s", "--workers", "1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	// Interrupt once the trace is being written (its temporary file exists): polling the directory, the only
	// sign the process gives.
	deadline := time.Now().Add(30 * time.Second)
	for {
		tmp, _ := filepath.Glob(filepath.Join(out, ".*.tmp"))
		if len(tmp) > 0 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the pull never started writing: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	err = cmd.Wait()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "an interrupted pull fails: %v\n%s", err, stderr.String())
	assert.Contains(t, stderr.String(), "context canceled")
	left, err := os.ReadDir(out)
	require.NoError(t, err)
	assert.Empty(t, left, "no trace, complete-looking or partial")
}
