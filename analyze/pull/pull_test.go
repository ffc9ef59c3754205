package pull_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/analyze/pull"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

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
	// Retries: behind basic auth the readiness probe answers 401 before the TSDB is up, and queries 503 until it is.
	cl, err := pull.New(pull.Options{URL: prom.URL, HTTP: auth(pass), Retries: 6})
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

// fleetOM writes gpus GPUs × d of lem's series in OpenMetrics for promtool: the 50 Hz stream (job lem_stream),
// the energy counter every 2 s and the temperature every 15 s; power(g, i) is sample i's power of GPU g.
func fleetOM(t *testing.T, path string, t0 time.Time, gpus int, d time.Duration, power func(g, i int) float64) {
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	lbl := func(g int) string {
		return fmt.Sprintf(`instance="fleet:9464",gpu="%d",uuid="GPU-%d",modelName="NVIDIA H200"`, g, g)
	}
	ts := func(at time.Duration) string {
		return fmt.Sprintf("%d.%03d", t0.Add(at).Unix(), t0.Add(at).Nanosecond()/1e6)
	}
	fmt.Fprintln(w, "# TYPE lem_gpu_power_watts gauge")
	for g := range gpus {
		for i := range int(d / (20 * time.Millisecond)) {
			fmt.Fprintf(w, "lem_gpu_power_watts{source=\"sample\",job=\"lem_stream\",%s} %g %s\n", lbl(g), power(g, i), ts(time.Duration(i)*20*time.Millisecond))
		}
	}
	fmt.Fprintln(w, "# TYPE lem_gpu_energy_joules counter")
	for g := range gpus {
		for i := range int(d / (2 * time.Second)) {
			fmt.Fprintf(w, "lem_gpu_energy_joules_total{%s} %d.%03d %s\n", lbl(g), 1000+i*700, i%1000, ts(time.Duration(i)*2*time.Second))
		}
	}
	fmt.Fprintln(w, "# TYPE lem_gpu_temperature_celsius gauge")
	for g := range gpus {
		for i := range int(d / (15 * time.Second)) {
			fmt.Fprintf(w, "lem_gpu_temperature_celsius{%s} %d %s\n", lbl(g), 40+g+i%3, ts(time.Duration(i)*15*time.Second))
		}
	}
	fmt.Fprintln(w, "# EOF")
	require.NoError(t, w.Flush())
}

// A fleet's 50 Hz series pulled from a real Prometheus in parallel chunks straight into a trace file: every sample,
// counter reading and temperature back exactly once (chunk boundaries included), the file written in time order
// (a streamed report reads it a row group at a time), and a progress bar where one is wanted.
func TestPullFleetStreamsInTimeOrder(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testutil.SkipOrFail(t, "promtool not installed (Debian package prometheus)")
	}
	const gpus = 4
	span := 10 * time.Minute
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	power := func(g, i int) float64 { return float64(100+g*50) + float64(i%97)/10 }
	dir := t.TempDir()
	om := filepath.Join(dir, "fleet.om")
	fleetOM(t, om, t0, gpus, span, power)
	data := filepath.Join(dir, "data")
	out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", om, data).CombinedOutput()
	require.NoError(t, err, "%s", out)
	prom := testutil.StartPrometheus(t, "global:\n  scrape_interval: 1m\n", "--storage.tsdb.path="+data,
		"--storage.tsdb.retention.time=10y")
	var bar strings.Builder
	cl, err := pull.New(pull.Options{URL: prom.URL, Chunk: 47 * time.Second, Workers: 3, Progress: &bar, Retries: 6})
	require.NoError(t, err)
	from, to := t0, t0.Add(span)
	devs, err := cl.Devices(context.Background(), "fleet:9464", from, to)
	require.NoError(t, err)
	require.Len(t, devs, gpus)
	assert.Equal(t, "GPU-3", devs[3].UUID)
	path := filepath.Join(dir, "fleet.parquet")
	w, err := trace.Create(path, cl.Environment(devs))
	require.NoError(t, err)
	st, err := cl.Stream(context.Background(), "fleet:9464", from, to, devs, pull.WriterSink{W: w})
	require.NoError(t, err)
	require.NoError(t, w.Close())
	perGPU := int(span / (20 * time.Millisecond))
	// [from, to] is closed: the sample at to is not in the data (it ends one period before).
	assert.Equal(t, int64(gpus*perGPU), st.Samples)
	assert.Equal(t, int64(gpus*int(span/(2*time.Second))), st.Counters)
	assert.Equal(t, int64(gpus*int(span/(15*time.Second))), st.Telemetry)
	assert.Equal(t, 13*8, st.Queries, "13 chunks of 47 s, 8 queries each")
	tr, err := trace.ReadFile(path)
	require.NoError(t, err)
	for g := range gpus {
		s := tr.GPUs[g]
		require.Len(t, s.Samples, perGPU)
		for i, x := range s.Samples {
			require.True(t, x.Time.Equal(trace.StampOf(t0.Add(time.Duration(i)*20*time.Millisecond))) && x.PowerW == power(g, i),
				"GPU %d sample %d: %v", g, i, x)
		}
		require.Len(t, s.Counters, int(span/(2*time.Second)))
		assert.Equal(t, uint64(1000*1000+5*700*1000+5), s.Counters[5].EnergyMJ)
		assert.Equal(t, float64(40+g+1), s.Telemetry[1].TemperatureC)
	}
	// Written in time order: each row group begins no earlier than the one before.
	s, err := trace.OpenStream(path)
	require.NoError(t, err)
	defer s.Close()
	var prev time.Time
	groups := 0
	require.NoError(t, s.Scan(context.Background(), trace.RowSamples, func(p trace.Part) error {
		first := time.Time{}
		for _, e := range p.Extents {
			if f := e.Samples.First(); e.Samples.N > 0 && (first.IsZero() || f.Before(first)) {
				first = f
			}
		}
		assert.False(t, first.Before(prev), "row group %d starts at %s, before %s", groups, first, prev)
		prev = first
		groups++
		return nil
	}))
	assert.GreaterOrEqual(t, groups, 2)
	assert.Contains(t, bar.String(), "[==============================] 100% 10m0s of 10m0s, 120.0 k samples")
}
