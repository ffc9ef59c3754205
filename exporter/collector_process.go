package exporter

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
)

// ProcessOptions bound the per-process energy series (docs/METHODOLOGY.md, "Who used the joules").
type ProcessOptions struct {
	// MaxSeries caps the processes with a series of their own per GPU (default 64); later ones are summed into
	// pid="other" and counted in lem_process_series_overflow_total.
	MaxSeries int
	// Grace is how long a process that has gone keeps its series (default 5 min); then it is folded away.
	Grace time.Duration
	// IdleW fixes a GPU's idle power (watts by GPU index); otherwise the lowest power seen with no process on it.
	IdleW map[int]float64
}

// Pseudo-PIDs of the per-process energy series that belong to no one process.
const (
	PIDIdle         = "idle"
	PIDUnattributed = "unattributed"
	PIDOther        = "other"
)

// processQueue is the process consumer's subscription: a counter reading and two polls a second per GPU.
const processQueue = 4096

// Processes keeps the per-process energy of the sampled GPUs, fed from the sampler, and exposes it. Its series
// exist only for GPUs whose processes the sampler polls.
type Processes struct {
	ledger *account.ProcessLedger
	env    meta.Environment
	table  table[*processView]

	mu     sync.Mutex
	labels map[uint64][]string // a process's labels, fixed when its series first appears
	sub    *sampler.Subscription
	done   chan struct{}
}

var _ prometheus.Collector = (*Processes)(nil)

// NewProcesses builds the ledger and the descriptors over env's GPUs.
func NewProcesses(env meta.Environment, opts ProcessOptions) *Processes {
	return &Processes{
		ledger: account.NewProcessLedger(env, account.LedgerConfig{MaxProcesses: opts.MaxSeries, Grace: opts.Grace, IdleW: opts.IdleW}),
		env:    env, table: newTable(gpuLabels, processMetrics), labels: map[uint64][]string{}}
}

// Ledger is the running totals the series show.
func (p *Processes) Ledger() *account.ProcessLedger { return p.ledger }

// start feeds the ledger from s until stop.
func (p *Processes) start(s *sampler.Sampler) {
	p.sub = s.Subscribe("processes", processQueue)
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		for rec := range p.sub.C() {
			switch rec.Kind {
			case sampler.KindCounter:
				p.ledger.Counter(rec.GPU, rec.Counter)
			case sampler.KindProcesses:
				p.ledger.Poll(rec.GPU, rec.At, rec.ProcessSamples, rec.Processes)
			}
		}
	}()
}

// stop ends the feed once what the sampler sent has been read.
func (p *Processes) stop() {
	if p.sub == nil {
		return
	}
	p.sub.Close()
	<-p.done
}

// processView is one GPU's totals and the labels of its processes.
type processView struct {
	g      account.LedgerGPU
	labels [][]string // per process in g.Processes: pid, container, pod, namespace
}

// Describe sends every descriptor of the table.
func (p *Processes) Describe(ch chan<- *prometheus.Desc) { p.table.describe(ch) }

// Collect reads each polled GPU's totals from the ledger.
func (p *Processes) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[uint64]bool{}
	for _, dev := range p.env.Devices {
		g, ok := p.ledger.Snapshot(dev.Index)
		if !ok || g.Polls == 0 {
			continue
		}
		v := &processView{g: g, labels: make([][]string, len(g.Processes))}
		for i, pr := range g.Processes {
			keep[pr.ID] = true
			l, ok := p.labels[pr.ID]
			if !ok {
				id := pr.Identity
				l = []string{strconv.FormatUint(uint64(pr.PID), 10), id.Container(), id.PodName, id.PodNamespace}
				p.labels[pr.ID] = l
			}
			v.labels[i] = l
		}
		p.table.collect(ch, v, strconv.Itoa(dev.Index), dev.UUID)
	}
	for id := range p.labels {
		if !keep[id] {
			delete(p.labels, id) // folded away
		}
	}
}

func joules(mj int64) float64 { return float64(mj) / 1000 }

// processMetrics is the process collector's table. The energy series carry the end of the last interval settled:
// the instant their values belong to.
var processMetrics = []metric[*processView]{
	{name: "lem_process_gpu_energy_joules_total", typ: prometheus.CounterValue,
		labels: []string{"pid", "container", "pod", "namespace"},
		help: "GPU energy attributed to a process since the exporter started, joules: the energy above idle by the " +
			"process's share of busy time (docs/METHODOLOGY.md). pid=\"idle\" holds the idle power's energy and all " +
			"energy while no process was on the GPU, pid=\"unattributed\" energy above idle the driver could not tie " +
			"to a process (MIG), pid=\"other\" the processes past the series cap. With these the series add up to the " +
			"GPU's energy counter's increase.",
		values: func(v *processView) []value {
			at := v.g.SettledTo
			out := make([]value, 0, len(v.g.Processes)+3)
			for i, pr := range v.g.Processes {
				out = append(out, value{v: joules(pr.EnergyMJ), labels: v.labels[i], at: at})
			}
			out = append(out, value{v: joules(v.g.IdleMJ), labels: []string{PIDIdle, "", "", ""}, at: at},
				value{v: joules(v.g.UnattributedMJ), labels: []string{PIDUnattributed, "", "", ""}, at: at})
			if v.g.Overflowed > 0 {
				out = append(out, value{v: joules(v.g.OverflowMJ), labels: []string{PIDOther, "", "", ""}, at: at})
			}
			return out
		}},
	{name: "lem_process_gpu_idle_power_watts", typ: prometheus.GaugeValue,
		help: "Idle power the per-process split takes off first, watts: as configured, or the lowest mean power " +
			"between two counter readings with no process on the GPU.",
		values: func(v *processView) []value { return one(v.g.IdleW) }},
	{name: "lem_process_series_overflow_total", typ: prometheus.CounterValue,
		help:   "Processes whose energy went to pid=\"other\" because the per-GPU series cap was reached.",
		values: func(v *processView) []value { return one(float64(v.g.Overflowed)) }},
	{name: "lem_process_folded_total", typ: prometheus.CounterValue,
		help:   "Processes whose series were removed a grace period after they left the GPU.",
		values: func(v *processView) []value { return one(float64(v.g.Folded)) }},
}
