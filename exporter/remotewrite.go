package exporter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
)

// RemoteWriteOptions configure the full-rate stream.
type RemoteWriteOptions struct {
	URL             string
	BearerTokenFile string
	BasicUser       string
	BasicPassFile   string
	Job             string        // job label of the streamed series (distinct from the scrape job)
	Instance        string        // instance label (default: hostname)
	BatchSamples    int           // flush a batch at this many samples (default DefaultRemoteWriteBatchSamples)
	BatchInterval   time.Duration // or this often (default 1 s)
	// QueueSamples bounds, in samples, what waits for the receiver (the batch being sent included). While the
	// receiver is down, stalls or answers 5xx or 429, the batch at the head is retried and newer ones wait; beyond
	// this bound the oldest waiting batches are dropped (counted, and logged once per outage). Default
	// DefaultRemoteWriteQueueSamples; at least two batches.
	QueueSamples int
	Timeout      time.Duration // one request (default 30 s): a stalled receiver counts as failing after this
	// MinBackoff and MaxBackoff bound the wait between retries (default 500 ms and 30 s); a receiver's
	// Retry-After is held to MaxBackoff, so no answer can park the stream for longer.
	MinBackoff, MaxBackoff time.Duration
}

// Defaults of the stream. The queue is ten minutes of eight GPUs at 50 Hz, with their counter readings.
const (
	DefaultRemoteWriteQueueSamples = 250_000
	DefaultRemoteWriteBatchSamples = 2000
)

// Outcomes of streamed samples (the result label of lem_exporter_remote_write_samples_total).
const (
	RemoteWriteSent     = "sent"     // accepted by the receiver
	RemoteWriteRejected = "rejected" // refused with a 4xx other than 429: not retried (a retry would be refused too)
	RemoteWriteDropped  = "dropped"  // dropped from a full queue, the oldest first
	RemoteWriteUnsent   = "unsent"   // still queued when the exporter stopped and StopGrace ran out
)

// RemoteWriter pushes every 50 Hz power sample and every counter reading to a Prometheus remote-write receiver
// (protocol 1.0, which Prometheus, Mimir, Thanos and VictoriaMetrics all accept): batched, retried with backoff
// for as long as the queue can hold what arrives meanwhile, the oldest dropped beyond it, every sample counted
// by outcome. Scrapes see one value per interval; this stream is lossless while the receiver keeps up.
type RemoteWriter struct {
	opts  RemoteWriteOptions
	url   string // for logs: without a password
	api   *remote.API
	sub   *sampler.Subscription
	env   meta.Environment
	log   *slog.Logger
	queue *batchQueue
	wg    sync.WaitGroup
	// ctx bounds sending; Stop cancels it after a grace period so shutdown never hangs on a dead receiver.
	ctx    context.Context
	cancel context.CancelFunc

	sent, rejected, dropped, unsent, retries atomic.Uint64

	mu        sync.Mutex // the episode being logged
	failing   time.Time  // when the receiver started failing (zero: it answers)
	dropping  bool       // the queue overflowed in this episode
	episode   uint64     // samples dropped in this episode
	refusing  bool       // the receiver refuses batches (4xx)
	collector table[*RemoteWriter]
}

var _ prometheus.Collector = (*RemoteWriter)(nil)

