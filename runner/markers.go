// Package runner brackets experiments with baselines and exact energy-counter reads and follows the workload's
// own phase markers.
package runner

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/trace"
)

// Marker line prefixes a workload prints on stdout.
const (
	PhasePrefix  = "LEM_PHASE"
	ResultPrefix = "LEM_RESULT"
	// ProbeMarkPrefix is the "MARK <name> <unix ns> [k=v …]" form of the recorded workloads, which carry their
	// own timestamps.
	ProbeMarkPrefix = "MARK"
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,64}$`)
	keyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]{0,63}$`)
)

// ParseMarker parses one line of workload output. ok is false for ordinary output. A line that starts like a
// marker but is malformed returns ok true and an error: it is passed through and counted, never fatal.
// now stamps markers that carry no time of their own.
func ParseMarker(line string, now time.Time) (evs []trace.Event, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return nil, false, nil
	}
	switch f[0] {
	case PhasePrefix:
		if len(f) != 2 || !nameRE.MatchString(f[1]) {
			return nil, true, fmt.Errorf("malformed phase marker %q: want %q with a name of 1-64 letters, digits or _.:/-",
				line, PhasePrefix+" <name>")
		}
		return []trace.Event{{Time: now, GPU: trace.NoGPU, Type: trace.EventPhase, Name: f[1]}}, true, nil
	case ResultPrefix:
		if len(f) < 2 {
			return nil, true, fmt.Errorf("malformed result marker %q: want %q", line, ResultPrefix+" key=value …")
		}
		attrs := map[string]string{}
		for _, kv := range f[1:] {
			k, v, found := strings.Cut(kv, "=")
			if !found || !keyRE.MatchString(k) || v == "" {
				return nil, true, fmt.Errorf("malformed result marker %q: %q is not key=value", line, kv)
			}
			attrs[k] = v
		}
		return []trace.Event{{Time: now, GPU: trace.NoGPU, Type: trace.EventResult, Attrs: attrs}}, true, nil
	case ProbeMarkPrefix:
		evs, err := trace.ParseProbeMarks(line)
		if err != nil {
			return nil, true, fmt.Errorf("malformed mark: %w", err)
		}
		return evs, true, nil
	}
	return nil, false, nil
}
