package marker

import (
	"fmt"
	"maps"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// Window is a named interval of a run, begun and ended explicitly; windows may overlap and nest (a window per
// generate() call inside a window for the whole batch), unlike phases. ID tells concurrent windows of one name
// apart (a request id); Values are counts reported at the end (output_tokens).
type Window struct {
	Name   string            `json:"name"`
	ID     string            `json:"id,omitempty"`
	Start  time.Time         `json:"start"`
	End    time.Time         `json:"end,omitzero"`
	Values map[string]string `json:"values,omitempty"`
}

// Key names a window within its run.
func (w Window) Key() string { return windowKey(w.Name, w.ID) }

func windowKey(name, id string) string {
	if id == "" {
		return name
	}
	return name + "#" + id
}

// Limits of windows per run (beyond Limits): open at once, and ended ones kept for queries (the trace keeps all).
const (
	MaxOpenWindows  = 4096
	MaxEndedWindows = 4096
)

// ValidWindowID checks a window id: up to 64 letters, digits or _.:-.
func ValidWindowID(id string) error {
	if id != "" && !runIDRE.MatchString(id) {
		return invalid("window id %q: 1-64 letters, digits or _.:- starting with a letter or digit", id)
	}
	return nil
}

// BeginWindow opens a window of an active run at at (zero: now).
func (s *Store) BeginWindow(runID, name, id string, at time.Time) (Window, error) {
	if err := firstErr(ValidPhase(name), ValidWindowID(id)); err != nil {
		return Window{}, s.reject(err)
	}
	var w Window
	_, err := s.update(runID, at, func(r *Run, at time.Time) ([]trace.Event, error) {
		if r.open == nil {
			r.open = map[string]*Window{}
		}
		key := windowKey(name, id)
		if _, ok := r.open[key]; ok {
			return nil, fmt.Errorf("%w: window %q of run %q is already open", ErrConflict, key, r.ID)
		}
		if len(r.open) >= MaxOpenWindows {
			return nil, fmt.Errorf("%w: run %q has %d open windows (limit %d)", ErrLimit, r.ID, len(r.open), MaxOpenWindows)
		}
		w = Window{Name: name, ID: id, Start: at}
		r.open[key] = &w
		return []trace.Event{{GPU: trace.NoGPU, Type: trace.EventWindowBegin, Name: name, Attrs: idAttrs(id, nil)}}, nil
	})
	return w, err
}

// EndWindow ends an open window of an active run at at (zero: now), with counts for it (may be nil).
func (s *Store) EndWindow(runID, name, id string, values map[string]string, at time.Time) (Window, error) {
	if err := firstErr(ValidPhase(name), ValidWindowID(id)); err != nil {
		return Window{}, s.reject(err)
	}
	if len(values) > 0 {
		if err := ValidResults(values); err != nil {
			return Window{}, s.reject(err)
		}
	}
	var w Window
	_, err := s.update(runID, at, func(r *Run, at time.Time) ([]trace.Event, error) {
		key := windowKey(name, id)
		open, ok := r.open[key]
		if !ok {
			return nil, fmt.Errorf("%w: no open window %q in run %q", ErrNotFound, key, r.ID)
		}
		delete(r.open, key)
		open.End, open.Values = at, maps.Clone(values)
		w = *open
		r.ended = append(r.ended, w)
		if len(r.ended) > MaxEndedWindows {
			r.ended = r.ended[len(r.ended)-MaxEndedWindows:]
		}
		return []trace.Event{{GPU: trace.NoGPU, Type: trace.EventWindowEnd, Name: name, Attrs: idAttrs(id, values)}}, nil
	})
	return w, err
}

// Window returns a run's window by name and id: open, or among the most recently ended (the latest of that key).
func (s *Store) Window(runID, name, id string) (Window, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[runID]
	if !ok {
		return Window{}, false
	}
	key := windowKey(name, id)
	if w, ok := r.open[key]; ok {
		return *w, true
	}
	for i := len(r.ended) - 1; i >= 0; i-- {
		if r.ended[i].Key() == key {
			return r.ended[i], true
		}
	}
	return Window{}, false
}

// endWindows ends every open window of r at at (the run's end), with an event each marking it ended by the run.
func endWindows(r *Run, at time.Time) []trace.Event {
	var evs []trace.Event
	for key, w := range r.open {
		w.End = at
		r.ended = append(r.ended, *w)
		evs = append(evs, trace.Event{GPU: trace.NoGPU, Type: trace.EventWindowEnd, Name: w.Name,
			Attrs: idAttrs(w.ID, map[string]string{"ended_by": "run_end"})})
		delete(r.open, key)
	}
	return evs
}

func idAttrs(id string, values map[string]string) map[string]string {
	a := maps.Clone(values)
	if id != "" {
		if a == nil {
			a = map[string]string{}
		}
		a[trace.AttrWindowID] = id
	}
	return a
}
