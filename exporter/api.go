package exporter

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// Bounds of the raw-sample API. Every download copies its range out of the ring buffer and encodes it (a Parquet
// download buffers a row group): 250 unbounded concurrent Parquet downloads of a ten-minute ring once took the
// process from 29 MB to 830 MB resident. Downloads beyond the concurrency cap are refused at once rather than
// queued, so a burst costs nothing but the refusals.
const (
	DefaultMaxSampleRequests = 4
	// DefaultMaxSamplesPerResponse is 100,000 power samples: over half an hour of one GPU at 50 Hz, three times
	// the default ring span.
	DefaultMaxSamplesPerResponse = 100_000
	// DefaultSampleWriteTimeout is how long one download may take to be written: a client that stops reading
	// gives its slot back after this, so a few stalled clients cannot keep the API refusing everyone else. A
	// full response (8 MB of JSON lines) takes a minute at 1 Mbit/s.
	DefaultSampleWriteTimeout = 2 * time.Minute
)

// Reasons a sample download is refused (the reason label of lem_exporter_sample_requests_refused_total).
const (
	RefusedBusy     = "busy"             // the concurrency cap was reached
	RefusedTooLarge = "too_many_samples" // the range held more samples than one response carries
)

// APIOptions bound the raw-sample API.
type APIOptions struct {
	MaxSampleRequests     int           // concurrent downloads (0: DefaultMaxSampleRequests)
	MaxSamplesPerResponse int           // power samples one response carries (0: DefaultMaxSamplesPerResponse)
	WriteTimeout          time.Duration // writing one download takes at most this (0: DefaultSampleWriteTimeout)
}

func (o APIOptions) withDefaults() APIOptions {
	if o.MaxSampleRequests <= 0 {
		o.MaxSampleRequests = DefaultMaxSampleRequests
	}
	if o.MaxSamplesPerResponse <= 0 {
		o.MaxSamplesPerResponse = DefaultMaxSamplesPerResponse
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultSampleWriteTimeout
	}
	return o
}

// API serves the raw-sample and health endpoints (the marker endpoints are the marker package's handler).
type API struct {
	runs  *marker.Store
	s     *sampler.Sampler
	log   *slog.Logger
	opts  APIOptions
	slots chan struct{} // one per download in progress

	refusedBusy, refusedLarge atomic.Uint64
}

// NewAPI makes the sample and health API over a sampler; runs supply the events of a Parquet download.
func NewAPI(runs *marker.Store, s *sampler.Sampler, opts APIOptions, log *slog.Logger) *API {
	opts = opts.withDefaults()
	return &API{runs: runs, s: s, log: log, opts: opts, slots: make(chan struct{}, opts.MaxSampleRequests)}
}

// SampleRequestStats counts the raw-sample API's downloads in progress and those it refused.
type SampleRequestStats struct {
	InFlight, MaxInFlight int
	Refused               map[string]uint64 // by reason: RefusedBusy, RefusedTooLarge
}

// SampleRequestStats returns the downloads in progress and the refusals so far.
func (a *API) SampleRequestStats() SampleRequestStats {
	return SampleRequestStats{InFlight: len(a.slots), MaxInFlight: cap(a.slots),
		Refused: map[string]uint64{RefusedBusy: a.refusedBusy.Load(), RefusedTooLarge: a.refusedLarge.Load()}}
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/samples", a.samples)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		marker.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.ready)
}

type sampleLine struct {
	Kind     string    `json:"kind"`
	GPU      int       `json:"gpu"`
	Time     time.Time `json:"time"`
	PowerW   *float64  `json:"power_w,omitempty"`
	EnergyMJ *uint64   `json:"energy_mj,omitempty"`
}

