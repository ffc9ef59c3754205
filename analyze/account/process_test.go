package account_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

const ctrA = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"

// sharedLevels is a GPU shared by two processes, 50 s: idle at 80 W; A alone, 100 % busy, at 400 W (10-20 s);
// A at 60 % and B at 40 % at 500 W (20-30 s); B holding its context, busy never, at 120 W (30-40 s); nobody, the
// clocks still up, at 90 W (40-50 s).
var sharedLevels = []testutil.Level{{At: 0, W: 80}, {At: 10 * time.Second, W: 400}, {At: 20 * time.Second, W: 500},
	{At: 30 * time.Second, W: 120}, {At: 40 * time.Second, W: 90}}

// addProcesses records A and B on series s as the sampler would: the driver's samples once a second (each for
// the second before it), the processes at every 500 ms poll while they run.
func addProcesses(s *trace.Series) {
	for sec := 11; sec <= 30; sec++ {
		sm, mem := 1.0, 0.1
		if sec > 20 {
			sm, mem = 0.6, 0.2
		}
		s.ProcessSamples = append(s.ProcessSamples, trace.ProcessSample{Time: at(float64(sec)), PID: 101, SM: sm, Mem: mem})
		if sec > 20 {
			s.ProcessSamples = append(s.ProcessSamples, trace.ProcessSample{Time: at(float64(sec)), PID: 202, SM: 0.4})
		}
	}
	a := trace.ProcessIdentity{Command: "python3", Runtime: "docker", ContainerID: ctrA, ContainerName: "bench-a"}
	for ms := 10000; ms <= 39000; ms += 500 {
		if ms <= 29000 {
			s.Processes = append(s.Processes, trace.Process{Time: at(float64(ms) / 1000), PID: 101, MemoryBytes: 1 << 30,
				GPUInstance: trace.NoInstance, ComputeInstance: trace.NoInstance, Identity: a})
		}
		if ms >= 20000 {
			s.Processes = append(s.Processes, trace.Process{Time: at(float64(ms) / 1000), PID: 202, MemoryBytes: 1 << 29,
				GPUInstance: trace.NoInstance, ComputeInstance: trace.NoInstance, Identity: trace.ProcessIdentity{Command: "bench"}})
		}
	}
}

// sharedCounterTrace is the shared GPU with its counter read every 100 ms and no samples: the counter method
// interpolates linearly, exact for power that changes on the read grid, so every slice's energy is known.
func sharedCounterTrace(mig bool) *trace.Trace {
	tr := trace.New(meta.Environment{Devices: []meta.Device{{Index: 0, UUID: "GPU-shared", Name: "NVIDIA H200",
		MIGMode: &mig, ProcessUtilization: !mig, EnergyCounter: true}}})
	s := tr.Series(0)
	e := uint64(5_000_000)
	for ms := 0; ms <= 50000; ms += 100 {
		s.Counters = append(s.Counters, trace.CounterReading{Time: trace.StampOf(at(float64(ms) / 1000)), EnergyMJ: e})
		w := sharedLevels[0].W
		for _, l := range sharedLevels {
			if time.Duration(ms)*time.Millisecond >= l.At {
				w = l.W
			}
		}
		e += uint64(w * 100) // mJ over the next 100 ms
	}
	addProcesses(s)
	return tr
}

// Expected by hand from the levels, with 80 W idle: A gets (400-80) W × 10 s and 60 % of (500-80) W × 10 s, B
// 40 % of that and (120-80) W × 10 s (its context held the clocks up, nobody else was there); idle is 80 W × 40 s
// and the last 10 s whole (no process was on the GPU). 11,900 J in all.
const (
	wantA, wantB, wantIdle, wantTotal = 3200 + 2520, 1680 + 400, 80*40 + 900, 800 + 4000 + 5000 + 1200 + 900
)

