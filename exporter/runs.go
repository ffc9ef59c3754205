package exporter

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/trace"
)

// Marker errors, mapped to HTTP status codes by the API.
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrTooMany  = errors.New("too many active runs")
)

var (
	idRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)
	phaseRE = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,64}$`)
	keyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
)

const (
	maxExperimentLen = 128
	maxLabels        = 16
	maxValueLen      = 256
)

// Phase is one phase of a run.
type Phase struct {
	Name  string    `json:"name"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
}

// Run is an experiment run known to the exporter.
type Run struct {
	ID         string            `json:"run_id"`
	Experiment string            `json:"experiment"`
	Labels     map[string]string `json:"labels,omitempty"`
	Start      time.Time         `json:"start"`
	End        time.Time         `json:"end,omitzero"`
	Status     string            `json:"status,omitempty"`
	Phases     []Phase           `json:"phases,omitempty"`
	Results    map[string]string `json:"results,omitempty"`
}

func (r *Run) clone() Run {
	c := *r
	c.Phases = append([]Phase(nil), r.Phases...)
	return c
}

// Runs holds active runs and runs ended less than the grace period ago, and emits every change as an event.
type Runs struct {
	mu        sync.Mutex
	runs      map[string]*Run
	maxActive int
	grace     time.Duration
	clock     gpu.Clock
	emit      func(trace.Event)
}

