package exporter_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/gpu/gputest"
	"github.com/lem-energy/lem/internal/marker"
	lemtest "github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func TestMain(m *testing.M) {
	// Prometheus' HTTP client keeps idle connections in the test process' default transport.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"), goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// start runs an exporter over src on a loopback port until the test ends (or Stop is called).
func start(t *testing.T, src gpu.Source, opts exporter.Options) *lemtest.Exporter {
	t.Helper()
	return lemtest.StartExporter(t, src, opts)
}

func replay(t *testing.T, name string, opts gpu.ReplayOptions) *gpu.ReplaySource {
	t.Helper()
	r, err := gpu.OpenReplay(lemtest.TracePath(name), opts)
	require.NoError(t, err)
	return r
}

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMarkerAPI(t *testing.T) {
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{Markers: marker.Limits{MaxActive: 2, Grace: 3 * time.Second}})
	u := r.URL + "/api/v1/runs"
	cases := []struct {
		name, path, body string
		code             int
		errPart          string
	}{
		{"start", "", `{"run_id":"a","experiment":"e1"}`, 201, ""},
		{"duplicate", "", `{"run_id":"a","experiment":"e1"}`, 409, "already exists"},
		{"no experiment", "", `{"run_id":"b"}`, 400, "experiment"},
		{"bad id", "", `{"run_id":"-x y","experiment":"e"}`, 400, "run id"},
		{"unknown field", "", `{"run":"a","experiment":"e"}`, 400, "unknown field"},
		{"bad label", "", `{"experiment":"e","labels":{"1x":"v"}}`, 400, "label"},
		{"generated id", "", `{"experiment":"e2"}`, 201, ""},
		{"too many", "", `{"experiment":"e3"}`, 429, "limit 2"},
		{"phase", "/a/phase", `{"name":"decode"}`, 200, ""},
		{"bad phase", "/a/phase", `{"name":"has space"}`, 400, "phase"},
		{"phase of unknown run", "/zz/phase", `{"name":"decode"}`, 404, "no run"},
		{"result", "/a/result", `{"output_tokens":128,"model":"llama"}`, 200, ""},
		{"bad result", "/a/result", `{"x":[1]}`, 400, "number, string or boolean"},
		{"end", "/a/end", `{}`, 200, ""},
		{"end twice", "/a/end", `{}`, 409, "has ended"},
		{"phase after end", "/a/phase", `{"name":"decode"}`, 409, "has ended"},
	}
	for _, tc := range cases {
		code, out := post(t, u+tc.path, tc.body)
		assert.Equal(t, tc.code, code, tc.name)
		if tc.errPart != "" {
			assert.Contains(t, out["error"], tc.errPart, tc.name)
		}
	}
	run, ok := r.Run(t, "a")
	require.True(t, ok)
	assert.Equal(t, "128", run.Results["output_tokens"])
	assert.Equal(t, "ok", run.Status)
	_, body := get(t, r.URL+"/metrics")
	assert.Contains(t, body, `lem_run_active{experiment="e1",run_id="a"} 0`, "ended: 0 during the grace period")
	assert.Contains(t, body, `lem_run_phase_active{experiment="e1",phase="decode",run_id="a"} 0`)
	require.Eventually(t, func() bool {
		_, body = get(t, r.URL+"/metrics")
		return !strings.Contains(body, `run_id="a"`)
	}, 10*time.Second, 100*time.Millisecond, "gone after the grace period")
	_, list := get(t, u)
	assert.Contains(t, list, `"experiment":"e2"`)
}

