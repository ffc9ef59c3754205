package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
)

const testImage = testutil.WorkloadImage

func build(t *testing.T, withImage bool) string { return testutil.Workload(t, withImage) }

func replay(t *testing.T) *gpu.ReplaySource {
	t.Helper()
	r, err := gpu.OpenReplay(testutil.TracePath("h200-llm"), gpu.ReplayOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

func baseOpts(t *testing.T, cmd ...string) runner.Options {
	var out bytes.Buffer
	return runner.Options{Experiment: "test-exp", OutDir: t.TempDir(), Command: cmd, Baseline: time.Second,
		BaselineCache: filepath.Join(t.TempDir(), "baselines.json"), IdleHistory: filepath.Join(t.TempDir(), "idle-history.json"),
		Tail:   1200 * time.Millisecond,
		Stdout: &out, Stderr: &out, Progress: &out, StopGrace: 2 * time.Second}
}

func docker(t *testing.T, extra ...func(*backend.DockerOptions)) *backend.Docker {
	o := backend.DockerOptions{Image: testImage}
	for _, f := range extra {
		f(&o)
	}
	d, err := backend.NewDocker(o)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// containersOf lists containers (any state) labelled with the run id.
func containersOf(t *testing.T, runID string) int {
	cli, err := client.New(client.FromEnv)
	require.NoError(t, err)
	defer cli.Close()
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", "lem.run_id="+runID)})
	require.NoError(t, err)
	return len(res.Items)
}

// recordingLag is the counter lag of the h200-llm recording (its own fit gives 65 ms; h200-shape, recorded on the
// same host and day, 85 ms).
const recordingLag = 65 * time.Millisecond

// recordingEnergy is the hybrid energy on the original recording over a replay-time window, computed by the plain
// re-implementation in testutil (not the energy package under test).
func recordingEnergy(t *testing.T, m *manifest.Manifest, start, end time.Time) float64 {
	rec, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	s := rec.GPUs[0]
	off := time.Duration(m.Environment.Source.ReplayOffsetNS)
	return testutil.PlainHybrid(s.Counters, s.Samples, recordingLag, start.Add(-off), end.Add(-off))
}

func TestContainerRunAgainstReplay(t *testing.T) {
	build(t, true)
	opts := baseOpts(t, "-phases", "prefill:1500ms,decode:2500ms", "-tokens", "128", "-http-result")
	res, err := runner.Run(context.Background(), opts, replay(t), nil, docker(t), slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	require.Equal(t, manifest.StatusOK, m.Status, m.Error)
	assert.Equal(t, 0, res.ExitCode)
	require.NotNil(t, m.Container)
	require.NotNil(t, m.Container.ExitCode)
	assert.Equal(t, 0, *m.Container.ExitCode)
	assert.Equal(t, testImage, m.Image.Name)
	assert.NotEmpty(t, m.Image.ID)
	assert.Zero(t, containersOf(t, m.RunID), "container removed")

	var names []string
	for _, p := range m.Phases {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"prefill", "decode"}, names)
	assert.InDelta(t, 1.5, m.Phases[0].DurationS, 0.3)
	assert.Equal(t, "128", m.Results["output_tokens"])
	assert.Equal(t, "1", m.Results["requests"], "posted to LEM_MARKER_URL from inside the container")
	assert.Equal(t, 1, m.Markers.Malformed)
	assert.Equal(t, 1, m.Markers.HTTP)
	require.NotNil(t, m.Derived)
	assert.InDelta(t, float64(m.Energy.HybridJ)/128, float64(m.Derived.JPerOutputToken), 1e-9)

	// Energies equal the energy math on the replayed recording for the same instants.
	g := m.GPUs[0]
	require.NotNil(t, g.Baseline)
	assert.InDelta(t, 78, g.Baseline.MedianW, 5, "idle H200")
	assert.InEpsilon(t, recordingEnergy(t, m, m.Times.Start, m.Times.End), float64(g.Energy.HybridJ), 0.005, "total")
	for _, p := range m.Phases {
		assert.InEpsilon(t, recordingEnergy(t, m, p.Start, p.End), float64(p.GPUs[0].HybridJ), 0.005, p.Name)
	}
	require.NotNil(t, g.CounterStart)
	assert.InEpsilon(t, float64(g.Energy.HybridJ), float64(g.Energy.CounterJ), 0.05, "bracket reads vs hybrid")

	logs, err := os.ReadFile(filepath.Join(res.Dir, manifest.StdoutFile))
	require.NoError(t, err)
	assert.Contains(t, string(logs), "LEM_PHASE decode")
	errs, _ := os.ReadFile(filepath.Join(res.Dir, manifest.StderrFile))
	assert.Contains(t, string(errs), "a line on stderr", "stderr demultiplexed")
	_, err = os.Stat(filepath.Join(res.Dir, manifest.ResultsDir, "out.json"))
	assert.NoError(t, err, "results/ mounted at LEM_RESULTS_DIR")
	tr, err := trace.ReadFile(filepath.Join(res.Dir, manifest.TraceFile))
	require.NoError(t, err)
	assert.Greater(t, len(tr.GPUs[0].Samples), 300, "baseline and run at 50 Hz")
	back, err := manifest.Read(res.Dir)
	require.NoError(t, err)
	assert.Equal(t, m.RunID, back.RunID)
}

func TestContainerInterrupted(t *testing.T) {
	build(t, true)
	opts := baseOpts(t, "-phases", "long:60s")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(4 * time.Second); cancel() }()
	res, err := runner.Run(ctx, opts, replay(t), nil, docker(t), slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	assert.Equal(t, manifest.StatusIntr, m.Status)
	assert.Equal(t, runner.ExitInterrupted, res.ExitCode)
	assert.Zero(t, containersOf(t, m.RunID), "container gone")
	assert.Less(t, m.Times.DurationS, 10.0)
	_, err = trace.ReadFile(filepath.Join(res.Dir, manifest.TraceFile))
	assert.NoError(t, err, "trace readable")
	back, err := manifest.Read(res.Dir)
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusIntr, back.Status)
}

func TestContainerExitCodeAndMissingImage(t *testing.T) {
	build(t, true)
	res, err := runner.Run(context.Background(), baseOpts(t, "-phases", "x:100ms", "-exit", "3"), replay(t), nil, docker(t), slog.Default())
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusFail, res.Manifest.Status)
	assert.Equal(t, 3, res.ExitCode)
	assert.Equal(t, 3, *res.Manifest.ExitCode)

	opts := baseOpts(t)
	_, err = runner.Run(context.Background(), opts, replay(t), nil,
		docker(t, func(o *backend.DockerOptions) { o.Image = "lem-no-such-image:never" }), slog.Default())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lem-no-such-image:never is not present locally")
	assert.Contains(t, err.Error(), "--pull")
	ents, _ := os.ReadDir(opts.OutDir)
	assert.Empty(t, ents, "nothing started, no run directory")
}

func TestProcessMode(t *testing.T) {
	wl := build(t, false)
	opts := baseOpts(t, wl, "-phases", "prefill:1s,decode:1500ms", "-tokens", "64", "-exit", "5")
	res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	assert.Equal(t, manifest.StatusFail, m.Status)
	assert.Equal(t, 5, res.ExitCode, "workload exit code propagates")
	assert.Equal(t, "process", m.Backend)
	require.Len(t, m.Phases, 2)
	assert.Equal(t, "64", m.Results["output_tokens"])
	assert.InEpsilon(t, recordingEnergy(t, m, m.Times.Start, m.Times.End), float64(m.Energy.HybridJ), 0.005)
	logs, _ := os.ReadFile(filepath.Join(res.Dir, manifest.StdoutFile))
	assert.Contains(t, string(logs), "gpus: 0", "CUDA_VISIBLE_DEVICES set to the selected GPUs")
	_, err = os.Stat(filepath.Join(res.Dir, manifest.ResultsDir, "out.json"))
	assert.NoError(t, err, "LEM_RESULTS_DIR")
	var codes []string
	for _, w := range m.Warnings {
		codes = append(codes, w.Code)
	}
	assert.Contains(t, codes, "short_window")
}

func TestBaselineReuse(t *testing.T) {
	wl := build(t, false)
	opts := baseOpts(t, wl, "-phases", "a:100ms")
	opts.BaselineTTL = time.Hour
	first, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	fb := first.Manifest.GPUs[0].Baseline
	require.False(t, fb.Reused)
	// The deep-idle state is on record (the replayed H200 idles at 345 MHz, cool, with little memory in use), and a
	// settled baseline does not drift.
	require.NotNil(t, fb.SMClockHz)
	assert.InDelta(t, 345e6, *fb.SMClockHz, 30e6)
	require.NotNil(t, fb.TempMeanC)
	assert.InDelta(t, 30, *fb.TempMeanC, 10)
	require.NotNil(t, fb.MemUsedBytes)
	require.NotNil(t, fb.DriftW)
	assert.Less(t, math.Abs(*fb.DriftW), 2.0)
	var hist struct {
		GPUs map[string][][2]float64 `json:"gpus"`
	}
	raw, err := os.ReadFile(opts.IdleHistory)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &hist))
	require.Len(t, hist.GPUs[first.Manifest.GPUs[0].UUID], 1, "one (temperature, idle) point per baseline measured")
	assert.Equal(t, [2]float64{*fb.TempMeanC, fb.MedianW}, hist.GPUs[first.Manifest.GPUs[0].UUID][0])
	begin := time.Now()
	second, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	b := second.Manifest.GPUs[0].Baseline
	assert.True(t, b.Reused)
	assert.Greater(t, b.AgeS, 0.0)
	assert.Equal(t, first.Manifest.GPUs[0].Baseline.MedianW, b.MedianW)
	assert.Less(t, time.Since(begin), 4*time.Second, "no second baseline measured")
}

