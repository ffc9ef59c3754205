package exporter_test

import (
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/marker"
	lemtest "github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func scrapeConfig(target string) string {
	return fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: lem
    static_configs:
      - targets: [%q]
`, target)
}

// Prometheus scrapes a replaying exporter at 1 s: the stored energy counter's increase equals the replayed
// counter's energy over the same instants, and the run markers posted meanwhile are queryable.
func TestPrometheusScrapesEnergyAndMarkers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Prometheus for 13 s")
	}
	src := replay(t, "h200-llm", gpu.ReplayOptions{})
	r := start(t, src, exporter.Options{Markers: marker.Limits{Grace: time.Minute}})
	prom := lemtest.StartPrometheus(t, scrapeConfig(r.Addr))

	time.Sleep(2 * time.Second)
	code, _ := post(t, r.URL+"/api/v1/runs", `{"run_id":"r1","experiment":"llama-1b"}`)
	require.Equal(t, 201, code)
	time.Sleep(2 * time.Second)
	post(t, r.URL+"/api/v1/runs/r1/phase", `{"name":"prefill"}`)
	time.Sleep(2 * time.Second)
	post(t, r.URL+"/api/v1/runs/r1/phase", `{"name":"decode"}`)
	time.Sleep(3 * time.Second)
	post(t, r.URL+"/api/v1/runs/r1/end", `{}`)
	time.Sleep(4 * time.Second)

	raw := prom.Query(`lem_gpu_energy_joules_total{job="lem",gpu="0"}[1m]`)
	require.Len(t, raw, 1)
	vals := raw[0].Values
	require.GreaterOrEqual(t, len(vals), 7, "one stored reading per second")
	t1, t2 := vals[0][0], vals[len(vals)-1][0]
	inc := prom.Query(fmt.Sprintf(`increase(lem_gpu_energy_joules_total{job="lem",gpu="0"}[%dms] @ %.3f)`,
		int64((t2-t1)*1000)+1, t2))
	require.Len(t, inc, 1)

	direct, err := trace.ReadFile(lemtest.TracePath("h200-llm"))
	require.NoError(t, err)
	toRec := func(s float64) time.Time {
		at := time.UnixMilli(int64(math.Round(s * 1000)))
		return at.Add(-src.ToReplayTime(at).Sub(at))
	}
	want, err := energy.Counter(direct.GPUs[0].Counters, toRec(t1), toRec(t2))
	require.NoError(t, err)
	t.Logf("Prometheus increase %.2f J over %.1f s; replayed counter %.2f J", inc[0].Value, t2-t1, want.Joules)
	assert.InEpsilon(t, want.Joules, inc[0].Value, 0.005)

	assert.Equal(t, 1.0, one(t, prom, `max_over_time(lem_run_phase_active{run_id="r1",phase="prefill"}[1m])`))
	assert.Equal(t, 1.0, one(t, prom, `max_over_time(lem_run_phase_active{run_id="r1",phase="decode"}[1m])`))
	assert.Equal(t, 0.0, one(t, prom, `lem_run_active{run_id="r1",experiment="llama-1b"}`), "ended")
	start := one(t, prom, `lem_run_start_timestamp_seconds{run_id="r1"}`)
	assert.InDelta(t, float64(time.Now().Unix()-11), start, 2)
}

func one(t *testing.T, p *lemtest.Prometheus, q string) float64 {
	t.Helper()
	res := p.Query(q)
	require.Len(t, res, 1, q)
	return res[0].Value
}

// The remote-write stream delivers every captured 50 Hz sample and every counter reading to a real Prometheus
// receiver, with identical values and timestamps.
func TestRemoteWriteIsLossless(t *testing.T) {
	prom := lemtest.StartPrometheus(t, "global:\n  scrape_interval: 1m\n", "--web.enable-remote-write-receiver")
	src := replay(t, "h200-llm", gpu.ReplayOptions{})
	r := start(t, src, exporter.Options{RemoteWrite: &exporter.RemoteWriteOptions{URL: prom.URL + "/api/v1/write",
		Instance: "test-host"}})
	time.Sleep(5 * time.Second)
	r.Stop() // flushes the last batch
	st, _ := r.Sampler().Stats(0)
	win, err := r.Sampler().Window(0, time.Now().Add(-time.Hour), time.Now())
	require.NoError(t, err)

	raw := prom.Query(`lem_gpu_power_watts{job="lem_stream",instance="test-host",source="sample",gpu="0"}[1h]`)
	require.Len(t, raw, 1)
	got := raw[0].Values
	assert.Equal(t, int(st.SamplesCaptured), len(got), "every captured sample stored")
	require.Equal(t, len(win.Samples), len(got))
	for i, s := range win.Samples {
		require.Equal(t, float64(s.Time.UnixMilli())/1000, got[i][0], "sample %d time", i)
		require.Equal(t, s.PowerW, got[i][1], "sample %d value", i)
	}
	counters := prom.Query(`lem_gpu_energy_joules_total{job="lem_stream"}[1h]`)
	require.Len(t, counters, 1)
	assert.Equal(t, int(st.CounterReads), len(counters[0].Values), "every counter reading stored")
	assert.Equal(t, win.Counters[len(win.Counters)-1].Joules(), counters[0].Values[len(counters[0].Values)-1][1])
	t.Logf("%d samples and %d counter readings streamed", len(got), len(counters[0].Values))
}

// 200 scrapes a second for 30 s on loopback: the sampler still captures every sample the (replayed) driver
// produced — no gap between drains, no overrun — because scrapes only read sampler state.
func TestScrapeLoadCausesNoCaptureGaps(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s load test")
	}
	if raceEnabled {
		// Instrumented, one scrape costs several times its real CPU: on a small host the handler falls behind
		// 200 a second, and the paced loop behind the wall clock, whatever the sampler does.
		t.Skip("SKIPPED under the race detector: a real-time load test (run it without -race)")
	}
	r := start(t, replay(t, "h200-llm", gpu.ReplayOptions{}), exporter.Options{MaxRequestsInFlight: 100})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	const n = 6000 // 200 requests per second for 30 s, paced (a late request is sent late, never skipped)
	begin := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(begin.Add(time.Duration(i) * 5 * time.Millisecond)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(r.URL + "/metrics")
			if err != nil {
				failed.Add(1)
				return
			}
			resp.Body.Close()
			if resp.StatusCode == 200 {
				ok.Add(1)
			} else {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	r.Stop()
	st, _ := r.Sampler().Stats(0)
	t.Logf("%d scrapes ok, %d failed in %s; %d samples captured, %d gaps (%d at drain), %d overruns",
		ok.Load(), failed.Load(), time.Since(begin).Round(time.Millisecond), st.SamplesCaptured, st.Gaps, st.DrainGaps, st.Overruns)
	// The claim is the capture's: however many scrapes a busy host answers late or turns away (the in-flight cap
	// answers 503), no sample is lost. The scrapes themselves only need mostly to succeed.
	assert.GreaterOrEqual(t, ok.Load(), int64(n*9/10), "%d of %d scrapes failed", failed.Load(), n)
	assert.Zero(t, st.DrainGaps, "no gap attributable to the exporter")
	assert.Zero(t, st.Overruns)
	captured := st.LastSample.Sub(st.FirstSample).Seconds()*50 + 1
	assert.InDelta(t, captured, float64(st.SamplesCaptured), 2, "every sample between the first and the last captured, at 50 Hz")
}
