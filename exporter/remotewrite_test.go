package exporter_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/testutil"
)

// receiver is a remote-write endpoint on loopback whose behaviour the test sets: accept (decoding and keeping
// every sample), fail with 503 (a Retry-After of an hour and a megabyte of body), stall until the client gives
// up, or refuse with 400 (decoding what it refuses, to count it).
type receiver struct {
	mu        sync.Mutex
	mode      string
	kept      map[string]int // series and millisecond → times stored
	refused   int            // samples in refused requests
	attempts  map[string]int // requests by mode
	retriedBy map[string]int // requests carrying Retry-Attempt, by mode
	srv       *httptest.Server
	closing   chan struct{}
}

const (
	accept = "accept"
	fail   = "fail"
	stall  = "stall"
	refuse = "refuse"
)

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{mode: accept, kept: map[string]int{}, attempts: map[string]int{}, retriedBy: map[string]int{},
		closing: make(chan struct{})}
	store := remote.NewWriteHandler(rc, remote.MessageTypes{remote.WriteV1MessageType})
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		mode := rc.mode
		rc.attempts[mode]++
		if r.Header.Get("Retry-Attempt") != "" {
			rc.retriedBy[mode]++
		}
		rc.mu.Unlock()
		switch mode {
		case fail:
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write(bytes.Repeat([]byte("overloaded "), 100_000))
		case stall:
			io.Copy(io.Discard, r.Body) // the server notices the client leaving only once the body is read
			select {
			case <-r.Context().Done():
			case <-rc.closing:
			}
		default:
			store.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() { close(rc.closing); rc.srv.Close() })
	return rc
}

func (rc *receiver) set(mode string) {
	rc.mu.Lock()
	rc.mode = mode
	rc.mu.Unlock()
}

// Store decodes a prometheus.WriteRequest (remote write 1.0) with protowire, independently of the exporter's
// encoder: timeseries (1) of labels (1: name 1, value 2) and samples (2: value 1, timestamp 2).
func (rc *receiver) Store(r *http.Request, _ remote.WriteMessageType) (*remote.WriteResponse, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	var keys []string
	fields := func(b []byte, each func(num protowire.Number, typ protowire.Type, v []byte, x uint64)) error {
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			switch typ {
			case protowire.BytesType:
				v, n := protowire.ConsumeBytes(b)
				if n < 0 {
					return protowire.ParseError(n)
				}
				each(num, typ, v, 0)
				b = b[n:]
			case protowire.VarintType:
				x, n := protowire.ConsumeVarint(b)
				if n < 0 {
					return protowire.ParseError(n)
				}
				each(num, typ, nil, x)
				b = b[n:]
			case protowire.Fixed64Type:
				x, n := protowire.ConsumeFixed64(b)
				if n < 0 {
					return protowire.ParseError(n)
				}
				each(num, typ, nil, x)
				b = b[n:]
			default:
				return fmt.Errorf("unexpected wire type %d", typ)
			}
		}
		return nil
	}
	err = fields(body, func(_ protowire.Number, _ protowire.Type, ts []byte, _ uint64) {
		var series []string
		var stamps []int64
		fields(ts, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) {
			switch num {
			case 1:
				var name, value string
				fields(v, func(num protowire.Number, _ protowire.Type, s []byte, _ uint64) {
					if num == 1 {
						name = string(s)
					} else {
						value = string(s)
					}
				})
				series = append(series, name+"="+value)
			case 2:
				fields(v, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) {
					if num == 2 {
						stamps = append(stamps, int64(x))
					}
				})
			}
		})
		for _, ms := range stamps {
			keys = append(keys, fmt.Sprintf("%s@%d", strings.Join(series, ","), ms))
		}
	})
	if err != nil {
		return nil, err
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.mode == refuse {
		rc.refused += len(keys)
		resp := remote.NewWriteResponse()
		resp.SetStatusCode(http.StatusBadRequest)
		return resp, fmt.Errorf("out of bounds")
	}
	for _, k := range keys {
		rc.kept[k]++
	}
	return remote.NewWriteResponse(), nil
}

// received counts the samples stored, each (series, time) once, and the ones stored more than once.
func (rc *receiver) received() (distinct, duplicates int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, n := range rc.kept {
		distinct++
		duplicates += n - 1
	}
	return distinct, duplicates
}

