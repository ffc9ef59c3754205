package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner/campaign"
)

// The tests here run lem-run campaign --executor slurm against a real Slurm cluster (testutil.StartSlurm: two
// slurmd nodes on this host, each with two GPUs as Slurm sees them), every job replaying a real recording
// that holds two GPUs as NVML would show them.

// twoGPUs is the h200-llm recording as a host with two GPUs: the recorded GPU twice, with distinct UUIDs.
var (
	twoGPUsOnce sync.Once
	twoGPUsPath string
	twoGPUsErr  error
)

var twoGPUUUIDs = []string{"GPU-h200-recording-0", "GPU-h200-recording-1"}

// TestMain removes the two-GPU recording the tests shared.
func TestMain(m *testing.M) {
	code := m.Run()
	if twoGPUsPath != "" {
		os.RemoveAll(filepath.Dir(twoGPUsPath))
	}
	os.Exit(code)
}

func twoGPUTrace(t *testing.T) string {
	t.Helper()
	twoGPUsOnce.Do(func() {
		tr, err := trace.ReadFile(testutil.TracePath("h200-llm"))
		if err != nil {
			twoGPUsErr = err
			return
		}
		d0 := tr.Env.Devices[0]
		d1 := d0
		d0.UUID, d0.PCIBusID = twoGPUUUIDs[0], "00000000:18:00.0"
		d1.Index, d1.UUID, d1.PCIBusID = 1, twoGPUUUIDs[1], "00000000:2A:00.0"
		tr.Env.Devices = []meta.Device{d0, d1}
		s := *tr.GPUs[0]
		tr.GPUs[1] = &s
		dir, err := os.MkdirTemp("", "lem-two-gpus")
		if err != nil {
			twoGPUsErr = err
			return
		}
		twoGPUsPath = filepath.Join(dir, "two-gpus.parquet")
		twoGPUsErr = trace.WriteFile(twoGPUsPath, tr)
	})
	require.NoError(t, twoGPUsErr)
	return twoGPUsPath
}

// gpuCluster is a cluster whose nodes have two GPUs each (GRES indices 0 and 1; the device files are
// placeholders: without cgroups Slurm only counts them).
func gpuCluster(t *testing.T, cfg testutil.SlurmConfig) *testutil.Slurm {
	t.Helper()
	cfg.NodeOptions = "Gres=gpu:2"
	cfg.Extra = append(cfg.Extra, "GresTypes=gpu")
	if cfg.Files == nil {
		cfg.Files = map[string]string{}
	}
	cfg.Files["gres.conf"] = "Name=gpu File=/dev/tty[4-5]\n"
	if cfg.KillWait == 0 {
		cfg.KillWait = 10 * time.Second // lem-run ends an interrupted run (tail, accounting) before SIGKILL
	}
	return cfg.Start(t)
}

// lemCampaign is a lem-run campaign started against a cluster.
type lemCampaign struct {
	cmd    *exec.Cmd
	stdout testutil.Watcher
	stderr testutil.Watcher
	done   chan struct{}
	err    error
}

func startCampaign(t *testing.T, s *testutil.Slurm, bin string, args ...string) *lemCampaign {
	t.Helper()
	c := &lemCampaign{done: make(chan struct{})}
	// No cool-down gate: the replayed GPUs' temperatures follow the recording, not the host's idle history.
	c.cmd = exec.Command(bin, append([]string{"campaign", "--cooldown", "none", "--idle-history", "off"}, args...)...)
	c.cmd.Env = s.Env()
	c.cmd.Dir = s.Work
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	require.NoError(t, c.cmd.Start())
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Logf("lem-run campaign %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), c.stdout.String(), c.stderr.String())
		}
	})
	return c
}

// wait waits for the campaign to end and returns its exit code.
func (c *lemCampaign) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(within):
		t.Fatalf("lem-run campaign still running after %s", within)
	}
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, c.err)
	return 0
}

func runCampaign(t *testing.T, s *testutil.Slurm, bin string, args ...string) (*lemCampaign, int) {
	t.Helper()
	c := startCampaign(t, s, bin, args...)
	return c, c.wait(t, 2*time.Minute)
}