func TestProcessSplitConservesEnergy(t *testing.T) {
	tr := sharedCounterTrace(false)
	m := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(0), End: at(50),
		Baselines: map[int]*manifest.Baseline{0: {MedianW: 80, P25W: 80, P75W: 80, Samples: 100}}})
	require.Equal(t, account.MethodCounter, m.GPUs[0].Method)
	assert.Equal(t, manifest.Num(wantTotal), m.GPUs[0].Energy.HybridJ)
	require.NotNil(t, m.Processes)
	assert.Equal(t, "busy_share", m.Processes.Model)
	require.Len(t, m.Processes.GPUs, 1)
	g := m.Processes.GPUs[0]
	assert.Equal(t, manifest.Num(wantTotal), g.EnergyJ)
	assert.Equal(t, manifest.Num(80), g.IdleW)
	assert.Equal(t, manifest.IdleFromBaseline, g.IdleSource)
	assert.Equal(t, manifest.Num(wantIdle), g.IdleJ)
	assert.Equal(t, manifest.Num(0), g.UnattributedJ)
	require.Len(t, g.Processes, 2)
	a, b := g.Processes[0], g.Processes[1]
	assert.Equal(t, uint32(101), a.PID)
	assert.Equal(t, manifest.Num(wantA), a.EnergyJ)
	assert.Equal(t, manifest.Num(wantB), b.EnergyJ)
	assert.Equal(t, g.EnergyJ, a.EnergyJ+b.EnergyJ+g.IdleJ+g.UnattributedJ, "conservation")
	assert.InDelta(t, 10*1.0+10*0.6, a.BusyS, 1e-9, "busy seconds: SM share × time")
	assert.InDelta(t, 10*0.4, b.BusyS, 1e-9)
	assert.Equal(t, "bench-a", a.ContainerName)
	assert.Equal(t, "bench", b.Command)
	assert.Empty(t, b.ContainerID, "a host process")
	assert.Equal(t, uint64(1<<30), a.MaxMemoryBytes)
	assert.Nil(t, a.GPUInstance)
	assert.Equal(t, at(10), a.FirstSeen)
	assert.Equal(t, at(30), a.LastSeen, "its last sample covers up to 30 s")
	assert.Equal(t, []manifest.ContainerEnergy{{ContainerID: ctrA, ContainerName: "bench-a", Runtime: "docker",
		EnergyJ: wantA, Processes: 1}}, m.Processes.Containers)
	for _, w := range m.Warnings {
		assert.NotContains(t, w.Code, "process", "nothing to warn about")
	}
}

// Without a baseline the idle power is the lowest 1 s mean while no process was there: 80 W, the same split.
func TestProcessSplitEstimatesIdle(t *testing.T) {
	tr := sharedCounterTrace(false)
	m := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(0), End: at(50), Baselines: map[int]*manifest.Baseline{}})
	g := m.Processes.GPUs[0]
	assert.Equal(t, manifest.Num(80), g.IdleW)
	assert.Equal(t, manifest.IdleFromNoProcess, g.IdleSource)
	assert.Equal(t, manifest.Num(wantA), g.Processes[0].EnergyJ)
	assert.Equal(t, manifest.Num(wantIdle), g.IdleJ)

	// A run from 12 s to 35 s always had a process: idle is then the lowest 1 s mean power, 120 W (B alone),
	// an upper bound; what is above it is split as before.
	m = &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(12), End: at(35), Baselines: map[int]*manifest.Baseline{}})
	g = m.Processes.GPUs[0]
	assert.Equal(t, manifest.Num(120), g.IdleW)
	assert.Equal(t, manifest.IdleFromLowest, g.IdleSource)
	assert.Equal(t, manifest.Num((400-120)*8+(500-120)*10*0.6), g.Processes[0].EnergyJ)
	assert.Equal(t, manifest.Num((500-120)*10*0.4), g.Processes[1].EnergyJ, "B's context alone: nothing above idle")
	assert.Equal(t, manifest.Num(120*23), g.IdleJ)
}