// samples serves the ring buffer's raw data for one GPU and time range: JSON lines, or a lem Parquet trace with
// format=parquet, so a runner on the same host can use a running exporter instead of opening NVML itself. At most
// MaxSampleRequests run at once (others get 503 at once), and one carries at most MaxSamplesPerResponse samples
// (a longer range gets 400 saying where to split it).
func (a *API) samples(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	g, err := strconv.Atoi(q.Get("gpu"))
	if err != nil {
		marker.WriteError(w, fmt.Errorf("%w: gpu=%q: want a GPU index", marker.ErrInvalid, q.Get("gpu")))
		return
	}
	var from, to time.Time
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"start", &from}, {"end", &to}} {
		v := q.Get(p.name)
		if v == "" {
			marker.WriteError(w, fmt.Errorf("%w: query parameter %q is required", marker.ErrInvalid, p.name))
			return
		}
		if *p.t, err = marker.ParseTime(v); err != nil {
			marker.WriteError(w, fmt.Errorf("%s: %w", p.name, err))
			return
		}
	}
	if to.Before(from) {
		marker.WriteError(w, fmt.Errorf("%w: end %s is before start %s", marker.ErrInvalid, to, from))
		return
	}
	format := q.Get("format")
	if format != "" && format != "jsonl" && format != "parquet" {
		marker.WriteError(w, fmt.Errorf("%w: format=%q: want jsonl or parquet", marker.ErrInvalid, format))
		return
	}
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	default:
		a.refusedBusy.Add(1)
		w.Header().Set("Retry-After", "1")
		marker.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"error": fmt.Sprintf(
			"%d sample downloads are in progress, the most served at once (--web.max-sample-requests): retry shortly",
			cap(a.slots))})
		return
	}
	// A download that cannot be written in time fails, and its slot is free again. (A response writer that has no
	// connection, as in a test calling the handler, has no deadline to set.)
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(a.opts.WriteTimeout))
	series, err := a.s.Window(g, from, to)
	if err != nil { // the only error is a GPU not sampled: the query's fault, as in the energy API
		marker.WriteError(w, fmt.Errorf("%w: gpu=%d: %v", marker.ErrInvalid, g, err))
		return
	}
	if n, limit := len(series.Samples), a.opts.MaxSamplesPerResponse; n > limit {
		a.refusedLarge.Add(1)
		marker.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf(
			"GPU %d has %d samples from start to end, more than one response carries (%d, --web.max-samples-per-response): "+
				"ask for end=%s (sample %d), then for the rest", g, n, limit,
			series.Samples[limit-1].Time.Format(time.RFC3339Nano), limit)})
		return
	}
	switch format {
	case "parquet":
		w.Header().Set("Content-Type", "application/vnd.apache.parquet")
		if err := a.writeParquet(w, g, series, from, to); err != nil {
			a.log.Error("serving samples as Parquet", "err", err)
		}
	default:
		w.Header().Set("Content-Type", "application/x-ndjson")
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		for _, s := range series.Samples {
			p := s.PowerW
			enc.Encode(sampleLine{Kind: trace.KindSample, GPU: g, Time: s.Time.Time(), PowerW: &p})
		}
		for _, c := range series.Counters {
			e := c.EnergyMJ
			enc.Encode(sampleLine{Kind: trace.KindCounter, GPU: g, Time: c.Time.Time(), EnergyMJ: &e})
		}
		bw.Flush()
	}
}

// parquetChunk is how many samples go into one row group of a download. The trace writer buffers a row group's
// rows, and its compressor's history grows with the group: a ten-minute ring (30,000 samples) written as one group
// allocated 47 MB, in groups of 8192 rows 10 MB (and a file 15 % larger), three times faster.
const parquetChunk = 8192

// writeParquet writes GPU g's series and the runs' events overlapping [from, to] as a lem trace, the samples in
// row groups of parquetChunk.
func (a *API) writeParquet(w io.Writer, g int, series trace.Series, from, to time.Time) error {
	env := a.s.Environment()
	tw, err := trace.NewStreamWriter(w, env)
	if err != nil {
		return err
	}
	for i := 0; i < len(series.Samples); i += parquetChunk {
		if err := tw.WriteSamples(g, series.Samples[i:min(i+parquetChunk, len(series.Samples))]); err != nil {
			return err
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	rest := trace.New(env)
	*rest.Series(g) = trace.Series{Counters: series.Counters, Telemetry: series.Telemetry}
	rest.Events = eventsBetween(a.runs, from, to)
	if err := tw.WriteTrace(rest); err != nil {
		return err
	}
	return tw.Close()
}

// eventsBetween returns the start, latest phases and end of runs overlapping [from, to], for the Parquet download.
func eventsBetween(runs *marker.Store, from, to time.Time) []trace.Event {
	var out []trace.Event
	for _, r := range runs.Snapshot() {
		if r.Start.After(to) || (!r.End.IsZero() && r.End.Before(from)) {
			continue
		}
		out = append(out, trace.Event{Time: r.Start, GPU: trace.NoGPU, Type: trace.EventRunStart, RunID: r.ID, Name: r.Experiment})
		for _, p := range r.Phases {
			out = append(out, trace.Event{Time: p.Start, GPU: trace.NoGPU, Type: trace.EventPhase, RunID: r.ID, Name: p.Name})
		}
		if !r.End.IsZero() {
			out = append(out, trace.Event{Time: r.End, GPU: trace.NoGPU, Type: trace.EventRunEnd, RunID: r.ID, Name: r.Experiment})
		}
	}
	return out
}

// ready is 200 once every selected GPU has delivered samples and none is lost.
func (a *API) ready(w http.ResponseWriter, _ *http.Request) {
	var problems []string
	for _, d := range a.s.Devices() {
		st, _ := a.s.Stats(d.Index)
		switch {
		case st.Lost:
			problems = append(problems, fmt.Sprintf("GPU %d is lost: %s", d.Index, st.LastError))
		case st.SamplesCaptured == 0 && st.Calls[sampler.CallSamples].NotSupported == 0:
			problems = append(problems, fmt.Sprintf("GPU %d has delivered no power samples yet", d.Index))
		}
	}
	if len(problems) > 0 {
		marker.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
		return
	}
	marker.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
