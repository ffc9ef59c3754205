package report

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// A trace that does not fit in memory (a week of a fleet's recording, or the closed segments of one, never
// merged) is read three times a row group at a time, never whole:
//
//  1. counter readings and events: the runs, and each GPU's distinct counter values (which intervals the lag fit
//     takes) and the extent of its rows;
//  2. counter readings and samples: each GPU's lag and the hybrid's gain at the series' ends, fitted exactly as on
//     the whole series (energy.LagStream);
//  3. everything: rows are buffered in time order, each run is accounted as soon as its window (window.go) is
//     complete, by the one accounting and the same report code as a trace in memory, and rows no pending run
//     needs are dropped.
//
// Memory is what the runs in flight need, their windows and margins, plus a few row groups, whatever the
// trace's length; the numbers are those of the whole trace in memory.

// LoadOptions choose how Load reads lem traces.
type LoadOptions struct {
	// Stream reads traces in windows: StreamAuto (traces whose whole read would not fit the collector's soft limit,
	// three quarters of MemoryLimit: see liveNum), StreamAlways or StreamNever.
	Stream string
	// MemoryLimit is the memory the report aims to stay within (bytes); 0: DefaultMemoryLimit.
	MemoryLimit int64
	// NoPlots leaves out the runs' power plot data (only the HTML report draws it): a recording of thousands of
	// runs would otherwise keep a plot's worth of samples for each.
	NoPlots bool
}

// Ways to read traces (LoadOptions.Stream).
const (
	StreamAuto   = "auto"
	StreamAlways = "always"
	StreamNever  = "never"
)

// DefaultMemoryLimit is the memory a report aims to stay within by default.
const DefaultMemoryLimit = 1 << 30

// A whole read keeps live about 1.6 times its rows' own size (trace.Stream.Footprint): the rows, the samples'
// running integrals and the counter points, the accounting's arrays — measured 47–50 bytes a row (peak RSS at GOGC
// 10) on tiled LLM recordings of 6.8 and 14.5 M rows, whose rows take 29.7 bytes each (samples 16, counter reads
// 24, telemetry 104). None of it holds a pointer, so the collector does not scan it and reading whole stays the
// faster up to the collector's soft limit (¾ of the limit): at 1 GiB on 2 vCPUs, 14.5 M rows 0.85 s whole against
// 1.22 s streamed, 17.6 M rows 1.02 s against 1.45 s (peak 0.81 GB); beyond it the collector runs over and over
// (21.7 M rows: 2.32 s against 1.75 s). Sized by kind, a trace of process or telemetry rows (a pull, a shared GPU)
// is priced by what its rows take, not by an LLM recording's mix.
const (
	liveNum = 8 // live bytes per byte of rows: 8/5
	liveDen = 5
)

// open opens the trace in paths and says whether it is streamed; s is nil where it cannot be opened (the read
// that follows says why). The caller closes s.
func (o LoadOptions) open(paths []string) (s *trace.Stream, streamed bool) {
	s, err := trace.OpenStream(paths...)
	switch o.Stream {
	case StreamAlways:
		return s, true
	case StreamNever:
		return s, false
	}
	if err != nil {
		return nil, len(paths) > 1 // let the read say what is wrong; segments are never merged in memory
	}
	return s, streamBytes(s.Footprint(), o.MemoryLimit)
}

// streamBytes says whether a trace whose rows take footprint bytes read whole is streamed within limit (bytes; 0:
// DefaultMemoryLimit).
func streamBytes(footprint, limit int64) bool {
	if limit <= 0 {
		limit = DefaultMemoryLimit
	}
	return footprint/liveDen*liveNum > limit/4*3
}

// gpuFacts is what the first two passes learn about a GPU's series.
type gpuFacts struct {
	ext      trace.Extents
	distinct int
	lastMJ   uint64
	method   string
	lag      energy.LagEstimate
	gain     [3]float64 // at lag, lag − u, lag + u
	shifts   shifts
}

// streamRuns accounts the runs of a trace read in windows. name is the trace's path for the reports (the final
// file's, for segments).
func streamRuns(ctx context.Context, paths []string, name string, detailed bool, plots bool) ([]Run, error) {
	a, err := streamAccounted(ctx, paths, name, detailed, plots)
	if err != nil {
		return nil, err
	}
	return a.runs, nil
}

