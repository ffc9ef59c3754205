package account

import (
	"math"
	"slices"
	"sort"
	"time"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// Process attribution (docs/METHODOLOGY.md, "Who used the joules"). A GPU's energy over each slice of time is
// split three ways:
//
//   - idle: the GPU's idle power times the slice (at most the slice's energy), and the whole slice while no
//     process was on the GPU;
//   - the processes: the rest, in proportion to how busy the driver says each kept the GPU (its largest engine
//     share, trace.ProcessSample.Busy, averaged over the slice); where no process was busy but some held a context
//     (and so kept the clocks up), equally among those;
//   - unattributed: the rest where processes were there but the driver gives no per-process utilization (MIG,
//     or a GPU or recording without it).
//
// Energies are split in whole units (microjoules for a run, millijoules, the counter's own unit, for the exporter)
// by the largest-remainder rule, so on every GPU the shares add up to the GPU's energy exactly.

// ProcessModel names the model in manifests.
const ProcessModel = "busy_share"

const (
	// ProcessSlice is the slice a run's energy is split over: the counter's update period, below which the
	// hybrid only interpolates, and a tenth of the driver's per-process sample period.
	ProcessSlice = 100 * time.Millisecond
	// ProcessSamplePeriod is how long before its stamp a per-process sample reaches (measured on H200, driver
	// 580: one sample a second); a sample reaches back no further than the process's previous one.
	ProcessSamplePeriod = time.Second
	// ProcessSlack is how long a process seen at a poll is taken to hold its context before its first and after its
	// last sighting: the sampler polls at least once a second.
	ProcessSlack = time.Second
	// ProcessHold is the longest gap between two sightings of a process that still counts as one stay; longer, it
	// had gone (a poll that finds no process writes no row).
	ProcessHold = 2 * time.Second
	// idleWindow is the window whose mean power estimates idle power where no baseline was measured.
	idleWindow = time.Second
)

// span is an interval with a value (a busy share, or 1 for a context held).
type span struct {
	from, to time.Time
	v        float64
}

// cursor walks a process's spans through consecutive slices.
type cursor struct {
	spans []span
	i     int
}

// mean is the time-weighted mean of the spans over [a, b): 0 where none reaches. Slices must come in order.
func (c *cursor) mean(a, b time.Time) float64 {
	for c.i < len(c.spans) && !c.spans[c.i].to.After(a) {
		c.i++
	}
	var sum float64
	for j := c.i; j < len(c.spans) && c.spans[j].from.Before(b); j++ {
		s := c.spans[j]
		lo, hi := maxTime(s.from, a), minTime(s.to, b)
		if hi.After(lo) {
			sum += s.v * hi.Sub(lo).Seconds()
		}
	}
	return sum / b.Sub(a).Seconds()
}

// busySpans turns one process's samples (in time order) into the spans they cover: each from the previous sample
// or ProcessSamplePeriod before its stamp, whichever is later, to its stamp.
func busySpans(ss []trace.ProcessSample) []span {
	out := make([]span, 0, len(ss))
	var prev time.Time
	for _, s := range ss {
		from := s.Time.Add(-ProcessSamplePeriod)
		if prev.After(from) {
			from = prev
		}
		if s.Time.After(from) {
			out = append(out, span{from: from, to: s.Time, v: s.Busy()})
		}
		prev = s.Time
	}
	return out
}

// heldSpans turns one process's sightings (in time order) into the stays they show, each widened by ProcessSlack.
func heldSpans(ts []time.Time) []span {
	var out []span
	for i, t := range ts {
		if i > 0 && t.Sub(ts[i-1]) <= ProcessHold {
			out[len(out)-1].to = t.Add(ProcessSlack)
			continue
		}
		out = append(out, span{from: t.Add(-ProcessSlack), to: t.Add(ProcessSlack), v: 1})
	}
	return out
}

// allocate splits d units in proportion to w (not all zero) by the largest-remainder rule: the parts add up to d
// exactly; ties go to the lower index.
func allocate(d int64, w []float64) []int64 {
	out := make([]int64, len(w))
	var sum float64
	for _, x := range w {
		sum += x
	}
	if d == 0 || sum <= 0 {
		return out
	}
	rem := make([]float64, len(w))
	var given int64
	for i, x := range w {
		exact := float64(d) * x / sum
		out[i] = int64(math.Floor(exact))
		rem[i] = exact - float64(out[i])
		given += out[i]
	}
	order := make([]int, len(w))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return rem[order[a]] > rem[order[b]] })
	// Floors leave at most len(w) units (and float rounding may leave a unit more or less): hand them round.
	for k := 0; given != d; k++ {
		i := order[k%len(order)]
		if given < d {
			out[i]++
			given++
		} else if out[i] > 0 {
			out[i]--
			given--
		}
	}
	return out
}