// StartRemoteWrite subscribes to the sampler and starts sending.
func StartRemoteWrite(s *sampler.Sampler, opts RemoteWriteOptions, log *slog.Logger) (*RemoteWriter, error) {
	if opts.Job == "" {
		opts.Job = "lem_stream"
	}
	if opts.Instance == "" {
		opts.Instance, _ = os.Hostname()
	}
	if opts.BatchSamples <= 0 {
		opts.BatchSamples = DefaultRemoteWriteBatchSamples
	}
	if opts.BatchInterval <= 0 {
		opts.BatchInterval = time.Second
	}
	if opts.QueueSamples == 0 {
		opts.QueueSamples = DefaultRemoteWriteQueueSamples
	}
	if opts.QueueSamples < 2*opts.BatchSamples {
		return nil, fmt.Errorf("--remote-write.queue-samples %d: must hold at least two batches (%d samples)",
			opts.QueueSamples, 2*opts.BatchSamples)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	rt, err := newTransport(opts)
	if err != nil {
		return nil, err
	}
	// MaxRetries 0: retry 5xx, 429 and network errors until sent or stopped; the queue, not a retry count,
	// decides what is given up. 4xx other than 429 come back at once.
	api, err := remote.NewAPI(opts.URL, remote.WithAPIPath(""),
		remote.WithAPIHTTPClient(&http.Client{Transport: rt, Timeout: opts.Timeout}),
		remote.WithAPIBackoff(remote.BackoffConfig{Min: opts.MinBackoff, Max: opts.MaxBackoff}))
	if err != nil {
		return nil, fmt.Errorf("--remote-write.url %q: %w", marker.Redact(opts.URL), err)
	}
	w := &RemoteWriter{opts: opts, url: marker.Redact(opts.URL), api: api, env: s.Environment(), log: log,
		queue: newBatchQueue(opts.QueueSamples), collector: newTable(nil, remoteWriteMetrics)}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.sub = s.Subscribe("remote_write", recorderQueue)
	w.wg.Add(2)
	go w.batch()
	go w.send()
	return w, nil
}

// recorderQueue sizes a stream consumer's queue like the recorder's.
const recorderQueue = 8192

// maxResponseBody bounds what is read of a receiver's answer (its error message): a hostile or broken receiver
// cannot make the exporter buffer a body of any size, nor log one.
const maxResponseBody = 1 << 10

// transport adds the credentials to every request, bounds the response body and holds a Retry-After to
// maxWait.
type transport struct {
	token   string
	basic   [2]string
	maxWait time.Duration
	next    http.RoundTripper
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if t.token != "" {
		r.Header.Set("Authorization", "Bearer "+t.token)
	} else if t.basic[0] != "" {
		r.SetBasicAuth(t.basic[0], t.basic[1])
	}
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, maxResponseBody), resp.Body}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		resp.Header.Set("Retry-After", strconv.Itoa(int(capRetryAfter(ra, t.maxWait).Seconds())))
	}
	return resp, nil
}

// capRetryAfter reads a Retry-After (seconds or an HTTP date) and holds it to at most maxWait.
func capRetryAfter(v string, maxWait time.Duration) time.Duration {
	var d time.Duration
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(min(max(s, 0), math.MaxInt32)) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = time.Until(at)
	}
	return min(max(d, 0), maxWait)
}

func readSecret(flag, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func newTransport(o RemoteWriteOptions) (http.RoundTripper, error) {
	tok, err := readSecret("--remote-write.bearer-token-file", o.BearerTokenFile)
	if err != nil {
		return nil, err
	}
	pass, err := readSecret("--remote-write.basic-auth.password-file", o.BasicPassFile)
	if err != nil {
		return nil, err
	}
	return &transport{token: tok, basic: [2]string{o.BasicUser, pass}, maxWait: o.MaxBackoff, next: http.DefaultTransport}, nil
}

// batch turns records into write requests and queues them.
func (w *RemoteWriter) batch() {
	defer w.wg.Done()
	defer w.queue.close()
	tick := time.NewTicker(w.opts.BatchInterval)
	defer tick.Stop()
	req := newWriteRequest()
	flush := func() {
		if req.samples == 0 {
			return
		}
		if n := w.queue.push(req); n > 0 {
			w.dropped.Add(uint64(n))
			w.noteDrop(n)
		}
		req = newWriteRequest()
	}
	uuid := map[int]string{}
	for _, d := range w.env.Devices {
		uuid[d.Index] = d.UUID
	}
	for {
		select {
		case rec, ok := <-w.sub.C():
			if !ok {
				flush()
				return
			}
			g := strconv.Itoa(rec.GPU)
			switch rec.Kind {
			case sampler.KindSamples:
				ts := req.series(w.labels("lem_gpu_power_watts", g, uuid[rec.GPU], "source", "sample"))
				for _, s := range rec.Samples {
					ts.samples = append(ts.samples, sample{s.PowerW, s.Time.UnixMilli()})
				}
				req.samples += len(rec.Samples)
			case sampler.KindCounter:
				ts := req.series(w.labels("lem_gpu_energy_joules_total", g, uuid[rec.GPU]))
				ts.samples = append(ts.samples, sample{rec.Counter.Joules(), rec.Counter.Time.UnixMilli()})
				req.samples++
			}
			if req.samples >= w.opts.BatchSamples {
				flush()
			}
		case <-tick.C:
			flush()
		}
	}
}

func (w *RemoteWriter) labels(name, gpu, uuid string, extra ...string) []label {
	ls := []label{{"__name__", name}, {"gpu", gpu}, {"instance", w.opts.Instance}, {"job", w.opts.Job}, {"uuid", uuid}}
	for i := 0; i+1 < len(extra); i += 2 {
		ls = append(ls, label{extra[i], extra[i+1]})
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].name < ls[j].name })
	return ls
}

