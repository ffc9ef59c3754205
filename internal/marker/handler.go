package marker

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
)

// TokenHeader carries the marker token when the Authorization header is taken by the web server's basic auth.
const TokenHeader = "X-Lem-Marker-Token"

// MaxBody bounds request bodies.
const MaxBody = 64 << 10

// MaxSkew bounds how far a marker's own time ("at") may lie from the store's clock.
const MaxSkew = 24 * time.Hour

// Handler serves the marker API over a store: reads open, writes authenticated.
type Handler struct {
	store *Store
	token string // empty: writes only from loopback clients
	log   *slog.Logger
	meter Meter // answers energy queries; nil: none
}

// NewHandler serves store; token empty means writes are accepted from loopback clients only.
func NewHandler(store *Store, token string, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{store: store, token: token, log: log}
}

// WithMeter lets the handler answer energy queries (windows, intervals) with m.
func (h *Handler) WithMeter(m Meter) *Handler {
	h.meter = m
	return h
}

// Register adds the marker routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/runs", h.list)
	mux.HandleFunc("GET /api/v1/runs/{id}", h.get)
	mux.Handle("POST /api/v1/runs", h.writer(write(h, http.StatusCreated, h.start)))
	mux.Handle("POST /api/v1/runs/{id}/phase", h.writer(write(h, http.StatusOK, h.phase)))
	mux.Handle("POST /api/v1/runs/{id}/phase/end", h.writer(write(h, http.StatusOK, h.endPhase)))
	mux.Handle("POST /api/v1/runs/{id}/result", h.writer(h.result))
	mux.Handle("POST /api/v1/runs/{id}/baseline", h.writer(h.baseline))
	mux.Handle("POST /api/v1/runs/{id}/renew", h.writer(write(h, http.StatusOK, h.renew)))
	mux.Handle("POST /api/v1/runs/{id}/end", h.writer(write(h, http.StatusOK, h.end)))
	mux.Handle("POST /api/v1/runs/{id}/windows", h.writer(write(h, http.StatusCreated, h.beginWindow)))
	mux.Handle("POST /api/v1/runs/{id}/windows/end", h.writer(write(h, http.StatusOK, h.endWindow)))
	mux.HandleFunc("GET /api/v1/runs/{id}/windows/{name}", h.windowEnergy)
	mux.HandleFunc("GET /api/v1/energy", h.intervalEnergy)
}

// WriteJSON writes v as a JSON response.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// WriteError writes err as a JSON error with the status code its kind maps to (400 for anything else invalid).
func WriteError(w http.ResponseWriter, err error) {
	WriteJSON(w, StatusOf(err), map[string]string{"error": err.Error()})
}

// StatusOf maps the protocol's errors to HTTP status codes.
func StatusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrLimit):
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// Authorized says whether r may write markers with token (empty: loopback clients only). The token comes as
// "Authorization: Bearer …" (scheme case-insensitive, RFC 7235) or, when the web server's basic auth takes the
// Authorization header, in X-Lem-Marker-Token.
func Authorized(r *http.Request, token string) (int, error) {
	if token == "" {
		if !IsLoopback(r.RemoteAddr) {
			return http.StatusForbidden, errors.New("marker writes are accepted from loopback clients only; " +
				"configure --markers.token-file to accept authenticated writes from elsewhere")
		}
		return 0, nil
	}
	got := r.Header.Get(TokenHeader)
	if got == "" {
		scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			got = strings.TrimSpace(cred)
		}
	}
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return http.StatusUnauthorized, errors.New("marker writes need the token: Authorization: Bearer …, or " +
			TokenHeader + " when basic auth is on")
	}
	return 0, nil
}