func TestTimeoutCooldownAndExporterMirror(t *testing.T) {
	wl := build(t, false)
	// A lem-exporter to mirror the markers to.
	expSrc, err := gpu.OpenReplay(testutil.TracePath("h200-shape"), gpu.ReplayOptions{})
	require.NoError(t, err)
	exp := testutil.StartExporter(t, expSrc, exporter.Options{MarkerToken: "tok"})

	opts := baseOpts(t, wl, "-phases", "prefill:300ms,decode:60s")
	opts.Timeout = 3 * time.Second
	opts.Cooldown, opts.CooldownTimeout = "10C", 1500*time.Millisecond // an idle H200 is ~33 °C: never reached
	opts.ExporterURL, opts.ExporterToken = exp.URL, "tok"
	opts.RunID = "mirrored"
	res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	assert.Equal(t, manifest.StatusTime, m.Status)
	assert.Equal(t, runner.ExitTimeout, res.ExitCode)
	assert.InDelta(t, 3.0, m.Times.DurationS, 0.6)
	require.NotNil(t, m.Cooldown)
	assert.False(t, m.Cooldown.Reached)
	assert.Equal(t, 10.0, m.Cooldown.TargetC)
	var codes []string
	for _, w := range m.Warnings {
		codes = append(codes, w.Code)
	}
	assert.Contains(t, codes, "timeout")
	assert.Contains(t, codes, "cooldown_timeout")

	require.Eventually(t, func() bool {
		r, ok := exp.Run(t, "mirrored")
		return ok && !r.End.IsZero()
	}, 5*time.Second, 50*time.Millisecond, "run mirrored to the exporter")
	r, _ := exp.Run(t, "mirrored")
	assert.Equal(t, "test-exp", r.Experiment)
	var names []string
	for _, p := range r.Phases {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"prefill", "decode"}, names)
	assert.Equal(t, manifest.StatusTime, r.Status)

	// A reachable temperature passes the gate at once.
	opts = baseOpts(t, wl, "-phases", "a:100ms")
	opts.Cooldown = "90"
	res, err = runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	assert.True(t, res.Manifest.Cooldown.Reached)
	assert.Less(t, res.Manifest.Cooldown.WaitedS, 2.0)
}

