package campaign_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/campaign"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "campaign.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	return p
}

func TestLoadErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "name: a\nexperiments:\n  - name: x\n    comand: [ls]\n", []string{":4: unknown key \"comand\""}},
		{"bad structure", "name: a\nstructure: random\nexperiments:\n  - name: x\n    command: [ls]\n",
			[]string{":2: structure: \"random\": want one of interleaved, shuffled, grouped"}},
		{"bad duration", "name: a\ngaps:\n  between_runs: soon\nexperiments:\n  - name: x\n    command: [ls]\n",
			[]string{":3: \"soon\" is not a duration"}},
		{"no command", "name: a\nexperiments:\n  - name: x\n", []string{":3: experiments.0: needs a command or an image"}},
		{"params without backend", "name: a\nexperiments:\n  - name: x\n    command: [ls]\n    backend_params: {a: 1}\n",
			[]string{":5: experiments.0.backend_params: given without backend"}},
		{"undeclared container", "name: a\nexperiments:\n  - name: x\n    command: [ls]\n    backend_container: srv\n",
			[]string{":5: experiments.0.backend_container: \"srv\" is not declared under backends"}},
		{"ttl without ttl", "name: a\nbaseline: {policy: ttl}\nexperiments:\n  - name: x\n    command: [ls]\n",
			[]string{":2: baseline.ttl: policy ttl needs a ttl"}},
		{"two errors", "name: a\ncycles: -1\nexperiments:\n  - name: x\n    command: [ls]\n  - name: x\n    command: [ls]\n",
			[]string{":2: cycles: -1: must be at least 1", ":6: experiments.1.name: \"x\" is used by another experiment"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(t, c.body)
			_, err := campaign.Load(p)
			require.Error(t, err)
			for _, w := range c.want {
				assert.Contains(t, err.Error(), p+w)
			}
		})
	}
}

func TestPlanStructures(t *testing.T) {
	body := `name: grid
cycles: 3
structure: %s
seed: 42
experiments:
  - name: a-{bs}
    command: [run, "--bs={bs}", "--len={len}"]
    vary: {bs: [1, 8], len: [128]}
  - name: b
    command: [other]
`
	order := func(structure string) []string {
		f, err := campaign.Load(write(t, strings.Replace(body, "%s", structure, 1)))
		require.NoError(t, err)
		plan, cfgs, err := f.Plan()
		require.NoError(t, err)
		require.Len(t, cfgs, 3)
		assert.Equal(t, []string{"run", "--bs=8", "--len=128"}, cfgs[1].Command)
		var out []string
		for i, p := range plan {
			assert.Equal(t, i+1, p.Position)
			out = append(out, p.RunID)
		}
		return out
	}
	inter := order("interleaved")
	assert.Equal(t, []string{"grid-a-1-len_128-c1", "grid-a-8-len_128-c1", "grid-b-c1", "grid-a-1-len_128-c2",
		"grid-a-8-len_128-c2", "grid-b-c2", "grid-a-1-len_128-c3", "grid-a-8-len_128-c3", "grid-b-c3"}, inter)
	grouped := order("grouped")
	assert.Equal(t, []string{"grid-a-1-len_128-c1", "grid-a-1-len_128-c2", "grid-a-1-len_128-c3"}, grouped[:3])
	sh1, sh2 := order("shuffled"), order("shuffled")
	assert.Equal(t, sh1, sh2, "a seeded shuffle is reproducible")
	assert.ElementsMatch(t, inter, sh1)
	assert.NotEqual(t, inter, sh1)
	for c := 0; c < 3; c++ { // every cycle holds each configuration once
		assert.ElementsMatch(t, inter[3*c:3*c+3], sh1[3*c:3*c+3])
	}

	f, err := campaign.Load(write(t, "name: big\ncycles: 10\nmax_runs: 15\nexperiments:\n  - name: x-{n}\n    command: [ls]\n    vary: {n: [1, 2]}\n"))
	require.NoError(t, err)
	_, _, err = f.Plan()
	require.ErrorContains(t, err, ":3: max_runs: the plan has 20 runs (2 configurations × 10 cycles), more than max_runs 15")
}

func replay(t *testing.T) (*gpu.ReplaySource, []gpu.Device) {
	r, err := gpu.OpenReplay(testutil.TracePath("h200-llm"), gpu.ReplayOptions{Loop: true})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r, r.Devices()
}

func run(t *testing.T, ctx context.Context, path, out string) (*campaign.State, error, string) {
	t.Helper()
	f, err := campaign.Load(path)
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	p, err := campaign.Prepare(ctx, f, out, log)
	require.NoError(t, err)
	src, devs := replay(t)
	var progress bytes.Buffer
	st, err := campaign.Run(ctx, p, campaign.Options{Source: src, Devices: devs, Progress: campaign.NewProgress(&progress, false),
		Cooldown: runner.CooldownNone, IdleHistory: runner.IdleHistoryOff,
		Log: log})
	return st, err, progress.String()
}