// Slice is one slice's split: idle, unattributed and each process's part (in the order of the weights given).
type Slice struct {
	Idle, Unattributed int64
	Procs              []int64
}

// SplitSlice splits e units of one slice: idleCap (the idle power's energy over the slice) to idle, the rest by
// busy (each process's mean busy share) where any is above zero, else equally among the processes that held a
// context, else to idle when none did; with attributable false (no per-process utilization), the rest is
// unattributed while any process is there. Negative energy (no power measured) goes to idle.
func SplitSlice(e, idleCap int64, busy []float64, held []bool, attributable bool) Slice {
	s := Slice{Procs: make([]int64, len(busy))}
	if e <= 0 {
		s.Idle = e
		return s
	}
	s.Idle = min(max(idleCap, 0), e)
	rest := e - s.Idle
	anyHeld, anyBusy := false, false
	for i := range busy {
		anyHeld = anyHeld || held[i] || busy[i] > 0
		anyBusy = anyBusy || busy[i] > 0
	}
	switch {
	case !anyHeld:
		s.Idle = e
	case !attributable:
		s.Unattributed = rest
	case anyBusy:
		s.Procs = allocate(rest, busy)
	default:
		w := make([]float64, len(held))
		for i, h := range held {
			if h {
				w[i] = 1
			}
		}
		s.Procs = allocate(rest, w)
	}
	return s
}

// procTrack is one process on one GPU over a run.
type procTrack struct {
	pid        uint32
	busy, held cursor
	share      manifest.ProcessShare
	units      int64
}

// processTracks gathers the processes of a series that were on the GPU in [start, end), in PID order.
func processTracks(s *trace.Series, start, end time.Time) []*procTrack {
	samples := map[uint32][]trace.ProcessSample{}
	for _, p := range s.Window(start, end.Add(ProcessSamplePeriod)).ProcessSamples {
		samples[p.PID] = append(samples[p.PID], p)
	}
	seen := map[uint32][]trace.Process{}
	for _, p := range s.Window(start.Add(-ProcessSlack), end.Add(ProcessSlack)).Processes {
		seen[p.PID] = append(seen[p.PID], p)
	}
	pids := map[uint32]bool{}
	for p := range samples {
		pids[p] = true
	}
	for p := range seen {
		pids[p] = true
	}
	var out []*procTrack
	for pid := range pids {
		tr := &procTrack{pid: pid, share: manifest.ProcessShare{PID: pid}}
		tr.busy.spans = busySpans(samples[pid])
		var ts []time.Time
		for _, p := range seen[pid] {
			ts = append(ts, p.Time)
			tr.noteSighting(p)
		}
		tr.held.spans = heldSpans(ts)
		// Only what overlaps the run counts.
		tr.busy.spans = slices.DeleteFunc(tr.busy.spans, func(x span) bool { return !x.to.After(start) || !x.from.Before(end) })
		tr.held.spans = slices.DeleteFunc(tr.held.spans, func(x span) bool { return !x.to.After(start) || !x.from.Before(end) })
		if len(tr.busy.spans)+len(tr.held.spans) == 0 {
			continue
		}
		for _, x := range tr.busy.spans {
			lo, hi := maxTime(x.from, start), minTime(x.to, end)
			tr.share.BusyS += x.v * hi.Sub(lo).Seconds()
			tr.noteTime(lo)
			tr.noteTime(hi)
		}
		out = append(out, tr)
	}
	slices.SortFunc(out, func(a, b *procTrack) int { return int(a.pid) - int(b.pid) })
	return out
}

