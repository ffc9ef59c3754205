package exporter

import (
	"bufio"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// API serves the marker, raw-sample and health endpoints.
type API struct {
	runs  *Runs
	s     *sampler.Sampler
	token string // empty: writes only from loopback clients
	log   *slog.Logger
}

// NewAPI makes the marker/sample/health API over a marker store and a sampler; token empty means writes from
// loopback only. lem-run serves it to its workload as LEM_MARKER_URL.
func NewAPI(runs *Runs, s *sampler.Sampler, token string, log *slog.Logger) *API {
	return &API{runs: runs, s: s, token: token, log: log}
}

// maxBody bounds request bodies.
const maxBody = 64 << 10

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/runs", a.listRuns)
	mux.HandleFunc("GET /api/v1/runs/{id}", a.getRun)
	mux.Handle("POST /api/v1/runs", a.writer(a.startRun))
	mux.Handle("POST /api/v1/runs/{id}/phase", a.writer(a.startPhase))
	mux.Handle("POST /api/v1/runs/{id}/result", a.writer(a.addResult))
	mux.Handle("POST /api/v1/runs/{id}/end", a.writer(a.endRun))
	mux.HandleFunc("GET /api/v1/samples", a.samples)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.ready)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrTooMany):
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// writer guards a write endpoint: the bearer token when one is configured, otherwise loopback clients only.
func (a *API) writer(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="lem markers"`)
				writeError(w, http.StatusUnauthorized, errors.New("marker writes need the bearer token (Authorization: Bearer …)"))
				return
			}
		} else if !isLoopback(r.RemoteAddr) {
			writeError(w, http.StatusForbidden, errors.New("marker writes are accepted from loopback clients only; "+
				"configure --markers.token-file to accept authenticated writes from elsewhere"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r)
	})
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// decode reads a JSON body into v; an empty body leaves v as is.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return invalid("request body: %v", err)
	}
	return nil
}

func (a *API) listRuns(w http.ResponseWriter, _ *http.Request) {
	runs := a.runs.Snapshot()
	active, recent := []Run{}, []Run{}
	for _, r := range runs {
		if r.End.IsZero() {
			active = append(active, r)
		} else {
			recent = append(recent, r)
		}
	}
	writeJSON(w, http.StatusOK, map[string][]Run{"active": active, "recent": recent})
}

func (a *API) getRun(w http.ResponseWriter, r *http.Request) {
	run, ok := a.runs.Get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no run %q", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, run)
}

func (a *API) respond(w http.ResponseWriter, code int, run Run, err error) {
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, code, run)
}

func (a *API) startRun(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RunID      string            `json:"run_id"`
		Experiment string            `json:"experiment"`
		Labels     map[string]string `json:"labels"`
	}
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	run, err := a.runs.Start(req.RunID, req.Experiment, req.Labels)
	if err == nil {
		a.log.Info("run started", "run_id", run.ID, "experiment", run.Experiment)
	}
	a.respond(w, http.StatusCreated, run, err)
}

func (a *API) startPhase(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	run, err := a.runs.Phase(r.PathValue("id"), req.Name)
	a.respond(w, http.StatusOK, run, err)
}

func (a *API) addResult(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	values := make(map[string]string, len(req))
	for k, v := range req {
		switch x := v.(type) {
		case string:
			values[k] = x
		case float64:
			values[k] = strconv.FormatFloat(x, 'f', -1, 64)
		case bool:
			values[k] = strconv.FormatBool(x)
		default:
			writeError(w, http.StatusBadRequest, invalid("result %q: want a number, string or boolean", k))
			return
		}
	}
	run, err := a.runs.Result(r.PathValue("id"), values)
	a.respond(w, http.StatusOK, run, err)
}

func (a *API) endRun(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Status string `json:"status"`
	}
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	run, err := a.runs.End(r.PathValue("id"), req.Status)
	if err == nil {
		a.log.Info("run ended", "run_id", run.ID, "status", run.Status)
	}
	a.respond(w, http.StatusOK, run, err)
}

// parseTime accepts RFC 3339 or Unix seconds (fractions allowed).
func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, invalid("query parameter %q is required", name)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		sec, frac := int64(f), f-float64(int64(f))
		return time.Unix(sec, int64(frac*1e9)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, invalid("%s=%q: want RFC 3339 or Unix seconds", name, s)
	}
	return t, nil
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
		writeError(w, http.StatusBadRequest, invalid("gpu=%q: want a GPU index", q.Get("gpu")))
		return
	}
	from, err := parseTime("start", q.Get("start"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	to, err := parseTime("end", q.Get("end"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if to.Before(from) {
		writeError(w, http.StatusBadRequest, invalid("end %s is before start %s", to, from))
		return
	}
	series, err := a.s.Window(g, from, to)
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	switch q.Get("format") {
	case "parquet":
		tr := trace.New(a.s.Environment())
		*tr.Series(g) = series
		tr.Events = append(tr.Events, a.runs.eventsBetween(from, to)...)
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
		writeError(w, http.StatusBadRequest, invalid("format=%q: want jsonl or parquet", q.Get("format")))
	}
}

// eventsBetween returns phase events of runs overlapping [from, to], for the Parquet download.
func (rs *Runs) eventsBetween(from, to time.Time) []trace.Event {
	var out []trace.Event
	for _, r := range rs.Snapshot() {
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
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
