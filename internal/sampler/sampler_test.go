package sampler_test

import (
	"context"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/gpu/gputest"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// run starts s and returns a stop function that waits for it.
func run(t *testing.T, s *sampler.Sampler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// TestReplayedLLMThroughSampler replays the real H200 LLM recording through the sampler with default settings, on
// the virtual clock, and checks that it captured every sample and phase-locked counter read the recording holds,
// and that what it captured gives the per-phase energy of the plain hybrid on all the recording's 100 ms reads.
func TestReplayedLLMThroughSampler(t *testing.T) {
	direct, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "captured.parquet")
	var (
		got          *trace.Trace
		st           sampler.Stats
		start, stopT time.Time     // replay time the sampler started and stopped
		shift        time.Duration // recording time + shift = replay time
	)
	testutil.VirtualTime(t, func(t *testing.T) {
		src, err := gpu.NewReplay(direct, "h200-llm", gpu.ReplayOptions{})
		require.NoError(t, err)
		defer src.Close()
		s, err := sampler.New(src, nil, sampler.Config{}, nil)
		require.NoError(t, err)
		rec, err := recorder.Start(s, recorder.Options{Memory: true, Path: path, FlushEvery: time.Second})
		require.NoError(t, err)
		start = time.Now()
		shift = src.ToReplayTime(start).Sub(start)
		stop := run(t, s)
		<-src.Ended()
		time.Sleep(time.Second) // one more drain and counter read
		stopT = time.Now()
		stop()
		got, err = rec.Stop()
		require.NoError(t, err)
		st, _ = s.Stats(0)
	})
	if t.Failed() {
		return
	}

	gs, ds := got.GPUs[0], direct.GPUs[0]
	onDisk, err := trace.ReadFile(path)
	require.NoError(t, err)
	fs := onDisk.GPUs[0]
	assert.Equal(t, [4]int{len(gs.Samples), len(gs.Counters), len(gs.Telemetry), len(got.Events)},
		[4]int{len(fs.Samples), len(fs.Counters), len(fs.Telemetry), len(onDisk.Events)}, "file holds what memory holds")
	assert.Equal(t, "replay", onDisk.Env.Source.Kind)

	// Every recorded sample from the emulated driver buffer's depth before the start to the stop was captured,
	// once, with its time and value.
	var want []trace.PowerSample
	for _, x := range ds.Samples {
		if rt := x.Time.Add(shift); rt.After(trace.StampOf(start.Add(-gpu.DefaultBufferDepth))) && !rt.After(trace.StampOf(stopT)) {
			want = append(want, trace.PowerSample{Time: rt, PowerW: x.PowerW})
		}
	}
	assert.Equal(t, want, gs.Samples, "captured samples")
	assert.Equal(t, uint64(len(want)), st.SamplesCaptured)
	assert.Zero(t, st.Gaps, "the recording has no gap over 40 ms")
	assert.Zero(t, st.Overruns)

	// Counter reads: the phase lock at start peeks every 10 ms until the recorded value changes, puts the update
	// midway between the last two peeks, and reads half a period (50 ms) after it, then once a second. The lock's
	// peeks are not stored. Each reading shows the recorded value in force at its instant.
	valueAt := func(rt time.Time) uint64 {
		var v uint64
		for _, c := range ds.Counters {
			if c.Time.Add(shift).After(trace.StampOf(rt)) {
				break
			}
			v = c.EnergyMJ
		}
		return v
	}
	peek := start
	for valueAt(peek) == valueAt(start) {
		peek = peek.Add(10 * time.Millisecond)
	}
	var wantReads []trace.CounterReading
	for at := peek.Add(-5 * time.Millisecond).Add(50 * time.Millisecond); !at.After(stopT); at = at.Add(time.Second) {
		wantReads = append(wantReads, trace.CounterReading{Time: trace.StampOf(at), EnergyMJ: valueAt(at)})
	}
	var gotReads []trace.CounterReading
	for _, c := range gs.Counters {
		gotReads = append(gotReads, trace.CounterReading{Time: c.Time, EnergyMJ: c.EnergyMJ})
	}
	assert.Equal(t, wantReads, gotReads, "phase-locked counter reads, one a second")
	t.Logf("%d counter reads, the first %v after the start", len(gotReads), gotReads[0].Time.Sub(trace.StampOf(start)))

	_, end := got.Span()
	phases := trace.Phases(got.Events, end)
	var names []string
	for _, p := range phases {
		names = append(names, p.Name)
	}
	require.Equal(t, []string{"load", "idle", "bs1", "bs8", "bs32"}, names)
	capRows, capLag := energy.ByPhase(0, gs, phases, energy.Options{})
	t.Logf("captured lag %v (contrast %.1f)", capLag.Lag, capLag.Contrast)

	// The direct side: the plain hybrid (testutil, not the energy package) on every 100 ms reading of the
	// recording with the recording's counter lag, over the same instants.
	for i, p := range phases {
		a, b := p.Start.Add(-shift), p.End.Add(-shift)
		hyb := testutil.PlainHybrid(ds.Counters, ds.Samples, recordingLag, a, b)
		smp := testutil.PlainSampled(ds.Samples, a, b)
		c := capRows[i]
		require.Equal(t, p.Name, c.Phase)
		assert.InEpsilon(t, hyb, c.HybridJ, hybridTolerance, "%s: captured hybrid %.1f J vs direct %.1f J", p.Name, c.HybridJ, hyb)
		assert.InEpsilon(t, smp, c.SampledJ, 1e-9, "%s: 50 Hz", p.Name)
		t.Logf("%-5s direct %.1f J  captured %.1f J  (%+.3f %%)", p.Name, hyb, c.HybridJ, 100*(c.HybridJ/hyb-1))
	}
}

// recordingLag is the counter lag of the h200-llm recording (its own fit gives 65 ms).
const recordingLag = 65 * time.Millisecond

// hybridTolerance bounds the captured hybrid's difference from the direct one per phase. On the virtual clock the
// difference is exact and at most 0.049 % (bs32); unlocked reads (Config.NoPhaseLock) give 0.4–1.4 %.
const hybridTolerance = 0.001

func TestConfigValidation(t *testing.T) {
	cases := map[string]sampler.Config{
		"counter too fast":        {CounterInterval: time.Millisecond},
		"drain outruns buffer":    {DrainInterval: 3 * time.Second},
		"ring shorter than drain": {RingSpan: 100 * time.Millisecond},
	}
	for name, cfg := range cases {
		assert.Error(t, cfg.WithDefaults().Validate(), name)
	}
	assert.NoError(t, sampler.Config{}.WithDefaults().Validate())
}

// The go-nvml mock (gputest) on the virtual clock: 100 W samples every 20 ms with 2 s of history at the start, and a
// counter rising at 100 W. Counts below follow from the configured intervals and the run's length; a length off
// the tick grid keeps every tick strictly before the stop.

// A lost GPU is reported and skipped; the other keeps sampling (fault injected through go-nvml's mock).
func TestLostGPUDoesNotStopOthers(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}, &gputest.Fault{LostAfter: 2}), nil)
		require.NoError(t, err)
		defer src.Close()
		s, err := sampler.New(src, nil, sampler.Config{DrainInterval: 50 * time.Millisecond, CounterInterval: 50 * time.Millisecond,
			TelemetryInterval: 50 * time.Millisecond}, nil)
		require.NoError(t, err)
		sub := s.Subscribe("test", 1024)
		stop := run(t, s)
		time.Sleep(425 * time.Millisecond)
		stop()
		sub.Close()

		ok, _ := s.Stats(0)
		lost, _ := s.Stats(1)
		assert.False(t, ok.Lost)
		assert.True(t, lost.Lost)
		assert.Contains(t, lost.LastError, "GPU is lost")
		// Drains at 0, every 50 ms to 400 ms and at the stop: 10. The open's probe and the first drain succeed.
		assert.Equal(t, uint64(10), lost.Calls[sampler.CallSamples].Count)
		assert.Equal(t, uint64(9), lost.Calls[sampler.CallSamples].Errors)
		assert.Zero(t, ok.Calls[sampler.CallSamples].Errors)
		assert.Equal(t, uint64(101+21), ok.SamplesCaptured, "healthy GPU kept its 2 s history and kept draining to 420 ms")
		assert.Equal(t, uint64(9), ok.CounterReads, "reads at 0, 50, … 400 ms")
		assert.InDelta(t, 100*0.4, ok.EnergyJ, 1e-9, "100 W from the first read to the last")

		var lostEvents int
		for r := range sub.C() {
			if r.Kind == sampler.KindEvent && r.Event.Type == trace.EventDeviceError && r.Event.GPU == 1 {
				lostEvents++
			}
		}
		assert.Equal(t, 1, lostEvents, "one event when the GPU is lost, not one per failed call")
	})
}