// noteSighting merges what a poll told about the process: names (the last non-empty wins), memory, instance.
func (tr *procTrack) noteSighting(p trace.Process) {
	sh := &tr.share
	mergeIdentity(&sh.ProcessIdentity, p.Identity)
	sh.MaxMemoryBytes = max(sh.MaxMemoryBytes, p.MemoryBytes)
	if p.GPUInstance != trace.NoInstance {
		gi, ci := p.GPUInstance, p.ComputeInstance
		sh.GPUInstance, sh.ComputeInstance = &gi, &ci
	}
	tr.noteTime(p.Time)
}

// mergeIdentity sets the fields of dst that src knows.
func mergeIdentity(dst *trace.ProcessIdentity, src trace.ProcessIdentity) {
	set := func(d *string, v string) {
		if v != "" {
			*d = v
		}
	}
	set(&dst.Command, src.Command)
	set(&dst.Runtime, src.Runtime)
	set(&dst.ContainerID, src.ContainerID)
	set(&dst.ContainerName, src.ContainerName)
	set(&dst.PodUID, src.PodUID)
	set(&dst.PodNamespace, src.PodNamespace)
	set(&dst.PodName, src.PodName)
}

func (tr *procTrack) noteTime(t time.Time) {
	if tr.share.FirstSeen.IsZero() || t.Before(tr.share.FirstSeen) {
		tr.share.FirstSeen = t
	}
	if t.After(tr.share.LastSeen) {
		tr.share.LastSeen = t
	}
}

const microjoules = 1e6

// GPUSplit is one GPU's energy over a run split among its processes (in PID order), in microjoules.
type GPUSplit struct {
	Total, Idle, Unattributed int64
	IdleW                     float64
	IdleSource                string
	Processes                 []manifest.ProcessShare
	Units                     []int64 // each process's share
}

// SplitGPU splits the energy the meter gives over [start, end] among the processes of s (see the model above).
// idleW is the GPU's idle power; NaN estimates it from the run (manifest.IdleFromNoProcess, IdleFromLowest).
// attributable is false where the driver gives no per-process utilization. ok is false where the series has no
// process over the run or the meter does not cover it.
func SplitGPU(meter *Meter, s *trace.Series, start, end time.Time, idleW float64, attributable bool) (GPUSplit, bool) {
	if meter == nil || s == nil || !end.After(start) {
		return GPUSplit{}, false
	}
	tracks := processTracks(s, start, end)
	if len(tracks) == 0 || math.IsNaN(meter.Energy(start, end)) {
		return GPUSplit{}, false
	}
	// The slices' energies are differences of the running total, rounded once: they add up to the total exactly.
	var bounds []time.Time
	for t := start; t.Before(end); t = t.Add(ProcessSlice) {
		bounds = append(bounds, t)
	}
	bounds = append(bounds, end)
	cum := make([]int64, len(bounds))
	for i := 1; i < len(bounds); i++ {
		j := meter.Energy(start, bounds[i])
		if math.IsNaN(j) {
			cum[i] = cum[i-1]
			continue
		}
		cum[i] = int64(math.Round(j * microjoules))
	}
	cum[len(cum)-1] = int64(math.Round(meter.Energy(start, end) * microjoules))

	n := len(bounds) - 1
	// at fills the busy shares and contexts held of slice k (the cursors walk forward: slices in order).
	busy, held := make([]float64, len(tracks)), make([]bool, len(tracks))
	at := func(k int) {
		for i, tr := range tracks {
			busy[i] = tr.busy.mean(bounds[k], bounds[k+1])
			held[i] = tr.held.mean(bounds[k], bounds[k+1]) > 0
		}
	}
	rewind := func() {
		for _, tr := range tracks {
			tr.busy.i, tr.held.i = 0, 0
		}
	}
	out := GPUSplit{Total: cum[n], IdleW: idleW, IdleSource: manifest.IdleFromBaseline}
	if math.IsNaN(idleW) {
		free := make([]bool, n)
		for k := range n {
			at(k)
			free[k] = !slices.Contains(held, true) && !slices.ContainsFunc(busy, func(b float64) bool { return b > 0 })
		}
		rewind()
		out.IdleW, out.IdleSource = estimateIdle(bounds, cum, free)
	}
	units := make([]int64, len(tracks))
	for k := range n {
		at(k)
		e := cum[k+1] - cum[k]
		idleCap := int64(math.Round(out.IdleW * bounds[k+1].Sub(bounds[k]).Seconds() * microjoules))
		sl := SplitSlice(e, idleCap, busy, held, attributable)
		out.Idle += sl.Idle
		out.Unattributed += sl.Unattributed
		for i, u := range sl.Procs {
			units[i] += u
		}
	}
	for i, tr := range tracks {
		out.Processes = append(out.Processes, tr.share)
		out.Units = append(out.Units, units[i])
	}
	return out, true
}