// The idle gate waits until each GPU is within 2 °C of its usual idle temperature, from the host's history of
// baselines: a history at 20 °C (the replayed H200 idles at ~33 °C) is never reached; one at 60 °C passes at once.
func TestIdleCooldownGate(t *testing.T) {
	wl := build(t, false)
	src := replay(t)
	uuid := src.Environment().Devices[0].UUID
	for _, c := range []struct {
		historyC float64
		reached  bool
	}{{20, false}, {60, true}} {
		opts := baseOpts(t, wl, "-phases", "a:100ms")
		opts.Cooldown, opts.CooldownTimeout = runner.CooldownIdle, 1500*time.Millisecond
		var pts [][2]float64
		for range 3 {
			pts = append(pts, [2]float64{c.historyC, 78})
		}
		raw, err := json.Marshal(map[string]any{"gpus": map[string][][2]float64{uuid: pts}})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(opts.IdleHistory, raw, 0o644))
		res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
		require.NoError(t, err)
		cd := res.Manifest.Cooldown
		require.NotNil(t, cd)
		assert.Equal(t, "idle", cd.Mode)
		assert.Equal(t, map[int]float64{0: c.historyC + 2}, cd.TargetsC)
		assert.Equal(t, c.reached, cd.Reached, "history at %.0f °C", c.historyC)
	}
}

