package report

import (
	"log/slog"
	"math"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

// span is one run marked in a trace.
type span struct {
	id, exp, status string
	start, end      time.Time
	results         map[string]string
	workload        map[int]bool // nil: every GPU
	allPhases       bool         // the whole trace as one run: every phase of the trace is the run's
}

// FromTrace makes report runs from a lem trace file (lem-run record, the exporter's recorder, lem-analyze
// pull): one per run marked in it (run_start/run_end events), or one spanning the whole trace when it marks
// none. Energies come from the trace (counter difference, 50 Hz integral, hybrid; per phase); no idle baseline
// is known, so adjusted energy equals raw and the run carries a no_baseline warning.
func FromTrace(path string) ([]Run, error) { return fromTraceFile(path, true) }

// fromTraceFile reads the trace (without telemetry: the energy table needs none); detailed adds each run's
// steady state and plot data.
func fromTraceFile(path string, detailed bool) ([]Run, error) {
	t0 := time.Now()
	t, err := trace.ReadFileWith(path, trace.ReadOptions{SkipTelemetry: true})
	if err != nil {
		return nil, err
	}
	slog.Debug("trace read", "path", path, "took", time.Since(t0))
	spans := map[string]*span{}
	var order []string
	for _, e := range t.Events {
		if e.RunID == "" {
			continue
		}
		sp := spans[e.RunID]
		if sp == nil {
			sp = &span{id: e.RunID, status: manifest.StatusOK, results: map[string]string{}}
			spans[e.RunID] = sp
			order = append(order, e.RunID)
		}
		switch e.Type {
		case trace.EventRunStart:
			sp.start, sp.exp = e.Time, e.Name
			if w, ok := e.Attrs[trace.AttrWorkloadGPUs]; ok {
				sp.workload = map[int]bool{}
				for _, f := range strings.Split(w, ",") {
					if g, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
						sp.workload[g] = true
					}
				}
			}
		case trace.EventRunEnd:
			sp.end = e.Time
			if s := e.Attrs["status"]; s != "" {
				sp.status = s
			}
		case trace.EventResult:
			for k, v := range e.Attrs {
				sp.results[k] = v
			}
		}
	}
	first, last := t.Span()
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	var spanList []*span
	for _, id := range order {
		sp := spans[id]
		if sp.start.IsZero() {
			continue // events of a run that started before the recording
		}
		if sp.end.IsZero() {
			sp.end, sp.status = last, manifest.StatusIntr // still open when the recording ended
		}
		spanList = append(spanList, sp)
	}
	if len(spanList) == 0 {
		// The whole recording: where every GPU has both samples and counter readings.
		for i, g := range t.GPUIndices() {
			f, l := t.GPUs[g].Common()
			if i == 0 || f.After(first) {
				first = f
			}
			if i == 0 || l.Before(last) {
				last = l
			}
		}
		spanList = []*span{{id: base, exp: base, status: manifest.StatusOK, start: first, end: last, results: map[string]string{},
			allPhases: true}}
	}
	allPhases := trace.Phases(t.Events, last)
	// Each GPU's hybrid in parallel, then the runs in parallel.
	t1 := time.Now()
	hybrids := energy.HybridsOf(t)
	slog.Debug("hybrids fitted", "took", time.Since(t1))
	t1 = time.Now()
	defer func() { slog.Debug("runs computed", "runs", len(spanList), "took", time.Since(t1)) }()
	var wg sync.WaitGroup
	phasesOf := map[string][]trace.Phase{}
	for _, p := range allPhases {
		phasesOf[p.RunID] = append(phasesOf[p.RunID], p)
	}
	runs := make([]Run, len(spanList))
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(spanList)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				runs[i] = traceRun(t, path, spanList[i], phasesOf, hybrids, detailed)
			}
		}()
	}
	for i := range spanList {
		next <- i
	}
	close(next)
	wg.Wait()
	return runs, nil
}

