package marker

import (
	"math"
	"strconv"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// ValidBaseline checks a posted baseline: a GPU index, a window, finite non-negative powers in order.
func ValidBaseline(gpu int, b manifest.Baseline) error {
	fin := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 && v < 1e5 }
	switch {
	case gpu < 0 || gpu > 1023:
		return invalid("baseline gpu %d: want 0-1023", gpu)
	case b.Start.IsZero() || !b.End.After(b.Start):
		return invalid("baseline window %s .. %s: want start before end", b.Start.Format(time.RFC3339Nano), b.End.Format(time.RFC3339Nano))
	case !fin(b.MedianW) || !fin(b.P25W) || !fin(b.P75W) || b.P25W > b.MedianW || b.MedianW > b.P75W:
		return invalid("baseline powers p25 %g, median %g, p75 %g: want finite watts in order", b.P25W, b.MedianW, b.P75W)
	case b.Samples <= 0:
		return invalid("baseline samples %d: want at least one", b.Samples)
	}
	return nil
}

// BaselineEvent encodes one GPU's baseline as a trace event (stamped by the caller), so a trace, an exporter's
// recording and a Prometheus pull all carry the baseline lem-run measured.
func BaselineEvent(gpu int, b manifest.Baseline) trace.Event {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	a := map[string]string{
		"start": strconv.FormatInt(b.Start.UnixNano(), 10), "end": strconv.FormatInt(b.End.UnixNano(), 10),
		"median_w": f(b.MedianW), "p25_w": f(b.P25W), "p75_w": f(b.P75W), "samples": strconv.Itoa(b.Samples),
		"reused": strconv.FormatBool(b.Reused),
	}
	if b.TempStartC != nil {
		a["temp_start_c"] = f(*b.TempStartC)
	}
	if b.TempEndC != nil {
		a["temp_end_c"] = f(*b.TempEndC)
	}
	if b.UtilMean != nil {
		a["util_mean"] = f(*b.UtilMean)
	}
	if b.AgeS > 0 {
		a["age_s"] = f(b.AgeS)
	}
	return trace.Event{GPU: gpu, Type: trace.EventBaseline, Attrs: a}
}

// BaselineOf decodes a baseline event; ok is false when the event is not a valid one.
func BaselineOf(e trace.Event) (manifest.Baseline, bool) {
	if e.Type != trace.EventBaseline {
		return manifest.Baseline{}, false
	}
	num := func(k string) (float64, bool) {
		v, err := strconv.ParseFloat(e.Attrs[k], 64)
		return v, err == nil
	}
	opt := func(k string) *float64 {
		if v, ok := num(k); ok {
			return &v
		}
		return nil
	}
	ns := func(k string) time.Time {
		v, err := strconv.ParseInt(e.Attrs[k], 10, 64)
		if err != nil {
			return time.Time{}
		}
		return time.Unix(0, v).UTC()
	}
	var b manifest.Baseline
	var ok1, ok2, ok3 bool
	b.Start, b.End = ns("start"), ns("end")
	b.MedianW, ok1 = num("median_w")
	b.P25W, ok2 = num("p25_w")
	b.P75W, ok3 = num("p75_w")
	b.IQRW = b.P75W - b.P25W
	b.Samples, _ = strconv.Atoi(e.Attrs["samples"])
	b.Reused = e.Attrs["reused"] == "true"
	b.AgeS, _ = num("age_s")
	b.TempStartC, b.TempEndC, b.UtilMean = opt("temp_start_c"), opt("temp_end_c"), opt("util_mean")
	if !ok1 || !ok2 || !ok3 || ValidBaseline(e.GPU, b) != nil {
		return manifest.Baseline{}, false
	}
	return b, true
}
