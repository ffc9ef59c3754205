package pull_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/analyze/pull"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner"
)

// A replaying lem-exporter streams to and is scraped by a real Prometheus while lem-run measures a run on the same
// (replayed) GPU and mirrors its markers to the exporter. pull then finds the run from the markers, gets every
// stored sample, and the energy computed from the pulled data matches the run's manifest.
func TestPullMatchesManifest(t *testing.T) {
	start := time.Now()
	open := func() *gpu.ReplaySource {
		r, err := gpu.OpenReplay(testutil.TracePath("h200-llm"), gpu.ReplayOptions{Start: start})
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		return r
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	prom := testutil.StartPrometheus(t, fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lem\n    static_configs:\n      - targets: [%q]\n", addr),
		"--web.enable-remote-write-receiver")
	exp, err := exporter.New(open(), nil, exporter.Options{RemoteWrite: &exporter.RemoteWriteOptions{
		URL: prom.URL + "/api/v1/write", Instance: addr}}, slog.Default())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); exp.Run(ctx) }()
	srv := &http.Server{Handler: exp.Handler()}
	go srv.Serve(ln)
	stopExporter := func() { srv.Close(); cancel(); wg.Wait() }
	defer stopExporter()

	time.Sleep(2 * time.Second)
	opts := runner.Options{Experiment: "pulled", OutDir: t.TempDir(), Baseline: time.Second, Tail: time.Second,
		BaselineCache: filepath.Join(t.TempDir(), "b.json"), ExporterURL: "http://" + addr,
		Stdout: io.Discard, Stderr: io.Discard, Progress: io.Discard, Command: []string{"sh", "-c",
			"echo LEM_PHASE prefill; sleep 1.5; echo LEM_PHASE decode; sleep 3; echo LEM_RESULT output_tokens=64"}}
	res, err := runner.Run(context.Background(), opts, open(), nil, &runner.Process{Clock: gpu.WallClock{}}, slog.Default())
	require.NoError(t, err)
	m := res.Manifest
	time.Sleep(2 * time.Second)
	stopExporter() // the stream's last batch is sent

	cl, err := pull.New(pull.Options{URL: prom.URL, Chunk: 7 * time.Second})
	require.NoError(t, err)
	runs, err := cl.FindRuns(context.Background(), start.Add(-time.Minute), time.Now())
	require.NoError(t, err)
	require.Len(t, runs, 1)
	r := runs[0]
	assert.Equal(t, m.RunID, r.RunID)
	assert.Equal(t, addr, r.Instance)
	assert.WithinDuration(t, m.Times.Start, r.Start, 100*time.Millisecond)
	assert.WithinDuration(t, m.Times.End, r.End, 100*time.Millisecond)

	from, to := r.Start.Add(-5*time.Second).Truncate(time.Millisecond), r.End.Add(5*time.Second).Truncate(time.Millisecond)
	tr, err := cl.Trace(context.Background(), r.Instance, from, to, &r)
	require.NoError(t, err)
	s := tr.GPUs[0]
	require.NotNil(t, s)
	count := prom.Query(fmt.Sprintf(`count_over_time(lem_gpu_power_watts{job="lem_stream",source="sample"}[%dms] @ %.3f)`,
		to.Sub(from).Milliseconds(), float64(to.UnixMilli())/1000))
	require.Len(t, count, 1)
	assert.Equal(t, int(count[0].Value), len(s.Samples), "every stored sample pulled")
	assert.Greater(t, len(s.Samples), 400, "the 50 Hz stream, not 1 s scrapes")

	lag := energy.EstimateLag(s.Counters, s.Samples)
	h, err := energy.NewHybrid(s.Counters, s.Samples, lag.Lag)
	require.NoError(t, err)
	got, err := h.Energy(m.Times.Start, m.Times.End)
	require.NoError(t, err)
	t.Logf("pulled: %.2f J, manifest: %.2f J over %.2f s", got.Joules, m.Energy.HybridJ, m.Times.DurationS)
	assert.InEpsilon(t, m.Energy.HybridJ, got.Joules, 0.005)

	_, end := tr.Span()
	phases := trace.Phases(tr.Events, end)
	var names []string
	for _, p := range phases {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"prefill", "decode"}, names)
}

func TestPullErrorsNameTheServer(t *testing.T) {
	cl, err := pull.New(pull.Options{URL: "http://127.0.0.1:1", Retries: 1, Timeout: time.Second})
	require.NoError(t, err)
	_, err = cl.FindRuns(context.Background(), time.Now().Add(-time.Hour), time.Now())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "127.0.0.1:1")
}

