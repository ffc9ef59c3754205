package pull

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/ordered"
	"github.com/lem-energy/lem/internal/trace"
)

// A pull at fleet scale (a day of 50 Hz samples of many GPUs is tens of millions of samples) never holds the
// window: it is cut into chunks, Options.Workers of them queried at once, and each chunk is handed over in time
// order as soon as the ones before it are, straight into the trace file. Memory is a few chunks' samples.

// Sink receives one instance's series, chunk by chunk in time order (each GPU's rows in time order).
type Sink interface {
	Samples(g int, ss []trace.PowerSample) error
	Counters(g int, cs []trace.CounterReading) error
	Telemetry(g int, ts []trace.Telemetry) error
}

// WriterSink writes into a trace file.
type WriterSink struct{ W *trace.Writer }

var _ Sink = WriterSink{}

// Samples writes power samples.
func (s WriterSink) Samples(g int, ss []trace.PowerSample) error { return s.W.WriteSamples(g, ss) }

// Counters writes counter readings.
func (s WriterSink) Counters(g int, cs []trace.CounterReading) error {
	for _, c := range cs {
		if err := s.W.WriteCounter(g, c); err != nil {
			return err
		}
	}
	return nil
}

// Telemetry writes telemetry snapshots.
func (s WriterSink) Telemetry(g int, ts []trace.Telemetry) error {
	for _, t := range ts {
		if err := s.W.WriteTelemetry(g, t); err != nil {
			return err
		}
	}
	return nil
}

// memorySink keeps everything in a trace.
type memorySink struct{ t *trace.Trace }

func (m memorySink) Samples(g int, ss []trace.PowerSample) error {
	s := m.t.Series(g)
	s.Samples = append(s.Samples, ss...)
	return nil
}

func (m memorySink) Counters(g int, cs []trace.CounterReading) error {
	s := m.t.Series(g)
	s.Counters = append(s.Counters, cs...)
	return nil
}

func (m memorySink) Telemetry(g int, ts []trace.Telemetry) error {
	s := m.t.Series(g)
	s.Telemetry = append(s.Telemetry, ts...)
	return nil
}

// Stats count what a pull handed over.
type Stats struct {
	Samples, Counters, Telemetry int64
	Queries                      int
	// SkippedSamples and SkippedCounters are values no trace can hold, left out: power that is NaN or infinite,
	// counter values that are NaN, infinite or negative (a broken exporter, a relabelled or restored series).
	SkippedSamples, SkippedCounters int64
}