// streamAccounted is streamRuns with what its third pass kept.
func streamAccounted(ctx context.Context, paths []string, name string, detailed bool, plots bool) (*streamAccount, error) {
	t0 := time.Now()
	s, err := trace.OpenStream(paths...)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	// One pool of CPU tokens for decoding and the work on what is decoded (lag fits, runs): GOMAXPROCS busy
	// goroutines in all.
	cpu := make(chan struct{}, runtime.GOMAXPROCS(0))
	s.ShareCPU(cpu)
	facts, events, err := scanRunsAndCounters(ctx, s)
	if err != nil {
		return nil, err
	}
	slog.Debug("stream: runs and counters", "path", name, "rows", s.Rows(), "took", time.Since(t0))
	t1 := time.Now()
	if err := fitLags(ctx, s, facts, cpu); err != nil {
		return nil, err
	}
	slog.Debug("stream: lags fitted", "took", time.Since(t1))
	// Pass 3: the runs, each on its window.
	t2 := time.Now()
	spans := spansOf(events, lastOf(facts), commonOf(facts), commonEnd(facts),
		strings.TrimSuffix(filepath.Base(name), filepath.Ext(name)))
	a := &streamAccount{facts: facts, events: events, spans: spans, name: name, detailed: detailed, plots: plots,
		runs: make([]Run, len(spans)), buf: map[int]*trace.Series{}, cpu: cpu}
	err = a.run(ctx, s)
	slog.Debug("stream: runs accounted", "runs", len(spans), "peak rows buffered", a.peakRows,
		"of them process rows", a.peakProcessRows, "took", time.Since(t2))
	if err != nil {
		return nil, err
	}
	return a, nil
}