func TestCampaignProcessResumeAndRedo(t *testing.T) {
	wl := testutil.Workload(t, false)
	out := filepath.Join(t.TempDir(), "out")
	path := write(t, `name: proc
cycles: 2
structure: interleaved
baseline: {policy: per_cycle, duration: 1s}
warmup_runs: 1
experiments:
  - name: w-{tokens}
    command: [`+wl+`, -phases, "prefill:300ms,decode:1500ms", -tokens, "{tokens}"]
    vary: {tokens: [100, 200]}
`)
	st, err, progress := run(t, context.Background(), path, out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	require.Len(t, st.Runs, 4)
	assert.Contains(t, progress, "campaign: run 4/4 w-200 (cycle 2): ok")
	assert.Contains(t, progress, "warm-up w-100 (1 of 1, not measured)")
	assert.FileExists(t, filepath.Join(out, ".warmup", "warmup-proc-w-100-1", "output.log"))
	reused := 0
	for i, r := range st.Runs {
		assert.Equal(t, manifest.StatusOK, r.Status)
		m, err := manifest.Read(filepath.Join(out, r.RunID))
		require.NoError(t, err)
		assert.Equal(t, "proc", m.Campaign)
		assert.Equal(t, i/2+1, m.Cycle)
		assert.Equal(t, i+1, m.Position)
		assert.Equal(t, map[string]string{"tokens": []string{"100", "200"}[i%2]}, m.Variables)
		assert.Equal(t, []string{"100", "200"}[i%2], m.Results["output_tokens"])
		if m.GPUs[0].Baseline.Reused {
			reused++
		}
	}
	assert.Equal(t, 2, reused, "per-cycle baseline: the second run of each cycle reuses the first's")
	// The summary is the analyzer's: only runs that pass the quality rules enter it, and these 1.8 s runs are
	// shorter than the 5 s window rule, so both are listed apart with the rule they broke.
	require.Len(t, st.Experiments, 2)
	e := st.Experiments[0]
	assert.Equal(t, "w-100", e.Name)
	assert.Equal(t, 2, e.Runs)
	assert.Zero(t, e.Valid)
	assert.Zero(t, e.JPerToken.N)
	require.Len(t, e.Excluded, 2)
	for _, x := range e.Excluded {
		m, err := manifest.Read(filepath.Join(out, x.RunID))
		require.NoError(t, err)
		assert.Equal(t, "w-100", m.Experiment)
		assert.Contains(t, strings.Join(x.Violations, "\n"), "window ≥ 5 s")
	}

	// Resume: nothing to do.
	st2, err, progress := run(t, context.Background(), path, out)
	require.NoError(t, err)
	assert.Contains(t, progress, "resuming, 4 of 4 runs already ok")
	assert.NotContains(t, progress, "started")
	for _, r := range st2.Runs {
		assert.Equal(t, 1, r.Attempts)
	}

	// A failed run is redone; its first attempt is kept aside.
	failed := filepath.Join(out, st.Runs[1].RunID)
	m, err := manifest.Read(failed)
	require.NoError(t, err)
	m.Status = manifest.StatusFail
	require.NoError(t, manifest.Write(failed, m))
	st3, err, progress := run(t, context.Background(), path, out)
	require.NoError(t, err)
	assert.Contains(t, progress, "campaign: run 4/4 w-200 (cycle 1): ok")
	assert.Equal(t, 2, st3.Runs[1].Attempts)
	kept, err := manifest.Read(filepath.Join(out, ".attempts", st.Runs[1].RunID+".1"))
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusFail, kept.Status)
	m, err = manifest.Read(failed)
	require.NoError(t, err)
	assert.Equal(t, manifest.StatusOK, m.Status)
}

func TestCampaignInterruptedThenResumed(t *testing.T) {
	wl := testutil.Workload(t, false)
	out := filepath.Join(t.TempDir(), "out")
	path := write(t, `name: intr
cycles: 3
baseline: {duration: 500ms}
experiments:
  - name: w
    command: [`+wl+`, -phases, "decode:2s"]
`)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // interrupt during the second run
		for {
			time.Sleep(100 * time.Millisecond)
			if _, err := os.Stat(filepath.Join(out, "intr-w-c2")); err == nil {
				time.Sleep(1500 * time.Millisecond)
				cancel()
				return
			}
		}
	}()
	st, err, _ := run(t, ctx, path, out)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, "interrupted", st.Status)
	assert.Equal(t, []string{"ok", "interrupted", "pending"}, []string{st.Runs[0].Status, st.Runs[1].Status, st.Runs[2].Status})
	saved, err := campaign.ReadState(out)
	require.NoError(t, err)
	assert.Equal(t, "interrupted", saved.Status)

	st, err, _ = run(t, context.Background(), path, out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	assert.Equal(t, []int{1, 2, 1}, []int{st.Runs[0].Attempts, st.Runs[1].Attempts, st.Runs[2].Attempts})
	assert.DirExists(t, filepath.Join(out, ".attempts", "intr-w-c2.1"))
}