func TestNotSupportedCounterIsNotAnError(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{NoEnergy: true}), nil)
		require.NoError(t, err)
		defer src.Close()
		s, err := sampler.New(src, nil, sampler.Config{CounterInterval: 20 * time.Millisecond}, nil)
		require.NoError(t, err)
		stop := run(t, s)
		time.Sleep(130 * time.Millisecond)
		stop()
		st, _ := s.Stats(0)
		c := st.Calls[sampler.CallEnergy]
		assert.Equal(t, uint64(7), c.NotSupported, "reads at 0, 20, … 120 ms")
		assert.Zero(t, c.Errors)
		assert.False(t, st.HasCounter)
		assert.Empty(t, st.LastError)
		assert.Equal(t, uint64(101+6), st.SamplesCaptured, "samples still flow: the history and 20 … 120 ms")
	})
}

func TestSlowSubscriberNeverBlocks(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}), nil)
		require.NoError(t, err)
		defer src.Close()
		s, err := sampler.New(src, nil, sampler.Config{DrainInterval: 10 * time.Millisecond, CounterInterval: 10 * time.Millisecond,
			TelemetryInterval: 5 * time.Millisecond}, nil)
		require.NoError(t, err)
		stuck := s.Subscribe("stuck", 1) // never read
		fast := s.Subscribe("fast", 4096)
		var got int
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range fast.C() {
				got++
			}
		}()
		stop := run(t, s)
		time.Sleep(302 * time.Millisecond)
		stop()
		fast.Close()
		stuck.Close()
		<-done
		var late int
		for range stuck.C() { // a consumer reads until its queue closes: the record queued and the one pending
			late++
		}
		// Sample batches at 0 (the history) and at every 20 ms to 300 ms (the 10 ms drains between find none):
		// 16; counter reads at 0, 10, … 300 ms: 31; telemetry at 5, 10, … 300 ms: 60.
		assert.Equal(t, 16+31+60, got, "the other consumer got everything")
		assert.Zero(t, fast.Dropped())
		assert.Equal(t, 2, late)
		assert.Equal(t, uint64(got-late), stuck.Dropped(), "the stuck queue drops and counts the rest")
		st, _ := s.Stats(0)
		assert.Equal(t, uint64(1+30+1), st.Calls[sampler.CallSamples].Count, "sampling went on: drains at 0, every 10 ms and at the stop")
		assert.Equal(t, map[string]uint64{}, s.Subscriptions())
	})
}

