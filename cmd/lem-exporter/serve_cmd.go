package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/exporter-toolkit/web"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/recorder"
)

type serveCmd struct {
	cli.SourceFlags
	cli.SamplerFlags
	ListenAddress []string      `name:"web.listen-address" default:":9636" help:"Addresses to listen on (repeatable)."`
	WebConfigFile string        `name:"web.config.file" help:"exporter-toolkit web configuration (TLS, basic auth)."`
	MetricsPath   string        `name:"web.telemetry-path" default:"/metrics" help:"Path of the metrics."`
	MaxRequests   int           `name:"web.max-requests" default:"${max_requests}" help:"Concurrent scrapes served at most (0: no limit)."`
	MaxDownloads  int           `name:"web.max-sample-requests" default:"${max_sample_requests}" help:"Concurrent raw-sample downloads (/api/v1/samples) served at most; more are answered 503 at once."`
	MaxSamples    int           `name:"web.max-samples-per-response" default:"${max_samples_per_response}" help:"Power samples one raw-sample download carries at most; a longer range is answered 400 saying where to split it."`
	SampleWrite   time.Duration `name:"web.sample-write-timeout" default:"${sample_write_timeout}" help:"Time one raw-sample download may take to be written; a client that stops reading gives its slot back after this."`

	MarkerTokenFile string        `name:"markers.token-file" type:"existingfile" help:"File with the bearer token marker writes must carry; without it only loopback clients may write."`
	MaxRuns         int           `name:"markers.max-active-runs" default:"${max_active_runs}" help:"Cap on concurrently active runs."`
	MaxEnded        int           `name:"markers.max-ended-runs" default:"${max_ended_runs}" help:"Cap on ended runs kept (in /metrics with value 0) during their grace period; the oldest go first."`
	RunGrace        time.Duration `name:"markers.grace" default:"${run_grace}" help:"How long ended runs and phases stay in /metrics with value 0."`
	MaxPhaseNames   int           `name:"markers.max-phase-names" default:"${max_phase_names}" help:"Cap on distinct phase names per run."`
	MaxResultKeys   int           `name:"markers.max-result-keys" default:"${max_result_keys}" help:"Cap on distinct result keys per run."`
	MaxRunAge       time.Duration `name:"markers.max-run-age" default:"168h" help:"End active runs older than this as expired (0: never); runs lem-run mirrors also hold a lease it renews."`

	RecordDir      string        `name:"record.dir" help:"Write the full-rate data to Parquet files in this directory."`
	RecordFlush    time.Duration `name:"record.flush-interval" default:"${record_flush}" help:"Close a segment this often: a crash loses at most this much plus the drain interval."`
	RecordRotate   time.Duration `name:"record.rotate" default:"1h" help:"Start a new file this often."`
	RecordMaxSize  int64         `name:"record.max-size" help:"Start a new file once the current one reaches this many bytes (0: no limit)."`
	RecordMaxAge   time.Duration `name:"record.max-age" help:"Delete files older than this (0: keep)."`
	RecordMaxFiles int           `name:"record.max-files" help:"Keep at most this many files (0: no limit)."`

	RemoteWriteURL   string          `name:"remote-write.url" help:"Push every 50 Hz sample and counter reading to this Prometheus remote-write endpoint."`
	RemoteWriteToken string          `name:"remote-write.bearer-token-file" type:"existingfile" help:"Bearer token file for remote write."`
	RemoteWriteUser  string          `name:"remote-write.basic-auth.username" help:"Basic-auth user for remote write."`
	RemoteWritePass  string          `name:"remote-write.basic-auth.password-file" type:"existingfile" help:"Basic-auth password file for remote write."`
	RemoteWriteJob   string          `name:"remote-write.job" default:"lem_stream" help:"job label of the streamed series."`
	RemoteWriteInst  string          `name:"remote-write.instance" help:"instance label of the streamed series (default: hostname)."`
	RemoteWriteQueue int             `name:"remote-write.queue-samples" default:"${remote_write_queue}" help:"Samples held while the receiver is down, stalls or fails (the batch being sent included); beyond, the oldest are dropped and counted."`
	ProcessMaxSeries int             `name:"processes.max-series" default:"64" help:"Processes with a lem_process_gpu_energy_joules_total series of their own per GPU; later ones go to pid=\"other\"."`
	ProcessGrace     time.Duration   `name:"processes.grace" default:"5m" help:"How long a process that left the GPU keeps its series."`
	ProcessIdleW     map[int]float64 `name:"processes.idle-watts" mapsep:"," help:"Idle power the per-process split takes off first, per GPU index (0=75,1=80); default: the lowest power seen with no process on the GPU."`
}

