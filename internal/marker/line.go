package marker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// Marker line prefixes a workload prints on its output.
const (
	PhasePrefix       = "LEM_PHASE"        // LEM_PHASE <name> [at=<time>]
	PhaseEndPrefix    = "LEM_PHASE_END"    // LEM_PHASE_END [at=<time>]
	ResultPrefix      = "LEM_RESULT"       // LEM_RESULT [at=<time>] key=value …
	WindowBeginPrefix = "LEM_WINDOW_BEGIN" // LEM_WINDOW_BEGIN <name> [id=<id>] [at=<time>]
	WindowEndPrefix   = "LEM_WINDOW_END"   // LEM_WINDOW_END <name> [id=<id>] [at=<time>] [key=value …]
	// ProbeMarkPrefix is the "MARK <name> <unix ns> [k=v …]" form of the recorded workloads, which carry their
	// own timestamps.
	ProbeMarkPrefix = "MARK"
)

// MaxLineLen is the longest output line parsed for a marker; longer lines are passed through unparsed (a marker
// is a few dozen bytes, a progress bar can be megabytes).
const MaxLineLen = 4096

// AttrAt is a marker line's own time: at=<RFC 3339 or Unix seconds>, as a request's "at". A line is read a little
// after it is printed (pipe, log driver, scheduling: 0.1-0.5 ms, more under load); a workload that stamps its
// lines with its own clock places edges where it made them, as markers posted over HTTP with "at" are.
const AttrAt = "at"

// ParseLine parses one line of workload output. ok is false for ordinary output. A line that starts like a
// marker but is malformed returns ok true and an error: the line is passed through, and the caller records the
// rejection. now stamps markers that carry no time of their own (at=), exactly: an event whose time differs from
// now came with its own. A line's own time must lie within MaxSkew of now.
func ParseLine(line string, now time.Time) (evs []trace.Event, ok bool, err error) {
	if len(line) > MaxLineLen {
		return nil, false, nil
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return nil, false, nil
	}
	switch f[0] {
	case PhasePrefix:
		if len(f) < 2 || len(f) > 3 {
			return nil, true, fmt.Errorf("malformed phase marker %q: want %q", line, PhasePrefix+" <name> [at=<time>]")
		}
		if err := ValidPhase(f[1]); err != nil {
			return nil, true, fmt.Errorf("malformed phase marker %q: %w", line, err)
		}
		at, err := lineTime(f[2:], now)
		if err != nil {
			return nil, true, fmt.Errorf("malformed phase marker %q: %w", line, err)
		}
		return []trace.Event{{Time: at, GPU: trace.NoGPU, Type: trace.EventPhase, Name: f[1]}}, true, nil
	case PhaseEndPrefix:
		at, err := lineTime(f[1:], now)
		if err != nil {
			return nil, true, fmt.Errorf("malformed phase end marker %q: %w", line, err)
		}
		return []trace.Event{{Time: at, GPU: trace.NoGPU, Type: trace.EventPhaseEnd}}, true, nil
	case ResultPrefix:
		attrs := map[string]string{}
		for _, kv := range f[1:] {
			k, v, found := strings.Cut(kv, "=")
			if !found {
				return nil, true, fmt.Errorf("malformed result marker %q: %q is not key=value", line, kv)
			}
			if _, dup := attrs[k]; dup && k == AttrAt {
				return nil, true, fmt.Errorf("malformed result marker %q: at= twice", line)
			}
			attrs[k] = v
		}
		at, err := popTime(attrs, now)
		if err == nil {
			err = ValidResults(attrs)
		}
		if err != nil {
			return nil, true, fmt.Errorf("malformed result marker %q: %w", line, err)
		}
		return []trace.Event{{Time: at, GPU: trace.NoGPU, Type: trace.EventResult, Attrs: attrs}}, true, nil
	case WindowBeginPrefix, WindowEndPrefix:
		return parseWindow(line, f, now)
	case ProbeMarkPrefix:
		evs, err := trace.ParseProbeMarks(line)
		if err != nil {
			return nil, true, fmt.Errorf("malformed mark: %w", err)
		}
		for _, e := range evs {
			switch {
			case e.Type == trace.EventPhase:
				err = ValidPhase(e.Name)
			case e.Type == trace.EventResult:
				err = ValidResults(e.Attrs)
			}
			if err == nil {
				_, err = ownTime(e.Time, now)
			}
			if err != nil {
				return nil, true, fmt.Errorf("malformed mark %q: %w", line, err)
			}
		}
		return evs, true, nil
	}
	return nil, false, nil
}