// Devices lists the GPUs whose power or energy series the instance has in [from, to], for the trace's environment
// (written before the rows). An error names the selectors when there are none.
func (c *Client) Devices(ctx context.Context, instance string, from, to time.Time) ([]meta.Device, error) {
	psel, esel := c.selectors(instance)
	var all []*model.Sample
	for _, sel := range []string{psel, esel} {
		v, err := c.latest(ctx, sel, from, to)
		if err != nil {
			return nil, err
		}
		all = append(all, v...)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no %s or %s series between %s and %s", psel, esel,
			from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	// lem's stream job first: its labels are the exporter's own.
	slices.SortStableFunc(all, func(a, b *model.Sample) int {
		return boolInt(b.Metric["job"] == "lem_stream") - boolInt(a.Metric["job"] == "lem_stream")
	})
	var devs []meta.Device
	seen := map[int]bool{}
	for _, s := range all {
		g := gpuLabel(s.Metric)
		if seen[g] {
			continue
		}
		seen[g] = true
		uuid := string(s.Metric["uuid"])
		if uuid == "" {
			uuid = string(s.Metric["UUID"]) // dcgm-exporter's label
		}
		devs = append(devs, meta.Device{Index: g, UUID: uuid, Name: string(s.Metric["modelName"]), EnergyCounter: true,
			PowerSamples: true})
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Index < devs[j].Index })
	return devs, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// part is one chunk's series of one query, as Prometheus returned them.
type part struct {
	streams []*model.SampleStream
}

type chunk struct {
	from, to time.Time
	parts    []part // one per selector of the pull, in order
	err      error
}

// Stream pulls one instance's power and energy series (and lem's scraped telemetry of the GPUs in devs) over
// [from, to] into sink, chunk by chunk in time order, Options.Workers chunks queried at once. lem's full-rate
// remote-write stream is preferred to scraped values where both exist.
func (c *Client) Stream(ctx context.Context, instance string, from, to time.Time, devs []meta.Device, sink Sink) (Stats, error) {
	// Prometheus stores milliseconds: align the window so the chunks tile it exactly.
	from, to = from.Truncate(time.Millisecond), to.Truncate(time.Millisecond)
	psel, esel := c.selectors(instance)
	sels := []string{psel, esel}
	if !c.opts.DCGM {
		for _, g := range telemetryGauges {
			sels = append(sels, fmt.Sprintf(`%s{instance=%q}`, g.metric, instance))
		}
		sels = append(sels, fmt.Sprintf(`lem_gpu_clock_event_reason_active{instance=%q}`, instance))
	}
	var bounds [][2]time.Time
	for start := from; start.Before(to); start = start.Add(c.opts.Chunk) {
		bounds = append(bounds, [2]time.Time{start, minTime(start.Add(c.opts.Chunk), to)})
	}
	n := len(bounds)
	st := Stats{}
	last := map[string]model.Time{} // per series: the last timestamp handed over
	known := map[int]bool{}
	for _, d := range devs {
		known[d.Index] = true
	}
	progress := newProgress(c.opts.Progress, instance, from, to)
	fetch := func(ctx context.Context, i int) chunk { return c.fetch(ctx, sels, bounds[i][0], bounds[i][1]) }
	workers := min(c.opts.Workers, max(n, 1))
	// One chunk fetched ahead of the sink per worker, and one more: bounds memory.
	err := ordered.Run(ctx, n, workers, workers+1, fetch, func(_ int, ch chunk) error {
		if ch.err != nil {
			return ch.err
		}
		st.Queries += len(sels)
		if err := c.hand(ch, last, known, sink, &st); err != nil {
			return err
		}
		progress.update(ch.to, st.Samples)
		return nil
	})
	if err != nil {
		return st, err
	}
	progress.done(st.Samples)
	if st.SkippedSamples+st.SkippedCounters > 0 {
		c.opts.Log.Warn("values no trace can hold left out", "instance", instance,
			"power_samples", st.SkippedSamples, "counter_readings", st.SkippedCounters)
	}
	return st, nil
}

// fetch queries every selector over one chunk.
func (c *Client) fetch(ctx context.Context, sels []string, from, to time.Time) chunk {
	ch := chunk{from: from, to: to, parts: make([]part, len(sels))}
	for i, sel := range sels {
		q := fmt.Sprintf("%s[%dms]", sel, to.Sub(from).Milliseconds())
		v, err := c.query(ctx, q, to)
		if err != nil {
			ch.err = err
			return ch
		}
		m, ok := v.(model.Matrix)
		if !ok {
			ch.err = fmt.Errorf("query %q returned %s, not a matrix", q, v.Type())
			return ch
		}
		ch.parts[i].streams = m
	}
	return ch
}

// fresh drops the points a previous chunk handed over already: Prometheus 2 range selectors are closed
// ([end−window, end]), so a sample on a chunk boundary comes back in both (Prometheus 3's left-open ones need
// nothing).
func fresh(s *model.SampleStream, last map[string]model.Time) []model.SamplePair {
	k := s.Metric.String()
	vs := s.Values
	if t, ok := last[k]; ok {
		i := sort.Search(len(vs), func(i int) bool { return vs[i].Timestamp.After(t) })
		vs = vs[i:]
	}
	if len(vs) > 0 {
		last[k] = vs[len(vs)-1].Timestamp
	}
	return vs
}

// hand converts one chunk and hands it to the sink: per GPU the preferred power and energy series, then the
// telemetry assembled from the gauges.
func (c *Client) hand(ch chunk, last map[string]model.Time, known map[int]bool, sink Sink, st *Stats) error {
	if err := handPower(preferStream(ch.parts[0].streams), last, sink, st); err != nil {
		return err
	}
	if err := c.handEnergy(preferStream(ch.parts[1].streams), last, sink, st); err != nil {
		return err
	}
	if c.opts.DCGM {
		return nil
	}
	return handTelemetry(telemetrySnapshots(ch, last), known, sink, st)
}

// handPower hands each GPU's new power samples to the sink.
func handPower(power []*model.SampleStream, last map[string]model.Time, sink Sink, st *Stats) error {
	for _, s := range power {
		vs := fresh(s, last)
		ss := make([]trace.PowerSample, 0, len(vs))
		for _, p := range vs {
			// No trace holds a power that is not finite (the reader refuses the file): leave it out, counted.
			if v := float64(p.Value); math.IsNaN(v) || math.IsInf(v, 0) {
				st.SkippedSamples++
				continue
			}
			ss = append(ss, trace.PowerSample{Time: trace.StampOfMillis(int64(p.Timestamp)), PowerW: float64(p.Value)})
		}
		if err := sink.Samples(gpuLabel(s.Metric), ss); err != nil {
			return err
		}
		st.Samples += int64(len(ss))
	}
	return nil
}

// handEnergy hands each GPU's new energy-counter readings to the sink, in millijoules.
func (c *Client) handEnergy(energy []*model.SampleStream, last map[string]model.Time, sink Sink, st *Stats) error {
	for _, s := range energy {
		vs := fresh(s, last)
		cs := make([]trace.CounterReading, 0, len(vs))
		for _, p := range vs {
			mj := float64(p.Value) * 1000 // lem: joules
			if c.opts.DCGM {
				mj = float64(p.Value) // dcgm: millijoules
			}
			// A counter is a count from zero: NaN, infinite or negative values (or beyond what 64 bits hold)
			// would convert to readings near 2^63 mJ.
			if !(mj >= 0 && mj < math.MaxUint64/2) {
				st.SkippedCounters++
				continue
			}
			cs = append(cs, trace.CounterReading{Time: trace.StampOfMillis(int64(p.Timestamp)), EnergyMJ: uint64(mj + 0.5)})
		}
		if err := sink.Counters(gpuLabel(s.Metric), cs); err != nil {
			return err
		}
		st.Counters += int64(len(cs))
	}
	return nil
}

// snapshotKey is one GPU's telemetry at one scrape (Prometheus milliseconds).
type snapshotKey struct {
	g  int
	ms int64
}

// telemetrySnapshots assembles the chunk's new gauge and clock-reason values into one snapshot per GPU and scrape.
func telemetrySnapshots(ch chunk, last map[string]model.Time) map[snapshotKey]*trace.Telemetry {
	bits := map[string]uint64{}
	for _, r := range gpu.ClockReasons {
		bits[r.Name] = r.Bit
	}
	snaps := map[snapshotKey]*trace.Telemetry{}
	at := func(g int, p model.SamplePair) *trace.Telemetry {
		k := snapshotKey{g, int64(p.Timestamp)}
		if snaps[k] == nil {
			tm := trace.NewTelemetry(trace.StampOfMillis(int64(p.Timestamp)))
			snaps[k] = &tm
		}
		return snaps[k]
	}
	for i, g := range telemetryGauges {
		for _, s := range ch.parts[2+i].streams {
			for _, p := range fresh(s, last) {
				g.set(at(gpuLabel(s.Metric), p), float64(p.Value))
			}
		}
	}
	for _, s := range ch.parts[2+len(telemetryGauges)].streams {
		g, bit := gpuLabel(s.Metric), bits[string(s.Metric["reason"])]
		for _, p := range fresh(s, last) {
			tm := at(g, p)
			tm.ClockReasonsValid = true
			if p.Value == 1 {
				tm.ClockReasons |= bit
			}
		}
	}
	return snaps
}

// handTelemetry hands the snapshots to the sink, GPU by GPU in index order and each GPU's in time order, leaving out
// GPUs without power or energy series.
func handTelemetry(snaps map[snapshotKey]*trace.Telemetry, known map[int]bool, sink Sink, st *Stats) error {
	byGPU := map[int][]trace.Telemetry{}
	for k, tm := range snaps {
		byGPU[k.g] = append(byGPU[k.g], *tm)
	}
	gs := make([]int, 0, len(byGPU))
	for g := range byGPU {
		gs = append(gs, g)
	}
	slices.Sort(gs)
	for _, g := range gs {
		if !known[g] {
			continue // telemetry of a GPU without power or energy series
		}
		ts := byGPU[g]
		slices.SortFunc(ts, func(a, b trace.Telemetry) int { return a.Time.Compare(b.Time) })
		if err := sink.Telemetry(g, ts); err != nil {
			return err
		}
		st.Telemetry += int64(len(ts))
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// progress draws a bar on a terminal: how much of the window is pulled, samples so far and their rate.
type progress struct {
	w        io.Writer
	what     string
	from, to time.Time
	began    time.Time
	drawn    bool
}

func newProgress(w io.Writer, what string, from, to time.Time) *progress {
	return &progress{w: w, what: what, from: from, to: to, began: time.Now()}
}

const barWidth = 30

func (p *progress) update(at time.Time, samples int64) {
	if p.w == nil {
		return
	}
	f := min(max(at.Sub(p.from).Seconds()/p.to.Sub(p.from).Seconds(), 0), 1)
	full := int(f * barWidth)
	rate := float64(samples) / max(time.Since(p.began).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %s of %s, %s samples, %s/s", p.what, strings.Repeat("=", full),
		strings.Repeat(" ", barWidth-full), 100*f, at.Sub(p.from).Round(time.Second), p.to.Sub(p.from).Round(time.Second),
		si(float64(samples)), si(rate))
	p.drawn = true
}

func (p *progress) done(samples int64) {
	if p.w != nil && p.drawn {
		fmt.Fprintln(p.w)
	}
}

// si writes a count with a k/M/G suffix.
func si(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f G", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f k", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
