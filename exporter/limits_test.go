package exporter_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	dto "github.com/prometheus/client_model/go"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/sampler"
	lemtest "github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// scrape fetches /metrics and parses it.
func scrape(t *testing.T, r *lemtest.Exporter) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, r.URL+"/metrics")
	require.Equal(t, 200, code)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return mfs
}

// value is the one series of family name with these labels, counter or gauge.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	m := series(t, mfs, name, want)
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// holdingWriter is a response writer whose first Write blocks until released: a download that holds its slot
// for as long as the test wants, without any timing.
type holdingWriter struct {
	header  http.Header
	code    int
	writing chan struct{} // closed at the first Write
	release chan struct{}
	once    sync.Once
}

func newHoldingWriter() *holdingWriter {
	return &holdingWriter{header: http.Header{}, writing: make(chan struct{}), release: make(chan struct{})}
}

func (h *holdingWriter) Header() http.Header { return h.header }
func (h *holdingWriter) WriteHeader(code int) {
	if h.code == 0 {
		h.code = code
	}
}

func (h *holdingWriter) Write(b []byte) (int, error) {
	if h.code == 0 {
		h.code = 200
	}
	h.once.Do(func() { close(h.writing) })
	<-h.release
	return len(b), nil
}

// waitForSamples waits (on the sampler's own delivery, not the clock) until GPU 0 has drained samples.
func waitForSamples(t *testing.T, r *lemtest.Exporter, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, _ := r.Sampler().Stats(0)
		return st.SamplesCaptured >= uint64(n)
	}, 20*time.Second, 10*time.Millisecond, "the replay delivered %d samples", n)
}

// With two downloads in progress (each held at its first write), a third is refused at once: 503, Retry-After,
// an error naming the flag, counted as busy; the in-flight gauge says 2. Once they finish, downloads are served
// again and nothing is in flight.
func TestSampleDownloadsBeyondTheCapAreRefused(t *testing.T) {
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{Samples: exporter.APIOptions{MaxSampleRequests: 2}})
	waitForSamples(t, r, 10)
	q := fmt.Sprintf("/api/v1/samples?gpu=0&start=%d&end=%d", time.Now().Add(-time.Hour).Unix(), time.Now().Add(time.Hour).Unix())

	held := []*holdingWriter{newHoldingWriter(), newHoldingWriter()}
	var wg sync.WaitGroup
	for i, w := range held {
		format := []string{"jsonl", "parquet"}[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Handler().ServeHTTP(w, httptest.NewRequest("GET", q+"&format="+format, nil))
		}()
		<-w.writing
	}

	refused := httptest.NewRecorder()
	r.Handler().ServeHTTP(refused, httptest.NewRequest("GET", q, nil))
	assert.Equal(t, http.StatusServiceUnavailable, refused.Code)
	assert.Equal(t, "1", refused.Header().Get("Retry-After"))
	var body map[string]string
	require.NoError(t, json.Unmarshal(refused.Body.Bytes(), &body))
	assert.Equal(t, "2 sample downloads are in progress, the most served at once (--web.max-sample-requests): retry shortly", body["error"])

	mfs := scrape(t, r)
	assert.Equal(t, 2.0, value(t, mfs, "lem_exporter_sample_requests_in_flight"))
	assert.Equal(t, 2.0, value(t, mfs, "lem_exporter_sample_requests_in_flight_limit"))
	assert.Equal(t, 1.0, value(t, mfs, "lem_exporter_sample_requests_refused_total", "reason", exporter.RefusedBusy))
	assert.Equal(t, 0.0, value(t, mfs, "lem_exporter_sample_requests_refused_total", "reason", exporter.RefusedTooLarge))

	for _, w := range held {
		close(w.release)
	}
	wg.Wait()
	for _, w := range held {
		assert.Equal(t, 200, w.code)
	}
	code, _ := get(t, r.URL+q)
	assert.Equal(t, 200, code, "served again once the slots are free")
	mfs = scrape(t, r)
	assert.Equal(t, 0.0, value(t, mfs, "lem_exporter_sample_requests_in_flight"))
	assert.Equal(t, 1.0, value(t, mfs, "lem_exporter_sample_requests_refused_total", "reason", exporter.RefusedBusy))
}

