package pull_test

import (
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
