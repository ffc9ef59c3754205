package exporter

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// API serves the raw-sample and health endpoints (the marker endpoints are the marker package's handler).
type API struct {
	runs *marker.Store
	s    *sampler.Sampler
	log  *slog.Logger
}

// NewAPI makes the sample and health API over a sampler; runs supply the events of a Parquet download.
func NewAPI(runs *marker.Store, s *sampler.Sampler, log *slog.Logger) *API {
	return &API{runs: runs, s: s, log: log}
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
// format=parquet, so a runner on the same host can use a running exporter instead of opening NVML itself.
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
	series, err := a.s.Window(g, from, to)
	if err != nil {
		marker.WriteJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	}
	switch q.Get("format") {
	case "parquet":
		tr := trace.New(a.s.Environment())
		*tr.Series(g) = series
		tr.Events = append(tr.Events, eventsBetween(a.runs, from, to)...)
		w.Header().Set("Content-Type", "application/vnd.apache.parquet")
		tw, err := trace.NewStreamWriter(w, tr.Env)
		if err == nil {
			err = tw.WriteTrace(tr)
		}
		if err == nil {
			err = tw.Close()
		}
		if err != nil {
			a.log.Error("serving samples as Parquet", "err", err)
		}
	case "", "jsonl":
		w.Header().Set("Content-Type", "application/x-ndjson")
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		for _, s := range series.Samples {
			p := s.PowerW
			enc.Encode(sampleLine{Kind: trace.KindSample, GPU: g, Time: s.Time, PowerW: &p})
		}
		for _, c := range series.Counters {
			e := c.EnergyMJ
			enc.Encode(sampleLine{Kind: trace.KindCounter, GPU: g, Time: c.Time, EnergyMJ: &e})
		}
		bw.Flush()
	default:
		marker.WriteError(w, fmt.Errorf("%w: format=%q: want jsonl or parquet", marker.ErrInvalid, q.Get("format")))
	}
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