// scanRunsAndCounters is the first pass: the events, each GPU's extents and its distinct counter values.
func scanRunsAndCounters(ctx context.Context, s *trace.Stream) (map[int]*gpuFacts, []trace.Event, error) {
	facts := map[int]*gpuFacts{}
	var events []trace.Event
	var cmerge trace.Merge
	count := func(rel map[int]*trace.Series) {
		for g, r := range rel {
			f := facts[g]
			for _, c := range r.Counters {
				if f.distinct == 0 || c.EnergyMJ != f.lastMJ {
					f.distinct++
				}
				f.lastMJ = c.EnergyMJ
			}
		}
	}
	err := s.Scan(ctx, trace.RowCounters|trace.RowEvents, func(p trace.Part) error {
		events = append(events, p.Trace.Events...)
		for g, e := range p.Extents {
			f := facts[g]
			if f == nil {
				f = &gpuFacts{}
				facts[g] = f
			}
			f.ext.Merge(e)
		}
		cmerge.Add(p.Trace)
		count(cmerge.Release(p.Complete))
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	count(cmerge.Release(endOfTime))
	return facts, events, nil
}

// fitLags is the second pass: each GPU's accounting method and, for the hybrid, its lag, the gains at the series'
// ends and the shifts, into facts.
func fitLags(ctx context.Context, s *trace.Stream, facts map[int]*gpuFacts, cpu chan struct{}) error {
	lags := map[int]*energy.LagStream{}
	for g, f := range facts {
		lags[g] = energy.NewLagStream(f.distinct)
	}
	var lmerge trace.Merge
	fit := func(rel map[int]*trace.Series) {
		var wg sync.WaitGroup // GPUs' fits are independent
		for g, r := range rel {
			wg.Go(func() {
				cpu <- struct{}{}
				defer func() { <-cpu }()
				lags[g].Add(r.Counters, r.Samples)
			})
		}
		wg.Wait()
	}
	err := s.Scan(ctx, trace.RowSamples|trace.RowCounters, func(p trace.Part) error {
		lmerge.Add(p.Trace)
		fit(lmerge.Release(p.Complete))
		return nil
	})
	if err != nil {
		return err
	}
	fit(lmerge.Release(endOfTime))
	for g, f := range facts {
		f.method = account.MethodOf(f.distinct, f.ext.Counters.N, f.ext.Samples.N)
		if f.method != account.MethodHybrid {
			continue
		}
		f.lag = lags[g].Fit()
		for i, l := range []time.Duration{f.lag.Lag, f.lag.Lag - f.lag.U, f.lag.Lag + f.lag.U} {
			if f.gain[i], err = lags[g].Gain(l); err != nil {
				return fmt.Errorf("GPU %d: %w", g, err)
			}
		}
		f.shifts = shiftsOf(f.lag, true)
	}
	return nil
}

var endOfTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// lastOf is the last time of any sample or counter reading (Trace.Span's end).
func lastOf(facts map[int]*gpuFacts) time.Time {
	var last time.Time
	for _, f := range facts {
		for _, e := range []trace.Extent{f.ext.Samples, f.ext.Counters} {
			if e.N > 0 && e.Last().After(last) {
				last = e.Last()
			}
		}
	}
	return last
}

// commonOf and commonEnd are Trace.Common from the extents: where every GPU has both samples and counter readings.
func commonOf(facts map[int]*gpuFacts) time.Time {
	first, _ := common(facts)
	return first
}

func commonEnd(facts map[int]*gpuFacts) time.Time {
	_, last := common(facts)
	return last
}

func common(facts map[int]*gpuFacts) (first, last time.Time) {
	gs := make([]int, 0, len(facts))
	for g, f := range facts {
		if f.ext.Rows() > 0 { // the GPUs a whole read has a series for
			gs = append(gs, g)
		}
	}
	slices.Sort(gs)
	for i, g := range gs {
		f, l := seriesCommon(facts[g].ext)
		if i == 0 || f.After(first) {
			first = f
		}
		if i == 0 || l.Before(last) {
			last = l
		}
	}
	return first, last
}

// seriesCommon is Series.Common from extents.
func seriesCommon(e trace.Extents) (first, last time.Time) {
	n := 0
	for _, x := range []trace.Extent{e.Samples, e.Counters} {
		if x.N <= 1 {
			continue
		}
		if n == 0 || x.First().After(first) {
			first = x.First()
		}
		if n == 0 || x.Last().Before(last) {
			last = x.Last()
		}
		n++
	}
	return first, last
}

// streamAccount is the third pass: the buffer of rows in time order and the runs waiting for their windows.
type streamAccount struct {
	facts    map[int]*gpuFacts
	events   []trace.Event
	spans    []Span
	name     string
	detailed bool
	plots    bool
	runs     []Run
	buf      map[int]*trace.Series
	complete time.Time // every row before it is in buf
	pending  []int     // spans not yet accounted, by start
	env      meta.Environment
	// peakRows and peakProcessRows are the most rows, and process rows, the buffer held at once: the memory bound.
	peakRows, peakProcessRows int
	cpu                       chan struct{} // shared with the stream's decoding: a run's accounting holds one
}

type job struct {
	i int
	w *trace.Trace
}

func (a *streamAccount) run(ctx context.Context, s *trace.Stream) error {
	a.env = s.Env()
	for g, f := range a.facts {
		if f.ext.Rows() > 0 {
			a.buf[g] = &trace.Series{}
		}
	}
	a.pending = make([]int, len(a.spans))
	for i := range a.pending {
		a.pending[i] = i
	}
	sort.SliceStable(a.pending, func(x, y int) bool { return a.spans[a.pending[x]].Start.Before(a.spans[a.pending[y]].Start) })
	jobs := make(chan job, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				a.cpu <- struct{}{}
				a.runs[j.i] = a.account(j.i, j.w)
				<-a.cpu
			}
		}()
	}
	var m trace.Merge
	err := s.Scan(ctx, trace.AllRows, func(p trace.Part) error {
		m.Add(p.Trace)
		a.take(m.Release(p.Complete))
		a.complete = p.Complete
		if p.Last {
			a.complete = endOfTime
		}
		a.dispatch(jobs)
		return nil
	})
	if err == nil {
		a.take(m.Release(endOfTime))
		a.complete = endOfTime
		a.dispatch(jobs)
		if len(a.pending) > 0 {
			err = fmt.Errorf("%d runs never had their windows complete", len(a.pending)) // cannot happen: a bug
		}
	}
	close(jobs)
	wg.Wait()
	return err
}

// take appends released rows to the buffer (released rows follow everything buffered).
func (a *streamAccount) take(rel map[int]*trace.Series) {
	for g, r := range rel {
		a.buf[g].Append(r)
	}
}

