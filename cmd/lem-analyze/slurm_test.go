package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// pull --slurm-job pulls the runs a Slurm job's Prolog marked (run id slurm-<cluster>-<job>, and -r<n> after a
// requeue) and no other job's, from a real Prometheus that scraped the exporter.
func TestPullSlurmJob(t *testing.T) {
	src, err := gpu.OpenReplay(testutil.TracePath("h200-llm"), gpu.ReplayOptions{Loop: true})
	require.NoError(t, err)
	exp := testutil.StartExporter(t, src, exporter.Options{})
	prom := testutil.StartPrometheus(t, fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lem-exporter\n    static_configs:\n      - targets: [%q]\n",
		exp.Addr))
	cl, err := marker.NewClient(exp.URL, "")
	require.NoError(t, err)
	ctx := context.Background()
	ids := []string{"slurm-lemtest-17", "slurm-lemtest-17-r1", "slurm-lemtest-170", "slurm-other-18"}
	for _, id := range ids {
		require.NoError(t, cl.Start(ctx, marker.StartReq{RunID: id, Experiment: "slurm/debug/root",
			Labels: map[string]string{trace.LabelWorkloadGPUs: "0"}}))
	}
	for _, id := range ids {
		// Until a scrape has seen every run active, then end them; until a scrape has seen them ended.
		deadline := time.Now().Add(20 * time.Second)
		for len(prom.Query(fmt.Sprintf(`lem_run_active{run_id=%q} == 1`, id))) == 0 {
			require.True(t, time.Now().Before(deadline), "Prometheus never saw run %s", id)
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, id := range ids {
		require.NoError(t, cl.End(ctx, id, "ok", time.Time{}))
	}
	for _, id := range ids {
		deadline := time.Now().Add(20 * time.Second)
		for len(prom.Query(fmt.Sprintf(`lem_run_end_timestamp_seconds{run_id=%q}`, id))) == 0 {
			require.True(t, time.Now().Before(deadline), "Prometheus never saw run %s end", id)
			time.Sleep(200 * time.Millisecond)
		}
	}

	out := t.TempDir()
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	c := &pullCmd{Prometheus: prom.URL, Since: 10 * time.Minute, Chunk: 10 * time.Minute, Workers: 4, Out: out, SlurmJob: "17"}
	_, err = captureStdout(t, func() error { return c.Run(ctx, log) })
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join(out, "*.parquet"))
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{filepath.Join(out, "slurm-lemtest-17.parquet"), filepath.Join(out, "slurm-lemtest-17-r1.parquet")},
		files, "job 17's two attempts, not job 170's nor job 18's")
	tr, err := trace.ReadFile(filepath.Join(out, "slurm-lemtest-17.parquet"))
	require.NoError(t, err)
	assert.Equal(t, "slurm-lemtest-17", tr.Extra["lem.run_id"])
	assert.NotEmpty(t, tr.GPUs[0].Counters, "the counter, scraped")

	c.SlurmJob, c.Out = "99", t.TempDir()
	_, err = captureStdout(t, func() error { return c.Run(ctx, log) })
	require.ErrorContains(t, err, "no run of Slurm job 99 found in "+prom.URL)
	entries, _ := os.ReadDir(c.Out)
	assert.Empty(t, entries)
}

// One run id on two nodes (a multi-node job marked by each node's Prolog, or two runners that chose the same id):
// each node's run is pulled into its own file, named with its instance, holding its own phases only.
func TestPullSameRunIDOnTwoNodes(t *testing.T) {
	ctx := context.Background()
	var targets []string
	var clients []*marker.Client
	for range 2 {
		src, err := gpu.OpenReplay(testutil.TracePath("h200-llm"), gpu.ReplayOptions{Loop: true})
		require.NoError(t, err)
		exp := testutil.StartExporter(t, src, exporter.Options{})
		targets = append(targets, fmt.Sprintf("%q", exp.Addr))
		cl, err := marker.NewClient(exp.URL, "")
		require.NoError(t, err)
		clients = append(clients, cl)
	}
	prom := testutil.StartPrometheus(t, fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lem-exporter\n    static_configs:\n      - targets: [%s]\n",
		strings.Join(targets, ", ")))
	for i, cl := range clients {
		require.NoError(t, cl.Start(ctx, marker.StartReq{RunID: "job-5", Experiment: "multi",
			Labels: map[string]string{trace.LabelWorkloadGPUs: "0"}}))
		require.NoError(t, cl.Phase(ctx, "job-5", fmt.Sprintf("on_node_%d", i), time.Time{}))
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(prom.Query(`lem_run_phase_start_timestamp_seconds{run_id="job-5"}`)) < 2 {
		require.True(t, time.Now().Before(deadline), "Prometheus never saw both runs' phases")
		time.Sleep(200 * time.Millisecond)
	}
	for _, cl := range clients {
		require.NoError(t, cl.End(ctx, "job-5", "ok", time.Time{}))
	}
	deadline = time.Now().Add(20 * time.Second)
	for len(prom.Query(`lem_run_end_timestamp_seconds{run_id="job-5"}`)) < 2 {
		require.True(t, time.Now().Before(deadline), "Prometheus never saw both runs end")
		time.Sleep(200 * time.Millisecond)
	}

	out := t.TempDir()
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	c := &pullCmd{Prometheus: prom.URL, Since: 10 * time.Minute, Chunk: 10 * time.Minute, Workers: 4, Out: out}
	_, err := captureStdout(t, func() error { return c.Run(ctx, log) })
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join(out, "*.parquet"))
	require.NoError(t, err)
	require.Len(t, files, 2, "one file per node: %v", files)
	seen := map[string]bool{}
	for _, f := range files {
		assert.True(t, strings.HasPrefix(filepath.Base(f), "job-5-"), "named with its instance: %s", f)
		tr, err := trace.ReadFile(f)
		require.NoError(t, err)
		var phases []string
		for _, e := range tr.Events {
			if e.Type == trace.EventPhase {
				phases = append(phases, e.Name)
			}
		}
		require.Len(t, phases, 1, "%s: its own phase only: %v", f, phases)
		seen[phases[0]] = true
	}
	assert.Equal(t, map[string]bool{"on_node_0": true, "on_node_1": true}, seen)
}