// On MIG the driver gives no per-process utilization: the energy above idle while processes ran is unattributed,
// never spread over the processes (nor the instances) by guesswork.
func TestProcessSplitOnMIG(t *testing.T) {
	tr := sharedCounterTrace(true)
	tr.GPUs[0].ProcessSamples = nil // the driver refuses them on MIG
	for i := range tr.GPUs[0].Processes {
		tr.GPUs[0].Processes[i].GPUInstance, tr.GPUs[0].Processes[i].ComputeInstance = 1+i%2, 0
	}
	m := &manifest.Manifest{Environment: tr.Env}
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: at(0), End: at(50),
		Baselines: map[int]*manifest.Baseline{0: {MedianW: 80, P25W: 80, P75W: 80, Samples: 100}}})
	g := m.Processes.GPUs[0]
	assert.Equal(t, manifest.Num(0), g.Processes[0].EnergyJ)
	assert.Equal(t, manifest.Num(0), g.Processes[1].EnergyJ)
	assert.Equal(t, manifest.Num(3200+4200+400), g.UnattributedJ)
	assert.Equal(t, manifest.Num(wantIdle), g.IdleJ)
	require.NotNil(t, g.Processes[0].GPUInstance)
	assert.Equal(t, 1, *g.Processes[0].GPUInstance)
	var codes []string
	for _, w := range m.Warnings {
		codes = append(codes, w.Code)
	}
	assert.Contains(t, codes, "process_energy_unattributed")
}

// The same shared GPU measured the way lem measures a real one (50 Hz samples, phase-locked counter reads each
// second, a 60 ms lag): the shares add up to the GPU's energy to the microjoule, and each is within 0.5 % of the
// share of the true energy (the curve's exact integral, not the energy code).
func TestProcessSplitHybrid(t *testing.T) {
	syn := testutil.Synth{Start: t0, Duration: 50 * time.Second, Lag: 60 * time.Millisecond, Levels: sharedLevels}
	tr := syn.Trace()
	tr.Env.Devices[0].ProcessUtilization = true
	addProcesses(tr.GPUs[0])
	m := &manifest.Manifest{Environment: tr.Env}
	start, end := at(1), at(49)
	account.Fill(m, account.Input{Trace: tr, RunID: "r", Start: start, End: end,
		Baselines: map[int]*manifest.Baseline{0: {MedianW: 80, P25W: 80, P75W: 80, Samples: 100}}})
	require.Equal(t, account.MethodHybrid, m.GPUs[0].Method)
	g := m.Processes.GPUs[0]
	sum := g.IdleJ + g.UnattributedJ
	for _, p := range g.Processes {
		sum += p.EnergyJ
	}
	assert.InDelta(t, float64(g.EnergyJ), float64(sum), 1e-6, "the shares are whole microjoules of the total")
	assert.InDelta(t, float64(m.GPUs[0].Energy.HybridJ), float64(g.EnergyJ), 0.5e-6, "the total is the GPU's energy")

	e := func(a, b float64) float64 { return syn.Energy(at(a), at(b)) }
	trueA := e(10, 20) - 800 + 0.6*(e(20, 30)-800)
	trueB := 0.4*(e(20, 30)-800) + e(30, 40) - 800
	assert.InEpsilon(t, trueA, float64(g.Processes[0].EnergyJ), 0.005)
	assert.InEpsilon(t, trueB, float64(g.Processes[1].EnergyJ), 0.005)

	// Exactly, in the split's own units.
	sp, ok := account.SplitGPU(account.NewMeter(tr.GPUs[0]), tr.GPUs[0], start, end, 80, true)
	require.True(t, ok)
	total := sp.Idle + sp.Unattributed
	for _, u := range sp.Units {
		total += u
	}
	assert.Equal(t, sp.Total, total)
}