// NewRuns makes the marker store. emit receives every marker as an event (the sampler's Emit: the recorder,
// remote write and any runner attached see them).
func NewRuns(clock gpu.Clock, maxActive int, grace time.Duration, emit func(trace.Event)) *Runs {
	return &Runs{runs: map[string]*Run{}, maxActive: maxActive, grace: grace, clock: clock, emit: emit}
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

func validValue(s string) bool {
	if len(s) > maxValueLen {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func newRunID(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Start begins a run now. An empty id gets a generated one.
func (rs *Runs) Start(id, experiment string, labels map[string]string) (Run, error) {
	return rs.StartAt(id, experiment, labels, time.Time{})
}

// StartAt begins a run at a given time; zero means now.
func (rs *Runs) StartAt(id, experiment string, labels map[string]string, at time.Time) (Run, error) {
	now := at
	if now.IsZero() {
		now = rs.clock.Now()
	}
	if id == "" {
		id = newRunID(now)
	}
	switch {
	case !idRE.MatchString(id):
		return Run{}, invalid("run_id %q: 1-64 letters, digits or _.:- (starting with a letter or digit)", id)
	case experiment == "" || len(experiment) > maxExperimentLen || !validValue(experiment):
		return Run{}, invalid("experiment %q: 1-%d printable characters", experiment, maxExperimentLen)
	case len(labels) > maxLabels:
		return Run{}, invalid("%d labels: at most %d", len(labels), maxLabels)
	}
	for k, v := range labels {
		if !keyRE.MatchString(k) || !validValue(v) {
			return Run{}, invalid("label %q=%q: keys are identifiers, values up to %d printable characters", k, v, maxValueLen)
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.pruneLocked(now)
	if _, ok := rs.runs[id]; ok {
		return Run{}, fmt.Errorf("%w: run %q already exists", ErrConflict, id)
	}
	active := 0
	for _, r := range rs.runs {
		if r.End.IsZero() {
			active++
		}
	}
	if active >= rs.maxActive {
		return Run{}, fmt.Errorf("%w: %d runs are active (limit %d); end one first", ErrTooMany, active, rs.maxActive)
	}
	r := &Run{ID: id, Experiment: experiment, Labels: labels, Start: now}
	rs.runs[id] = r
	attrs := map[string]string{"experiment": experiment}
	for k, v := range labels {
		attrs["label_"+k] = v
	}
	rs.emit(trace.Event{Time: now, GPU: trace.NoGPU, Type: trace.EventRunStart, RunID: id, Name: experiment, Attrs: attrs})
	return r.clone(), nil
}

// update applies change to active run id under the lock, stamped now, emits the event it returns and returns the
// updated run.
func (rs *Runs) update(id string, at time.Time, change func(r *Run, now time.Time) trace.Event) (Run, error) {
	now := at
	if now.IsZero() {
		now = rs.clock.Now()
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.runs[id]
	if !ok {
		return Run{}, fmt.Errorf("%w: no run %q", ErrNotFound, id)
	}
	if !r.End.IsZero() {
		return Run{}, fmt.Errorf("%w: run %q has ended", ErrConflict, id)
	}
	ev := change(r, now)
	ev.Time, ev.GPU, ev.RunID = now, trace.NoGPU, id
	rs.emit(ev)
	return r.clone(), nil
}

// Phase starts a phase of an active run now, ending the previous one.
func (rs *Runs) Phase(id, name string) (Run, error) { return rs.PhaseAt(id, name, time.Time{}) }

// PhaseAt starts a phase at a given time (the workload's own log timestamp); zero means now.
func (rs *Runs) PhaseAt(id, name string, at time.Time) (Run, error) {
	if !phaseRE.MatchString(name) {
		return Run{}, invalid("phase %q: 1-64 letters, digits or _.:/-", name)
	}
	return rs.update(id, at, func(r *Run, now time.Time) trace.Event {
		endPhase(r, now)
		r.Phases = append(r.Phases, Phase{Name: name, Start: now})
		return trace.Event{Type: trace.EventPhase, Name: name}
	})
}

func endPhase(r *Run, now time.Time) {
	if n := len(r.Phases); n > 0 && r.Phases[n-1].End.IsZero() {
		r.Phases[n-1].End = now
	}
}

// Result records key=value results (token counts, requests) of an active run.
func (rs *Runs) Result(id string, values map[string]string) (Run, error) {
	return rs.ResultAt(id, values, time.Time{})
}

// ResultAt records results at a given time; zero means now.
func (rs *Runs) ResultAt(id string, values map[string]string, at time.Time) (Run, error) {
	if len(values) == 0 || len(values) > maxLabels {
		return Run{}, invalid("%d result values: want 1-%d", len(values), maxLabels)
	}
	for k, v := range values {
		if !keyRE.MatchString(k) || v == "" || !validValue(v) {
			return Run{}, invalid("result %q=%q: keys are identifiers, values 1-%d printable characters", k, v, maxValueLen)
		}
	}
	return rs.update(id, at, func(r *Run, _ time.Time) trace.Event {
		if r.Results == nil {
			r.Results = map[string]string{}
		}
		for k, v := range values {
			r.Results[k] = v
		}
		return trace.Event{Type: trace.EventResult, Attrs: values}
	})
}

// End ends an active run now.
func (rs *Runs) End(id, status string) (Run, error) { return rs.EndAt(id, status, time.Time{}) }

// EndAt ends an active run at a given time; zero means now.
func (rs *Runs) EndAt(id, status string, at time.Time) (Run, error) {
	if status == "" {
		status = "ok"
	}
	if !keyRE.MatchString(status) {
		return Run{}, invalid("status %q: an identifier such as ok, failed, interrupted", status)
	}
	return rs.update(id, at, func(r *Run, now time.Time) trace.Event {
		endPhase(r, now)
		r.End, r.Status = now, status
		return trace.Event{Type: trace.EventRunEnd, Name: r.Experiment, Attrs: map[string]string{"status": status}}
	})
}

// pruneLocked forgets runs that ended more than the grace period ago.
func (rs *Runs) pruneLocked(now time.Time) {
	for id, r := range rs.runs {
		if !r.End.IsZero() && now.Sub(r.End) > rs.grace {
			delete(rs.runs, id)
		}
	}
}

// Snapshot returns active and recently ended runs, oldest first. Each run lists its current phase and phases that
// ended within the grace period, one per name (the latest), so every series is unique and ends cleanly.
func (rs *Runs) Snapshot() []Run {
	now := rs.clock.Now()
	rs.mu.Lock()
	rs.pruneLocked(now)
	out := make([]Run, 0, len(rs.runs))
	for _, r := range rs.runs {
		c := r.clone()
		latest := map[string]int{}
		var keep []Phase
		for _, p := range c.Phases {
			if !p.End.IsZero() && now.Sub(p.End) > rs.grace {
				continue
			}
			if i, ok := latest[p.Name]; ok {
				keep[i] = p
				continue
			}
			latest[p.Name] = len(keep)
			keep = append(keep, p)
		}
		c.Phases = keep
		out = append(out, c)
	}
	rs.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Get returns one run with its full phase history.
func (rs *Runs) Get(id string) (Run, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.runs[id]
	if !ok {
		return Run{}, false
	}
	return r.clone(), true
}