// parseWindow parses a window marker line: a name, an optional id=…, and (at the end) key=value counts.
func parseWindow(line string, f []string, now time.Time) ([]trace.Event, bool, error) {
	if len(f) < 2 {
		return nil, true, fmt.Errorf("malformed window marker %q: want %q", line, f[0]+" <name> [id=<id>] …")
	}
	if err := ValidPhase(f[1]); err != nil {
		return nil, true, fmt.Errorf("malformed window marker %q: %w", line, err)
	}
	typ := trace.EventWindowBegin
	if f[0] == WindowEndPrefix {
		typ = trace.EventWindowEnd
	}
	attrs := map[string]string{}
	for _, kv := range f[2:] {
		k, v, found := strings.Cut(kv, "=")
		if !found || v == "" {
			return nil, true, fmt.Errorf("malformed window marker %q: %q is not key=value", line, kv)
		}
		if _, dup := attrs[k]; dup && k == AttrAt {
			return nil, true, fmt.Errorf("malformed window marker %q: at= twice", line)
		}
		attrs[k] = v
	}
	id := attrs[trace.AttrWindowID]
	delete(attrs, trace.AttrWindowID)
	at, err := popTime(attrs, now)
	if err != nil {
		return nil, true, fmt.Errorf("malformed window marker %q: %w", line, err)
	}
	if err := ValidWindowID(id); err != nil {
		return nil, true, fmt.Errorf("malformed window marker %q: %w", line, err)
	}
	if len(attrs) > 0 {
		if typ == trace.EventWindowBegin {
			return nil, true, fmt.Errorf("malformed window marker %q: counts go on the end", line)
		}
		if err := ValidResults(attrs); err != nil {
			return nil, true, fmt.Errorf("malformed window marker %q: %w", line, err)
		}
	}
	return []trace.Event{{Time: at, GPU: trace.NoGPU, Type: typ, Name: f[1], Attrs: idAttrs(id, attrs)}}, true, nil
}

// lineTime reads the optional at=<time> that is a phase line's last field.
func lineTime(rest []string, now time.Time) (time.Time, error) {
	if len(rest) == 0 {
		return now, nil
	}
	v, found := strings.CutPrefix(rest[0], AttrAt+"=")
	if len(rest) > 1 || !found {
		return time.Time{}, fmt.Errorf("%q: want at=<time> or nothing", strings.Join(rest, " "))
	}
	return parseOwnTime(v, now)
}

// popTime removes at=<time> from a line's key=value fields and returns it (now without one).
func popTime(attrs map[string]string, now time.Time) (time.Time, error) {
	v, found := attrs[AttrAt]
	if !found {
		return now, nil
	}
	delete(attrs, AttrAt)
	return parseOwnTime(v, now)
}

// parseOwnTime parses a line's own time and checks it against the time the line was read.
func parseOwnTime(v string, now time.Time) (time.Time, error) {
	t, err := ParseTime(v)
	if err != nil {
		return time.Time{}, err
	}
	return ownTime(t, now)
}

// withinSkew says whether a marker's own time t lies within MaxSkew of now, the time it arrived: the one bound
// for times posted and times printed.
func withinSkew(t, now time.Time) bool {
	d := t.Sub(now)
	return d >= -MaxSkew && d <= MaxSkew
}

// ErrSkew marks a line that is a marker but whose own time lies more than MaxSkew from its reading: the marker is
// dropped, not the line mistaken for one (it wraps ErrInvalid too).
var ErrSkew = errors.New("own time too far from the reading")

// ownTime checks a line's own time against the time the line was read: a clock a day off (or a garbled
// number) would move the phase out of the run.
func ownTime(t, now time.Time) (time.Time, error) {
	if !withinSkew(t, now) {
		return time.Time{}, fmt.Errorf("%w: %w: at %s is more than %s from the time the line was read (%s)", ErrInvalid,
			ErrSkew, t.Format(time.RFC3339Nano), MaxSkew, now.UTC().Format(time.RFC3339Nano))
	}
	return t, nil
}
