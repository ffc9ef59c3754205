package marker

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
)

// Meter answers the energy of a recent interval while the program runs; lem-exporter and lem-run give their
// handler one (the one accounting over their sampler's recent data).
type Meter interface {
	Energy(ctx context.Context, q EnergyQuery) (EnergyAnswer, error)
}

// EnergyQuery is an interval on some GPUs, with the baselines for adjusted energy, and how long the answer may wait
// for the data to cover the interval's end.
type EnergyQuery struct {
	Start, End time.Time
	GPUs       []int // nil: every sampled GPU
	Baselines  map[int]manifest.Baseline
	Wait       time.Duration
}

// GPUEnergy is one GPU's part of an answer.
type GPUEnergy struct {
	Index     int          `json:"gpu"`
	UUID      string       `json:"uuid"`
	EnergyJ   manifest.Num `json:"energy_j"`
	AdjustedJ manifest.Num `json:"adjusted_j"`
	Method    string       `json:"method"`
}

// EnergyAnswer is the energy of an interval: raw (hybrid: the counter's total, the samples' shape) and adjusted
// (minus the run's idle baseline; null without one), per GPU and summed. Final says a counter reading after the
// end was there (counter-exact); otherwise the end is extrapolated from the samples and a later query can refine it.
type EnergyAnswer struct {
	Name      string       `json:"name,omitempty"`
	ID        string       `json:"id,omitempty"`
	Start     time.Time    `json:"start"`
	End       time.Time    `json:"end"`
	DurationS float64      `json:"duration_s"`
	EnergyJ   manifest.Num `json:"energy_j"`
	AdjustedJ manifest.Num `json:"adjusted_j"`
	SampledJ  manifest.Num `json:"sampled_j"`
	GPUs      []GPUEnergy  `json:"gpus"`
	Final     bool         `json:"final"`
	Open      bool         `json:"open,omitempty"` // a window still open: its energy so far
	Warnings  []string     `json:"warnings,omitempty"`
}

// MaxWait bounds how long an energy query may wait for its data.
const MaxWait = 10 * time.Second

// query reads the common parameters of energy queries: wait=DURATION (default 2s) and gpus=0,1.
func query(r *http.Request) (wait time.Duration, gpus []int, err error) {
	q := r.URL.Query()
	wait = 2 * time.Second
	if s := q.Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 || wait > MaxWait {
			return 0, nil, invalid("wait=%q: a duration from 0 to %s", s, MaxWait)
		}
	}
	if s := q.Get("gpus"); s != "" {
		for _, f := range strings.Split(s, ",") {
			g, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || g < 0 || g > 1023 {
				return 0, nil, invalid("gpus=%q: GPU indices 0-1023, comma-separated", s)
			}
			gpus = append(gpus, g)
		}
	}
	return wait, gpus, nil
}

// runGPUs is a run's workload GPUs (its workload_gpus label); nil without one.
func runGPUs(r Run) []int {
	var out []int
	for _, f := range strings.Split(r.Labels["workload_gpus"], ",") {
		if g, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out = append(out, g)
		}
	}
	return out
}

// energyQuery reads an energy query's common parameters, or answers the request itself (no meter, bad input).
func (h *Handler) energyQuery(w http.ResponseWriter, r *http.Request) (wait time.Duration, gpus []int, ok bool) {
	if h.meter == nil {
		WriteJSON(w, http.StatusNotImplemented, map[string]string{"error": "this server answers no energy queries"})
		return 0, nil, false
	}
	wait, gpus, err := query(r)
	if err != nil {
		WriteError(w, err)
		return 0, nil, false
	}
	return wait, gpus, true
}

// windowEnergy answers GET /api/v1/runs/{id}/windows/{name}?id=&wait=: the window's energy on the run's GPUs
// with its baselines (so far, while it is open).
func (h *Handler) windowEnergy(w http.ResponseWriter, r *http.Request) {
	wait, gpus, ok := h.energyQuery(w, r)
	if !ok {
		return
	}
	runID, name, id := r.PathValue("id"), r.PathValue("name"), r.URL.Query().Get("id")
	run, ok := h.store.Get(runID)
	if !ok {
		WriteError(w, fmt.Errorf("%w: no run %q", ErrNotFound, runID))
		return
	}
	win, ok := h.store.Window(runID, name, id)
	if !ok {
		WriteError(w, fmt.Errorf("%w: no window %q of run %q (open, or among the latest %d ended)", ErrNotFound,
			windowKey(name, id), runID, MaxEndedWindows))
		return
	}
	end, open := win.End, win.End.IsZero()
	if open {
		end, wait = h.store.now(), 0
	}
	if gpus == nil {
		gpus = runGPUs(run)
	}
	ans, err := h.meter.Energy(r.Context(), EnergyQuery{Start: win.Start, End: end, GPUs: gpus, Baselines: run.Baselines, Wait: wait})
	if err != nil {
		WriteError(w, err)
		return
	}
	ans.Name, ans.ID, ans.Open = win.Name, win.ID, open
	WriteJSON(w, http.StatusOK, ans)
}

// intervalEnergy answers GET /api/v1/energy?start=&end=[&run=][&gpus=][&wait=]: any recent interval's energy,
// adjusted with a run's baselines when run is given.
func (h *Handler) intervalEnergy(w http.ResponseWriter, r *http.Request) {
	wait, gpus, ok := h.energyQuery(w, r)
	if !ok {
		return
	}
	q := EnergyQuery{Wait: wait, GPUs: gpus}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"start", &q.Start}, {"end", &q.End}} {
		v := r.URL.Query().Get(p.name)
		if v == "" {
			WriteError(w, invalid("query parameter %q is required", p.name))
			return
		}
		var err error
		if *p.t, err = ParseTime(v); err != nil {
			WriteError(w, fmt.Errorf("%s: %w", p.name, err))
			return
		}
	}
	if id := r.URL.Query().Get("run"); id != "" {
		run, ok := h.store.Get(id)
		if !ok {
			WriteError(w, fmt.Errorf("%w: no run %q", ErrNotFound, id))
			return
		}
		q.Baselines = run.Baselines
		if q.GPUs == nil {
			q.GPUs = runGPUs(run)
		}
	}
	ans, err := h.meter.Energy(r.Context(), q)
	if err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, ans)
}