// streamingExporter runs an exporter over a replay sped up 30 times (1,500 samples a second) that streams to rc,
// with a log of its own; stop stops it (flushing the stream).
type streamingExporter struct {
	e    *exporter.Exporter
	logs *testutil.LogBuffer
	stop func()
}

func startStreaming(t *testing.T, rc *receiver, opts exporter.RemoteWriteOptions) *streamingExporter {
	t.Helper()
	src := replay(t, "h200-llm", gpu.ReplayOptions{Speed: 30, Loop: true})
	logs := &testutil.LogBuffer{}
	opts.URL, opts.Instance = rc.srv.URL, "test"
	e, err := exporter.New(src, nil, exporter.Options{RemoteWrite: &opts}, slog.New(slog.NewTextHandler(logs, nil)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done; src.Close() }) }
	t.Cleanup(stop)
	return &streamingExporter{e: e, logs: logs, stop: stop}
}

// metrics scrapes the exporter's handler.
func (x *streamingExporter) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	x.e.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(rec.Body)
	require.NoError(t, err)
	return mfs
}

// outcome is lem_exporter_remote_write_samples_total for one result.
func (x *streamingExporter) outcome(t *testing.T, result string) int {
	return int(value(t, x.metrics(t), "lem_exporter_remote_write_samples_total", "result", result))
}

// captured is what the sampler captured for the stream: every power sample and every counter reading.
func (x *streamingExporter) captured(t *testing.T) int {
	st, ok := x.e.Sampler().Stats(0)
	require.True(t, ok)
	return int(st.SamplesCaptured + st.CounterReads)
}

