// Package trace owns lem's measurement data: the sample, counter, telemetry and event types every component
// exchanges, and the Parquet file format they are stored in (docs/TRACE_FORMAT.md).
package trace

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/lem-energy/lem/internal/meta"
)

// PowerSample is one entry of the driver's power-sample buffer (every ~20 ms), stamped by the driver.
type PowerSample struct {
	Time   Stamp
	PowerW float64
}

// CounterReading is one read of the GPU's total-energy counter. Time is the host clock just before the read;
// ReadDuration is how long the (blocking) call took.
type CounterReading struct {
	Time         Stamp
	EnergyMJ     uint64
	ReadDuration time.Duration
}

// Joules returns the counter value in joules.
func (c CounterReading) Joules() float64 { return float64(c.EnergyMJ) / 1000 }

// Telemetry is one slow-path snapshot (about 10 Hz). Fields the GPU does not support are NaN
// (ClockReasonsValid false for the bitmask).
type Telemetry struct {
	Time              Stamp
	InstantPowerW     float64 // field 186: instantaneous, refreshed every ~100 ms
	AveragePowerW     float64 // GetPowerUsage: a 1 s moving average on recent GPUs
	TemperatureC      float64
	SMClockHz         float64
	MemClockHz        float64
	UtilGPU           float64 // 0..1
	UtilMem           float64 // 0..1
	MemUsedBytes      float64
	PowerLimitW       float64
	PState            float64 // performance state 0 (P0, fastest) .. 15; NaN when unknown
	ClockReasons      uint64
	ClockReasonsValid bool
}

// NewTelemetry returns a snapshot at t with every field unknown.
func NewTelemetry(t Stamp) Telemetry {
	n := math.NaN()
	return Telemetry{Time: t, InstantPowerW: n, AveragePowerW: n, TemperatureC: n, SMClockHz: n, MemClockHz: n,
		UtilGPU: n, UtilMem: n, MemUsedBytes: n, PowerLimitW: n, PState: n}
}

// Event types. Phases are bracketed by EventPhase (start; ends the previous phase of the same run) and
// EventPhaseEnd or EventRunEnd.
const (
	EventRunStart     = "run_start"
	EventRunEnd       = "run_end"
	EventPhase        = "phase"
	EventPhaseEnd     = "phase_end"
	EventResult       = "result"
	EventMark         = "mark"
	EventCounterReset = "counter_reset"
	EventGap          = "gap"
	EventOverrun      = "overrun"
	EventDeviceError  = "device_error"
	// EventBaseline carries one GPU's idle baseline measured for a run (attributes in the marker package).
	EventBaseline = "baseline"
	// EventWindowBegin and EventWindowEnd bound a window: a named interval that may overlap and nest, unlike
	// phases. Name is the window's name, attribute "id" tells concurrent windows of one name apart, and the end's
	// other attributes are counts for the window (output_tokens=17).
	EventWindowBegin = "window_begin"
	EventWindowEnd   = "window_end"
)

// AttrWindowID is the attribute of window events that tells concurrent windows of one name apart.
const AttrWindowID = "id"

// Where a gap lay, in the "where" attribute of gap events: inside one drained batch (the driver produced no
// sample) or between two drains (samples may have been lost).
const (
	GapInBatch = "in_batch"
	GapAtDrain = "at_drain"
)

// LabelWorkloadGPUs is the run label listing the GPU indices given to the workload (comma-separated); other GPUs
// in the recording were only observed. Run labels appear on run_start events as attributes "label_<name>":
// AttrWorkloadGPUs.
const (
	LabelWorkloadGPUs = "workload_gpus"
	AttrWorkloadGPUs  = "label_" + LabelWorkloadGPUs
)

// NoGPU marks an event that belongs to no single GPU.
const NoGPU = -1

// Event is a marker in time: run and phase boundaries, results, and incidents the sampler saw.
type Event struct {
	Time  time.Time
	GPU   int
	Type  string
	RunID string
	Name  string
	Attrs map[string]string
}

// Series is everything recorded for one GPU, each slice in time order.
type Series struct {
	Samples   []PowerSample
	Counters  []CounterReading
	Telemetry []Telemetry
	// ProcessSamples are the driver's per-process utilization samples; Processes the compute processes seen at
	// each poll (a poll that found none has no row).
	ProcessSamples []ProcessSample
	Processes      []Process
}

// Append adds every row of o after s's own, kind by kind (no sorting: callers append in time order or Sort).
func (s *Series) Append(o *Series) {
	s.Samples = append(s.Samples, o.Samples...)
	s.Counters = append(s.Counters, o.Counters...)
	s.Telemetry = append(s.Telemetry, o.Telemetry...)
	s.ProcessSamples = append(s.ProcessSamples, o.ProcessSamples...)
	s.Processes = append(s.Processes, o.Processes...)
}

// Sort puts every slice in time order (stable, so equal stamps keep their recorded order).
func (s *Series) Sort() {
	// Recorded data is almost always in order already: check before sorting.
	if !slices.IsSortedFunc(s.Samples, func(a, b PowerSample) int { return a.Time.Compare(b.Time) }) {
		sort.SliceStable(s.Samples, func(i, j int) bool { return s.Samples[i].Time.Before(s.Samples[j].Time) })
	}
	if !slices.IsSortedFunc(s.Counters, func(a, b CounterReading) int { return a.Time.Compare(b.Time) }) {
		sort.SliceStable(s.Counters, func(i, j int) bool { return s.Counters[i].Time.Before(s.Counters[j].Time) })
	}
	if !slices.IsSortedFunc(s.Telemetry, func(a, b Telemetry) int { return a.Time.Compare(b.Time) }) {
		sort.SliceStable(s.Telemetry, func(i, j int) bool { return s.Telemetry[i].Time.Before(s.Telemetry[j].Time) })
	}
	if !slices.IsSortedFunc(s.ProcessSamples, func(a, b ProcessSample) int { return a.Time.Compare(b.Time) }) {
		sort.SliceStable(s.ProcessSamples, func(i, j int) bool { return s.ProcessSamples[i].Time.Before(s.ProcessSamples[j].Time) })
	}
	if !slices.IsSortedFunc(s.Processes, func(a, b Process) int { return a.Time.Compare(b.Time) }) {
		sort.SliceStable(s.Processes, func(i, j int) bool { return s.Processes[i].Time.Before(s.Processes[j].Time) })
	}
}