func writeCampaign(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "campaign.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

// until polls cond every 100 ms for up to within.
func until(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// measuring waits until a run's directory holds a provisional manifest of a job and returns it.
func measuring(t *testing.T, dir string) *manifest.Manifest {
	t.Helper()
	var m *manifest.Manifest
	until(t, time.Minute, "a job measuring "+dir, func() bool {
		var err error
		m, err = manifest.Read(dir)
		return err == nil && m.Status == manifest.StatusRunning && m.Job != nil && !m.Times.Start.IsZero()
	})
	return m
}

// A campaign's runs become jobs spread over both nodes, each measured on the GPU Slurm granted, its directory
// in the shared campaign directory with the node and the GPU's UUID in its manifest; the report reads them all.
func TestSlurmCampaignAcrossNodes(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	wl := testutil.Workload(t, false)
	s := gpuCluster(t, testutil.SlurmConfig{})
	out := filepath.Join(t.TempDir(), "out")
	file := writeCampaign(t, `name: spread
cycles: 2
baseline: {duration: 500ms}
executor: {type: slurm, poll: 200ms, partition: `+s.Partition+`}
experiments:
  - name: w-{tokens}
    command: [`+wl+`, -phases, "prefill:300ms,decode:1500ms", -tokens, "{tokens}"]
    vary: {tokens: [100, 200]}
`)
	start := time.Now()
	c, code := runCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, file)
	require.Equal(t, 0, code)
	t.Logf("4 runs as jobs on 2 nodes in %v", time.Since(start))

	st, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	assert.Equal(t, "slurm", st.Executor)
	require.Len(t, st.Runs, 4)
	nodes := map[string]int{}
	type slot struct{ node, uuid string }
	var spans = map[slot][][2]time.Time{}
	for _, r := range st.Runs {
		require.Equal(t, manifest.StatusOK, r.Status, "%s: %s", r.RunID, r.Error)
		require.Len(t, r.Jobs, 1, "one job per run")
		j := r.Jobs[0]
		assert.Equal(t, "COMPLETED", j.State)
		assert.Equal(t, fmt.Sprintf("lem:%s:%s:1", st.Instance, r.RunID), j.Submission)
		m, err := manifest.Read(filepath.Join(out, r.RunID))
		require.NoError(t, err)
		require.NotNil(t, m.Job)
		assert.Equal(t, manifest.Job{Scheduler: "slurm", ID: j.ID, Submission: j.Submission, Cluster: "lemtest",
			Node: j.Node, Partition: s.Partition, User: "root", GPUs: m.Job.GPUs, GPUMapping: "index"}, *m.Job)
		assert.Contains(t, s.Nodes, m.Job.Node)
		assert.Equal(t, m.Job.Node, r.Node)
		nodes[m.Job.Node]++
		// The GPU Slurm granted (GRES index i) is the device lem sampled and the manifest names.
		require.Len(t, m.Job.GPUs, 1)
		require.Len(t, m.GPUs, 1, "only the granted GPU is sampled")
		assert.Equal(t, twoGPUUUIDs[map[string]int{"0": 0, "1": 1}[m.Job.GPUs[0]]], m.GPUs[0].UUID)
		assert.Equal(t, []string{"100", "200"}[(r.Position-1)%2], m.Results["output_tokens"])
		k := slot{m.Job.Node, m.GPUs[0].UUID}
		spans[k] = append(spans[k], [2]time.Time{m.Times.BaselineStart, m.Times.End})
		out, err := os.ReadFile(filepath.Join(out, ".slurm", "logs", r.RunID+"."+j.ID+".out"))
		require.NoError(t, err)
		assert.Contains(t, string(out), "run "+r.RunID+": ok")
	}
	assert.Len(t, nodes, 2, "jobs on both nodes: %v", nodes)
	// Jobs on one node at once hold different GPUs: no GPU measured two runs at a time.
	for k, ss := range spans {
		slices.SortFunc(ss, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
		for i := 1; i < len(ss); i++ {
			assert.False(t, ss[i][0].Before(ss[i-1][1]), "%v measured two runs at once", k)
		}
	}
	assert.Contains(t, c.stderr.String(), "campaign: 0 queued, 0 running, 4 ok, 0 not ok of 4 runs")

	// The report reads the runs measured on both nodes like any campaign's: the energy of each is its counter's.
	runs, probs := report.Load([]string{out})
	require.Empty(t, probs)
	require.Len(t, runs, 4)
	for _, r := range runs {
		m := r.Manifest
		g := m.GPUs[0]
		require.NotNil(t, g.CounterStart)
		require.NotNil(t, g.CounterEnd)
		want := float64(g.CounterEnd.EnergyMJ-g.CounterStart.EnergyMJ) / 1000
		require.True(t, m.Energy.CounterJ.Valid())
		assert.InDelta(t, want, float64(m.Energy.CounterJ), 1e-9, "%s: counter energy is the bracketing reads' difference", m.RunID)
		assert.Greater(t, want, 100.0, "%s: an H200 under load for ~2 s", m.RunID)
	}

	// --status reads the same from Slurm and the directories, changing nothing.
	cmd := exec.Command(bin, "campaign", "--status", "--out", out, file)
	cmd.Env = s.Env()
	status, err := cmd.Output()
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^1\s+spread-w-100-c1\s+ok\s+\d+\s+COMPLETED\s+n[12]\s+1$`, string(status))
	assert.Contains(t, string(status), "campaign spread (slurm, done): 0 queued, 0 running, 4 ok, 0 not ok of 4 runs")
}

// baseline.policy ttl on Slurm: a baseline is kept per node (and GPU) and reused there within its TTL, never
// carried to another node: each run's baseline is either measured in its own job or one measured earlier on the
// same node and GPU.
func TestSlurmCampaignBaselinePerNode(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	wl := testutil.Workload(t, false)
	s := gpuCluster(t, testutil.SlurmConfig{})
	out := filepath.Join(t.TempDir(), "out")
	file := writeCampaign(t, `name: ttl
cycles: 3
baseline: {policy: ttl, ttl: 15m, duration: 500ms}
executor: {type: slurm, poll: 200ms}
experiments:
  - name: w-{tokens}
    command: [`+wl+`, -phases, "decode:300ms", -tokens, "{tokens}"]
    vary: {tokens: [100, 200]}
`)
	_, code := runCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, file)
	require.Equal(t, 0, code)
	st, err := campaign.ReadState(out)
	require.NoError(t, err)
	require.Len(t, st.Runs, 6)
	type slot struct{ node, uuid string }
	measured := map[slot][]*manifest.Baseline{} // baselines measured in a job, per node and GPU
	var ms []*manifest.Manifest
	for _, r := range st.Runs {
		m, err := manifest.Read(filepath.Join(out, r.RunID))
		require.NoError(t, err)
		require.Len(t, m.GPUs, 1)
		require.NotNil(t, m.GPUs[0].Baseline, r.RunID)
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *manifest.Manifest) int { return a.Times.Start.Compare(b.Times.Start) })
	reused := 0
	for _, m := range ms {
		b, k := m.GPUs[0].Baseline, slot{m.Job.Node, m.GPUs[0].UUID}
		if !b.Reused {
			assert.Empty(t, measured[k], "%s: a baseline measured again on %v within its TTL", m.RunID, k)
			measured[k] = append(measured[k], b)
			continue
		}
		reused++
		require.NotEmpty(t, measured[k], "%s: reused a baseline never measured on %v", m.RunID, k)
		assert.Equal(t, measured[k][0].Start, b.Start, "%s: the baseline measured on its own node and GPU", m.RunID)
		assert.Equal(t, measured[k][0].MedianW, b.MedianW)
	}
	// Six runs on at most four (node, GPU) slots: at least two reuse a baseline; both nodes measured their own.
	assert.GreaterOrEqual(t, reused, 2)
	nodes := map[string]bool{}
	for k := range measured {
		nodes[k.node] = true
	}
	assert.Len(t, nodes, 2, "baselines measured on both nodes: %v", measured)
	assert.Len(t, measured, 6-reused)
}

// flagged is a campaign command whose run takes long until the file flag exists, then quick: a test can stop a
// long attempt and have the next one end soon.
func flagged(wl, flag string) string {
	return fmt.Sprintf(`[/bin/sh, -c, 'if [ -e %s ]; then exec %s -phases decode:1s; else exec %s -phases decode:60s; fi']`, flag, wl, wl)
}

// A job cancelled while lem-run measures its run (scancel) leaves the run interrupted; the campaign goes on with
// its other runs and ends incomplete, and the next execution submits the run again, keeping the interrupted
// attempt.
func TestSlurmCampaignCancelledJobResubmittedOnResume(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	wl := testutil.Workload(t, false)
	s := gpuCluster(t, testutil.SlurmConfig{})
	out := filepath.Join(t.TempDir(), "out")
	flag := filepath.Join(t.TempDir(), "quick")
	file := writeCampaign(t, `name: cancel
baseline: {duration: 500ms}
executor: {type: slurm, poll: 200ms}
experiments:
  - name: long
    command: `+flagged(wl, flag)+`
  - name: short
    command: [`+wl+`, -phases, "decode:1s"]
`)
	c := startCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, file)
	m := measuring(t, filepath.Join(out, "cancel-long-c1"))
	s.Scancel(m.Job.ID)
	require.Equal(t, 1, c.wait(t, time.Minute), "incomplete")
	assert.Contains(t, c.stderr.String(), "campaign cancel: 1 of 2 runs did not end ok: cancel-long-c1 interrupted (job "+m.Job.ID+" was cancelled)")

	st, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "incomplete", st.Status)
	long, short := st.Runs[0], st.Runs[1]
	assert.Equal(t, manifest.StatusOK, short.Status)
	assert.Equal(t, manifest.StatusIntr, long.Status)
	require.Len(t, long.Jobs, 1, "a cancelled job is not submitted again in the same execution")
	assert.Equal(t, "CANCELLED", long.Jobs[0].State)
	got, err := manifest.Read(filepath.Join(out, long.RunID))
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusIntr, got.Status, "lem-run ended the run on SIGTERM and wrote its manifest")
	assert.Equal(t, m.Job.ID, got.Job.ID)

	require.NoError(t, os.WriteFile(flag, nil, 0o644))
	c, code := runCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, file)
	require.Equal(t, 0, code, "resumed")
	st, err = campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	long = st.Runs[0]
	assert.Equal(t, manifest.StatusOK, long.Status)
	require.Len(t, long.Jobs, 2, "submitted again")
	assert.Equal(t, []string{"CANCELLED", "COMPLETED"}, []string{long.Jobs[0].State, long.Jobs[1].State})
	assert.Equal(t, fmt.Sprintf("lem:%s:%s:2", st.Instance, long.RunID), long.Jobs[1].Submission)
	assert.Equal(t, 2, long.Attempts)
	require.Len(t, st.Runs[1].Jobs, 1, "the run already ok is not submitted again")
	kept, err := manifest.Read(filepath.Join(out, ".attempts", long.RunID+".1"))
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusIntr, kept.Status)
	assert.Equal(t, m.Job.ID, kept.Job.ID, "the interrupted attempt is kept")
	now, err := manifest.Read(filepath.Join(out, long.RunID))
	require.NoError(t, err)
	assert.Equal(t, long.Jobs[1].ID, now.Job.ID)
	assert.Contains(t, c.stderr.String(), "run cancel-long-c1 (cycle 1, job "+long.Jobs[1].ID)
}

// The controller restarts (its state saved) while the campaign's jobs wait in its queue: the next execution
// finds every job again and submits none twice; serial order holds through the restart.
func TestSlurmCampaignSurvivesControllerRestart(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	wl := testutil.Workload(t, false)
	s := gpuCluster(t, testutil.SlurmConfig{})
	out := filepath.Join(t.TempDir(), "out")
	file := writeCampaign(t, `name: restart
cycles: 3
baseline: {duration: 500ms}
executor: {type: slurm, poll: 200ms, order: serial}
experiments:
  - name: w
    command: [`+wl+`, -phases, "decode:1s"]
`)
	c, code := runCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, "--detach", file)
	require.Equal(t, 0, code)
	assert.Contains(t, c.stdout.String(), "campaign restart: submitted")
	st, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, campaign.StatusSubmitted, st.Status)
	var ids []string
	for i, r := range st.Runs {
		require.Len(t, r.Jobs, 1)
		ids = append(ids, r.Jobs[0].ID)
		if i > 0 {
			assert.Equal(t, "afterany:"+ids[i-1], r.Jobs[0].Dependency, "serial: each job waits for the one before")
		}
	}

	s.RestartSlurmctld()
	_, code = runCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, file)
	require.Equal(t, 0, code)
	st, err = campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	var ends []time.Time
	for i, r := range st.Runs {
		require.Equal(t, manifest.StatusOK, r.Status, r.Error)
		require.Len(t, r.Jobs, 1, "nothing submitted twice")
		assert.Equal(t, ids[i], r.Jobs[0].ID)
		assert.Equal(t, "COMPLETED", r.Jobs[0].State)
		m, err := manifest.Read(filepath.Join(out, r.RunID))
		require.NoError(t, err)
		if len(ends) > 0 {
			assert.True(t, m.Times.BaselineStart.After(ends[len(ends)-1]), "%s began before the run before it ended", r.RunID)
		}
		ends = append(ends, m.Times.End)
	}
}

// A node dies while its job measures a run: the job ends NODE_FAIL, the run (its runner gone) crashed, and the
// campaign submits it again on its own; it is measured on the other node and the crashed attempt is kept.
func TestSlurmCampaignNodeFailure(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	wl := testutil.Workload(t, false)
	s := gpuCluster(t, testutil.SlurmConfig{})
	out := filepath.Join(t.TempDir(), "out")
	flag := filepath.Join(t.TempDir(), "quick")
	file := writeCampaign(t, `name: crash
baseline: {duration: 500ms}
executor: {type: slurm, poll: 200ms}
experiments:
  - name: w
    command: `+flagged(wl, flag)+`
`)
	c := startCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, file)
	m := measuring(t, filepath.Join(out, "crash-w-c1"))
	require.NoError(t, os.WriteFile(flag, nil, 0o644))
	start := time.Now()
	s.CrashNode(m.Job.Node)
	require.Equal(t, 0, c.wait(t, 90*time.Second))
	t.Logf("node %s crashed; run measured again on the other node %v later", m.Job.Node, time.Since(start))

	st, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	r := st.Runs[0]
	require.Len(t, r.Jobs, 2)
	assert.Equal(t, "NODE_FAIL", r.Jobs[0].State)
	assert.Equal(t, m.Job.ID, r.Jobs[0].ID)
	assert.Equal(t, "COMPLETED", r.Jobs[1].State)
	other := s.Nodes[0]
	if other == m.Job.Node {
		other = s.Nodes[1]
	}
	assert.Equal(t, other, r.Jobs[1].Node)
	assert.Equal(t, other, r.Node)
	assert.Equal(t, 2, r.Attempts)
	kept, err := manifest.Read(filepath.Join(out, ".attempts", r.RunID+".1"))
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusRunning, kept.Status, "the crashed attempt's provisional manifest, kept")
	assert.Equal(t, m.Job.Node, kept.Job.Node)
	assert.Contains(t, c.stderr.String(), "crashed: job "+m.Job.ID+" ended NODE_FAIL while lem-run measured the run on "+m.Job.Node)
}

// A run whose job fails on every node before lem-run starts (here: lem-run is not where executor.lem_run says) is
// submitted executor.max_attempts times in one execution, then left failed with the reason; the campaign ends
// incomplete instead of resubmitting forever.
func TestSlurmCampaignMaxAttempts(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	s := gpuCluster(t, testutil.SlurmConfig{})
	out := filepath.Join(t.TempDir(), "out")
	file := writeCampaign(t, `name: bounded
baseline: {duration: 500ms}
executor: {type: slurm, poll: 200ms, max_attempts: 2, lem_run: /nonexistent/lem-run}
experiments:
  - name: w
    command: [/bin/true]
`)
	c := startCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, file)
	code := c.wait(t, 90*time.Second)
	assert.NotEqual(t, 0, code, "incomplete: %s", c.stderr.String())
	st, err := campaign.ReadState(out)
	require.NoError(t, err)
	r := st.Runs[0]
	require.Len(t, r.Jobs, 2, "two submissions, no third")
	for _, j := range r.Jobs {
		assert.NotEqual(t, "COMPLETED", j.State)
	}
	assert.Equal(t, manifest.StatusError, r.Status)
	assert.Contains(t, r.Error, "not submitted again: 2 submissions (executor.max_attempts)")
}

// counterReadAt is the time of the exporter's latest energy-counter read (the oldest over its GPUs).
func counterReadAt(url string) (time.Time, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return time.Time{}, err
	}
	var oldest time.Time
	for _, m := range fams["lem_gpu_energy_joules_total"].GetMetric() {
		if ts := time.UnixMilli(m.GetTimestampMs()); oldest.IsZero() || ts.Before(oldest) {
			oldest = ts
		}
	}
	return oldest, nil
}

// buildAnalyze builds lem-analyze beside this command.
func buildAnalyze(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lem-analyze")
	cmd := exec.Command("go", "build", "-o", bin, "../lem-analyze")
	cmd.Env = append(os.Environ(), "CGO_CFLAGS=-Wno-deprecated-declarations")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// prologScript is deploy/slurm/lem-job.sh as shipped, its site settings read from conf instead of /etc.
func prologScript(t *testing.T, conf string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Root(), "deploy", "slurm", "lem-job.sh"))
	require.NoError(t, err)
	const line = "LEM_SLURM_CONF=/etc/lem/slurm-job.conf\n"
	require.Equal(t, 1, strings.Count(string(b), line))
	p := filepath.Join(t.TempDir(), "lem-job.sh")
	require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(b), line, "LEM_SLURM_CONF="+conf+"\n", 1)), 0o755))
	return p
}

// Slurm's Prolog and Epilog (deploy/slurm/lem-job.sh, run by slurmd as root with no PATH) mark every job as a
// run on the node's lem-exporter: who ran it where, on which GPUs, and how it ended. The exporter's recording
// then holds each job's energy by counter, and lem-analyze report --slurm-job reports it; the marker token is
// never written anywhere.
func TestSlurmPrologEpilogMarkEveryJob(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	analyze := buildAnalyze(t)
	src, err := gpu.OpenReplay(twoGPUTrace(t), gpu.ReplayOptions{Loop: true})
	require.NoError(t, err)
	const token = "marker-token-8f14e45fceea167a5a36dedd4bea2543"
	rec := t.TempDir()
	exp := testutil.StartExporter(t, src, exporter.Options{MarkerToken: token,
		Sampler: sampler.Config{CounterInterval: 200 * time.Millisecond},
		Record:  &recorder.DirOptions{Dir: rec, FlushEvery: time.Second, RotateEvery: time.Hour}})
	etc := t.TempDir()
	tokenFile := filepath.Join(etc, "marker-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
	logDir := filepath.Join(etc, "log")
	require.NoError(t, os.Mkdir(logDir, 0o755))
	conf := filepath.Join(etc, "slurm-job.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("LEM_RUN=%s\nLEM_EXPORTER=%s\nLEM_TOKEN_FILE=%s\nLEM_LOG=%s\n",
		bin, exp.URL, tokenFile, filepath.Join(logDir, "slurm-job.log"))), 0o644))
	script := prologScript(t, conf)
	s := gpuCluster(t, testutil.SlurmConfig{Extra: []string{"Prolog=" + script, "Epilog=" + script}})

	shared := t.TempDir()
	record := func(name string) string { // the job's granted GPUs, written whole
		p := filepath.Join(shared, name)
		return fmt.Sprintf(`echo "$SLURM_JOB_GPUS" > %s.tmp && mv %s.tmp %s`, p, p, p)
	}
	ok := s.Sbatch(record("ok")+"\nsleep 3", "--gpus=1")
	failed := s.Sbatch(record("failed")+"\nsleep 1; exit 3", "--gpus=1")
	cpu := s.Sbatch("sleep 1")
	for _, id := range []string{ok, failed, cpu} {
		s.WaitJob(id)
	}
	cases := []struct {
		id, status, gpus string
	}{{ok, "ok", strings.TrimSpace(s.WaitFile(filepath.Join(shared, "ok")))},
		{failed, "failed", strings.TrimSpace(s.WaitFile(filepath.Join(shared, "failed")))}, {cpu, "ok", ""}}
	for _, c := range cases {
		runID := "slurm-lemtest-" + c.id
		var r marker.Run
		until(t, 10*time.Second, "the Epilog's end marker of job "+c.id, func() bool {
			var found bool
			r, found = exp.Run(t, runID)
			return found && !r.End.IsZero()
		})
		assert.Equal(t, c.status, r.Status, "job %s", c.id)
		assert.Equal(t, "slurm/debug/root", r.Experiment)
		j := s.Job(c.id)
		want := map[string]string{"slurm_job_id": c.id, "user": "root", "partition": "debug", "node": j.Nodes,
			"cluster": "lemtest"}
		if c.gpus != "" {
			// Without device files to match, Slurm's GRES index is the exporter's GPU index.
			want["slurm_gpus"], want[trace.LabelWorkloadGPUs], want["gpu_mapping"] = c.gpus, c.gpus, "index"
		}
		assert.Equal(t, want, r.Labels, "job %s", c.id)
		assert.Less(t, r.End.Sub(r.Start), 10*time.Second)
	}

	// Nothing the Prolog and Epilog left, nor the daemons' logs, holds the token.
	logs, _ := filepath.Glob(filepath.Join(s.Dir, "log", "*"))
	logs = append(logs, filepath.Join(logDir, "slurm-job.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		require.NoError(t, err)
		assert.NotContains(t, string(b), token, l)
	}

	// The exporter's recording holds the job's run: its energy is the granted GPU's counter over the job (once
	// the counter has been read after the job's end).
	end, _ := exp.Run(t, "slurm-lemtest-"+ok)
	until(t, 10*time.Second, "a counter read after the job's end", func() bool {
		ts, err := counterReadAt(exp.URL)
		return err == nil && ts.After(end.End)
	})
	exp.Stop()
	files, err := filepath.Glob(filepath.Join(rec, "lem-*.parquet"))
	require.NoError(t, err)
	require.Len(t, files, 1)
	tr, err := trace.ReadFile(files[0])
	require.NoError(t, err)
	var from, to time.Time
	for _, e := range tr.Events {
		if e.RunID == "slurm-lemtest-"+ok && e.Type == trace.EventRunStart {
			from = e.Time
		}
		if e.RunID == "slurm-lemtest-"+ok && e.Type == trace.EventRunEnd {
			to = e.Time
		}
	}
	require.False(t, from.IsZero() || to.IsZero(), "the run's start and end are in the recording")
	gi := map[string]int{"0": 0, "1": 1}[cases[0].gpus]
	want := testutil.PlainCounter(tr.GPUs[gi].Counters, from, to)

	cmd := exec.Command(analyze, "report", "-f", "json", "--slurm-job", ok, rec)
	out, err := cmd.Output()
	require.NoError(t, err)
	var rep struct {
		Runs []struct {
			Manifest manifest.Manifest `json:"manifest"`
		} `json:"runs"`
	}
	require.NoError(t, json.Unmarshal(out, &rep))
	require.Len(t, rep.Runs, 1, "only job %s's run", ok)
	m := rep.Runs[0].Manifest
	assert.Equal(t, "slurm-lemtest-"+ok, m.RunID)
	// A run read from a recording has no bracketing reads: its total is the hybrid's, the counter's increments
	// over the run allocated at its edges by the 50 Hz shape.
	require.True(t, m.Energy.HybridJ.Valid())
	assert.InDelta(t, want, float64(m.Energy.HybridJ), want*0.02, "the granted GPU's counter over the job")
	assert.Greater(t, want, 150.0, "an H200 (idle at least ~70 W) for ~3 s")
	require.Len(t, m.GPUs, 2)
	assert.Equal(t, manifest.RoleWorkload, m.GPUs[gi].Role, "the granted GPU is the job's")
	assert.Equal(t, manifest.RoleObserved, m.GPUs[1-gi].Role, "the other GPU is not the job's")
	t.Logf("job %s: %.0f J on GPU %d by counter over %.1f s", ok, want, gi, to.Sub(from).Seconds())

	cmd = exec.Command(analyze, "report", "--slurm-job", "99999", rec)
	msg, err := cmd.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(msg), "of Slurm job 99999")
}

// --detach submits and returns; --status shows the jobs as Slurm has them; the local executor refuses a campaign
// whose runs are with Slurm; --cancel cancels its jobs and records it.
func TestSlurmCampaignDetachStatusCancel(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	wl := testutil.Workload(t, false)
	s := gpuCluster(t, testutil.SlurmConfig{})
	out := filepath.Join(t.TempDir(), "out")
	file := writeCampaign(t, `name: detach
cycles: 2
baseline: {duration: 500ms}
executor: {type: slurm, poll: 200ms, order: serial}
experiments:
  - name: w
    command: `+flagged(wl, filepath.Join(t.TempDir(), "never"))+`
`)
	_, code := runCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, "--detach", file)
	require.Equal(t, 0, code)
	measuring(t, filepath.Join(out, "detach-w-c1"))

	status := func() string {
		cmd := exec.Command(bin, "campaign", "--status", "--out", out, file)
		cmd.Env = s.Env()
		b, err := cmd.Output()
		require.NoError(t, err)
		return string(b)
	}
	st := status()
	assert.Regexp(t, `(?m)^1\s+detach-w-c1\s+running\s+\d+\s+RUNNING\s+n[12]\s+1$`, st)
	assert.Regexp(t, `(?m)^2\s+detach-w-c2\s+queued\s+\d+\s+PENDING\s+-\s+0\s+waiting: Dependency$`, st)
	assert.Contains(t, st, "campaign detach (slurm, submitted): 1 queued, 1 running, 0 ok, 0 not ok of 2 runs")

	c, code := runCampaign(t, s, bin, "--executor", "local", "--replay", twoGPUTrace(t), "--out", out, file)
	assert.Equal(t, 1, code)
	assert.Contains(t, c.stderr.String(), "campaign detach: 2 run(s) are still with executor slurm (detach-w-c1, …): resume with --executor slurm, or cancel them (--executor slurm --cancel)")

	c, code = runCampaign(t, s, bin, "--cancel", "--out", out, file)
	require.Equal(t, 0, code, c.stderr.String())
	assert.Contains(t, c.stderr.String(), "cancelled 2 job(s) of campaign detach")
	saved, err := campaign.ReadState(out)
	require.NoError(t, err)
	for _, r := range saved.Runs {
		require.Len(t, r.Jobs, 1)
		assert.Equal(t, "CANCELLED", r.Jobs[0].State, r.RunID)
		assert.NotContains(t, []string{campaign.StatusQueued, campaign.StatusRunning}, r.Status, r.RunID)
	}
	assert.Equal(t, "incomplete", saved.Status)
}

// Only slurmd dies: Slurm ends the job NODE_FAIL, but its processes run on (slurmstepd outlives slurmd) and
// lem-run finishes measuring. The campaign sees a runner still alive, submits nothing again, and keeps the run
// its orphaned job measured.
func TestSlurmCampaignSlurmdKilledRunFinishes(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "lem-run")
	wl := testutil.Workload(t, false)
	s := gpuCluster(t, testutil.SlurmConfig{})
	out := filepath.Join(t.TempDir(), "out")
	file := writeCampaign(t, `name: orphan
baseline: {duration: 500ms}
executor: {type: slurm, poll: 200ms}
experiments:
  - name: w
    command: [`+wl+`, -phases, "decode:18s"]
`)
	c := startCampaign(t, s, bin, "--replay", twoGPUTrace(t), "--loop", "--out", out, file)
	m := measuring(t, filepath.Join(out, "orphan-w-c1"))
	s.KillSlurmd(m.Job.Node)
	require.Equal(t, 0, c.wait(t, 90*time.Second))

	st, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	r := st.Runs[0]
	require.Len(t, r.Jobs, 1, "not submitted again while its runner measured")
	assert.Equal(t, "NODE_FAIL", r.Jobs[0].State)
	assert.Equal(t, manifest.StatusOK, r.Status)
	assert.Equal(t, 1, r.Attempts)
	got, err := manifest.Read(filepath.Join(out, r.RunID))
	require.NoError(t, err)
	assert.Equal(t, m.Job.ID, got.Job.ID)
	assert.InDelta(t, 18, got.Times.DurationS, 1, "measured to its end")
	assert.NotContains(t, c.stderr.String(), "crashed")
}