func TestSplitSlice(t *testing.T) {
	for _, c := range []struct {
		name         string
		e, idle      int64
		busy         []float64
		held         []bool
		attributable bool
		want         account.Slice
	}{
		{"by busy share, remainders to the largest", 1000, 300, []float64{0.5, 0.25, 0.25}, []bool{true, true, true}, true,
			account.Slice{Idle: 300, Procs: []int64{350, 175, 175}}},
		{"a unit left over goes to the largest remainder", 10, 0, []float64{1, 1, 1}, []bool{true, true, true}, true,
			account.Slice{Procs: []int64{4, 3, 3}}},
		{"nobody busy: equally among the contexts held", 900, 600, []float64{0, 0, 0}, []bool{true, false, true}, true,
			account.Slice{Idle: 600, Procs: []int64{150, 0, 150}}},
		{"nobody there: all idle", 900, 600, []float64{0}, []bool{false}, true, account.Slice{Idle: 900, Procs: []int64{0}}},
		{"below idle power: all idle", 500, 600, []float64{1}, []bool{true}, true, account.Slice{Idle: 500, Procs: []int64{0}}},
		{"no utilization data: unattributed", 900, 600, []float64{0, 0}, []bool{true, true}, false,
			account.Slice{Idle: 600, Unattributed: 300, Procs: []int64{0, 0}}},
		{"a memory-only process counts", 100, 0, []float64{0, 0.5}, []bool{true, true}, true, account.Slice{Procs: []int64{0, 100}}},
		{"no energy", 0, 600, []float64{1}, []bool{true}, true, account.Slice{Procs: []int64{0}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := account.SplitSlice(c.e, c.idle, c.busy, c.held, c.attributable)
			assert.Equal(t, c.want, got)
			sum := got.Idle + got.Unattributed
			for _, p := range got.Procs {
				sum += p
			}
			assert.Equal(t, c.e, sum)
		})
	}
}

// A recording's phases split with one idle power, estimated over the whole recording (the phases themselves have
// no idle moment): the worked example's numbers phase by phase.
func TestTraceProcessesPerPhase(t *testing.T) {
	tr := sharedCounterTrace(false)
	ph := func(s float64, name string) trace.Event {
		return trace.Event{Time: at(s), GPU: trace.NoGPU, Type: trace.EventPhase, RunID: "r", Name: name}
	}
	tr.Events = []trace.Event{ph(10, "a_alone"), ph(20, "shared"), ph(30, "b_context"),
		{Time: at(40), GPU: trace.NoGPU, Type: trace.EventPhaseEnd, RunID: "r"}}
	whole, phases := account.TraceProcesses(tr, nil, nil)
	require.Len(t, whole, 1)
	assert.Equal(t, manifest.Num(80), whole[0].IdleW)
	assert.Equal(t, manifest.Num(wantA), whole[0].Processes[0].EnergyJ)
	require.Len(t, phases, 3)
	want := map[string][2]float64{"a_alone": {3200, 0}, "shared": {2520, 1680}, "b_context": {0, 400}}
	for _, p := range phases {
		require.Len(t, p.GPUs, 1, p.Name)
		g := p.GPUs[0]
		assert.Equal(t, manifest.Num(80), g.IdleW, "%s: the recording's idle power", p.Name)
		assert.Equal(t, manifest.IdleFromNoProcess, g.IdleSource)
		got := map[uint32]manifest.Num{}
		sum := g.IdleJ + g.UnattributedJ
		for _, pr := range g.Processes {
			got[pr.PID] = pr.EnergyJ
			sum += pr.EnergyJ
		}
		assert.Equal(t, manifest.Num(want[p.Name][0]), got[101], "%s: A", p.Name)
		assert.Equal(t, manifest.Num(want[p.Name][1]), got[202], "%s: B", p.Name)
		assert.Equal(t, g.EnergyJ, sum, "%s: conservation", p.Name)
	}
	// A fixed idle power is used as given.
	whole, _ = account.TraceProcesses(tr, nil, map[int]float64{0: 100})
	assert.Equal(t, manifest.Num(100), whole[0].IdleW)
	assert.Equal(t, manifest.IdleGiven, whole[0].IdleSource)
}