// Trace is a whole recording: the environment, each GPU's series, and the events.
type Trace struct {
	Env    meta.Environment
	GPUs   map[int]*Series
	Events []Event
	// Extra holds the file's key-value metadata that lem does not interpret (run id, producer, …).
	Extra map[string]string
}

// New returns an empty trace for env.
func New(env meta.Environment) *Trace {
	return &Trace{Env: env, GPUs: map[int]*Series{}, Extra: map[string]string{}}
}

// Series returns the series of GPU g, creating it.
func (t *Trace) Series(g int) *Series {
	s := t.GPUs[g]
	if s == nil {
		s = &Series{}
		t.GPUs[g] = s
	}
	return s
}

// GPUIndices returns the GPUs present, ascending.
func (t *Trace) GPUIndices() []int {
	out := make([]int, 0, len(t.GPUs))
	for g := range t.GPUs {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// Span returns the first and last timestamp of any power sample or counter reading.
func (t *Trace) Span() (first, last time.Time) {
	upd := func(ts time.Time) {
		if first.IsZero() || ts.Before(first) {
			first = ts
		}
		if ts.After(last) {
			last = ts
		}
	}
	for _, s := range t.GPUs {
		if n := len(s.Samples); n > 0 {
			upd(s.Samples[0].Time.Time())
			upd(s.Samples[n-1].Time.Time())
		}
		if n := len(s.Counters); n > 0 {
			upd(s.Counters[0].Time.Time())
			upd(s.Counters[n-1].Time.Time())
		}
	}
	return first, last
}

// Common returns the span in which every GPU has both samples and counter readings (see Series.Common).
func (t *Trace) Common() (first, last time.Time) {
	for i, g := range t.GPUIndices() {
		f, l := t.GPUs[g].Common()
		if i == 0 || f.After(first) {
			first = f
		}
		if i == 0 || l.Before(last) {
			last = l
		}
	}
	return first, last
}

// Common returns the span covered by both the samples and the counter of a series (or by whichever exists).
func (s *Series) Common() (first, last time.Time) {
	spans := [][2]time.Time{}
	if n := len(s.Samples); n > 1 {
		spans = append(spans, [2]time.Time{s.Samples[0].Time.Time(), s.Samples[n-1].Time.Time()})
	}
	if n := len(s.Counters); n > 1 {
		spans = append(spans, [2]time.Time{s.Counters[0].Time.Time(), s.Counters[n-1].Time.Time()})
	}
	for i, sp := range spans {
		if i == 0 || sp[0].After(first) {
			first = sp[0]
		}
		if i == 0 || sp[1].Before(last) {
			last = sp[1]
		}
	}
	return first, last
}

// Phase is a named interval derived from phase events.
type Phase struct {
	RunID string
	Name  string
	Start time.Time
	End   time.Time
}

// Phases derives the phase intervals from the events: a phase event starts a phase and ends the previous one of
// the same run; phase_end and run_end end it. A phase still open at the end of the events ends at end.
func Phases(events []Event, end time.Time) []Phase {
	evs := slices.Clone(events)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	open := map[string]int{} // run id → index in out
	var out []Phase
	closeRun := func(run string, at time.Time) {
		if i, ok := open[run]; ok {
			out[i].End = at
			delete(open, run)
		}
	}
	for _, e := range evs {
		switch e.Type {
		case EventPhase:
			closeRun(e.RunID, e.Time)
			open[e.RunID] = len(out)
			out = append(out, Phase{RunID: e.RunID, Name: e.Name, Start: e.Time})
		case EventPhaseEnd, EventRunEnd:
			closeRun(e.RunID, e.Time)
		}
	}
	for run := range open {
		closeRun(run, end)
	}
	return out
}

// Window is the part of s in [t0, t1]: views of s's slices (found by binary search), not copies.
func (s *Series) Window(t0, t1 time.Time) *Series {
	a, b := t0.UnixNano(), t1.UnixNano()
	return &Series{
		Samples:        window(s.Samples, a, b, func(x PowerSample) int64 { return int64(x.Time) }),
		Counters:       window(s.Counters, a, b, func(x CounterReading) int64 { return int64(x.Time) }),
		Telemetry:      window(s.Telemetry, a, b, func(x Telemetry) int64 { return int64(x.Time) }),
		ProcessSamples: window(s.ProcessSamples, a, b, func(x ProcessSample) int64 { return x.Time.UnixNano() }),
		Processes:      window(s.Processes, a, b, func(x Process) int64 { return x.Time.UnixNano() }),
	}
}

func window[T any](xs []T, t0, t1 int64, at func(T) int64) []T {
	lo := sort.Search(len(xs), func(i int) bool { return at(xs[i]) >= t0 })
	hi := sort.Search(len(xs), func(i int) bool { return at(xs[i]) > t1 })
	if hi < lo {
		hi = lo
	}
	return xs[lo:hi:hi]
}
