package account

import (
	"cmp"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// ProcessLedger keeps running per-process energy totals of a sampler's GPUs (lem-exporter's
// lem_process_gpu_energy_joules_total): the model of SplitSlice applied to each interval between two energy-counter
// readings (a second or two), in millijoules, the counter's own unit, so on every GPU the processes, idle,
// unattributed and the overflow add up exactly to the counter's increase over the intervals settled. An interval is
// settled once the per-process data covering it has been polled. It is safe for concurrent use.
type ProcessLedger struct {
	cfg  LedgerConfig
	mu   sync.Mutex
	gpus map[int]*gpuLedger
	seq  uint64
}

// LedgerConfig bounds what a ledger keeps.
type LedgerConfig struct {
	// MaxProcesses caps the processes with a total of their own per GPU (default 64); later ones go to the GPU's
	// overflow total until folding frees room.
	MaxProcesses int
	// Grace is how long a process that has gone keeps its total before it is folded away (default 5 min: every
	// scrape in it sees the final value).
	Grace time.Duration
	// IdleW fixes a GPU's idle power; a GPU not listed estimates it (see gpuLedger.idleW).
	IdleW map[int]float64
}

// Defaults of LedgerConfig.
const (
	DefaultMaxProcesses = 64
	DefaultProcessGrace = 5 * time.Minute
)

// maxPending bounds the intervals waiting for process data: a GPU whose polls stopped (lost, say) settles its
// oldest with what is known rather than grow without bound.
const maxPending = 64

// keepRecent is how much process history a GPU's ledger keeps for the intervals still to settle.
const keepRecent = 30 * time.Second

// LedgerProcess is one process's running total on one GPU.
type LedgerProcess struct {
	ID       uint64 // unique in the ledger
	PID      uint32
	Identity trace.ProcessIdentity
	EnergyMJ int64
	// FirstSeen and LastSeen bound the process's sightings and busy samples.
	FirstSeen, LastSeen time.Time
}

// LedgerGPU is one GPU's totals.
type LedgerGPU struct {
	Processes []LedgerProcess // in ID order
	// IdleMJ, UnattributedMJ and OverflowMJ are the GPU's other totals (OverflowMJ: processes past the cap).
	IdleMJ, UnattributedMJ, OverflowMJ int64
	// SettledMJ is the counter's increase over the intervals settled: the sum of everything above, folded
	// processes' totals included (FoldedMJ).
	SettledMJ, FoldedMJ int64
	// SettledTo is the end of the last interval settled.
	SettledTo time.Time
	// IdleW is the idle power in use (NaN before the first interval).
	IdleW float64
	// Overflowed counts processes whose energy went to the overflow total; Folded processes folded away.
	Overflowed, Folded uint64
	// Polls counts the polls of the GPU's processes: none, and the GPU has no process data at all.
	Polls uint64
}

type interval struct {
	t0, t1 time.Time
	mj     int64
}

type ledgerProc struct {
	LedgerProcess
	overflow  bool
	samples   []trace.ProcessSample
	sightings []time.Time
}

type gpuLedger struct {
	attributable bool
	fixedIdle    float64 // NaN: estimated
	idleFree     float64 // lowest mean power of an interval with no process; +Inf before one
	idleAny      float64 // lowest mean power of any interval
	last         trace.CounterReading
	hasLast      bool
	pending      []interval
	polledTo     time.Time
	live         map[uint32]*ledgerProc // by PID: the current process of each
	tot          LedgerGPU
	byID         map[uint64]*ledgerProc
	own          int // processes in byID with a total of their own
}

// NewProcessLedger keeps totals for the GPUs of env; MIG GPUs and those without per-process utilization have
// their energy above idle unattributed while processes run.
func NewProcessLedger(env meta.Environment, cfg LedgerConfig) *ProcessLedger {
	if cfg.MaxProcesses <= 0 {
		cfg.MaxProcesses = DefaultMaxProcesses
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultProcessGrace
	}
	l := &ProcessLedger{cfg: cfg, gpus: map[int]*gpuLedger{}}
	for _, d := range env.Devices {
		g := &gpuLedger{attributable: d.ProcessUtilization && (d.MIGMode == nil || !*d.MIGMode), fixedIdle: math.NaN(),
			idleFree: math.Inf(1), idleAny: math.Inf(1), live: map[uint32]*ledgerProc{}, byID: map[uint64]*ledgerProc{}}
		if w, ok := cfg.IdleW[d.Index]; ok {
			g.fixedIdle = w
		}
		g.tot.IdleW = math.NaN()
		l.gpus[d.Index] = g
	}
	return l
}

// Counter adds a counter reading of GPU gpu: the interval since the previous one waits for its process data.
func (l *ProcessLedger) Counter(gpu int, c trace.CounterReading) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.gpus[gpu]
	if g == nil {
		return
	}
	if g.hasLast && c.Time.After(g.last.Time) {
		mj := int64(c.EnergyMJ) - int64(g.last.EnergyMJ)
		if c.EnergyMJ < g.last.EnergyMJ { // reset: the counter restarted from zero, so its value is what was spent
			mj = int64(c.EnergyMJ)
		}
		g.pending = append(g.pending, interval{t0: g.last.Time.Time(), t1: c.Time.Time(), mj: mj})
	}
	if !g.hasLast || c.Time.After(g.last.Time) {
		g.last, g.hasLast = c, true
	}
	l.settle(g)
}