func TestPersistentBackendContainer(t *testing.T) {
	testutil.Workload(t, true)
	out := filepath.Join(t.TempDir(), "out")
	path := write(t, `name: pers
cycles: 2
baseline: {policy: ttl, ttl: 10m, duration: 500ms}
backends:
  server:
    image: `+testutil.WorkloadImage+`
    command: [-serve, ":8080", -load, 2s]
    health: {http: "http://{host}:8080/health", timeout: 30s}
experiments:
  - name: exec-{tokens}
    backend_container: server
    command: [/workload, -phases, "decode:1s", -tokens, "{tokens}"]
    vary: {tokens: [10, 20]}
`)
	st, err, _ := run(t, context.Background(), path, out)
	require.NoError(t, err)
	assert.Equal(t, "done", st.Status)
	require.Len(t, st.Startups, 1, "the server starts once for all runs")
	assert.Equal(t, manifest.StatusOK, st.Startups[0].Status)
	assert.InDelta(t, 2.0, st.Startups[0].DurationS, 1.5, "start-up bracket covers the model load")
	sm, err := manifest.Read(filepath.Join(out, st.Startups[0].RunID))
	require.NoError(t, err)
	assert.Equal(t, "startup-server", sm.Experiment)
	var containerID string
	for _, r := range st.Runs {
		require.Equal(t, manifest.StatusOK, r.Status, r.Error)
		dir := filepath.Join(out, r.RunID)
		m, err := manifest.Read(dir)
		require.NoError(t, err)
		assert.Equal(t, "docker-exec", m.Backend)
		assert.Equal(t, strings.TrimPrefix(r.Experiment, "exec-"), m.Results["output_tokens"])
		assert.FileExists(t, filepath.Join(dir, manifest.ResultsDir, "out.json"), "results copied out of the container")
		require.NotNil(t, m.Container)
		if containerID == "" {
			containerID = m.Container.ID
		}
		assert.Equal(t, containerID, m.Container.ID, "every run in the same container")
	}
	cli, err := client.New(client.FromEnv)
	require.NoError(t, err)
	defer cli.Close()
	_, err = cli.ContainerInspect(context.Background(), containerID, client.ContainerInspectOptions{})
	assert.Error(t, err, "backend container removed at the end")
	b, _ := json.Marshal(st)
	assert.Contains(t, string(b), `"backend_startups"`)
}

func TestExampleCampaignsPlan(t *testing.T) {
	for file, runs := range map[string]int{"examples/hf/campaign.yaml": 9, "examples/vllm/campaign.yaml": 30} {
		f, err := campaign.Load(filepath.Join(testutil.Root(), file))
		require.NoError(t, err, file)
		plan, _, err := f.Plan()
		require.NoError(t, err, file)
		assert.Len(t, plan, runs, file)
	}
	f, err := campaign.Load(filepath.Join(testutil.Root(), "examples/vllm/campaign.yaml"))
	require.NoError(t, err)
	_, cfgs, _ := f.Plan()
	assert.Equal(t, map[string]any{"max_num_seqs": 8, "max_tokens": 128, "dtype": "bfloat16", "enforce_eager": false,
		"gpu_memory_utilization": 0.9}, cfgs[0].Params, "a value that is one placeholder keeps the grid value's type")
	assert.Equal(t, filepath.Join(testutil.Root(), "examples")+":/examples:ro", f.Experiments[0].Volumes[0])
}