// estimateIdle is the lowest mean power over the run's whole idleWindows during which no process was on the GPU;
// where there was always one, the lowest over any window; a run shorter than a window, its mean power.
func estimateIdle(bounds []time.Time, cum []int64, free []bool) (float64, string) {
	per := int(idleWindow / ProcessSlice)
	n := len(bounds) - 1
	lowest, lowestFree := math.Inf(1), math.Inf(1)
	for k := 0; k+per <= n; k += per {
		free := !slices.Contains(free[k:k+per], false)
		w := float64(cum[k+per]-cum[k]) / microjoules / bounds[k+per].Sub(bounds[k]).Seconds()
		lowest = min(lowest, w)
		if free {
			lowestFree = min(lowestFree, w)
		}
	}
	switch {
	case !math.IsInf(lowestFree, 1):
		return lowestFree, manifest.IdleFromNoProcess
	case !math.IsInf(lowest, 1):
		return lowest, manifest.IdleFromLowest
	}
	return float64(cum[n]) / microjoules / bounds[n].Sub(bounds[0]).Seconds(), manifest.IdleFromLowest
}

// processes splits each GPU's energy over the run among the processes on it (m.Processes); nil where the trace
// holds no process on the run's GPUs. The idle power is the GPU's deep idle at the run's temperature where a
// baseline was measured, else estimated from the run.
func (a *accounting) processes(gpus []GPU, baselines map[int]*manifest.Baseline) {
	in, m := a.in, a.m
	m.Processes = nil
	if in.Trace == nil {
		return
	}
	pe := &manifest.ProcessEnergy{Model: ProcessModel}
	for _, g := range gpus {
		idx := g.Index
		dev, ok := m.Environment.Device(idx)
		if !ok {
			dev, _ = in.Trace.Env.Device(idx)
		}
		idleW := math.NaN()
		if idle, ok := a.idle[idx]; ok && baselines[idx] != nil {
			idleW = idle
		}
		pg, ok := processGPU(dev, in.Trace.GPUs[idx], in.Meters[idx], g.Role, in.Start, in.End, idleW)
		if !ok {
			continue
		}
		pg.Index = idx
		pe.GPUs = append(pe.GPUs, pg)
		if pg.UnattributedJ > 0 {
			why := "the driver gives no per-process utilization here"
			if dev.MIGMode != nil && *dev.MIGMode {
				why = "MIG is on and the driver gives no per-process utilization (nor power per instance)"
			}
			a.warn("process_energy_unattributed", &idx, "GPU %d: %.1f J above idle while processes ran is unattributed: %s",
				idx, float64(pg.UnattributedJ), why)
		}
	}
	if len(pe.GPUs) == 0 {
		return
	}
	pe.Containers = containers(pe.GPUs)
	m.Processes = pe
}

// processGPU splits one GPU's energy over [start, end] into the manifest's form; ok is false where the GPU had no
// process then. idleW NaN estimates the idle power from the interval.
func processGPU(dev meta.Device, s *trace.Series, meter *Meter, role string, start, end time.Time, idleW float64) (manifest.ProcessGPU, bool) {
	if s == nil || len(s.ProcessSamples)+len(s.Processes) == 0 {
		return manifest.ProcessGPU{}, false
	}
	mig := dev.MIGMode != nil && *dev.MIGMode
	win := s.Window(start.Add(-ProcessSamplePeriod), end.Add(ProcessSamplePeriod))
	attributable := !mig && (dev.ProcessUtilization || len(win.ProcessSamples) > 0)
	sp, ok := SplitGPU(meter, s, start, end, idleW, attributable)
	if !ok {
		return manifest.ProcessGPU{}, false
	}
	if role == "" {
		role = manifest.RoleWorkload
	}
	pg := manifest.ProcessGPU{Index: dev.Index, Role: role, EnergyJ: manifest.Num(float64(sp.Total) / microjoules),
		IdleW: manifest.Num(sp.IdleW), IdleSource: sp.IdleSource, IdleJ: manifest.Num(float64(sp.Idle) / microjoules),
		UnattributedJ: manifest.Num(float64(sp.Unattributed) / microjoules), Processes: []manifest.ProcessShare{}}
	for i, p := range sp.Processes {
		p.EnergyJ = manifest.Num(float64(sp.Units[i]) / microjoules)
		pg.Processes = append(pg.Processes, p)
	}
	return pg, true
}