// Poll adds one poll of GPU gpu's processes at time at: the new per-process samples and the processes running.
func (l *ProcessLedger) Poll(gpu int, at time.Time, samples []trace.ProcessSample, procs []trace.Process) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.gpus[gpu]
	if g == nil {
		return
	}
	for _, p := range procs {
		lp := l.process(g, p.PID, p.Identity, p.Time)
		lp.sightings = append(lp.sightings, p.Time)
	}
	for _, s := range samples {
		lp := l.process(g, s.PID, trace.ProcessIdentity{}, s.Time)
		lp.samples = append(lp.samples, s)
	}
	if at.After(g.polledTo) {
		g.polledTo = at
	}
	g.tot.Polls++
	l.settle(g)
	l.fold(g, at)
}

// process returns the live process pid of g, starting one where there is none or where the PID now belongs to
// another command or container (recycled).
func (l *ProcessLedger) process(g *gpuLedger, pid uint32, id trace.ProcessIdentity, at time.Time) *ledgerProc {
	lp := g.live[pid]
	if lp != nil && recycled(lp.Identity, id) {
		lp.LastSeen = maxTime(lp.LastSeen, at) // it ends here; folding retires it
		delete(g.live, pid)
		lp = nil
	}
	if lp == nil {
		l.seq++
		lp = &ledgerProc{LedgerProcess: LedgerProcess{ID: l.seq, PID: pid, FirstSeen: at, LastSeen: at}}
		if g.own >= l.cfg.MaxProcesses {
			lp.overflow = true
			g.tot.Overflowed++
		} else {
			g.own++
		}
		g.live[pid] = lp
		g.byID[lp.ID] = lp
	}
	mergeIdentity(&lp.Identity, id)
	if at.Before(lp.FirstSeen) {
		lp.FirstSeen = at
	}
	lp.LastSeen = maxTime(lp.LastSeen, at)
	return lp
}

// recycled says whether a PID's new identity is another process's: a different command or container.
func recycled(was, now trace.ProcessIdentity) bool {
	return (now.Command != "" && was.Command != "" && now.Command != was.Command) ||
		(now.ContainerID != "" && was.ContainerID != "" && now.ContainerID != was.ContainerID)
}

// settle splits every pending interval whose process data has been polled (or that has waited too long).
func (l *ProcessLedger) settle(g *gpuLedger) {
	for len(g.pending) > 0 {
		iv := g.pending[0]
		if g.polledTo.Before(iv.t1.Add(ProcessSamplePeriod)) && len(g.pending) <= maxPending {
			return
		}
		g.pending = g.pending[1:]
		l.split(g, iv)
	}
}

