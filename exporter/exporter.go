package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
)

// DefaultMaxRequestsInFlight is lem-exporter's cap on concurrent scrapes (node_exporter's default).
const DefaultMaxRequestsInFlight = 40

// Options configure an Exporter.
type Options struct {
	Sampler             sampler.Config
	MetricsPath         string
	MarkerToken         string               // empty: marker writes from loopback only
	Markers             marker.Limits        // bounds of the marker store
	MaxRequestsInFlight int                  // concurrent scrapes served at most (0: no limit)
	Samples             APIOptions           // bounds of the raw-sample API
	Record              *recorder.DirOptions // nil: no recorder
	RemoteWrite         *RemoteWriteOptions  // nil: no stream
	Processes           ProcessOptions       // per-process energy (off with Sampler.NoProcesses)
}

// Exporter wires the sampler to the collector, the HTTP APIs, the recorder and the remote-write stream.
type Exporter struct {
	s       *sampler.Sampler
	runs    *marker.Store
	handler http.Handler
	rec     *recorder.Dir
	rw      *RemoteWriter
	procs   *Processes // nil: processes not sampled
	lags    *LagKeeper
	log     *slog.Logger
	opts    Options
}

// New builds an exporter over the given devices of src.
func New(src gpu.Source, devs []gpu.Device, opts Options, log *slog.Logger) (*Exporter, error) {
	if log == nil {
		log = slog.Default()
	}
	if opts.MetricsPath == "" {
		opts.MetricsPath = "/metrics"
	}
	s, err := sampler.New(src, devs, opts.Sampler, log)
	if err != nil {
		return nil, err
	}
	e := &Exporter{s: s, log: log, opts: opts}
	e.runs = marker.NewStore(s.Clock().Now, opts.Markers, s.Emit)

	gpuReg := prometheus.NewRegistry()
	gpuReg.MustRegister(NewGPUCollector(s), NewRunsCollector(e.runs))
	api := NewAPI(e.runs, s, opts.Samples, log)
	if !opts.Sampler.NoProcesses {
		e.procs = NewProcesses(s.Environment(), opts.Processes)
		gpuReg.MustRegister(e.procs)
	}
	selfReg := prometheus.NewRegistry() // the process's own health, apart from the GPU metrics
	selfReg.MustRegister(NewSelfCollector(s), NewLimitsCollector(e.runs, api), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if opts.Record != nil {
		if e.rec, err = recorder.StartDir(s, *opts.Record, log); err != nil {
			return nil, err
		}
		selfReg.MustRegister(NewRecorderCollector(e.rec))
	}
	if opts.RemoteWrite != nil {
		if e.rw, err = StartRemoteWrite(s, *opts.RemoteWrite, log); err != nil {
			if e.rec != nil {
				e.rec.Stop()
			}
			return nil, err
		}
		gpuReg.MustRegister(e.rw)
	}

	mux := http.NewServeMux()
	metrics := promhttp.InstrumentMetricHandler(selfReg, promhttp.HandlerFor(prometheus.Gatherers{gpuReg, selfReg},
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
			MaxRequestsInFlight: opts.MaxRequestsInFlight, Registry: selfReg}))
	mux.Handle("GET "+opts.MetricsPath, metrics)
	recDir := ""
	if opts.Record != nil {
		recDir = opts.Record.Dir
	}
	e.lags = NewLagKeeper(s, s.Config().RingSpan, recDir, log)
	marker.NewHandler(e.runs, opts.MarkerToken, log).WithMeter(&account.IntervalMeter{Src: s, Fallback: e.lags.Lags}).Register(mux)
	api.Register(mux)
	if opts.MetricsPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "lem-exporter",
			Description: "High-rate NVIDIA GPU power and energy, with experiment phase markers",
			Version:     meta.LemVersion(),
			Links: []web.LandingLinks{
				{Address: opts.MetricsPath, Text: "Metrics"},
				{Address: "/api/v1/runs", Text: "Runs"},
				{Address: "/readyz", Text: "Readiness"},
			},
		})
		if err != nil {
			return nil, fmt.Errorf("landing page: %w", err)
		}
		mux.Handle("GET /{$}", landing)
	}
	e.handler = mux
	return e, nil
}

// Handler serves /metrics, the APIs and the landing page.
func (e *Exporter) Handler() http.Handler { return e.handler }

// Processes is the per-process energy the exporter keeps (nil when processes are not sampled).
func (e *Exporter) Processes() *Processes { return e.procs }

// Sampler is the exporter's sampler.
func (e *Exporter) Sampler() *sampler.Sampler { return e.s }

// Run samples until ctx is done, then stops the sampler and flushes the recorder and the stream.
func (e *Exporter) Run(ctx context.Context) error {
	if e.procs != nil {
		e.procs.start(e.s)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); e.s.Run(ctx) }()
	go func() { defer wg.Done(); e.lags.Run(ctx) }()
	<-ctx.Done()
	wg.Wait()
	if e.procs != nil {
		e.procs.stop()
	}
	var err error
	if e.rec != nil {
		err = errors.Join(err, e.rec.Stop())
	}
	if e.rw != nil {
		e.rw.Stop()
	}
	return err
}
