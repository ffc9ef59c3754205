package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// run starts the exporter on a free loopback port and waits until it answers.
func run(t *testing.T, bin string, args ...string) (*exec.Cmd, string, *testutil.Watcher) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cmd := exec.Command(bin, append([]string{"--web.listen-address", addr}, args...)...)
	logs := &testutil.Watcher{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if r, err := http.Get("http://" + addr + "/healthz"); err == nil {
			r.Body.Close()
			return cmd, "http://" + addr, logs
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("exporter did not start:\n%s", logs.String())
	return nil, "", nil
}

// SIGTERM: the exporter stops serving, closes the recording and exits 0; the file is complete.
func TestSIGTERMFlushesRecording(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-exporter")
	dir := t.TempDir()
	cmd, url, logs := run(t, bin, "--replay", testutil.TracePath("h200-shape"), "--record.dir", dir)
	resp, err := http.Post(url+"/api/v1/runs", "application/json", strings.NewReader(`{"run_id":"r1","experiment":"e"}`))
	require.NoError(t, err)
	resp.Body.Close()
	time.Sleep(2 * time.Second)
	// The recorder's health, which the recorder alerts read: no errors, and the free space statfs reports.
	resp, err = http.Get(url + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, v, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, "lem_exporter_recorder_") {
			metrics[name], _ = strconv.ParseFloat(v, 64)
		}
	}
	var fs syscall.Statfs_t
	require.NoError(t, syscall.Statfs(dir, &fs))
	assert.Equal(t, 0.0, metrics["lem_exporter_recorder_errors_total"])
	assert.InDelta(t, float64(fs.Bavail)*float64(fs.Bsize), metrics["lem_exporter_recorder_disk_free_bytes"], 256<<20)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "exit status after SIGTERM; logs:\n%s", logs)

	files, _ := filepath.Glob(filepath.Join(dir, "lem-*.parquet"))
	require.Len(t, files, 1, "one finished file")
	tr, err := trace.ReadFile(files[0])
	require.NoError(t, err)
	assert.Greater(t, len(tr.GPUs[0].Samples), 100, "≥ 2 s of 50 Hz plus the buffer's history")
	var started bool
	for _, e := range tr.Events {
		started = started || (e.Type == trace.EventRunStart && e.RunID == "r1")
	}
	assert.True(t, started, "markers are recorded as events")
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	assert.Empty(t, left, "no segment or temporary file left")
}

// kill -9 loses at most the open segment: closed segments survive and are merged at the next start, and files
// finished before the crash stay intact.
func TestKill9LosesOnlyTheOpenSegment(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-exporter")
	dir := t.TempDir()
	args := []string{"--replay", testutil.TracePath("h200-shape"), "--record.dir", dir, "--record.flush-interval", "500ms",
		"--record.rotate", "1500ms"}
	cmd, _, _ := run(t, bin, args...)
	// Kill once a file has been finished and the next one has closed segments.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		f, _ := filepath.Glob(filepath.Join(dir, "lem-*.parquet"))
		s, _ := filepath.Glob(filepath.Join(dir, ".seg-*.parquet"))
		if len(f) > 0 && len(s) > 0 {
			break
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()

	finished, _ := filepath.Glob(filepath.Join(dir, "lem-*.parquet"))
	require.NotEmpty(t, finished, "rotations before the crash produced finished files")
	for _, f := range finished {
		_, err := trace.ReadFile(f)
		assert.NoError(t, err, "finished file intact after kill -9: %s", f)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, ".seg-*.parquet"))
	require.NotEmpty(t, segs, "closed segments of the interrupted file survive")
	var segSamples int
	for _, s := range segs {
		tr, err := trace.ReadFile(s)
		require.NoError(t, err, s)
		segSamples += len(tr.GPUs[0].Samples)
	}

	// The next start merges them.
	cmd, _, logs := run(t, bin, args...)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait())
	assert.Contains(t, logs.String(), "recovering segments")
	after, _ := filepath.Glob(filepath.Join(dir, "lem-*.parquet"))
	assert.Greater(t, len(after), len(finished), "the interrupted file was recovered")
	var total int
	for _, f := range after {
		tr, err := trace.ReadFile(f)
		require.NoError(t, err)
		total += len(tr.GPUs[0].Samples)
	}
	assert.GreaterOrEqual(t, total, segSamples)
	left, _ := filepath.Glob(filepath.Join(dir, ".seg-*"))
	assert.Empty(t, left)
}

// A port another exporter already holds (dcgm-exporter beside lem on a node, or a second lem-exporter): refused
// as bad usage before anything starts, the address named — not logged after "lem-exporter started".
func TestPortTaken(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-exporter")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	addr := l.Addr().String()
	cmd := exec.Command(bin, "--replay", testutil.TracePath("h200-shape"), "--web.listen-address", addr)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s", out)
	assert.Equal(t, 2, cmd.ProcessState.ExitCode(), "%s", out)
	assert.Contains(t, string(out), addr)
	assert.Contains(t, string(out), "address already in use")
	assert.NotContains(t, string(out), "lem-exporter started")
}

func TestBadFlags(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-exporter")
	replay := []string{"--replay", testutil.TracePath("h200-shape")}
	for name, tc := range map[string]struct {
		args  []string
		want  string
		usage bool // refused as bad usage: exit status 2
	}{
		"missing replay":   {[]string{"--replay", "/nonexistent.parquet"}, "/nonexistent.parquet", false},
		"bad address":      {append(replay, "--web.listen-address", "256.1.1.1:x"), "256.1.1.1", true},
		"drain too slow":   {append(replay, "--drain-interval", "5s"), "drain interval", false},
		"empty token file": {append(replay, "--markers.token-file", "/dev/null"), "is empty", true},
		"no downloads": {append(replay, "--web.max-sample-requests", "0"),
			"--web.max-sample-requests 0: must be at least 1", true},
		"no samples per response": {append(replay, "--web.max-samples-per-response=-1"),
			"--web.max-samples-per-response -1: must be at least 1", true},
		"no write time": {append(replay, "--web.sample-write-timeout", "0s"),
			"--web.sample-write-timeout 0s: must be positive", true},
		"no active runs": {append(replay, "--markers.max-active-runs", "0"),
			"--markers.max-active-runs 0: must be at least 1", true},
		"no grace": {append(replay, "--markers.grace", "0s"), "--markers.grace 0s: must be positive", true},
		"negative run age": {append(replay, "--markers.max-run-age=-1h"),
			"--markers.max-run-age -1h0m0s: must not be negative", true},
		"queue under two batches": {append(replay, "--remote-write.url", "http://127.0.0.1:1/api/v1/write",
			"--remote-write.queue-samples", "3000"), "--remote-write.queue-samples 3000: must hold at least two batches (4000 samples)", true},
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			out, err := cmd.CombinedOutput()
			require.Error(t, err)
			assert.Contains(t, string(out), tc.want)
			if tc.usage {
				assert.Equal(t, 2, cmd.ProcessState.ExitCode(), "%s", out)
			}
		})
	}
}