// split applies the model to one interval.
func (l *ProcessLedger) split(g *gpuLedger, iv interval) {
	procs := make([]*ledgerProc, 0, len(g.byID))
	for _, p := range g.byID {
		procs = append(procs, p)
	}
	slices.SortFunc(procs, func(a, b *ledgerProc) int { return cmp.Compare(a.ID, b.ID) })
	busy, held := make([]float64, len(procs)), make([]bool, len(procs))
	anyThere := false
	for i, p := range procs {
		bc := cursor{spans: busySpans(p.samples)}
		hc := cursor{spans: heldSpans(p.sightings)}
		busy[i] = bc.mean(iv.t0, iv.t1)
		held[i] = hc.mean(iv.t0, iv.t1) > 0
		anyThere = anyThere || held[i] || busy[i] > 0
	}
	dt := iv.t1.Sub(iv.t0).Seconds()
	w := float64(iv.mj) / 1000 / dt
	g.idleAny = min(g.idleAny, w)
	if !anyThere {
		g.idleFree = min(g.idleFree, w)
	}
	idleW := g.idleW()
	g.tot.IdleW = idleW
	sl := SplitSlice(iv.mj, int64(math.Round(idleW*dt*1000)), busy, held, g.attributable)
	g.tot.IdleMJ += sl.Idle
	g.tot.UnattributedMJ += sl.Unattributed
	for i, p := range procs {
		if p.overflow {
			g.tot.OverflowMJ += sl.Procs[i]
		} else {
			p.EnergyMJ += sl.Procs[i]
		}
	}
	g.tot.SettledMJ += iv.mj
	g.tot.SettledTo = iv.t1
	// History the remaining intervals no longer need.
	cut := iv.t1.Add(-keepRecent)
	for _, p := range procs {
		p.samples = trimFront(p.samples, func(s trace.ProcessSample) bool { return s.Time.Before(cut) })
		p.sightings = trimFront(p.sightings, func(t time.Time) bool { return t.Before(cut) })
	}
}

// idleW is the GPU's idle power: fixed, or the lowest mean power of an interval with no process on the GPU, or,
// before one was seen, of any interval.
func (g *gpuLedger) idleW() float64 {
	switch {
	case !math.IsNaN(g.fixedIdle):
		return g.fixedIdle
	case !math.IsInf(g.idleFree, 1):
		return g.idleFree
	case !math.IsInf(g.idleAny, 1):
		return g.idleAny
	}
	return 0
}

// fold removes processes gone for longer than the grace period (their totals move to FoldedMJ) and frees their
// room under the cap.
func (l *ProcessLedger) fold(g *gpuLedger, now time.Time) {
	for id, p := range g.byID {
		if now.Sub(p.LastSeen) <= l.cfg.Grace || p.LastSeen.Add(ProcessSlack).After(g.tot.SettledTo) {
			continue // still there, or its energy not yet all settled
		}
		delete(g.byID, id)
		if g.live[p.PID] == p {
			delete(g.live, p.PID)
		}
		if !p.overflow {
			g.own--
			g.tot.FoldedMJ += p.EnergyMJ
			g.tot.Folded++
		}
	}
}

// Snapshot returns GPU gpu's totals (ok false for a GPU the ledger does not keep).
func (l *ProcessLedger) Snapshot(gpu int) (LedgerGPU, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.gpus[gpu]
	if g == nil {
		return LedgerGPU{}, false
	}
	out := g.tot
	out.Processes = make([]LedgerProcess, 0, len(g.byID))
	for _, p := range g.byID {
		if !p.overflow {
			out.Processes = append(out.Processes, p.LedgerProcess)
		}
	}
	sort.Slice(out.Processes, func(i, j int) bool { return out.Processes[i].ID < out.Processes[j].ID })
	return out, true
}

// trimFront drops the leading elements old says are old, copying once the dead prefix dominates.
func trimFront[T any](xs []T, old func(T) bool) []T {
	i := 0
	for i < len(xs) && old(xs[i]) {
		i++
	}
	if i > len(xs)/2 {
		return append([]T(nil), xs[i:]...)
	}
	return xs[i:]
}