// A range holding more samples than one response carries is refused with 400, naming the flag and the time of
// the last sample that fits; asking up to that time returns exactly that many samples.
func TestSampleDownloadOverTheSampleCapSaysWhereToSplit(t *testing.T) {
	const limit = 25
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{Samples: exporter.APIOptions{MaxSamplesPerResponse: limit}})
	waitForSamples(t, r, 2*limit)
	all, err := r.Sampler().Window(0, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	require.NoError(t, err)
	require.Greater(t, len(all.Samples), limit)
	first, last := all.Samples[0].Time, all.Samples[len(all.Samples)-1].Time
	fit := all.Samples[limit-1].Time // the last sample one response carries, from the ring itself
	q := func(from, to time.Time) string {
		return fmt.Sprintf("%s/api/v1/samples?gpu=0&start=%s&end=%s", r.URL, from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	}

	code, body := get(t, q(first.Time(), last.Time()))
	assert.Equal(t, 400, code)
	var e map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &e))
	assert.Equal(t, fmt.Sprintf("GPU 0 has %d samples from start to end, more than one response carries (%d, "+
		"--web.max-samples-per-response): ask for end=%s (sample %d), then for the rest", len(all.Samples), limit,
		fit.Format(time.RFC3339Nano), limit), e["error"])

	code, body = get(t, q(first.Time(), fit.Time()))
	require.Equal(t, 200, code)
	assert.Equal(t, limit, strings.Count(body, `"kind":"`+trace.KindSample+`"`))
	assert.Equal(t, 1.0, value(t, scrape(t, r), "lem_exporter_sample_requests_refused_total", "reason", exporter.RefusedTooLarge))
}

// runsList is GET /api/v1/runs.
func runsList(t *testing.T, url string) (active, recent []marker.Run) {
	t.Helper()
	code, body := get(t, url+"/api/v1/runs")
	require.Equal(t, 200, code)
	var l map[string][]marker.Run
	require.NoError(t, json.Unmarshal([]byte(body), &l))
	return l["active"], l["recent"]
}

// 64 runs started by runners that were then killed (a lease of one minute, never renewed, never ended) fill the
// store: the next start is refused with 429. Once their lease runs out (a minute of the replay clock, sped up 30
// times) they are ended as expired, a start succeeds again, and the API and the metrics say what happened.
func TestKilledRunnersRunsExpireByLease(t *testing.T) {
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{Speed: 30, Loop: true}), exporter.Options{})
	for i := range marker.DefaultMaxActive {
		code, out := post(t, r.URL+"/api/v1/runs", fmt.Sprintf(`{"run_id":"killed-%02d","experiment":"e","lease_s":60}`, i))
		require.Equal(t, 201, code, "start %d: %v", i, out)
	}
	code, out := post(t, r.URL+"/api/v1/runs", `{"run_id":"next","experiment":"e","lease_s":60}`)
	require.Equal(t, 429, code)
	assert.Equal(t, fmt.Sprintf("limit reached: %d runs are active (limit %d); end one first", marker.DefaultMaxActive,
		marker.DefaultMaxActive), out["error"])
	mfs := scrape(t, r)
	assert.Equal(t, float64(marker.DefaultMaxActive), value(t, mfs, "lem_exporter_runs", "state", "active"))
	assert.Equal(t, 1.0, value(t, mfs, "lem_exporter_marker_rejected_total", "reason", "limit"))
	assert.Equal(t, 0.0, value(t, mfs, "lem_exporter_runs_expired_total"))

	// Reads expire what ran out: wait on the store's own listing.
	require.Eventually(t, func() bool { a, _ := runsList(t, r.URL); return len(a) == 0 }, 20*time.Second, 20*time.Millisecond)
	code, out = post(t, r.URL+"/api/v1/runs", `{"run_id":"next","experiment":"e","lease_s":60}`)
	require.Equal(t, 201, code, "%v", out)

	active, recent := runsList(t, r.URL)
	require.Len(t, active, 1)
	assert.Equal(t, "next", active[0].ID)
	require.Len(t, recent, marker.DefaultMaxActive)
	for _, run := range recent {
		assert.Equal(t, marker.StatusExpired, run.Status, run.ID)
		assert.GreaterOrEqual(t, run.End.Sub(run.Start), time.Minute, "%s ended by its lease, not before", run.ID)
	}
	mfs = scrape(t, r)
	assert.Equal(t, float64(marker.DefaultMaxActive), value(t, mfs, "lem_exporter_runs_expired_total"))
	assert.Equal(t, 1.0, value(t, mfs, "lem_exporter_runs", "state", "active"))
	assert.Equal(t, float64(marker.DefaultMaxActive), value(t, mfs, "lem_exporter_runs", "state", "ended"))
	assert.Equal(t, 1.0, value(t, mfs, "lem_exporter_marker_rejected_total", "reason", "limit"), "only the one refused start")
	assert.Equal(t, `lem_run_active{experiment="e",run_id="killed-00"} 0`,
		func() string {
			_, body := get(t, r.URL+"/metrics")
			for _, l := range strings.Split(body, "\n") {
				if strings.HasPrefix(l, `lem_run_active{experiment="e",run_id="killed-00"}`) {
					return l
				}
			}
			return ""
		}(), "the expired run's series ends cleanly")
}

