package account_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// feedLedger plays the shared GPU (sharedLevels, addProcesses) into a ledger as the exporter's sampler delivers
// it, over [from, until] seconds: a counter reading every second, the processes polled every 500 ms with the driver
// samples stamped since the previous poll.
func feedLedger(l *account.ProcessLedger, from, until float64) {
	s := &trace.Series{}
	addProcesses(s)
	level := func(ms int) float64 {
		w := sharedLevels[0].W
		for _, lv := range sharedLevels {
			if time.Duration(ms)*time.Millisecond >= lv.At {
				w = lv.W
			}
		}
		return w
	}
	for ms := int(from * 1000); ms <= int(until*1000); ms += 500 {
		now := at(float64(ms) / 1000)
		if ms%1000 == 0 {
			e := uint64(5_000_000)
			for k := 0; k < ms; k += 1000 {
				e += uint64(level(k) * 1000) // mJ over each second before
			}
			l.Counter(0, trace.CounterReading{Time: trace.StampOf(now), EnergyMJ: e})
		}
		var samples []trace.ProcessSample
		for _, p := range s.ProcessSamples {
			if p.Time.After(now.Add(-500*time.Millisecond)) && !p.Time.After(now) {
				samples = append(samples, p)
			}
		}
		var procs []trace.Process
		for _, p := range s.Processes {
			if p.Time.Equal(now) {
				procs = append(procs, p)
			}
		}
		l.Poll(0, now, samples, procs)
	}
}

func sharedEnv() meta.Environment {
	return meta.Environment{Devices: []meta.Device{{Index: 0, UUID: "GPU-shared", ProcessUtilization: true}}}
}

// conserved checks the ledger's law: every millijoule the counter rose over the settled intervals is in exactly
// one total.
func conserved(t *testing.T, g account.LedgerGPU) {
	t.Helper()
	sum := g.IdleMJ + g.UnattributedMJ + g.OverflowMJ + g.FoldedMJ
	for _, p := range g.Processes {
		sum += p.EnergyMJ
	}
	assert.Equal(t, g.SettledMJ, sum, "processes + idle + unattributed + overflow + folded = the counter's increase")
}

// The exporter's running totals give the run's split, to the millijoule: the counter's one-second intervals fall
// on the levels' edges here, so A, B and idle are exactly the values worked out by hand for the run.
func TestLedgerMatchesTheModel(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  account.LedgerConfig
	}{
		{"fixed idle", account.LedgerConfig{IdleW: map[int]float64{0: 80}}},
		{"estimated idle", account.LedgerConfig{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := account.NewProcessLedger(sharedEnv(), c.cfg)
			feedLedger(l, 0, 52)
			g, ok := l.Snapshot(0)
			require.True(t, ok)
			conserved(t, g)
			assert.Equal(t, int64(wantTotal*1000)+90_000, g.SettledMJ, "the intervals to 51 s are settled: 52 s has been polled")
			assert.Equal(t, at(51), g.SettledTo)
			assert.Equal(t, 80.0, g.IdleW)
			require.Len(t, g.Processes, 2)
			a, b := g.Processes[0], g.Processes[1]
			assert.Equal(t, uint32(101), a.PID)
			assert.Equal(t, "bench-a", a.Identity.ContainerName)
			assert.Equal(t, int64(wantA*1000), a.EnergyMJ)
			assert.Equal(t, int64(wantB*1000), b.EnergyMJ)
			assert.Equal(t, int64(wantIdle*1000)+90_000, g.IdleMJ, "and the idle GPU's 50-51 s")
			assert.Equal(t, at(10), a.FirstSeen)
			assert.Equal(t, at(30), a.LastSeen)
			assert.Equal(t, uint64(105), g.Polls)
		})
	}
}

// Past the cap a process's energy goes to the overflow total, counted; a process gone for longer than the grace
// period is folded away and frees its room.
func TestLedgerCapAndFold(t *testing.T) {
	l := account.NewProcessLedger(sharedEnv(), account.LedgerConfig{MaxProcesses: 1, Grace: 5 * time.Second,
		IdleW: map[int]float64{0: 80}})
	feedLedger(l, 0, 34)
	g, _ := l.Snapshot(0)
	conserved(t, g)
	require.Len(t, g.Processes, 1, "B came second: over the cap")
	assert.Equal(t, uint64(1), g.Overflowed)
	assert.Equal(t, int64(3200_000+2520_000), g.Processes[0].EnergyMJ)
	assert.Equal(t, int64(1680_000+(120-80)*3*1000), g.OverflowMJ, "B's share to 33 s")

	feedLedger(l, 34.5, 52)
	g, _ = l.Snapshot(0)
	conserved(t, g)
	assert.Empty(t, g.Processes, "A last seen at 30 s: folded 5 s later")
	assert.Equal(t, uint64(1), g.Folded)
	assert.Equal(t, int64(wantA*1000), g.FoldedMJ)
	assert.Equal(t, int64(wantB*1000), g.OverflowMJ, "B stays in the overflow it started in")

	// Room again: a new process has a total of its own.
	l.Poll(0, at(52.5), nil, []trace.Process{{Time: at(52.5), PID: 303, GPUInstance: -1, ComputeInstance: -1}})
	g, _ = l.Snapshot(0)
	require.Len(t, g.Processes, 1)
	assert.Equal(t, uint32(303), g.Processes[0].PID)
}

// A PID seen again under another command is another process: its energy starts afresh.
func TestLedgerRecycledPID(t *testing.T) {
	l := account.NewProcessLedger(sharedEnv(), account.LedgerConfig{IdleW: map[int]float64{0: 0}})
	l.Counter(0, trace.CounterReading{Time: trace.StampOf(at(0)), EnergyMJ: 0})
	l.Poll(0, at(0), nil, []trace.Process{{Time: at(0), PID: 7, Identity: trace.ProcessIdentity{Command: "a"}}})
	l.Counter(0, trace.CounterReading{Time: trace.StampOf(at(1)), EnergyMJ: 1000})
	l.Poll(0, at(2), nil, []trace.Process{{Time: at(2), PID: 7, Identity: trace.ProcessIdentity{Command: "b"}}})
	l.Counter(0, trace.CounterReading{Time: trace.StampOf(at(3)), EnergyMJ: 3000})
	l.Poll(0, at(4), nil, []trace.Process{{Time: at(4), PID: 7, Identity: trace.ProcessIdentity{Command: "b"}}})
	g, _ := l.Snapshot(0)
	conserved(t, g)
	require.Len(t, g.Processes, 2)
	assert.Equal(t, "a", g.Processes[0].Identity.Command)
	assert.Equal(t, int64(1000), g.Processes[0].EnergyMJ, "0-1 s: a alone held the GPU")
	assert.Equal(t, "b", g.Processes[1].Identity.Command)
	assert.Equal(t, int64(2000), g.Processes[1].EnergyMJ, "1-3 s: a's sighting reaches to 1 s, b's from 1 s")
	assert.Zero(t, g.IdleMJ)
}

func TestLedgerMIG(t *testing.T) {
	on := true
	l := account.NewProcessLedger(meta.Environment{Devices: []meta.Device{{Index: 0, MIGMode: &on}}},
		account.LedgerConfig{IdleW: map[int]float64{0: 80}})
	feedLedger(l, 0, 52)
	g, _ := l.Snapshot(0)
	conserved(t, g)
	assert.Equal(t, int64((3200+4200+400)*1000), g.UnattributedMJ)
	for _, p := range g.Processes {
		assert.Zero(t, p.EnergyMJ)
	}
	assert.False(t, math.IsNaN(g.IdleW))
}