func TestReadCounterOnDemandAndWindow(t *testing.T) {
	testutil.VirtualTime(t, func(t *testing.T) {
		src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}), nil)
		require.NoError(t, err)
		defer src.Close()
		s, err := sampler.New(src, nil, sampler.Config{}, nil)
		require.NoError(t, err)
		t0 := time.Now()
		run(t, s)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := s.ReadCounter(ctx, 0)
		require.NoError(t, err)
		// Served once the phase lock at start has seen the counter move: its second peek, 10 ms in.
		assert.Equal(t, trace.StampOf(t0.Add(10*time.Millisecond)), c.Time, "read after the request")
		assert.Equal(t, uint64(c.Time.Time().UnixMicro())/10, c.EnergyMJ, "stamped with the instant of the read")
		_, err = s.ReadCounter(ctx, 5)
		assert.ErrorContains(t, err, "GPU 5")

		time.Sleep(time.Second - 10*time.Millisecond)
		synctest.Wait() // the drain due now has run
		now := time.Now()
		w, err := s.Window(0, now.Add(-time.Second), now)
		require.NoError(t, err)
		assert.Len(t, w.Samples, 51, "the drained buffer's last second, both ends included")
		var at []time.Duration
		for _, c := range w.Counters {
			at = append(at, c.Time.Sub(trace.StampOf(t0)))
		}
		// The on-demand read, then the first periodic one: half a period after the update the lock put at 5 ms.
		assert.Equal(t, []time.Duration{10 * time.Millisecond, 55 * time.Millisecond}, at)
		assert.Len(t, w.Telemetry, 10)
	})
}