// TestObservedGPUs: the workload gets GPU 1 of two; GPU 0 is sampled and bracketed too, its energy reported
// apart and never in the run's totals or phases.
func TestObservedGPUs(t *testing.T) {
	wl := build(t, false)
	src, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	two := filepath.Join(t.TempDir(), "two.parquet")
	w, err := trace.Create(two, src.Env)
	require.NoError(t, err)
	_, err = trace.WriteTiled(w, src, 1, 2) // the same real recording on two GPUs
	require.NoError(t, err)
	require.NoError(t, w.Close())
	r, err := gpu.OpenReplay(two, gpu.ReplayOptions{Loop: true})
	require.NoError(t, err)
	defer r.Close()
	require.Len(t, r.Devices(), 2)

	opts := baseOpts(t, wl, "-phases", "prefill:1s,decode:2s", "-tokens", "100")
	opts.WorkloadGPUs = []int{1}
	res, err := runner.Run(context.Background(), opts, r, r.Devices(), &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	require.Len(t, m.GPUs, 2)
	roles := map[int]string{}
	var work, obs manifest.GPU
	for _, g := range m.GPUs {
		roles[g.Index] = g.Role
		if g.Role == manifest.RoleWorkload {
			work = g
		} else {
			obs = g
		}
	}
	assert.Equal(t, map[int]string{0: manifest.RoleObserved, 1: manifest.RoleWorkload}, roles)
	assert.Equal(t, work.Energy.HybridJ, m.Energy.HybridJ, "totals hold the workload GPU only")
	require.NotNil(t, m.ObservedEnergy)
	assert.Equal(t, obs.Energy.HybridJ, m.ObservedEnergy.HybridJ)
	assert.Greater(t, float64(obs.Energy.HybridJ), 0.0)
	assert.InEpsilon(t, float64(m.Energy.HybridJ), float64(m.ObservedEnergy.HybridJ), 0.02, "both GPUs replay the same recording")
	for _, p := range m.Phases {
		require.Len(t, p.GPUs, 1)
		assert.Equal(t, 1, p.GPUs[0].Index)
	}
	assert.InDelta(t, float64(m.Energy.HybridJ)/100, float64(m.Derived.JPerOutputToken), 1e-9)
	logs, _ := os.ReadFile(filepath.Join(res.Dir, manifest.StdoutFile))
	assert.Contains(t, string(logs), "gpus: 1 ", "only the workload GPU is visible to the workload")
	var sum bytes.Buffer
	require.NoError(t, runner.WriteSummary(&sum, res.Dir, m))
	assert.Contains(t, sum.String(), "0 (observed)")

	// The run's own trace says which GPUs were the workload's: the analyzer reports the same split from it.
	runs, probs := report.Load([]string{filepath.Join(res.Dir, manifest.TraceFile)})
	require.Empty(t, probs)
	var found bool
	for _, r := range runs {
		if r.Manifest.RunID != m.RunID {
			continue
		}
		found = true
		assert.InEpsilon(t, float64(m.Energy.HybridJ), float64(r.Manifest.Energy.HybridJ), 0.01)
		require.NotNil(t, r.Manifest.ObservedEnergy)
		assert.InEpsilon(t, float64(m.ObservedEnergy.HybridJ), float64(r.Manifest.ObservedEnergy.HybridJ), 0.01)
	}
	assert.True(t, found, "run %s in its trace", m.RunID)
}

// A workload whose markers the store refuses (more phase names than a run may have, and a long line without a
// newline in the middle of the output) still runs to the end with its output passed through byte for byte, and
// the run says so: the rejected markers and the malformed marker line are counted, the manifest warns, and validate
// fails it.
func TestRejectedMarkersFailValidation(t *testing.T) {
	opts := baseOpts(t, "sh", "-c", `i=0; while [ $i -lt 300 ]; do echo "LEM_PHASE p$i"; i=$((i+1)); done
echo "LEM_PHASE two words"
head -c 3000000 /dev/zero | tr '\0' 'x'; printf '\r'; echo; echo LEM_RESULT output_tokens=7`)
	var out bytes.Buffer
	opts.Stdout = &out
	opts.Baseline = 0
	res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	assert.Equal(t, manifest.StatusOK, m.Status)
	assert.Equal(t, 301, m.Markers.Parsed)
	assert.Zero(t, m.Markers.Stamped, "lines without at= are stamped when read")
	assert.Equal(t, 300-marker.DefaultMaxPhaseNames, m.Markers.Rejected)
	assert.Len(t, m.Phases, marker.DefaultMaxPhaseNames)
	assert.Equal(t, "7", m.Results["output_tokens"], "the result after the 3 MB line arrived")
	assert.Equal(t, 1, m.Markers.Malformed)
	assert.Contains(t, strings.Join(report.Violations(m), "\n"),
		"every marker accepted: 44 marker(s) were rejected and 1 marker line(s) malformed")
	var codes []string
	for _, w := range m.Warnings {
		codes = append(codes, w.Code)
	}
	assert.Contains(t, codes, "marker_rejected")
	assert.Contains(t, out.String(), strings.Repeat("x", 3000000)+"\r\n", "the long line passed through whole")
	logged, err := os.ReadFile(filepath.Join(res.Dir, manifest.StdoutFile))
	require.NoError(t, err)
	assert.Equal(t, out.Len(), len(logged), "the log holds what the terminal got")
}

// Concurrent result posts from the workload (four goroutines at once) and a 2 MB stderr line without a newline:
// the run ends ok, every post counted, the output drained. (Once, shared result maps crashed lem-run here; run
// with -race.)
func TestConcurrentResultsAndLongStderrLine(t *testing.T) {
	wl := build(t, false)
	opts := baseOpts(t, wl, "-phases", "a:200ms", "-concurrent-results", "50", "-stderr-line", "2000000")
	var errOut bytes.Buffer
	opts.Stderr = &errOut
	res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	require.Equal(t, manifest.StatusOK, m.Status, m.Error)
	for k := range 4 {
		assert.Equal(t, "50", m.Results[fmt.Sprintf("k%d", k)], "every post of goroutine %d counted once", k)
	}
	assert.Equal(t, 200, m.Markers.HTTP)
	assert.Contains(t, errOut.String(), strings.Repeat("#", 1999999)+"\r", "the stderr line passed through whole")
}

// 100,000 phase markers from a fraction of a second of work: each costs the same small amount (the store keeps
// one entry per name, the manifest sums them, the trace keeps each), the run lasts about as long as the
// workload, and the manifest stays small.
func TestManyMarkersStayCheap(t *testing.T) {
	opts := baseOpts(t, "awk", `BEGIN { for (i = 0; i < 100000; i++) print "LEM_PHASE p" i % 2 }`)
	opts.Baseline = 0
	begin := time.Now()
	res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	t.Logf("100k markers: run %.2f s, lem-run %.2f s", m.Times.DurationS, time.Since(begin).Seconds())
	require.Equal(t, manifest.StatusOK, m.Status)
	assert.Equal(t, 100000, m.Markers.Parsed)
	require.Len(t, m.Phases, 2)
	assert.Equal(t, 50000, m.Phases[0].Count)
	assert.Equal(t, 50000, m.Phases[1].Count)
	assert.Less(t, m.Times.DurationS, 10.0, "the workload prints for a fraction of a second (once: 154 s)")
	st, err := os.Stat(filepath.Join(res.Dir, manifest.FileName))
	require.NoError(t, err)
	assert.Less(t, st.Size(), int64(30_000), "the manifest sums repeated phases (once: 48 MB)")
	tr, err := trace.ReadFile(filepath.Join(res.Dir, manifest.TraceFile))
	require.NoError(t, err)
	var n int
	for _, e := range tr.Events {
		if e.Type == trace.EventPhase {
			n++
		}
	}
	assert.Equal(t, 100000, n, "the trace keeps every occurrence")
}

// A Python workload's markers arrive when printed: lem-run sets PYTHONUNBUFFERED=1. With buffering forced back on
// they arrive together at exit: the run says so (markers_buffered) and validate fails it. With a pseudo-terminal
// as its stdout the same buffered workload writes each line as it is printed.
func TestBufferedMarkersDetected(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		testutil.SkipOrFail(t, "python3 not installed")
	}
	script := "import time; print('LEM_PHASE prefill'); time.sleep(1.2); print('LEM_PHASE decode'); time.sleep(1.2); print('LEM_RESULT output_tokens=10')"
	for _, tc := range []struct {
		name     string
		env      []string
		pty      bool
		buffered bool
	}{
		{"default", nil, false, false},
		{"buffered", []string{"PYTHONUNBUFFERED="}, false, true},
		{"buffered with a pty", []string{"PYTHONUNBUFFERED="}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := baseOpts(t, py, "-c", script)
			opts.Baseline, opts.Env = 0, tc.env
			res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}, PTY: tc.pty},
				slog.Default())
			require.NoError(t, err)
			m := res.Manifest
			require.Equal(t, manifest.StatusOK, m.Status)
			require.Len(t, m.Phases, 2)
			var codes []string
			for _, w := range m.Warnings {
				codes = append(codes, w.Code)
			}
			violations := strings.Join(report.Violations(m), "\n")
			if tc.buffered {
				assert.Contains(t, codes, "markers_buffered")
				assert.Contains(t, violations, "markers as they happened")
				assert.Less(t, m.Phases[0].DurationS, 0.005, "prefill's marker came with decode's")
				return
			}
			assert.NotContains(t, codes, "markers_buffered")
			assert.InDelta(t, 1.2, m.Phases[0].DurationS, 0.2, "prefill as printed")
			assert.Equal(t, "10", m.Results["output_tokens"])
		})
	}
}