// A Parquet download of more samples than one row group holds (three groups here) reads back as exactly the
// ring's samples and counter readings, with the run that overlaps it.
func TestParquetDownloadInRowGroupsEqualsTheRing(t *testing.T) {
	// A ring of an hour of the replay clock: nothing leaves it while the test runs.
	r := start(t, replay(t, "h200-llm", gpu.ReplayOptions{Speed: 120, Loop: true}),
		exporter.Options{Sampler: sampler.Config{RingSpan: time.Hour}})
	code, out := post(t, r.URL+"/api/v1/runs", `{"run_id":"r1","experiment":"e"}`)
	require.Equal(t, 201, code, "%v", out)
	waitForSamples(t, r, 20000)
	// Up to 5 s (of the replay clock) ago, beyond the driver buffer's depth: nothing arrives there any more.
	from, to := time.Now().Add(-time.Hour), r.Sampler().Clock().Now().Add(-5*time.Second)
	want, err := r.Sampler().Window(0, from, to)
	require.NoError(t, err)
	require.Greater(t, len(want.Samples), 2*8192)

	resp, err := http.Get(fmt.Sprintf("%s/api/v1/samples?gpu=0&format=parquet&start=%s&end=%s", r.URL,
		from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano)))
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	path := filepath.Join(t.TempDir(), "download.parquet")
	require.NoError(t, os.WriteFile(path, b, 0o644))
	got, err := trace.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, got.GPUs, 0)
	// Compared in time order: the trace reader orders rows by time, and the looped replay's second pass begins a
	// few milliseconds before the first one's last sample.
	byTime := func(ss []trace.PowerSample) []trace.PowerSample {
		ss = slices.Clone(ss)
		slices.SortStableFunc(ss, func(a, b trace.PowerSample) int {
			if c := a.Time.Compare(b.Time); c != 0 {
				return c
			}
			return cmp.Compare(a.PowerW, b.PowerW)
		})
		return ss
	}
	ws, gs := byTime(want.Samples), byTime(got.GPUs[0].Samples)
	require.Equal(t, len(ws), len(gs))
	for i, s := range ws {
		require.True(t, s.Time.Equal(gs[i].Time), "sample %d time", i)
		require.Equal(t, s.PowerW, gs[i].PowerW, "sample %d", i)
	}
	require.Equal(t, len(want.Counters), len(got.GPUs[0].Counters))
	assert.Equal(t, want.Counters[len(want.Counters)-1].EnergyMJ, got.GPUs[0].Counters[len(want.Counters)-1].EnergyMJ)
	var started bool
	for _, e := range got.Events {
		started = started || (e.Type == trace.EventRunStart && e.RunID == "r1")
	}
	assert.True(t, started, "the run's start is in the download: %+v", got.Events)
}

// smallSendBuffers makes the server's sockets buffer 8 KB (instead of the megabytes Linux grows them to on
// loopback), so a client that stops reading blocks the server after a few tens of kilobytes.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// A client that asks for a download and stops reading (a receive buffer of 4 KB, never read) holds the only
// slot: others are refused. Once the write timeout passes, its download fails and the slot is free again.
func TestStalledDownloadGivesItsSlotBack(t *testing.T) {
	r := lemtest.StartExporterOn(t, smallSendBuffers{lemtest.Listen(t)}, replay(t, "h200-llm", gpu.ReplayOptions{Speed: 60}),
		exporter.Options{Samples: exporter.APIOptions{MaxSampleRequests: 1, WriteTimeout: 300 * time.Millisecond}})
	waitForSamples(t, r, 3000) // 250 KB of JSON lines: more than the socket buffers hold
	q := fmt.Sprintf("/api/v1/samples?gpu=0&start=%d&end=%d", time.Now().Add(-time.Hour).Unix(), time.Now().Add(time.Hour).Unix())

	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", r.Addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", q, r.Addr)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return value(t, scrape(t, r), "lem_exporter_sample_requests_in_flight") == 1
	}, 5*time.Second, 5*time.Millisecond, "the stalled download holds the slot")
	code, _ := get(t, r.URL+q)
	assert.Equal(t, 503, code, "the slot is held")

	require.Eventually(t, func() bool {
		return value(t, scrape(t, r), "lem_exporter_sample_requests_in_flight") == 0
	}, 10*time.Second, 10*time.Millisecond, "the write timeout frees the slot")
	code, _ = get(t, r.URL+q)
	assert.Equal(t, 200, code, "served again")
}

// With --web.max-requests 1 and one scrape in progress (held at its first write), another scrape is answered 503
// at once and counted by code in promhttp's own metric.
func TestScrapesBeyondTheCapAreRefused(t *testing.T) {
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{MaxRequestsInFlight: 1})
	held := newHoldingWriter()
	done := make(chan struct{})
	go func() { defer close(done); r.Handler().ServeHTTP(held, httptest.NewRequest("GET", "/metrics", nil)) }()
	<-held.writing
	refused := httptest.NewRecorder()
	r.Handler().ServeHTTP(refused, httptest.NewRequest("GET", "/metrics", nil))
	assert.Equal(t, http.StatusServiceUnavailable, refused.Code)
	close(held.release)
	<-done
	assert.Equal(t, 200, held.code)
	assert.Equal(t, 1.0, value(t, scrape(t, r), "promhttp_metric_handler_requests_total", "code", "503"))
}
