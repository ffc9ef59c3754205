package gpu_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// synthetic: 2 s of 100 W samples every 20 ms and a counter every 100 ms, starting at t0.
func synthetic(t0 time.Time) *trace.Trace {
	tr := trace.New(meta.Environment{Devices: []meta.Device{{Index: 0, UUID: "GPU-x", Name: "test"}}})
	s := tr.Series(0)
	for ms := 0; ms <= 2000; ms += 20 {
		s.Samples = append(s.Samples, trace.PowerSample{Time: t0.Add(time.Duration(ms) * time.Millisecond), PowerW: float64(ms)})
	}
	for ms := 0; ms <= 2000; ms += 100 {
		s.Counters = append(s.Counters, trace.CounterReading{Time: t0.Add(time.Duration(ms) * time.Millisecond), EnergyMJ: uint64(1000 + 100*ms)})
	}
	tr.Events = []trace.Event{{Time: t0.Add(500 * time.Millisecond), GPU: trace.NoGPU, Type: trace.EventPhase, Name: "p"}}
	return tr
}

func TestReplayShiftsAndStepsLikeTheDriver(t *testing.T) {
	rec0 := time.Unix(1795735590, 0)
	start := time.Now().Add(-time.Second) // one second into the recording already
	r, err := gpu.NewReplay(synthetic(rec0), "mem", gpu.ReplayOptions{Start: start, BufferDepth: 400 * time.Millisecond})
	require.NoError(t, err)
	defer r.Close()
	assert.Equal(t, "replay", r.Environment().Source.Kind)
	d := r.Devices()[0]

	ss, err := d.PowerSamples(time.Time{})
	require.NoError(t, err)
	// Only the emulated buffer's 400 ms of history: ~20 samples, the newest about one second in.
	assert.InDelta(t, 20, len(ss), 2)
	last := ss[len(ss)-1]
	assert.InDelta(t, 1000, last.PowerW, 40, "recorded value at 1 s")
	assert.WithinDuration(t, start.Add(time.Duration(last.PowerW)*time.Millisecond), last.Time, time.Microsecond,
		"timestamps shifted to the replay start")

	c, err := d.ReadEnergy()
	require.NoError(t, err)
	assert.Zero(t, (c.EnergyMJ-1000)%10000, "counter steps at recorded reads (%d)", c.EnergyMJ)
	assert.InDelta(t, 1000+100*1000, float64(c.EnergyMJ), 100*150)

	none, err := d.PowerSamples(last.Time)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(none), 1)
}

func TestReplayLoopKeepsCounterRising(t *testing.T) {
	rec0 := time.Unix(1795735590, 0)
	r, err := gpu.NewReplay(synthetic(rec0), "mem", gpu.ReplayOptions{Speed: 20, Loop: true})
	require.NoError(t, err)
	defer r.Close()
	d := r.Devices()[0]
	var prev uint64
	deadline := time.Now().Add(300 * time.Millisecond) // 6 s of replay time: three loops
	for time.Now().Before(deadline) {
		c, err := d.ReadEnergy()
		require.NoError(t, err)
		require.GreaterOrEqual(t, c.EnergyMJ, prev, "counter never goes back across loops")
		prev = c.EnergyMJ
		time.Sleep(5 * time.Millisecond)
	}
	assert.Greater(t, prev, uint64(1000+2*200_000), "at least two loops' energy")
}

func TestReplayEventsAndEnd(t *testing.T) {
	r, err := gpu.NewReplay(synthetic(time.Unix(1795735590, 0)), "mem", gpu.ReplayOptions{Speed: 10})
	require.NoError(t, err)
	defer r.Close()
	var mu sync.Mutex
	var got []trace.Event
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.ReplayEvents(ctx, func(e trace.Event) { mu.Lock(); got = append(got, e); mu.Unlock() })
	select {
	case <-r.Ended():
	case <-time.After(2 * time.Second):
		t.Fatal("replay of 2 s at 10x did not end")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 1)
	assert.Equal(t, "p", got[0].Name)
	assert.WithinDuration(t, r.ToReplayTime(time.Unix(1795735590, 5e8)), got[0].Time, time.Microsecond)
}

func TestReplayRejectsEmptyTrace(t *testing.T) {
	_, err := gpu.NewReplay(trace.New(meta.Environment{}), "empty.parquet", gpu.ReplayOptions{})
	assert.ErrorContains(t, err, "empty.parquet")
	_, err = gpu.OpenReplay(testutil.TracePath("does-not-exist"), gpu.ReplayOptions{})
	assert.ErrorContains(t, err, "does-not-exist")
}