// Lines stamped with the workload's own clock (at=) place their edges at that time, exactly, and are counted as
// stamped; a marker whose own time lies a day or more from its reading is dropped, and the run says so as for any
// marker it could not take.
func TestStampedMarkerLines(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		testutil.SkipOrFail(t, "python3 not installed")
	}
	script := `import time
def at(): return "at=%d.%09d" % divmod(time.time_ns(), 10**9)
a = at(); time.sleep(0.05)
print("LEM_PHASE decode " + a, flush=True)
e = at(); time.sleep(0.05)
print("LEM_PHASE_END " + e, flush=True)
print("LEM_PHASE late at=1", flush=True)
print("MARK old-start 1000000000", flush=True)
print("LEM_RESULT output_tokens=3", flush=True)
print("EDGES", a, e, flush=True)`
	opts := baseOpts(t, py, "-c", script)
	var out bytes.Buffer
	opts.Stdout, opts.Baseline = &out, 0
	res, err := runner.Run(context.Background(), opts, replay(t), nil, &backend.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	assert.Equal(t, 3, m.Markers.Parsed)
	assert.Equal(t, 2, m.Markers.Stamped)
	assert.Zero(t, m.Markers.Malformed)
	assert.Equal(t, 2, m.Markers.Rejected, "own times 56 years before their reading")
	var codes []string
	for _, w := range m.Warnings {
		codes = append(codes, w.Code)
	}
	assert.Contains(t, codes, "marker_rejected")
	_, edges, ok := strings.Cut(out.String(), "EDGES ")
	require.True(t, ok, out.String())
	f := strings.Fields(edges)
	require.Len(t, f, 2)
	start, err := marker.ParseTime(strings.TrimPrefix(f[0], "at="))
	require.NoError(t, err)
	end, err := marker.ParseTime(strings.TrimPrefix(f[1], "at="))
	require.NoError(t, err)
	require.Len(t, m.Phases, 1)
	assert.Equal(t, "decode", m.Phases[0].Name)
	assert.True(t, start.Equal(m.Phases[0].Start), "start %s, want %s", m.Phases[0].Start, start)
	assert.True(t, end.Equal(m.Phases[0].End), "end %s, want %s", m.Phases[0].End, end)
}
