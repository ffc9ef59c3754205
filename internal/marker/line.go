package marker

import (
	"fmt"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// Marker line prefixes a workload prints on its output.
const (
	PhasePrefix       = "LEM_PHASE"
	ResultPrefix      = "LEM_RESULT"
	WindowBeginPrefix = "LEM_WINDOW_BEGIN" // LEM_WINDOW_BEGIN <name> [id=<id>]
	WindowEndPrefix   = "LEM_WINDOW_END"   // LEM_WINDOW_END <name> [id=<id>] [key=value …]
	// ProbeMarkPrefix is the "MARK <name> <unix ns> [k=v …]" form of the recorded workloads, which carry their
	// own timestamps.
	ProbeMarkPrefix = "MARK"
)

// MaxLineLen is the longest output line parsed for a marker; longer lines are passed through unparsed (a marker
// is a few dozen bytes, a progress bar can be megabytes).
const MaxLineLen = 4096

// ParseLine parses one line of workload output. ok is false for ordinary output. A line that starts like a
// marker but is malformed returns ok true and an error: the line is passed through, and the caller records the
// rejection. now stamps markers that carry no time of their own.
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
		if len(f) != 2 {
			return nil, true, fmt.Errorf("malformed phase marker %q: want %q", line, PhasePrefix+" <name>")
		}
		if err := ValidPhase(f[1]); err != nil {
			return nil, true, fmt.Errorf("malformed phase marker %q: %w", line, err)
		}
		return []trace.Event{{Time: now, GPU: trace.NoGPU, Type: trace.EventPhase, Name: f[1]}}, true, nil
	case ResultPrefix:
		attrs := map[string]string{}
		for _, kv := range f[1:] {
			k, v, found := strings.Cut(kv, "=")
			if !found {
				return nil, true, fmt.Errorf("malformed result marker %q: %q is not key=value", line, kv)
			}
			attrs[k] = v
		}
		if err := ValidResults(attrs); err != nil {
			return nil, true, fmt.Errorf("malformed result marker %q: %w", line, err)
		}
		return []trace.Event{{Time: now, GPU: trace.NoGPU, Type: trace.EventResult, Attrs: attrs}}, true, nil
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
		attrs[k] = v
	}
	id := attrs[trace.AttrWindowID]
	delete(attrs, trace.AttrWindowID)
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
	return []trace.Event{{Time: now, GPU: trace.NoGPU, Type: typ, Name: f[1], Attrs: idAttrs(id, attrs)}}, true, nil
}