// dcgm-exporter users: its power and energy series (backfilled into a real Prometheus with promtool) are pulled
// into a lem trace, the counter converted from millijoules.
func TestPullDCGM(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testutil.SkipOrFail(t, "promtool not installed (Debian package prometheus)")
	}
	t0 := time.Now().Add(-70 * time.Minute).Truncate(time.Second)
	var om strings.Builder
	om.WriteString("# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n")
	lbl := `{gpu="0",UUID="GPU-dcgm-0",modelName="NVIDIA H100 80GB HBM3",instance="dcgm-host:9400"}`
	for i := 0; i <= 60; i++ {
		fmt.Fprintf(&om, "DCGM_FI_DEV_POWER_USAGE%s %d %d\n", lbl, 100+i%2*50, t0.Add(time.Duration(i)*time.Second).Unix())
	}
	// dcgm-exporter exposes the counter without a _total suffix, which OpenMetrics only allows for other types.
	om.WriteString("# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION gauge\n")
	for i := 0; i <= 60; i++ {
		fmt.Fprintf(&om, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION%s %d %d\n", lbl, 5_000_000+i*125_000, t0.Add(time.Duration(i)*time.Second).Unix())
	}
	om.WriteString("# EOF\n")
	dir := t.TempDir()
	in := filepath.Join(dir, "dcgm.om")
	require.NoError(t, os.WriteFile(in, []byte(om.String()), 0o644))
	data := filepath.Join(dir, "data")
	out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", in, data).CombinedOutput()
	require.NoError(t, err, "%s", out)
	prom := testutil.StartPrometheus(t, "global:\n  scrape_interval: 1m\n", "--storage.tsdb.path="+data,
		"--storage.tsdb.retention.time=10y")

	cl, err := pull.New(pull.Options{URL: prom.URL, DCGM: true, Chunk: 20 * time.Second})
	require.NoError(t, err)
	tr, err := cl.Trace(context.Background(), "dcgm-host:9400", t0.Add(-time.Second), t0.Add(61*time.Second), nil)
	require.NoError(t, err)
	s := tr.GPUs[0]
	require.NotNil(t, s)
	assert.Len(t, s.Samples, 61)
	require.Len(t, s.Counters, 61)
	assert.Equal(t, uint64(5_000_000), s.Counters[0].EnergyMJ, "millijoules kept as they are")
	assert.Equal(t, "GPU-dcgm-0", tr.Env.Devices[0].UUID)
	c, err := energy.Counter(s.Counters, t0, t0.Add(60*time.Second))
	require.NoError(t, err)
	assert.InDelta(t, 7500, c.Joules, 1e-6, "125 J a second for 60 s")
	smp, err := energy.Sampled(s.Samples, t0, t0.Add(60*time.Second))
	require.NoError(t, err)
	assert.InDelta(t, 7500, smp.Joules, 1e-6)

	_, err = cl.Trace(context.Background(), "no-such-host", t0, t0.Add(time.Minute), nil)
	assert.ErrorContains(t, err, `instance="no-such-host"`)
}

// pull authenticates with basic auth (and would with a bearer token or TLS, through the same client config);
// a wrong password fails at once with the server named, without retries.
func TestPullBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	dir := t.TempDir()
	web := filepath.Join(dir, "web.yml")
	require.NoError(t, os.WriteFile(web, []byte("basic_auth_users:\n  lem: "+string(hash)+"\n"), 0o644))
	prom := testutil.StartPrometheus(t, "global:\n  scrape_interval: 1m\n", "--web.config.file="+web)
	pass := filepath.Join(dir, "pass")
	require.NoError(t, os.WriteFile(pass, []byte("s3cret\n"), 0o600))
	wrong := filepath.Join(dir, "wrong")
	require.NoError(t, os.WriteFile(wrong, []byte("nope"), 0o600))

	auth := func(file string) config.HTTPClientConfig {
		hc := config.DefaultHTTPClientConfig
		hc.BasicAuth = &config.BasicAuth{Username: "lem", PasswordFile: file}
		return hc
	}
	cl, err := pull.New(pull.Options{URL: prom.URL, HTTP: auth(pass), Retries: 1})
	require.NoError(t, err)
	runs, err := cl.FindRuns(context.Background(), time.Now().Add(-time.Hour), time.Now())
	require.NoError(t, err, "authenticated query")
	assert.Empty(t, runs)

	cl, err = pull.New(pull.Options{URL: prom.URL, HTTP: auth(wrong), Retries: 3})
	require.NoError(t, err)
	begin := time.Now()
	_, err = cl.FindRuns(context.Background(), time.Now().Add(-time.Hour), time.Now())
	require.Error(t, err)
	assert.Contains(t, err.Error(), prom.URL)
	assert.Contains(t, err.Error(), "401")
	assert.Less(t, time.Since(begin), 400*time.Millisecond, "no retries on an authentication failure")
}