func TestMarkerWritesNeedLoopbackOrToken(t *testing.T) {
	open := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{})
	req := httptest.NewRequest("POST", "/api/v1/runs", strings.NewReader(`{"experiment":"e"}`))
	req.RemoteAddr = "192.0.2.7:5555"
	rec := httptest.NewRecorder()
	open.Handler().ServeHTTP(rec, req)
	assert.Equal(t, 403, rec.Code)
	assert.Contains(t, rec.Body.String(), "--markers.token-file")

	locked := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{MarkerToken: "s3cret"})
	for _, tc := range []struct {
		auth string
		code int
	}{{"", 401}, {"Bearer wrong", 401}, {"Basic s3cret", 401}, {"Bearer s3cret", 201}} {
		req := httptest.NewRequest("POST", "/api/v1/runs", strings.NewReader(`{"experiment":"e"}`))
		req.RemoteAddr = "192.0.2.7:5555"
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		locked.Handler().ServeHTTP(rec, req)
		assert.Equal(t, tc.code, rec.Code, tc.auth)
	}
	// Reads stay open.
	code, _ := get(t, locked.URL+"/api/v1/runs")
	assert.Equal(t, 200, code)
}

func TestSamplesAPIAndReadiness(t *testing.T) {
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{})
	deadline := time.Now().Add(3 * time.Second)
	for {
		code, _ := get(t, r.URL+"/readyz")
		if code == 200 {
			break
		}
		require.True(t, time.Now().Before(deadline), "never ready")
		time.Sleep(50 * time.Millisecond)
	}
	now := time.Now()
	from := now.Add(-2 * time.Second).Format(time.RFC3339Nano)
	code, body := get(t, r.URL+"/api/v1/samples?gpu=0&start="+from+"&end="+now.Format(time.RFC3339Nano))
	require.Equal(t, 200, code)
	lines := strings.Split(strings.TrimSpace(body), "\n")
	var samples int
	for _, l := range lines {
		if strings.Contains(l, `"kind":"sample"`) {
			samples++
		}
	}
	win, err := r.Sampler().Window(0, now.Add(-2*time.Second), now)
	require.NoError(t, err)
	assert.Equal(t, len(win.Samples), samples)
	assert.Greater(t, samples, 20)

	resp, err := http.Get(r.URL + "/api/v1/samples?gpu=0&format=parquet&start=" + from + "&end=" + now.Format(time.RFC3339Nano))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	path := filepath.Join(t.TempDir(), "samples.parquet")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	tr, err := trace.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, len(win.Samples), len(tr.GPUs[0].Samples))

	for q, part := range map[string]string{"gpu=x&start=1&end=2": "gpu", "gpu=0&end=2": "start", "gpu=0&start=5&end=2": "before start",
		"gpu=9&start=1&end=2": "GPU 9", "gpu=0&start=1&end=2&format=csv": "format"} {
		code, body := get(t, r.URL+"/api/v1/samples?"+q)
		assert.GreaterOrEqual(t, code, 400, q)
		assert.Contains(t, body, part, q)
	}
}

// A GPU that is lost is reported and skipped: the healthy one keeps its series, readiness says which is lost.
func TestLostGPUKeepsOthersServed(t *testing.T) {
	src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}, &gputest.Fault{LostAfter: 2}), nil)
	require.NoError(t, err)
	r := start(t, src, exporter.Options{})
	time.Sleep(1500 * time.Millisecond)
	code, body := get(t, r.URL+"/metrics")
	require.Equal(t, 200, code)
	assert.Contains(t, body, `lem_gpu_up{gpu="0",uuid="GPU-aaaa"} 1`)
	assert.Contains(t, body, `lem_gpu_up{gpu="1",uuid="GPU-bbbb"} 0`)
	assert.Contains(t, body, `lem_gpu_power_watts{gpu="0",source="sample",uuid="GPU-aaaa"} 100`)
	assert.Regexp(t, `lem_exporter_nvml_errors_total\{call="power_samples",gpu="1",uuid="GPU-bbbb"\} [1-9]`, body)
	code, ready := get(t, r.URL+"/readyz")
	assert.Equal(t, 503, code)
	assert.Contains(t, ready, "GPU 1 is lost")
}