// The stream against a receiver that fails, stalls or refuses, a minute of data compressed into seconds (a
// replay sped up 30 times, short backoff; the request timeout long enough that a loaded test host never times out
// a request the receiver answers). Every sample the sampler captured is accounted for:
// received, or counted as dropped or rejected; what the queue could hold is received, once.
func TestRemoteWriteOutages(t *testing.T) {
	quick := exporter.RemoteWriteOptions{BatchSamples: 500, BatchInterval: 50 * time.Millisecond,
		Timeout: 2 * time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

	// 503 with "Retry-After: 3600" until the queue holds a minute of a GPU's 50 Hz samples (3,000): they wait and
	// are retried (the hour held to the 50 ms backoff cap), and once the receiver accepts again every captured
	// sample arrives exactly once. The outage is logged once when it starts and once when it ends.
	t.Run("5xx for a minute", func(t *testing.T) {
		rc := newReceiver(t)
		opts := quick
		opts.QueueSamples = 20_000
		x := startStreaming(t, rc, opts)
		require.Eventually(t, func() bool { return x.outcome(t, exporter.RemoteWriteSent) > 0 }, 10*time.Second, 5*time.Millisecond)
		rc.set(fail)
		require.Eventually(t, func() bool {
			return value(t, x.metrics(t), "lem_exporter_remote_write_queue_samples") >= 3000
		}, 20*time.Second, 5*time.Millisecond)
		rc.set(accept)
		require.Eventually(t, func() bool {
			return value(t, x.metrics(t), "lem_exporter_remote_write_queue_samples") == 0
		}, 20*time.Second, 5*time.Millisecond, "the queue drains once the receiver is back")
		x.stop()

		got, dup := rc.received()
		want := x.captured(t)
		t.Logf("%d samples captured, %d received; %d failed requests, %d retries", want, got, rc.attempts[fail],
			int(value(t, x.metrics(t), "lem_exporter_remote_write_retries_total")))
		assert.Equal(t, want, got, "every captured sample received")
		assert.Zero(t, dup, "none twice")
		assert.Equal(t, want, x.outcome(t, exporter.RemoteWriteSent))
		for _, r := range []string{exporter.RemoteWriteDropped, exporter.RemoteWriteRejected, exporter.RemoteWriteUnsent} {
			assert.Zero(t, x.outcome(t, r), r)
		}
		assert.Greater(t, rc.attempts[fail], 1)
		assert.Equal(t, float64(rc.attempts[fail]), value(t, x.metrics(t), "lem_exporter_remote_write_retries_total"),
			"each failed request retried, none given up")
		assert.Equal(t, rc.attempts[fail], rc.retriedBy[fail]+rc.retriedBy[accept], "the receiver saw each retry as one")
		failing := x.logs.Lines("the receiver is failing")
		require.Len(t, failing, 1, "logged once")
		assert.Less(t, len(failing[0]), 2048, "the receiver's megabyte of error body is not logged")
		assert.Len(t, x.logs.Lines("keeping up again"), 1)
		assert.Empty(t, x.logs.Lines("queue full"))
	})

	// A receiver that stalls (accepts the connection, never answers) for longer than the queue holds: the queue
	// never holds more than its bound, the oldest batches are dropped and counted (logged once), the newest are
	// delivered once it answers again, and received plus dropped is every captured sample.
	t.Run("stall beyond the queue", func(t *testing.T) {
		rc := newReceiver(t)
		opts := quick
		opts.QueueSamples = 2_000
		x := startStreaming(t, rc, opts)
		require.Eventually(t, func() bool { return x.outcome(t, exporter.RemoteWriteSent) > 0 }, 10*time.Second, 5*time.Millisecond)
		rc.set(stall)
		var most float64
		require.Eventually(t, func() bool {
			m := x.metrics(t)
			most = max(most, value(t, m, "lem_exporter_remote_write_queue_samples"))
			return value(t, m, "lem_exporter_remote_write_samples_total", "result", exporter.RemoteWriteDropped) >= 3000
		}, 20*time.Second, 5*time.Millisecond)
		rc.set(accept)
		require.Eventually(t, func() bool {
			return value(t, x.metrics(t), "lem_exporter_remote_write_queue_samples") == 0
		}, 20*time.Second, 5*time.Millisecond)
		x.stop()

		got, dup := rc.received()
		want := x.captured(t)
		dropped := x.outcome(t, exporter.RemoteWriteDropped)
		t.Logf("%d samples captured, %d received, %d dropped; queue held at most %.0f of %d", want, got, dropped, most,
			opts.QueueSamples)
		assert.LessOrEqual(t, most, float64(opts.QueueSamples), "the queue stays within its bound")
		assert.Equal(t, want, got+dropped, "every captured sample received or counted as dropped")
		assert.Zero(t, dup)
		assert.Equal(t, got, x.outcome(t, exporter.RemoteWriteSent))
		assert.Len(t, x.logs.Lines("queue full"), 1, "drops logged once")
		assert.Len(t, x.logs.Lines("the receiver is failing"), 1)
		assert.Len(t, x.logs.Lines("keeping up again"), 1)
		assert.Len(t, x.logs.Lines(fmt.Sprintf("dropped_samples=%d", dropped)), 1, "the episode's drops in its last line")
	})

	// 400 for three requests: each refused batch is sent once, never retried, and counted as rejected; the
	// refusal is logged once; the stream goes on when the receiver accepts again.
	t.Run("4xx not retried", func(t *testing.T) {
		rc := newReceiver(t)
		opts := quick
		opts.QueueSamples = 20_000
		x := startStreaming(t, rc, opts)
		require.Eventually(t, func() bool { return x.outcome(t, exporter.RemoteWriteSent) > 0 }, 10*time.Second, 5*time.Millisecond)
		rc.set(refuse)
		require.Eventually(t, func() bool { rc.mu.Lock(); defer rc.mu.Unlock(); return rc.attempts[refuse] >= 3 },
			10*time.Second, time.Millisecond)
		rc.set(accept)
		require.Eventually(t, func() bool { return x.outcome(t, exporter.RemoteWriteSent) > rc.refused }, 10*time.Second, 5*time.Millisecond)
		x.stop()

		got, dup := rc.received()
		want := x.captured(t)
		t.Logf("%d samples captured, %d received, %d refused in %d requests", want, got, rc.refused, rc.attempts[refuse])
		assert.Zero(t, rc.retriedBy[refuse]+rc.retriedBy[accept], "no request was a retry")
		assert.Equal(t, rc.refused, x.outcome(t, exporter.RemoteWriteRejected), "what the receiver refused is what was counted")
		assert.Equal(t, want, got+rc.refused)
		assert.Zero(t, dup)
		assert.Zero(t, value(t, x.metrics(t), "lem_exporter_remote_write_retries_total"))
		assert.Len(t, x.logs.Lines("the receiver refused a batch"), 1, "logged once")
	})
}