// check rejects limits that would leave the exporter unbounded or useless, before anything starts.
func (c *serveCmd) check() error {
	for _, l := range []struct {
		flag string
		v    int
	}{{"--web.max-sample-requests", c.MaxDownloads}, {"--web.max-samples-per-response", c.MaxSamples},
		{"--markers.max-active-runs", c.MaxRuns}, {"--markers.max-ended-runs", c.MaxEnded},
		{"--markers.max-phase-names", c.MaxPhaseNames}, {"--markers.max-result-keys", c.MaxResultKeys},
		{"--remote-write.queue-samples", c.RemoteWriteQueue}} {
		if l.v < 1 {
			return fmt.Errorf("%s %d: must be at least 1%w", l.flag, l.v, cli.Usage)
		}
	}
	if c.RemoteWriteURL != "" && c.RemoteWriteQueue < 2*exporter.DefaultRemoteWriteBatchSamples {
		return fmt.Errorf("--remote-write.queue-samples %d: must hold at least two batches (%d samples)%w",
			c.RemoteWriteQueue, 2*exporter.DefaultRemoteWriteBatchSamples, cli.Usage)
	}
	if c.SampleWrite <= 0 {
		return fmt.Errorf("--web.sample-write-timeout %s: must be positive%w", c.SampleWrite, cli.Usage)
	}
	if c.RunGrace <= 0 {
		return fmt.Errorf("--markers.grace %s: must be positive%w", c.RunGrace, cli.Usage)
	}
	if c.MaxRunAge < 0 {
		return fmt.Errorf("--markers.max-run-age %s: must not be negative (0: never)%w", c.MaxRunAge, cli.Usage)
	}
	return nil
}

func (c *serveCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.WebConfigFile != "" {
		if err := web.Validate(c.WebConfigFile); err != nil {
			return fmt.Errorf("--web.config.file: %v%w", err, cli.Usage)
		}
	}
	if err := c.check(); err != nil {
		return err
	}
	token, err := cli.ReadSecret("--markers.token-file", c.MarkerTokenFile)
	if err != nil {
		return err
	}
	listeners, err := c.listen()
	if err != nil {
		return err
	}
	src, devs, err := c.SourceFlags.Open(log)
	if err != nil {
		closeAll(listeners)
		return err
	}
	defer src.Close()
	exp, err := exporter.New(src, devs, c.options(token), log)
	if err != nil {
		closeAll(listeners)
		return err
	}
	return c.serve(ctx, exp, listeners, log)
}

// listen binds every listen address first: a taken port is an error before anything starts (dcgm-exporter's 9400
// is the usual clash).
func (c *serveCmd) listen() ([]net.Listener, error) {
	listeners := make([]net.Listener, 0, len(c.ListenAddress))
	for _, addr := range c.ListenAddress {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll(listeners)
			return nil, fmt.Errorf("--web.listen-address %s: %v (another exporter on this port? choose another with --web.listen-address)%w",
				addr, err, cli.Usage)
		}
		listeners = append(listeners, ln)
	}
	return listeners, nil
}

func closeAll(listeners []net.Listener) {
	for _, l := range listeners {
		l.Close()
	}
}

// options wires the flags into the exporter's options: marker limits, raw-sample limits, per-process energy, and
// the recorder and remote write where asked for.
func (c *serveCmd) options(markerToken string) exporter.Options {
	opts := exporter.Options{Sampler: c.SamplerFlags.Config(), MetricsPath: c.MetricsPath, MarkerToken: markerToken,
		Markers: marker.Limits{MaxActive: c.MaxRuns, MaxEnded: c.MaxEnded, Grace: c.RunGrace, MaxPhaseNames: c.MaxPhaseNames,
			MaxResultKeys: c.MaxResultKeys, MaxRunAge: c.MaxRunAge},
		MaxRequestsInFlight: c.MaxRequests,
		Samples: exporter.APIOptions{MaxSampleRequests: c.MaxDownloads, MaxSamplesPerResponse: c.MaxSamples,
			WriteTimeout: c.SampleWrite},
		Processes: exporter.ProcessOptions{MaxSeries: c.ProcessMaxSeries, Grace: c.ProcessGrace, IdleW: c.ProcessIdleW}}
	if c.RecordDir != "" {
		opts.Record = &recorder.DirOptions{Dir: c.RecordDir, FlushEvery: c.RecordFlush, RotateEvery: c.RecordRotate,
			MaxBytes: c.RecordMaxSize, MaxAge: c.RecordMaxAge, MaxFiles: c.RecordMaxFiles}
	}
	if c.RemoteWriteURL != "" {
		opts.RemoteWrite = &exporter.RemoteWriteOptions{URL: c.RemoteWriteURL, BearerTokenFile: c.RemoteWriteToken,
			BasicUser: c.RemoteWriteUser, BasicPassFile: c.RemoteWritePass, Job: c.RemoteWriteJob, Instance: c.RemoteWriteInst,
			QueueSamples: c.RemoteWriteQueue}
	}
	return opts
}

// serve runs the exporter and serves its handler on the listeners (through exporter-toolkit: TLS, basic auth)
// until ctx ends or serving fails, then stops taking requests and lets the exporter flush its recorder.
func (c *serveCmd) serve(ctx context.Context, exp *exporter.Exporter, listeners []net.Listener, log *slog.Logger) error {
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- exp.Run(runCtx) }()

	srv := &http.Server{Handler: exp.Handler(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- web.ServeMultiple(listeners, srv, &web.FlagConfig{WebListenAddresses: &c.ListenAddress,
			WebConfigFile: &c.WebConfigFile}, log)
	}()
	log.Info("lem-exporter started", "listen", c.ListenAddress, "gpus", len(exp.Sampler().Devices()),
		"source", exp.Sampler().Environment().Source.Kind, "per_process_energy", exp.Processes() != nil)

	var err error
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new requests, flushing the recorder")
	case err = <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	stopRun()
	return errors.Join(err, <-runDone)
}