// writer guards a write endpoint and bounds its body.
func (h *Handler) writer(fn http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, err := Authorized(r, h.token); err != nil {
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="lem markers"`)
			}
			WriteJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		fn(w, r)
	})
}

// IsLoopback says whether a remote address is a loopback one.
func IsLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Decode reads one JSON object into v: unknown fields and anything after the object are errors; an empty body
// leaves v as it is.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return invalid("request body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("request body: data after the JSON object")
	}
	return nil
}

// Time is a marker's own time in a request: RFC 3339 text or Unix seconds; zero when absent.
type Time struct{ time.Time }

// UnmarshalJSON reads RFC 3339 or Unix seconds; non-finite or absurd numbers are errors.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		p, err := ParseTime(s)
		t.Time = p
		return err
	}
	p, err := ParseTime(string(b))
	t.Time = p
	return err
}

// ParseTime reads RFC 3339 or Unix seconds (fractions allowed), refusing NaN, infinities and years outside
// 1970-2262 (what a time.Time in nanoseconds holds).
func ParseTime(s string) (time.Time, error) {
	if t, ok := decimalSeconds(s); ok {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > math.MaxInt64/1e9 {
			return time.Time{}, invalid("time %q: want RFC 3339 or Unix seconds after 1970", s)
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() < 1970 || t.Year() > 2262 {
		return time.Time{}, invalid("time %q: want RFC 3339 or Unix seconds", s)
	}
	return t, nil
}

// decimalSeconds reads plain decimal Unix seconds ("1764381600.123456789") exactly to the nanosecond, where a
// float64 keeps only ~0.2 µs of today's times; digits past the ninth decimal are dropped. ok is false for any
// other form (exponents, signs, RFC 3339), which ParseTime reads otherwise.
func decimalSeconds(s string) (time.Time, bool) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || len(whole) > 11 || (dot && frac == "") || !digits(whole) || !digits(frac) {
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || sec >= math.MaxInt64/int64(time.Second) {
		return time.Time{}, false
	}
	var ns int64
	for i := range 9 {
		ns *= 10
		if i < len(frac) {
			ns += int64(frac[i] - '0')
		}
	}
	return time.Unix(sec, ns).UTC(), true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (h *Handler) at(t Time) (time.Time, error) {
	if t.IsZero() {
		return time.Time{}, nil
	}
	if !withinSkew(t.Time, h.store.now()) {
		return time.Time{}, invalid("at %s is more than %s from the exporter's clock", t.Format(time.RFC3339Nano), MaxSkew)
	}
	return t.Time, nil
}

func (h *Handler) list(w http.ResponseWriter, _ *http.Request) {
	active, recent := []Run{}, []Run{}
	for _, r := range h.store.Snapshot() {
		if r.Active() {
			active = append(active, r)
		} else {
			recent = append(recent, r)
		}
	}
	WriteJSON(w, http.StatusOK, map[string][]Run{"active": active, "recent": recent})
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	run, ok := h.store.Get(r.PathValue("id"))
	if !ok {
		WriteError(w, fmt.Errorf("%w: no run %q", ErrNotFound, r.PathValue("id")))
		return
	}
	WriteJSON(w, http.StatusOK, run)
}

func (h *Handler) respond(w http.ResponseWriter, code int, run Run, err error) {
	if err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, code, run)
}

// stamp is a write request's optional "at": the marker's own time.
type stamp struct {
	At Time `json:"at"`
}

func (s stamp) when() Time { return s.At }

// write decodes a write request, checks its time and answers with the run do returns.
func write[T interface{ when() Time }, R any](h *Handler, code int, do func(r *http.Request, req T, at time.Time) (R, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req T
		if err := Decode(r.Body, &req); err != nil {
			WriteError(w, err)
			return
		}
		at, err := h.at(req.when())
		if err != nil {
			WriteError(w, err)
			return
		}
		out, err := do(r, req, at)
		if err != nil {
			WriteError(w, err)
			return
		}
		WriteJSON(w, code, out)
	}
}

type startReq struct {
	StartReq
	stamp
}

func (h *Handler) start(r *http.Request, req startReq, at time.Time) (Run, error) {
	req.StartReq.At = at
	run, err := h.store.Start(req.StartReq)
	if err == nil {
		h.log.Info("run started", "run_id", run.ID, "experiment", run.Experiment)
	}
	return run, err
}

type phaseReq struct {
	Name string `json:"name"`
	stamp
}

func (h *Handler) phase(r *http.Request, req phaseReq, at time.Time) (Run, error) {
	return h.store.Phase(r.PathValue("id"), req.Name, at)
}

func (h *Handler) endPhase(r *http.Request, _ stamp, at time.Time) (Run, error) {
	return h.store.EndPhase(r.PathValue("id"), at)
}

// result takes {"key": value, …} with numbers, strings or booleans; "at" may carry the marker's own time.
func (h *Handler) result(w http.ResponseWriter, r *http.Request) {
	var req map[string]json.RawMessage
	if err := Decode(r.Body, &req); err != nil {
		WriteError(w, err)
		return
	}
	var at Time
	values := make(map[string]string, len(req))
	for k, raw := range req {
		if k == "at" {
			if err := json.Unmarshal(raw, &at); err != nil {
				WriteError(w, invalid("at: %v", err))
				return
			}
			continue
		}
		v, err := resultValue(raw)
		if err != nil {
			WriteError(w, invalid("result %q: %v", k, err))
			return
		}
		values[k] = v
	}
	t, err := h.at(at)
	if err != nil {
		WriteError(w, err)
		return
	}
	run, err := h.store.Result(r.PathValue("id"), values, t)
	h.respond(w, http.StatusOK, run, err)
}

// resultValue turns a JSON number, string or boolean into the marker's text form. Numbers keep their literal
// text, so 1e308 stays a number of any size.
func resultValue(raw json.RawMessage) (string, error) {
	var v any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		if _, ok := Number(x.String()); !ok {
			return "", fmt.Errorf("%s is not a finite number", x)
		}
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	return "", errors.New("want a number, string or boolean")
}

func (h *Handler) baseline(w http.ResponseWriter, r *http.Request) {
	var req struct {
		GPU      int                `json:"gpu"`
		Baseline *manifest.Baseline `json:"baseline"`
	}
	if err := Decode(r.Body, &req); err != nil {
		WriteError(w, err)
		return
	}
	if req.Baseline == nil {
		WriteError(w, invalid("baseline: missing"))
		return
	}
	b := *req.Baseline
	b.IQRW = b.P75W - b.P25W
	run, err := h.store.Baseline(r.PathValue("id"), req.GPU, b)
	h.respond(w, http.StatusOK, run, err)
}

func (h *Handler) renew(r *http.Request, _ stamp, _ time.Time) (Run, error) {
	return h.store.Renew(r.PathValue("id"))
}

type endReq struct {
	Status string `json:"status"`
	stamp
}

func (h *Handler) end(r *http.Request, req endReq, at time.Time) (Run, error) {
	run, err := h.store.End(r.PathValue("id"), req.Status, at)
	if err == nil {
		h.log.Info("run ended", "run_id", run.ID, "status", run.Status)
	}
	return run, err
}

type windowReq struct {
	Name   string         `json:"name"`
	ID     string         `json:"id"`
	Values map[string]any `json:"values"`
	stamp
}

func (h *Handler) beginWindow(r *http.Request, req windowReq, at time.Time) (Window, error) {
	if len(req.Values) > 0 {
		return Window{}, invalid("values go on the window's end")
	}
	return h.store.BeginWindow(r.PathValue("id"), req.Name, req.ID, at)
}

func (h *Handler) endWindow(r *http.Request, req windowReq, at time.Time) (Window, error) {
	values := map[string]string{}
	for k, v := range req.Values {
		raw, _ := json.Marshal(v)
		s, err := resultValue(raw)
		if err != nil {
			return Window{}, invalid("window value %q: %v", k, err)
		}
		values[k] = s
	}
	return h.store.EndWindow(r.PathValue("id"), req.Name, req.ID, values, at)
}
