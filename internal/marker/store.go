package marker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// Limits bound what a store keeps, so an authenticated but buggy client cannot take the host down. Zero fields
// take the defaults.
type Limits struct {
	// MaxActive is the most runs active at once.
	MaxActive int
	// MaxEnded is the most ended runs kept (and exposed) during their grace period; the oldest go first.
	MaxEnded int
	// Grace is how long ended runs, and phases that ended, stay visible.
	Grace time.Duration
	// MaxPhaseNames is the most distinct phase names of one run.
	MaxPhaseNames int
	// MaxResultKeys is the most distinct result keys of one run.
	MaxResultKeys int
	// MaxRunAge ends active runs older than this with status "expired" (0: never).
	MaxRunAge time.Duration
}

// Defaults of Limits.
const (
	DefaultMaxActive     = 64
	DefaultMaxEnded      = 256
	DefaultGrace         = 5 * time.Minute
	DefaultMaxPhaseNames = 256
	DefaultMaxResultKeys = 64
	// StatusExpired ends a run whose lease ran out or that outlived MaxRunAge.
	StatusExpired = "expired"
)

func (l Limits) withDefaults() Limits {
	setInt := func(p *int, d int) {
		if *p <= 0 {
			*p = d
		}
	}
	setInt(&l.MaxActive, DefaultMaxActive)
	setInt(&l.MaxEnded, DefaultMaxEnded)
	setInt(&l.MaxPhaseNames, DefaultMaxPhaseNames)
	setInt(&l.MaxResultKeys, DefaultMaxResultKeys)
	if l.Grace <= 0 {
		l.Grace = DefaultGrace
	}
	return l
}

// Phase is one phase name of a run: its latest occurrence, and every occurrence summed. The trace keeps each
// occurrence; the store keeps one entry per name so that a workload marking 100,000 phases costs the same per
// marker as one marking two.
type Phase struct {
	Name   string    `json:"name"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end,omitzero"`
	Count  int       `json:"count"`
	TotalS float64   `json:"total_s"` // ended occurrences only
}

// Run is a run known to a store.
type Run struct {
	ID         string                    `json:"run_id"`
	Experiment string                    `json:"experiment"`
	Labels     map[string]string         `json:"labels,omitempty"`
	Start      time.Time                 `json:"start"`
	End        time.Time                 `json:"end,omitzero"`
	Status     string                    `json:"status,omitempty"`
	Phase      string                    `json:"phase,omitempty"` // the current phase
	Phases     []Phase                   `json:"phases,omitempty"`
	Results    map[string]string         `json:"results,omitempty"`
	Baselines  map[int]manifest.Baseline `json:"baselines,omitempty"`
	// Lease, when set, ends the run as expired if no write renews it for this long (a runner that died).
	LeaseS    float64   `json:"lease_s,omitempty"`
	renewedAt time.Time // last write
	phaseAt   map[string]int
	open      map[string]*Window // open windows by key
	ended     []Window           // the latest ended windows, oldest first
}

func (r *Run) clone() Run {
	c := *r
	c.Labels = maps.Clone(r.Labels)
	c.Phases = append([]Phase(nil), r.Phases...)
	c.Results = maps.Clone(r.Results)
	c.Baselines = maps.Clone(r.Baselines)
	c.phaseAt, c.open, c.ended = nil, nil, nil
	return c
}

// Active says whether the run has not ended.
func (r Run) Active() bool { return r.End.IsZero() }

// Stats counts what a store refused and expired, for self-metrics.
type Stats struct {
	Rejected map[string]uint64 // by reason: invalid, not_found, conflict, limit
	Expired  uint64            // active runs ended by their lease or MaxRunAge
	Evicted  uint64            // ended runs dropped before their grace period ended (MaxEnded)
}

// Store holds active runs and runs ended less than the grace period ago, and emits every change as a trace event.
type Store struct {
	mu     sync.Mutex
	runs   map[string]*Run
	limits Limits
	now    func() time.Time
	emit   func(trace.Event)
	stats  Stats
}

// NewStore makes a store. now is the clock markers are stamped with; emit receives every change as an event, in
// order (the sampler's Emit, so the recorder, remote write and runners see them).
func NewStore(now func() time.Time, limits Limits, emit func(trace.Event)) *Store {
	if emit == nil {
		emit = func(trace.Event) {}
	}
	return &Store{runs: map[string]*Run{}, limits: limits.withDefaults(), now: now, emit: emit,
		stats: Stats{Rejected: map[string]uint64{}}}
}

// Limits returns the effective limits.
func (s *Store) Limits() Limits { return s.limits }