// more says whether GPU g has rows of a kind not yet buffered that a window ending at end reads: process rows only
// up to end+processMargin, the other kinds' at any time (a window reads up to their first row past its end).
func (a *streamAccount) more(g int, end time.Time) func(int) bool {
	f := a.facts[g]
	return func(kind int) bool {
		var e trace.Extent
		switch kind {
		case kindCounter:
			e = f.ext.Counters
		case kindSamples:
			e = f.ext.Samples
		case kindProcessSamples, kindProcesses:
			if a.complete.After(end.Add(processMargin)) {
				return false
			}
			e = f.ext.ProcessSamples
			if kind == kindProcesses {
				e = f.ext.Processes
			}
		default:
			e = f.ext.Telemetry
		}
		return e.N > 0 && !a.complete.After(e.Last())
	}
}

// dispatch hands every pending run whose window is complete to the workers, then drops the rows no pending run
// needs.
func (a *streamAccount) dispatch(jobs chan<- job) {
	rows, procs := 0, 0
	for _, b := range a.buf {
		p := len(b.ProcessSamples) + len(b.Processes)
		rows, procs = rows+len(b.Samples)+len(b.Counters)+len(b.Telemetry)+p, procs+p
	}
	a.peakRows, a.peakProcessRows = max(a.peakRows, rows), max(a.peakProcessRows, procs)
	keep := a.pending[:0]
	for _, i := range a.pending {
		sp := a.spans[i]
		end := maxT(sp.End, sp.Start)
		if w := a.window(sp, end); w != nil {
			jobs <- job{i, w}
			continue
		}
		keep = append(keep, i)
	}
	a.pending = keep
	a.trim()
}

// window is run sp's window when the buffer holds all of it.
func (a *streamAccount) window(sp Span, end time.Time) *trace.Trace {
	if !a.complete.After(end) {
		return nil
	}
	w := &trace.Trace{Env: a.env, GPUs: make(map[int]*trace.Series, len(a.buf)), Events: runEvents(a.events, sp)}
	for g, b := range a.buf {
		x, ok := spanOf(b, sp.Start, end, a.facts[g].shifts, a.more(g, end))
		if !ok {
			return nil
		}
		w.GPUs[g] = cut(b, x)
	}
	return w
}

// trim drops each GPU's rows before what the earliest pending run's window starts with (later runs start later).
func (a *streamAccount) trim() {
	never := func(int) bool { return false }
	for g, b := range a.buf {
		if len(a.pending) == 0 {
			*b = trace.Series{}
			continue
		}
		sp := a.spans[a.pending[0]]
		x, _ := spanOf(b, sp.Start, maxT(sp.End, sp.Start), a.facts[g].shifts, never)
		// Views handed to workers keep their arrays; dropping a prefix by reslicing frees it when append moves
		// the buffer.
		b.Samples = b.Samples[min(x.s0, len(b.Samples)):]
		b.Counters = b.Counters[min(x.c0, len(b.Counters)):]
		b.Telemetry = b.Telemetry[min(x.t0, len(b.Telemetry)):]
		b.ProcessSamples = b.ProcessSamples[min(x.p0, len(b.ProcessSamples)):]
		b.Processes = b.Processes[min(x.q0, len(b.Processes)):]
	}
}

// account is one run from its window: the meters and lag meters built on it with the whole series' fits.
func (a *streamAccount) account(i int, w *trace.Trace) Run {
	sp := a.spans[i]
	meters := make(map[int]*account.Meter, len(w.GPUs))
	var lms map[int]*lagMeter
	if a.detailed {
		lms = map[int]*lagMeter{}
	}
	for g, s := range w.GPUs {
		f := a.facts[g]
		if f.method != account.MethodHybrid {
			meters[g] = account.FittedMeter(s, f.method, nil, f.lag)
			continue
		}
		// One window's readings and integral for the meter's hybrid and the budget's at lag ± u.
		lags, gains := []time.Duration{f.lag.Lag}, f.gain[:1]
		if lms != nil {
			lags, gains = []time.Duration{f.lag.Lag, f.lag.Lag - f.lag.U, f.lag.Lag + f.lag.U}, f.gain[:]
		}
		hs, err := energy.NewHybridsFitted(s.Counters, s.Samples, lags, gains)
		if err != nil {
			meters[g] = account.FittedMeter(s, "", nil, f.lag) // the window lacks what the hybrid reads: no energy
			continue
		}
		meters[g] = account.FittedMeter(s, f.method, hs[0], f.lag)
		if lms != nil {
			lms[g] = &lagMeter{est: f.lag, h: hs[0], lo: hs[1], hi: hs[2]}
		}
	}
	return traceRun(w, a.name, sp, meters, lms, a.detailed, a.plots)
}