// containers sums the processes' shares per container over the GPUs, in order of first appearance.
func containers(gpus []manifest.ProcessGPU) []manifest.ContainerEnergy {
	var out []manifest.ContainerEnergy
	at := map[string]int{}
	pids := map[string]map[uint32]bool{}
	for _, g := range gpus {
		for _, p := range g.Processes {
			if p.ContainerID == "" {
				continue
			}
			i, ok := at[p.ContainerID]
			if !ok {
				i = len(out)
				at[p.ContainerID] = i
				pids[p.ContainerID] = map[uint32]bool{}
				out = append(out, manifest.ContainerEnergy{ContainerID: p.ContainerID})
			}
			c := &out[i]
			c.ContainerName, c.Runtime = firstOf(p.ContainerName, c.ContainerName), firstOf(p.Runtime, c.Runtime)
			c.PodUID, c.PodNamespace, c.PodName = firstOf(p.PodUID, c.PodUID), firstOf(p.PodNamespace, c.PodNamespace),
				firstOf(p.PodName, c.PodName)
			c.EnergyJ += p.EnergyJ
			pids[p.ContainerID][p.PID] = true
			c.Processes = len(pids[p.ContainerID])
		}
	}
	return out
}

// PhaseProcesses is the per-process split of a trace's phases.
type PhaseProcesses struct {
	RunID string                `json:"run_id,omitempty"`
	Name  string                `json:"name"`
	Start time.Time             `json:"start"`
	End   time.Time             `json:"end"`
	GPUs  []manifest.ProcessGPU `json:"gpus"`
}

// TraceProcesses splits every GPU's energy over the whole recording and over each phase occurrence of the trace
// among the processes, with one idle power per GPU for all of them: idleW's, else the lowest 1 s mean power while
// no process was on the GPU anywhere in the recording (phases of constant load have no idle moment of their own).
func TraceProcesses(t *trace.Trace, meters map[int]*Meter, idleW map[int]float64) (whole []manifest.ProcessGPU, phases []PhaseProcesses) {
	if meters == nil {
		meters = Meters(t)
	}
	first, last := t.Span()
	idle := map[int]float64{}
	source := map[int]string{}
	for _, g := range t.GPUIndices() {
		dev, _ := t.Env.Device(g)
		dev.Index = g
		w, ok := idleW[g]
		if !ok {
			w = math.NaN()
		}
		pg, ok := processGPU(dev, t.GPUs[g], meters[g], "", first, last, w)
		if !ok {
			continue
		}
		if !math.IsNaN(w) {
			pg.IdleSource = manifest.IdleGiven
		}
		whole = append(whole, pg)
		idle[g], source[g] = float64(pg.IdleW), pg.IdleSource
	}
	for _, p := range trace.Phases(t.Events, last) {
		pp := PhaseProcesses{RunID: p.RunID, Name: p.Name, Start: p.Start, End: p.End, GPUs: []manifest.ProcessGPU{}}
		for _, g := range t.GPUIndices() {
			w, ok := idle[g]
			if !ok {
				continue
			}
			dev, _ := t.Env.Device(g)
			dev.Index = g
			if pg, ok := processGPU(dev, t.GPUs[g], meters[g], "", p.Start, p.End, w); ok {
				pg.IdleSource = source[g]
				pp.GPUs = append(pp.GPUs, pg)
			}
		}
		phases = append(phases, pp)
	}
	return whole, phases
}

// firstOf returns the first non-empty string.
func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