func newRunID(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// StartReq starts a run.
type StartReq struct {
	RunID      string            `json:"run_id"`
	Experiment string            `json:"experiment"`
	Labels     map[string]string `json:"labels"`
	LeaseS     float64           `json:"lease_s"`
	At         time.Time         `json:"-"` // zero: now
}

func (s *Store) reject(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.countLocked(err)
	return err
}

func (s *Store) countLocked(err error) {
	for _, k := range []struct {
		err  error
		name string
	}{{ErrInvalid, "invalid"}, {ErrNotFound, "not_found"}, {ErrConflict, "conflict"}, {ErrLimit, "limit"}} {
		if errors.Is(err, k.err) {
			s.stats.Rejected[k.name]++
			return
		}
	}
}

// Start begins a run. An empty id gets a generated one.
func (s *Store) Start(req StartReq) (Run, error) {
	now := req.At
	if now.IsZero() {
		now = s.now()
	}
	if req.RunID == "" {
		req.RunID = newRunID(now)
	}
	if err := firstErr(ValidRunID(req.RunID), ValidExperiment(req.Experiment), ValidLabels(req.Labels),
		validLease(req.LeaseS)); err != nil {
		return Run{}, s.reject(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(s.now())
	if _, ok := s.runs[req.RunID]; ok {
		err := fmt.Errorf("%w: run %q already exists", ErrConflict, req.RunID)
		s.countLocked(err)
		return Run{}, err
	}
	active := 0
	for _, r := range s.runs {
		if r.Active() {
			active++
		}
	}
	if active >= s.limits.MaxActive {
		err := fmt.Errorf("%w: %d runs are active (limit %d); end one first", ErrLimit, active, s.limits.MaxActive)
		s.countLocked(err)
		return Run{}, err
	}
	r := &Run{ID: req.RunID, Experiment: req.Experiment, Labels: maps.Clone(req.Labels), Start: now, LeaseS: req.LeaseS,
		renewedAt: s.now(), phaseAt: map[string]int{}}
	s.runs[r.ID] = r
	attrs := map[string]string{"experiment": req.Experiment}
	for k, v := range req.Labels {
		attrs["label_"+k] = v
	}
	s.emit(trace.Event{Time: now, GPU: trace.NoGPU, Type: trace.EventRunStart, RunID: r.ID, Name: r.Experiment, Attrs: attrs})
	return r.clone(), nil
}

func validLease(s float64) error {
	if s < 0 || s > 7*24*3600 || s != s {
		return invalid("lease_s %g: want 0 (none) to 604800 seconds", s)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// update applies change to active run id under the lock, stamped at (zero: now), and emits the events it returns.
func (s *Store) update(id string, at time.Time, change func(r *Run, at time.Time) ([]trace.Event, error)) (Run, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if at.IsZero() {
		at = now
	}
	s.pruneLocked(now)
	r, ok := s.runs[id]
	if !ok {
		err := fmt.Errorf("%w: no run %q", ErrNotFound, id)
		s.countLocked(err)
		return Run{}, err
	}
	if !r.Active() {
		err := fmt.Errorf("%w: run %q has ended (%s)", ErrConflict, id, r.Status)
		s.countLocked(err)
		return Run{}, err
	}
	evs, err := change(r, at)
	if err != nil {
		s.countLocked(err)
		return Run{}, err
	}
	r.renewedAt = now
	for _, ev := range evs {
		ev.Time, ev.RunID = at, id
		s.emit(ev)
	}
	return r.clone(), nil
}

// Phase starts a phase of an active run at at (zero: now), ending the current one.
func (s *Store) Phase(id, name string, at time.Time) (Run, error) {
	if err := ValidPhase(name); err != nil {
		return Run{}, s.reject(err)
	}
	return s.update(id, at, func(r *Run, at time.Time) ([]trace.Event, error) {
		i, seen := r.phaseAt[name]
		if !seen && len(r.Phases) >= s.limits.MaxPhaseNames {
			return nil, fmt.Errorf("%w: run %q has %d phase names (limit %d)", ErrLimit, r.ID, len(r.Phases), s.limits.MaxPhaseNames)
		}
		endPhase(r, at)
		if !seen {
			i = len(r.Phases)
			r.phaseAt[name] = i
			r.Phases = append(r.Phases, Phase{Name: name})
		}
		p := &r.Phases[i]
		p.Start, p.End = at, time.Time{}
		p.Count++
		r.Phase = name
		return []trace.Event{{GPU: trace.NoGPU, Type: trace.EventPhase, Name: name}}, nil
	})
}

// EndPhase ends the current phase of an active run at at (zero: now) without starting another.
func (s *Store) EndPhase(id string, at time.Time) (Run, error) {
	return s.update(id, at, func(r *Run, at time.Time) ([]trace.Event, error) {
		if r.Phase == "" {
			return nil, fmt.Errorf("%w: run %q has no current phase", ErrConflict, r.ID)
		}
		name := r.Phase
		endPhase(r, at)
		return []trace.Event{{GPU: trace.NoGPU, Type: trace.EventPhaseEnd, Name: name}}, nil
	})
}

func endPhase(r *Run, at time.Time) {
	if r.Phase == "" {
		return
	}
	p := &r.Phases[r.phaseAt[r.Phase]]
	p.End = at
	if at.After(p.Start) {
		p.TotalS += at.Sub(p.Start).Seconds()
	}
	r.Phase = ""
}

// Result records key=value results of an active run: numbers add up, other values replace (AddResults).
func (s *Store) Result(id string, values map[string]string, at time.Time) (Run, error) {
	if err := ValidResults(values); err != nil {
		return Run{}, s.reject(err)
	}
	values = maps.Clone(values)
	return s.update(id, at, func(r *Run, _ time.Time) ([]trace.Event, error) {
		if r.Results == nil {
			r.Results = map[string]string{}
		}
		added := 0
		for k := range values {
			if _, ok := r.Results[k]; !ok {
				added++
			}
		}
		if len(r.Results)+added > s.limits.MaxResultKeys {
			return nil, fmt.Errorf("%w: run %q would have %d result keys (limit %d)", ErrLimit, r.ID,
				len(r.Results)+added, s.limits.MaxResultKeys)
		}
		AddResults(r.Results, values)
		return []trace.Event{{GPU: trace.NoGPU, Type: trace.EventResult, Attrs: values}}, nil
	})
}

// Baseline records one GPU's idle baseline for an active run.
func (s *Store) Baseline(id string, gpu int, b manifest.Baseline) (Run, error) {
	if err := ValidBaseline(gpu, b); err != nil {
		return Run{}, s.reject(err)
	}
	return s.update(id, time.Time{}, func(r *Run, _ time.Time) ([]trace.Event, error) {
		if r.Baselines == nil {
			r.Baselines = map[int]manifest.Baseline{}
		}
		if _, ok := r.Baselines[gpu]; !ok && len(r.Baselines) >= 1024 {
			return nil, fmt.Errorf("%w: run %q has baselines of 1024 GPUs", ErrLimit, r.ID)
		}
		r.Baselines[gpu] = b
		return []trace.Event{BaselineEvent(gpu, b)}, nil
	})
}

// Renew keeps an active run's lease alive.
func (s *Store) Renew(id string) (Run, error) {
	return s.update(id, time.Time{}, func(*Run, time.Time) ([]trace.Event, error) { return nil, nil })
}

// End ends an active run at at (zero: now) with a status (default ok).
func (s *Store) End(id, status string, at time.Time) (Run, error) {
	if status == "" {
		status = "ok"
	}
	if err := ValidStatus(status); err != nil {
		return Run{}, s.reject(err)
	}
	return s.update(id, at, func(r *Run, at time.Time) ([]trace.Event, error) {
		endPhase(r, at)
		evs := endWindows(r, at)
		r.End, r.Status = at, status
		return append(evs, trace.Event{GPU: trace.NoGPU, Type: trace.EventRunEnd, Name: r.Experiment,
			Attrs: map[string]string{"status": status}}), nil
	})
}

// pruneLocked expires active runs whose lease or age ran out, and forgets ended runs past their grace period (and
// the oldest beyond MaxEnded).
func (s *Store) pruneLocked(now time.Time) {
	var ended []*Run
	for id, r := range s.runs {
		if r.Active() {
			lease := r.LeaseS > 0 && now.Sub(r.renewedAt).Seconds() > r.LeaseS
			old := s.limits.MaxRunAge > 0 && now.Sub(r.Start) > s.limits.MaxRunAge
			if lease || old {
				endPhase(r, now)
				for _, ev := range endWindows(r, now) {
					ev.Time, ev.RunID = now, id
					s.emit(ev)
				}
				r.End, r.Status = now, StatusExpired
				s.stats.Expired++
				s.emit(trace.Event{Time: now, GPU: trace.NoGPU, Type: trace.EventRunEnd, RunID: id, Name: r.Experiment,
					Attrs: map[string]string{"status": StatusExpired}})
			}
			continue
		}
		if now.Sub(r.End) > s.limits.Grace {
			delete(s.runs, id)
			continue
		}
		ended = append(ended, r)
	}
	if over := len(ended) - s.limits.MaxEnded; over > 0 {
		sort.Slice(ended, func(i, j int) bool { return ended[i].End.Before(ended[j].End) })
		for _, r := range ended[:over] {
			delete(s.runs, r.ID)
			s.stats.Evicted++
		}
	}
}

// Snapshot returns active and recently ended runs, oldest first, each with its current phase and the phases that
// ended within the grace period (the latest occurrence of each name), so every series is unique and ends cleanly.
func (s *Store) Snapshot() []Run {
	s.mu.Lock()
	now := s.now()
	s.pruneLocked(now)
	out := make([]Run, 0, len(s.runs))
	for _, r := range s.runs {
		c := r.clone()
		keep := c.Phases[:0]
		for _, p := range c.Phases {
			if p.End.IsZero() || now.Sub(p.End) <= s.limits.Grace {
				keep = append(keep, p)
			}
		}
		c.Phases = keep
		out = append(out, c)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.Before(out[j].Start)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Get returns one run with every phase name it has had.
func (s *Store) Get(id string) (Run, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(s.now())
	r, ok := s.runs[id]
	if !ok {
		return Run{}, false
	}
	return r.clone(), true
}

// Stats returns what the store refused, expired and evicted so far.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Rejected = maps.Clone(s.stats.Rejected)
	return st
}

// ActiveCount is how many runs are active.
func (s *Store) ActiveCount() int {
	n := 0
	for _, r := range s.Snapshot() {
		if r.Active() {
			n++
		}
	}
	return n
}