// With the counter read once a second, reads are phase-locked to the counter's 100 ms update grid: each one comes
// half a period after an update instead of at a random point of the period.
func TestCounterReadsArePhaseLocked(t *testing.T) {
	rec0 := time.Unix(1795735590, 0)
	tr := trace.New(meta.Environment{})
	s0 := tr.Series(0)
	var updates []time.Time
	for ms := 0; ms <= 20_000; ms += 20 {
		s0.Samples = append(s0.Samples, trace.PowerSample{Time: trace.StampOf(rec0.Add(time.Duration(ms) * time.Millisecond)), PowerW: 100})
	}
	// The replay starts at rec0 (first sample and a first reading); updates then come 17 ms past each 100 ms, so
	// reads at whole seconds from the start would be 83 ms stale.
	s0.Counters = append(s0.Counters, trace.CounterReading{Time: trace.StampOf(rec0), EnergyMJ: 0})
	for ms := 17; ms <= 20_000; ms += 100 {
		at := rec0.Add(time.Duration(ms) * time.Millisecond)
		updates = append(updates, at)
		s0.Counters = append(s0.Counters, trace.CounterReading{Time: trace.StampOf(at), EnergyMJ: uint64(ms * 100)})
	}
	testutil.VirtualTime(t, func(t *testing.T) {
		src, err := gpu.NewReplay(tr, "grid", gpu.ReplayOptions{})
		require.NoError(t, err)
		defer src.Close()
		s, err := sampler.New(src, nil, sampler.Config{}, nil)
		require.NoError(t, err)
		rec, err := recorder.Start(s, recorder.Options{Memory: true})
		require.NoError(t, err)
		stop := run(t, s)
		time.Sleep(7500 * time.Millisecond)
		aligned, err := s.ReadCounterAligned(context.Background(), 0)
		require.NoError(t, err)
		stop()
		got, err := rec.Stop()
		require.NoError(t, err)

		shift := src.ToReplayTime(rec0).Sub(rec0)
		stale := func(c trace.CounterReading) time.Duration {
			recT := c.Time.Add(-shift)
			i := sort.Search(len(updates), func(i int) bool { return updates[i].After(recT.Time()) }) - 1
			require.GreaterOrEqual(t, i, 0)
			return recT.Sub(trace.StampOf(updates[i]))
		}
		// The lock peeks every 10 ms from the start: the value changes between the peeks at 10 and 20 ms, so it
		// puts the update at 15 ms and reads at 65 ms and every second after, each 65 − 17 = 48 ms after the
		// update it shows (unlocked: 83 ms). The aligned read at 7.5 s locks again: peeks at 7510 and 7520 ms
		// around the update at 7517 ms, read at 7565 ms.
		var at []time.Duration
		for _, c := range got.GPUs[0].Counters {
			at = append(at, c.Time.Add(-shift).Sub(trace.StampOf(rec0)))
			assert.Equal(t, 48*time.Millisecond, stale(c), "read %s after the update it shows", stale(c))
		}
		want := []time.Duration{65, 1065, 2065, 3065, 4065, 5065, 6065, 7065, 7565}
		for i := range want {
			want[i] *= time.Millisecond
		}
		assert.Equal(t, want, at)
		assert.Equal(t, got.GPUs[0].Counters[len(want)-1], aligned)
	})
}

// With serial counter reads no two GPUs read at once, and each read's timing excludes the wait for its turn;
// without, the four GPUs' reads on one grid all overlap.
func TestSerialCounterReads(t *testing.T) {
	for _, serial := range []bool{false, true} {
		testutil.VirtualTime(t, func(t *testing.T) {
			var now, most atomic.Int32
			faults := make([]*gputest.Fault, 4)
			for i := range faults {
				faults[i] = &gputest.Fault{DuringEnergyRead: func() {
					n := now.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					time.Sleep(5 * time.Millisecond) // a read's own duration
					now.Add(-1)
				}}
			}
			src, err := gpu.OpenNVML(gputest.MockNVML(faults...), nil)
			require.NoError(t, err)
			defer src.Close()
			s, err := sampler.New(src, nil, sampler.Config{CounterInterval: 50 * time.Millisecond, NoPhaseLock: true,
				SerialCounterReads: serial}, nil)
			require.NoError(t, err)
			stop := run(t, s)
			time.Sleep(230 * time.Millisecond)
			stop()
			if serial {
				assert.Equal(t, int32(1), most.Load(), "never two reads at once")
			} else {
				assert.Equal(t, int32(4), most.Load(), "all four GPUs read on the same instants")
			}
			for i := range 4 {
				st, _ := s.Stats(i)
				c := st.Calls[sampler.CallEnergy]
				assert.Equal(t, uint64(5), c.Count, "GPU %d: reads at 0, 50, … 200 ms", i)
				assert.Equal(t, 5*time.Millisecond, c.Max, "GPU %d: the read itself, not the wait for its turn", i)
			}
		})
	}
}