// traceRun computes one run of a trace.
func traceRun(t *trace.Trace, path string, sp *span, phasesOf map[string][]trace.Phase, hybrids map[int]*energy.Hybrid,
	detailed bool) Run {
	m := &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: sp.id, Experiment: sp.exp,
		Status: sp.status, Backend: "trace", Environment: t.Env, Results: sp.results,
		Times:    manifest.Times{Start: sp.start, End: sp.end, DurationS: sp.end.Sub(sp.start).Seconds()},
		Files:    manifest.Files{Trace: filepath.Base(path)},
		Warnings: []manifest.Warning{{Code: "no_baseline", Message: "trace without a run manifest: no idle baseline, adjusted energy = raw"}}}
	if m.Experiment == "" {
		m.Experiment = sp.id
	}
	phases := phasesOf[sp.id]
	if sp.allPhases {
		phases = nil
		for _, ps := range phasesOf {
			phases = append(phases, ps...)
		}
		sort.Slice(phases, func(i, j int) bool { return phases[i].Start.Before(phases[j].Start) })
	}
	byName := map[string]int{}
	var runEvents []trace.Event
	for _, e := range t.Events {
		if !e.Time.Before(sp.start) && !e.Time.After(sp.end) {
			runEvents = append(runEvents, e)
		}
	}
	for _, g := range t.GPUIndices() {
		s := t.GPUs[g]
		mg := manifest.GPU{Index: g, Role: manifest.RoleWorkload}
		if sp.workload != nil && !sp.workload[g] {
			mg.Role = manifest.RoleObserved
		}
		if d, ok := t.Env.Device(g); ok {
			mg.UUID, mg.Name = d.UUID, d.Name
		}
		if c, err := energy.Counter(s.Counters, sp.start, sp.end); err == nil {
			mg.Energy.CounterJ = c.Joules
		}
		if r, err := energy.Sampled(s.Samples, sp.start, sp.end); err == nil {
			mg.Energy.SampledJ = r.Joules
		}
		if h := hybrids[g]; h != nil {
			if r, err := h.Energy(sp.start, sp.end); err == nil {
				mg.Energy.HybridJ = r.Joules
			}
		}
		if mg.Energy.HybridJ == 0 {
			mg.Energy.HybridJ = math.Max(mg.Energy.SampledJ, mg.Energy.CounterJ)
		}
		mg.Energy.AdjustedJ = mg.Energy.HybridJ
		if m.Times.DurationS > 0 {
			mg.MeanPowerW = mg.Energy.HybridJ / m.Times.DurationS
		}
		win := s.Window(sp.start, sp.end)
		for _, x := range win.Samples {
			mg.PeakPowerW = math.Max(mg.PeakPowerW, x.PowerW)
		}
		c := analyze.CaptureQuality(g, win, runEvents)
		mg.Capture = manifest.Capture{Samples: c.Samples, Gaps: c.Gaps, DrainGaps: c.DrainGaps}
		m.AddGPU(mg)
		if mg.Role == manifest.RoleObserved {
			continue // observed GPUs are not in the workload's phases
		}
		for _, p := range phases {
			j := 0.0
			if h := hybrids[g]; h != nil {
				if r, err := h.Energy(p.Start, p.End); err == nil {
					j = r.Joules
				}
			}
			key := p.Name + "\x00" + p.Start.String()
			i, ok := byName[key]
			if !ok {
				i = len(m.Phases)
				byName[key] = i
				m.Phases = append(m.Phases, manifest.Phase{Name: p.Name, Start: p.Start, End: p.End,
					DurationS: p.End.Sub(p.Start).Seconds()})
			}
			m.Phases[i].GPUs = append(m.Phases[i].GPUs, manifest.PhaseGPU{Index: g, HybridJ: j, AdjustedJ: j})
			m.Phases[i].Energy.HybridJ += j
			m.Phases[i].Energy.AdjustedJ += j
		}
	}
	if tok, err := strconv.ParseFloat(sp.results["output_tokens"], 64); err == nil && tok > 0 && m.Energy.HybridJ > 0 {
		m.Derived = &manifest.Derived{OutputTokens: tok, JPerOutputToken: m.Energy.HybridJ / tok,
			JPerOutputTokenAdj: m.Energy.AdjustedJ / tok, OutputTokensPerJ: tok / m.Energy.HybridJ,
			OutputTokensPerJAdj: tok / m.Energy.AdjustedJ}
	}
	r := Run{Dir: path, Manifest: m, Uncertainty: budget(m)}
	if detailed {
		detail(&r, t, sp.start)
	}
	return r
}