// send writes the queue's batches in order, each retried until it is sent, refused or the exporter stops.
func (w *RemoteWriter) send() {
	defer w.wg.Done()
	for {
		req, ok := w.queue.next()
		if !ok {
			return
		}
		n := uint64(req.samples)
		if w.ctx.Err() != nil {
			w.queue.done()
			w.unsent.Add(n)
			continue
		}
		_, err := w.api.Write(w.ctx, remote.WriteV1MessageType, req, remote.WithWriteRetryCallback(w.noteRetry))
		w.queue.done()
		switch {
		case err == nil:
			w.sent.Add(n)
			w.noteSent()
		case w.ctx.Err() != nil:
			w.unsent.Add(n)
		default:
			w.rejected.Add(n)
			w.noteRejected(err, req.samples)
		}
	}
}

// The log says when the receiver starts failing, when the queue starts dropping and when the receiver is back,
// once each per episode; every retry and drop is counted in the metrics.

func (w *RemoteWriter) noteRetry(err error) {
	w.retries.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failing.IsZero() {
		w.failing = time.Now()
		w.log.Warn("remote write: the receiver is failing; retrying with backoff while the queue holds the stream",
			"url", w.url, "queue_samples", w.opts.QueueSamples, "err", err)
	}
}

func (w *RemoteWriter) noteDrop(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.episode += uint64(n)
	if !w.dropping {
		w.dropping = true
		w.log.Warn("remote write: queue full, dropping the oldest samples until the receiver catches up",
			"url", w.url, "queue_samples", w.opts.QueueSamples)
	}
}

func (w *RemoteWriter) noteSent() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refusing = false
	// The episode ends once the receiver answers and the queue has room again: a receiver that is merely slow
	// could otherwise log a drop episode every batch.
	if (w.failing.IsZero() && !w.dropping) || w.queue.len() > w.opts.QueueSamples/2 {
		return
	}
	attrs := []any{"url", w.url, "dropped_samples", w.episode}
	if !w.failing.IsZero() {
		attrs = append(attrs, "failing_for", time.Since(w.failing).Round(time.Millisecond))
	}
	w.log.Info("remote write: the receiver is keeping up again", attrs...)
	w.failing, w.dropping, w.episode = time.Time{}, false, 0
}

func (w *RemoteWriter) noteRejected(err error, samples int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.refusing {
		w.refusing = true
		w.log.Error("remote write: the receiver refused a batch; it is dropped, not retried, and so is every "+
			"batch refused until one is accepted", "url", w.url, "samples", samples, "err", err)
	}
}

// StopGrace is how long Stop keeps trying to deliver what is queued.
const StopGrace = 10 * time.Second

// Stop sends what is queued (retrying for up to StopGrace) and returns; what is still unsent then is counted as
// unsent.
func (w *RemoteWriter) Stop() {
	w.sub.Close()
	t := time.AfterFunc(StopGrace, w.cancel)
	w.wg.Wait()
	t.Stop()
	w.cancel()
}

// Sent is how many samples were accepted by the receiver.
func (w *RemoteWriter) Sent() uint64 { return w.sent.Load() }

// Describe implements prometheus.Collector.
func (w *RemoteWriter) Describe(ch chan<- *prometheus.Desc) { w.collector.describe(ch) }

// Collect implements prometheus.Collector.
func (w *RemoteWriter) Collect(ch chan<- prometheus.Metric) { w.collector.collect(ch, w) }

// remoteWriteMetrics is the stream's table, one entry per metric.
var remoteWriteMetrics = []metric[*RemoteWriter]{
	{name: "lem_exporter_remote_write_samples_total", typ: prometheus.CounterValue, labels: []string{"result"},
		help: "Samples of the full-rate stream by outcome: sent; rejected by the receiver (4xx other than 429, not " +
			"retried); dropped from a full queue (the oldest first); unsent when the exporter stopped.",
		values: func(w *RemoteWriter) []value {
			return []value{{v: float64(w.sent.Load()), labels: []string{RemoteWriteSent}},
				{v: float64(w.rejected.Load()), labels: []string{RemoteWriteRejected}},
				{v: float64(w.dropped.Load()), labels: []string{RemoteWriteDropped}},
				{v: float64(w.unsent.Load()), labels: []string{RemoteWriteUnsent}}}
		}},
	{name: "lem_exporter_remote_write_retries_total", typ: prometheus.CounterValue,
		help:   "Requests of the full-rate stream retried after a 5xx, a 429, a timeout or a network error.",
		values: func(w *RemoteWriter) []value { return one(float64(w.retries.Load())) }},
	{name: "lem_exporter_remote_write_queue_samples", typ: prometheus.GaugeValue,
		help:   "Samples waiting to be sent, the batch being sent included.",
		values: func(w *RemoteWriter) []value { return one(float64(w.queue.len())) }},
	{name: "lem_exporter_remote_write_queue_capacity_samples", typ: prometheus.GaugeValue,
		help:   "Most samples the queue holds (--remote-write.queue-samples); beyond, the oldest are dropped.",
		values: func(w *RemoteWriter) []value { return one(float64(w.opts.QueueSamples)) }},
}

