package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/testutil"
)

// peakRSS is the process's peak resident set (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	require.NotNil(t, m, "no VmHWM in /proc/%d/status", pid)
	kb, err := strconv.ParseInt(string(m[1]), 10, 64)
	require.NoError(t, err)
	return kb << 10
}

// metric reads one sample of a scrape of url: the line that starts with series (name and labels as exposed).
func metric(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, l)
			return f
		}
	}
	t.Fatalf("no series %s in the scrape", series)
	return 0
}

// 250 concurrent Parquet downloads of a full ten-minute ring (the replay sped up 120 times fills it in five
// seconds): without a cap they took the exporter from 29 MB to 830 MB resident; with the default cap of 4 the
// peak grows by less than 100 MB, the downloads beyond the cap are answered 503 at once, and the refusals the
// clients saw are the ones the exporter counted.
func TestConcurrentDownloadsKeepMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a ten-minute ring")
	}
	bin := testutil.BuildBinary(t, "lem-exporter")
	cmd, url, logs := run(t, bin, "--replay", testutil.TracePath("h200-llm"), "--loop", "--speed", "120")
	ringFull := float64(10 * 60 * 50)
	require.Eventually(t, func() bool {
		return metric(t, url, `lem_exporter_samples_captured_total{gpu="0",uuid="GPU-h200-recording"}`) >= ringFull
	}, 60*time.Second, 100*time.Millisecond, "the ring filled; logs:\n%s", logs)

	before := peakRSS(t, cmd.Process.Pid)
	now := time.Now()
	q := fmt.Sprintf("%s/api/v1/samples?gpu=0&format=parquet&start=%d&end=%d", url, now.Add(-time.Hour).Unix(),
		now.Add(time.Hour).Unix())
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 250}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	codes := map[int]int{}
	var largest int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 250 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Get(q)
			if !assert.NoError(t, err) {
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			if resp.StatusCode == 200 {
				largest = max(largest, n)
			}
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	after := peakRSS(t, cmd.Process.Pid)
	t.Logf("peak RSS %d MB before, %d MB after 250 concurrent downloads: %v; a download is %d KB",
		before>>20, after>>20, codes, largest>>10)

	assert.Equal(t, 250, codes[200]+codes[503], "every download served or refused: %v", codes)
	assert.GreaterOrEqual(t, codes[200], 4, "at least the cap's worth served")
	assert.Greater(t, codes[503], 0, "250 at once go beyond the cap")
	assert.Greater(t, largest, int64(50<<10), "a download carried the ring (tens of thousands of samples)")
	assert.Less(t, after-before, int64(100<<20), "peak RSS growth under 250 concurrent downloads")
	assert.Equal(t, float64(codes[503]), metric(t, url, `lem_exporter_sample_requests_refused_total{reason="busy"}`))
	assert.Equal(t, 0.0, metric(t, url, `lem_exporter_sample_requests_in_flight`))
}

// 64 runs started without a lease by clients that died fill the store; the next start is refused. With
// --markers.max-run-age 1m (a minute of the replay clock, sped up 30 times) they are ended as expired, a start
// succeeds again, and the API and the metrics say what happened.
func TestKilledRunnersRunsExpireByMaxRunAge(t *testing.T) {
	bin := testutil.BuildBinary(t, "lem-exporter")
	_, url, logs := run(t, bin, "--replay", testutil.TracePath("h200-shape"), "--loop", "--speed", "30",
		"--markers.max-run-age", "1m")
	startRun := func(id string) (int, string) {
		resp, err := http.Post(url+"/api/v1/runs", "application/json", strings.NewReader(`{"run_id":"`+id+`","experiment":"e"}`))
		require.NoError(t, err)
		defer resp.Body.Close()
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error
	}
	list := func() (active, recent []marker.Run) {
		resp, err := http.Get(url + "/api/v1/runs")
		require.NoError(t, err)
		defer resp.Body.Close()
		var l map[string][]marker.Run
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&l))
		return l["active"], l["recent"]
	}
	for i := range marker.DefaultMaxActive {
		code, msg := startRun(fmt.Sprintf("dead-%02d", i))
		require.Equal(t, 201, code, msg)
	}
	code, msg := startRun("next")
	require.Equal(t, 429, code)
	assert.Contains(t, msg, "64 runs are active (limit 64)")
	assert.Equal(t, 64.0, metric(t, url, `lem_exporter_runs{state="active"}`))

	require.Eventually(t, func() bool { a, _ := list(); return len(a) == 0 }, 20*time.Second, 20*time.Millisecond,
		"max run age ends them; logs:\n%s", logs)
	code, msg = startRun("next")
	require.Equal(t, 201, code, msg)
	active, recent := list()
	require.Len(t, active, 1)
	require.Len(t, recent, 64)
	for _, r := range recent {
		assert.Equal(t, marker.StatusExpired, r.Status, r.ID)
		assert.GreaterOrEqual(t, r.End.Sub(r.Start), time.Minute, r.ID)
	}
	assert.Equal(t, 64.0, metric(t, url, `lem_exporter_runs_expired_total`))
	assert.Equal(t, 1.0, metric(t, url, `lem_exporter_marker_rejected_total{reason="limit"}`))
	assert.Equal(t, 64.0, metric(t, url, `lem_exporter_runs{state="ended"}`))
}
