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
		s.Samples = append(s.Samples, trace.PowerSample{Time: trace.StampOf(t0.Add(time.Duration(ms) * time.Millisecond)), PowerW: float64(ms)})
	}
	for ms := 0; ms <= 2000; ms += 100 {
		s.Counters = append(s.Counters, trace.CounterReading{Time: trace.StampOf(t0.Add(time.Duration(ms) * time.Millisecond)), EnergyMJ: uint64(1000 + 100*ms)})
	}
	tr.Events = []trace.Event{{Time: t0.Add(500 * time.Millisecond), GPU: trace.NoGPU, Type: trace.EventPhase, Name: "p"}}
	return tr
}

func TestReplayShiftsAndStepsLikeTheDriver(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		rec0 := time.Unix(1795735590, 0)
		start := time.Now().Add(-time.Second) // one second into the recording already
		r, err := gpu.NewReplay(synthetic(rec0), "mem", gpu.ReplayOptions{Start: start, BufferDepth: 400 * time.Millisecond})
		require.NoError(t, err)
		defer r.Close()
		assert.Equal(t, "replay", r.Environment().Source.Kind)
		d := r.Devices()[0]

		ss, err := d.PowerSamples(time.Time{})
		require.NoError(t, err)
		// Only the emulated buffer's 400 ms of history: the samples after 600 ms, to 1 s.
		assert.Len(t, ss, 20)
		last := ss[len(ss)-1]
		assert.Equal(t, 1000.0, last.PowerW, "recorded value at 1 s")
		assert.Equal(t, trace.StampOf(start.Add(time.Second)), last.Time, "timestamps shifted to the replay start")
		assert.Equal(t, trace.StampOf(start.Add(620*time.Millisecond)), ss[0].Time)

		c, err := d.ReadEnergy()
		require.NoError(t, err)
		assert.Equal(t, uint64(1000+100*1000), c.EnergyMJ, "the recorded reading at 1 s")
		time.Sleep(99 * time.Millisecond)
		c, err = d.ReadEnergy()
		require.NoError(t, err)
		assert.Equal(t, uint64(1000+100*1000), c.EnergyMJ, "steps only at the recorded reads")
		time.Sleep(time.Millisecond)
		c, err = d.ReadEnergy()
		require.NoError(t, err)
		assert.Equal(t, uint64(1000+100*1100), c.EnergyMJ, "the next reading, at 1.1 s")

		more, err := d.PowerSamples(last.Time.Time())
		require.NoError(t, err)
		assert.Len(t, more, 5, "only the samples newer than the last seen: 1.02 … 1.1 s")
	})
}

func TestReplayLoopKeepsCounterRising(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		rec0 := time.Unix(1795735590, 0)
		r, err := gpu.NewReplay(synthetic(rec0), "mem", gpu.ReplayOptions{Speed: 20, Loop: true})
		require.NoError(t, err)
		defer r.Close()
		d := r.Devices()[0]
		var prev uint64
		for range 60 { // reads every 5 ms to 295 ms: 5.9 s of replay time, into the third loop
			c, err := d.ReadEnergy()
			require.NoError(t, err)
			require.GreaterOrEqual(t, c.EnergyMJ, prev, "counter never goes back across loops")
			prev = c.EnergyMJ
			time.Sleep(5 * time.Millisecond)
		}
		// A loop is the 2 s recording plus one 20 ms sample period; its counter increase is the recorded 200 J
		// plus the seam back to the start at the mean 100 W: 202 J. 5.9 s is 1.86 s into the third loop, where the
		// reading of 1.8 s (1000 + 180,000 mJ) is in force.
		assert.Equal(t, uint64(1000+180_000+2*202_000), prev)
	})
}

func TestReplayEventsAndEnd(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		begin := time.Now()
		r, err := gpu.NewReplay(synthetic(time.Unix(1795735590, 0)), "mem", gpu.ReplayOptions{Speed: 10})
		require.NoError(t, err)
		defer r.Close()
		var mu sync.Mutex
		var got []trace.Event
		var emitted []time.Duration
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go r.ReplayEvents(ctx, func(e trace.Event) {
			mu.Lock()
			got = append(got, e)
			emitted = append(emitted, time.Since(begin))
			mu.Unlock()
		})
		<-r.Ended()
		assert.Equal(t, 200*time.Millisecond, time.Since(begin), "2 s of recording at 10x")
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, got, 1)
		assert.Equal(t, "p", got[0].Name)
		assert.Equal(t, r.ToReplayTime(time.Unix(1795735590, 5e8)), got[0].Time)
		assert.Equal(t, []time.Duration{50 * time.Millisecond}, emitted, "emitted as the replay clock passes it")
	})
}

func TestReplayRejectsEmptyTrace(t *testing.T) {
	_, err := gpu.NewReplay(trace.New(meta.Environment{}), "empty.parquet", gpu.ReplayOptions{})
	assert.ErrorContains(t, err, "empty.parquet")
	_, err = gpu.OpenReplay(testutil.TracePath("does-not-exist"), gpu.ReplayOptions{})
	assert.ErrorContains(t, err, "does-not-exist")
}