func TestUnknownBackendParamNamesLineAndSuggestion(t *testing.T) {
	cat := filepath.Join(testutil.Root(), "internal", "catalogue", "committed", "transformers-5.17.json")
	path := write(t, `name: typo
experiments:
  - name: hf
    command: [python3, generate.py]
    backend: transformers
    catalogue: `+cat+`
    backend_params:
      max_new_token: 128
      do_sample: false
`)
	f, err := campaign.Load(path)
	require.NoError(t, err)
	_, err = campaign.Prepare(context.Background(), f, t.TempDir(), slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	require.Error(t, err)
	assert.Equal(t, path+`:8: experiments.0.backend_params.max_new_token: unknown transformers parameter "max_new_token" (did you mean "max_new_tokens"?)`, err.Error())
}

// A dry run on a machine without the backends checks parameter names against the committed catalogue of the
// backend, or says it cannot check them, and still plans; a real run refuses.
func TestDryRunWithoutTheBackend(t *testing.T) {
	body := `name: dry
experiments:
  - name: hf
    command: [python3, generate.py]
    backend: transformers
    python: /nonexistent/python3
    backend_params: {max_new_tokens: 8}
  - name: srv
    command: [python3, bench.py]
    backend: vllm
    python: /nonexistent/python3
    backend_params: {max_num_seqs: 8}
`
	quiet := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	f, err := campaign.Load(write(t, body))
	require.NoError(t, err)
	_, err = campaign.Prepare(context.Background(), f, t.TempDir(), quiet)
	require.Error(t, err, "a real run needs the backend's own catalogue")
	p, err := campaign.PrepareDryRun(context.Background(), f, t.TempDir(), quiet)
	require.NoError(t, err)
	assert.Len(t, p.Plan, 2)
	require.Len(t, p.Notes, 2)
	assert.Contains(t, p.Notes[0], "experiment hf: backend transformers is not available here")
	assert.Contains(t, p.Notes[0], "checked against the committed catalogue of transformers 5.17.0")
	assert.Contains(t, p.Notes[1], "experiment srv: backend vllm is not available here")
	assert.Contains(t, p.Notes[1], "its backend_params are not checked")

	path := write(t, strings.Replace(body, "max_new_tokens", "max_new_token", 1))
	f, err = campaign.Load(path)
	require.NoError(t, err)
	_, err = campaign.PrepareDryRun(context.Background(), f, t.TempDir(), quiet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+`:7: experiments.0.backend_params.max_new_token: unknown transformers parameter "max_new_token" (did you mean "max_new_tokens"?)`)
}

// TestPersistentRunTimeout: a run inside a backend container that overruns its timeout is stopped (the exec'd
// process, not the server), recorded as timeout, and the campaign reports itself incomplete.
func TestPersistentRunTimeout(t *testing.T) {
	testutil.Workload(t, true)
	out := filepath.Join(t.TempDir(), "out")
	path := write(t, `name: slow
baseline: {duration: 500ms}
backends:
  server:
    image: `+testutil.WorkloadImage+`
    command: [-serve, ":8080", -load, 500ms]
    health: {http: "http://{host}:8080/health", timeout: 30s}
experiments:
  - name: slow
    backend_container: server
    timeout: 1500ms
    command: [/workload, -phases, "decode:20s"]
  - name: quick
    backend_container: server
    command: [/workload, -phases, "decode:500ms"]
`)
	t0 := time.Now()
	st, err, _ := run(t, context.Background(), path, out)
	require.ErrorIs(t, err, campaign.ErrIncomplete)
	assert.Less(t, time.Since(t0), 20*time.Second, "the overrunning run was stopped")
	assert.Equal(t, "incomplete", st.Status)
	require.Len(t, st.Runs, 2)
	assert.Equal(t, manifest.StatusTime, st.Runs[0].Status)
	assert.Equal(t, manifest.StatusOK, st.Runs[1].Status, "the server survived and served the next run")
	assert.Len(t, st.Startups, 1)
}

// TestBackendContainerColdStartsAndClients: a health command instead of a URL, force_cold_start (every run starts
// and measures the server afresh) and client mode (runs are plain processes told the server's address).
func TestBackendContainerColdStartsAndClients(t *testing.T) {
	wl := testutil.Workload(t, true)
	out := filepath.Join(t.TempDir(), "out")
	path := write(t, `name: cold
cycles: 2
baseline: {policy: ttl, ttl: 10m, duration: 500ms}
backends:
  server:
    image: `+testutil.WorkloadImage+`
    command: [-serve, ":8080", -load, 1s]
    health: {command: [/workload, -phases, "check:1ms"], timeout: 30s}
    mode: client
    force_cold_start: true
experiments:
  - name: client
    backend_container: server
    command: [`+wl+`, -phases, "decode:1s"]
`)
	st, err, _ := run(t, context.Background(), path, out)
	require.NoError(t, err)
	require.Len(t, st.Runs, 2)
	require.Len(t, st.Startups, 2, "force_cold_start: one measured start-up per run")
	assert.NotEqual(t, st.Startups[0].RunID, st.Startups[1].RunID)
	for _, s := range st.Startups {
		assert.Equal(t, manifest.StatusOK, s.Status)
	}
	for _, r := range st.Runs {
		require.Equal(t, manifest.StatusOK, r.Status, r.Error)
		m, err := manifest.Read(filepath.Join(out, r.RunID))
		require.NoError(t, err)
		assert.Equal(t, "process", m.Backend, "client mode: the run is its own process")
		logs, err := os.ReadFile(filepath.Join(out, r.RunID, manifest.StdoutFile))
		require.NoError(t, err)
		assert.Regexp(t, `backend host: \d+\.\d+\.\d+\.\d+`, string(logs))
	}
}
