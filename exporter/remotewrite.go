package exporter

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	remote "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"

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
	BatchSamples    int           // flush a batch at this many samples
	BatchInterval   time.Duration // or this often
	MaxPending      int           // batches waiting to be sent; beyond this the oldest is dropped
	MaxRetries      int
	Timeout         time.Duration
}

// RemoteWriter pushes every 50 Hz power sample and every counter reading to a Prometheus remote-write receiver
// (protocol 1.0, which Prometheus, Mimir, Thanos and VictoriaMetrics all accept): batched, retried with
// backoff, queued within a bound, drops counted. Scrapes see one value per interval; this stream is lossless.
type RemoteWriter struct {
	opts  RemoteWriteOptions
	api   *remote.API
	sub   *sampler.Subscription
	env   meta.Environment
	log   *slog.Logger
	queue chan *writeRequest
	done  chan struct{}
	wg    sync.WaitGroup
	// ctx bounds sending; Stop cancels it after a grace period so shutdown never hangs on a dead receiver.
	ctx    context.Context
	cancel context.CancelFunc

	sent, failed, dropped atomic.Uint64
	sentDesc              *prometheus.Desc
	pending               *prometheus.Desc
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
		opts.BatchSamples = 2000
	}
	if opts.BatchInterval <= 0 {
		opts.BatchInterval = time.Second
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 600 // ten minutes of one-second batches
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 10 // the API's 0 would mean forever
	}
	rt, err := authTransport(opts)
	if err != nil {
		return nil, err
	}
	api, err := remote.NewAPI(opts.URL, remote.WithAPIPath(""),
		remote.WithAPIHTTPClient(&http.Client{Transport: rt, Timeout: opts.Timeout}),
		remote.WithAPILogger(log),
		remote.WithAPIBackoff(remote.BackoffConfig{Min: 500 * time.Millisecond, Max: 30 * time.Second, MaxRetries: opts.MaxRetries}))
	if err != nil {
		return nil, fmt.Errorf("--remote-write.url %q: %w", opts.URL, err)
	}
	w := &RemoteWriter{opts: opts, api: api, env: s.Environment(), log: log,
		queue: make(chan *writeRequest, opts.MaxPending), done: make(chan struct{}),
		sentDesc: prometheus.NewDesc("lem_exporter_remote_write_samples_total",
			"Samples of the full-rate stream by outcome (sent, failed after retries, dropped from a full queue).", []string{"result"}, nil),
		pending: prometheus.NewDesc("lem_exporter_remote_write_pending_batches", "Batches waiting to be sent.", nil, nil),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.sub = s.Subscribe("remote_write", recorderQueue)
	w.wg.Add(2)
	go w.batch()
	go w.send()
	return w, nil
}

// recorderQueue sizes a stream consumer's queue like the recorder's.
const recorderQueue = 8192

type bearerRT struct {
	token string
	basic [2]string
	next  http.RoundTripper
}

func (b *bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	} else if b.basic[0] != "" {
		r.SetBasicAuth(b.basic[0], b.basic[1])
	}
	return b.next.RoundTrip(r)
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

func authTransport(o RemoteWriteOptions) (http.RoundTripper, error) {
	tok, err := readSecret("--remote-write.bearer-token-file", o.BearerTokenFile)
	if err != nil {
		return nil, err
	}
	pass, err := readSecret("--remote-write.basic-auth.password-file", o.BasicPassFile)
	if err != nil {
		return nil, err
	}
	return &bearerRT{token: tok, basic: [2]string{o.BasicUser, pass}, next: http.DefaultTransport}, nil
}

// batch turns records into write requests.
func (w *RemoteWriter) batch() {
	defer w.wg.Done()
	defer close(w.queue)
	tick := time.NewTicker(w.opts.BatchInterval)
	defer tick.Stop()
	req := newWriteRequest()
	flush := func() {
		if req.samples == 0 {
			return
		}
		select {
		case w.queue <- req:
		default:
			// Queue full (receiver down for long): drop the oldest batch to keep the newest.
			select {
			case old := <-w.queue:
				w.dropped.Add(uint64(old.samples))
			default:
			}
			w.queue <- req
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

func (w *RemoteWriter) send() {
	defer w.wg.Done()
	defer close(w.done)
	for req := range w.queue {
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Minute)
		_, err := w.api.Write(ctx, remote.WriteV1MessageType, req)
		cancel()
		if err != nil {
			w.failed.Add(uint64(req.samples))
			w.log.Error("remote write failed after retries; batch dropped", "samples", req.samples, "err", err)
			continue
		}
		w.sent.Add(uint64(req.samples))
	}
}

// StopGrace is how long Stop keeps trying to deliver what is queued.
const StopGrace = 10 * time.Second

// Stop sends what is queued (retrying for up to StopGrace) and returns; what is still unsent then is counted as
// failed.
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
func (w *RemoteWriter) Describe(ch chan<- *prometheus.Desc) { ch <- w.sentDesc; ch <- w.pending }

// Collect implements prometheus.Collector.
func (w *RemoteWriter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(w.sentDesc, prometheus.CounterValue, float64(w.sent.Load()), "sent")
	ch <- prometheus.MustNewConstMetric(w.sentDesc, prometheus.CounterValue, float64(w.failed.Load()), "failed")
	ch <- prometheus.MustNewConstMetric(w.sentDesc, prometheus.CounterValue, float64(w.dropped.Load()+w.sub.Dropped()), "dropped")
	ch <- prometheus.MustNewConstMetric(w.pending, prometheus.GaugeValue, float64(len(w.queue)))
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