// batchQueue holds batches in order, within a bound in samples. The oldest batch is the one being sent; push
// makes room by dropping the oldest of those waiting behind it, never the one in flight.
type batchQueue struct {
	mu       sync.Mutex
	batches  []*writeRequest // oldest first
	sending  bool            // batches[0] is being sent
	samples  int
	capacity int
	closed   bool
	ready    chan struct{} // a push or the close happened
}

func newBatchQueue(capacity int) *batchQueue {
	return &batchQueue{capacity: capacity, ready: make(chan struct{}, 1)}
}

// push queues b and returns how many samples it dropped to stay within capacity.
func (q *batchQueue) push(b *writeRequest) (dropped int) {
	q.mu.Lock()
	q.batches = append(q.batches, b)
	q.samples += b.samples
	first := 0
	if q.sending {
		first = 1
	}
	for q.samples > q.capacity && len(q.batches)-first > 1 { // never b itself
		old := q.batches[first]
		q.batches = slices.Delete(q.batches, first, first+1)
		q.samples -= old.samples
		dropped += old.samples
	}
	q.mu.Unlock()
	q.signal()
	return dropped
}

func (q *batchQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// close lets next return false once the queue is empty.
func (q *batchQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// next waits for the oldest batch and marks it in flight; false once the queue is closed and empty.
func (q *batchQueue) next() (*writeRequest, bool) {
	for {
		q.mu.Lock()
		if len(q.batches) > 0 {
			q.sending = true
			b := q.batches[0]
			q.mu.Unlock()
			return b, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		<-q.ready
	}
}

// done removes the batch in flight.
func (q *batchQueue) done() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.samples -= q.batches[0].samples
	q.batches = slices.Delete(q.batches, 0, 1)
	q.sending = false
}

// len is how many samples the queue holds.
func (q *batchQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.samples
}

// The remote-write 1.0 protobuf (prometheus.WriteRequest), encoded by hand: four small messages, not worth a
// dependency on the Prometheus server module.
type label struct{ name, value string }

type sample struct {
	value float64
	ms    int64
}

type series struct {
	labels  []label
	samples []sample
}

type writeRequest struct {
	ts      []*series
	byKey   map[string]*series
	samples int
}

func newWriteRequest() *writeRequest { return &writeRequest{byKey: map[string]*series{}} }

func (r *writeRequest) series(ls []label) *series {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.name)
		b.WriteByte(0)
		b.WriteString(l.value)
		b.WriteByte(0)
	}
	k := b.String()
	s, ok := r.byKey[k]
	if !ok {
		s = &series{labels: ls}
		r.byKey[k] = s
		r.ts = append(r.ts, s)
	}
	return s
}

func labelSize(l label) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(l.name)) + protowire.SizeTag(2) + protowire.SizeBytes(len(l.value))
}

func sampleSize(s sample) int {
	return protowire.SizeTag(1) + protowire.SizeFixed64() + protowire.SizeTag(2) + protowire.SizeVarint(uint64(s.ms))
}

func (s *series) size() int {
	n := 0
	for _, l := range s.labels {
		n += protowire.SizeTag(1) + protowire.SizeBytes(labelSize(l))
	}
	for _, x := range s.samples {
		n += protowire.SizeTag(2) + protowire.SizeBytes(sampleSize(x))
	}
	return n
}

// Size is the encoded size (the gogo-style interface the remote API uses).
func (r *writeRequest) Size() int {
	n := 0
	for _, s := range r.ts {
		n += protowire.SizeTag(1) + protowire.SizeBytes(s.size())
	}
	return n
}

// MarshalToSizedBuffer encodes into buf, which is exactly Size() long.
func (r *writeRequest) MarshalToSizedBuffer(buf []byte) (int, error) {
	b := buf[:0]
	for _, s := range r.ts {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(s.size()))
		for _, l := range s.labels {
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(labelSize(l)))
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendString(b, l.name)
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendString(b, l.value)
		}
		for _, x := range s.samples {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(sampleSize(x)))
			b = protowire.AppendTag(b, 1, protowire.Fixed64Type)
			b = protowire.AppendFixed64(b, math.Float64bits(x.value))
			b = protowire.AppendTag(b, 2, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(x.ms))
		}
	}
	if len(b) != len(buf) {
		return len(b), fmt.Errorf("remote write encoding: wrote %d bytes, expected %d", len(b), len(buf))
	}
	return len(b), nil
}
