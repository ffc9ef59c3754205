// Package marker is lem's one marker protocol: the grammar of run ids, phase names and result keys, the workload's
// stdout marker lines, the store of runs with its limits, the HTTP API that writes and reads it, and the client
// that posts to it. lem-exporter and lem-run's own marker server both serve this package's handler over this
// package's store, so a marker means the same wherever it is sent.
package marker

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Errors of the protocol, mapped to HTTP status codes by the handler.
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrLimit    = errors.New("limit reached")
)

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// The grammar. Run ids become directory names and label values, so they are path-safe; phase names may carry a
// "/" (decode/bs-8); result keys may carry "." (ttft.p50) but no other punctuation, so they stay usable as label
// values and column names.
var (
	runIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)
	phaseRE = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,64}$`)
	keyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]{0,63}$`)
	labelRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
)

// Sizes of the grammar.
const (
	MaxExperimentLen = 128
	MaxValueLen      = 256
	MaxLabels        = 16
	// MaxResultsPerPost bounds the key=value pairs of one result marker.
	MaxResultsPerPost = 32
)

// ValidRunID checks a run id: 1-64 letters, digits or _.:-, starting with a letter or digit.
func ValidRunID(id string) error {
	if !runIDRE.MatchString(id) || strings.Contains(id, "..") {
		return invalid("run id %q: 1-64 letters, digits or _.:- starting with a letter or digit", id)
	}
	return nil
}

// ValidPhase checks a phase (or window) name: 1-64 letters, digits or _.:/-.
func ValidPhase(name string) error {
	if !phaseRE.MatchString(name) {
		return invalid("phase %q: 1-64 letters, digits or _.:/-", name)
	}
	return nil
}

// ValidKey checks a result key: a letter or _, then up to 63 letters, digits, _ or . (ttft.p50).
func ValidKey(k string) error {
	if !keyRE.MatchString(k) {
		return invalid("result key %q: a letter or _ then up to 63 letters, digits, _ or .", k)
	}
	return nil
}

// ValidExperiment checks an experiment name: 1-128 printable characters.
func ValidExperiment(s string) error {
	if s == "" || len(s) > MaxExperimentLen || !printable(s) {
		return invalid("experiment %q: 1-%d printable characters", s, MaxExperimentLen)
	}
	return nil
}

// ValidLabels checks run labels: at most 16, keys identifiers, values up to 256 printable characters.
func ValidLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return invalid("%d labels: at most %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if !labelRE.MatchString(k) || len(v) > MaxValueLen || !printable(v) {
			return invalid("label %q=%q: keys are identifiers, values up to %d printable characters", k, v, MaxValueLen)
		}
	}
	return nil
}

// ValidResults checks one result post: 1-32 pairs, keys per ValidKey, values 1-256 printable characters.
func ValidResults(values map[string]string) error {
	if len(values) == 0 || len(values) > MaxResultsPerPost {
		return invalid("%d result values: want 1-%d", len(values), MaxResultsPerPost)
	}
	for k, v := range values {
		if err := ValidKey(k); err != nil {
			return err
		}
		if k == AttrAt {
			return invalid("result key %q is the marker's own time, not a value", k)
		}
		if v == "" || len(v) > MaxValueLen || !printable(v) {
			return invalid("result %s=%q: values are 1-%d printable characters", k, v, MaxValueLen)
		}
	}
	return nil
}

// ValidStatus checks a run's end status: an identifier such as ok, failed, interrupted.
func ValidStatus(s string) error {
	if !labelRE.MatchString(s) {
		return invalid("status %q: an identifier such as ok, failed, interrupted", s)
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return false
		}
	}
	return true
}

// AddResults merges one result post into accumulated results: numbers with the same key add up (a workload
// reports output_tokens once per batch), any other value replaces the earlier one. Every path that accumulates
// results (the store, the accounting of a trace) uses this rule.
func AddResults(acc, values map[string]string) {
	for k, v := range values {
		nv, ok1 := Number(v)
		old, ok2 := Number(acc[k])
		if ok1 && ok2 {
			acc[k] = strconv.FormatFloat(old+nv, 'g', -1, 64)
		} else {
			acc[k] = v
		}
	}
}

// Number reads a result value as a finite number.
func Number(v string) (float64, bool) {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}
