package sampler_test

import (
	"context"
	"path/filepath"
	"sort"
	"sync"
	"testing"
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

// TestReplayedLLMThroughSampler replays the real H200 LLM recording (10x speed) through the sampler with default
// settings and checks that what it captured gives the per-phase energy computed directly on the recording.
func TestReplayedLLMThroughSampler(t *testing.T) {
	if testing.Short() {
		t.Skip("replays 75 s of recording at 10x")
	}
	direct, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	src, err := gpu.NewReplay(direct, "h200-llm", gpu.ReplayOptions{Speed: 10})
	require.NoError(t, err)
	defer src.Close()
	s, err := sampler.New(src, nil, sampler.Config{}, nil)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "captured.parquet")
	rec, err := recorder.Start(s, recorder.Options{Memory: true, Path: path, FlushEvery: time.Second})
	require.NoError(t, err)
	stop := run(t, s)
	<-src.Ended()
	time.Sleep(150 * time.Millisecond) // one more drain and counter read (1 s of replay time)
	stop()
	got, err := rec.Stop()
	require.NoError(t, err)

	st, _ := s.Stats(0)
	gs, ds := got.GPUs[0], direct.GPUs[0]
	onDisk, err := trace.ReadFile(path)
	require.NoError(t, err)
	fs := onDisk.GPUs[0]
	assert.Equal(t, [4]int{len(gs.Samples), len(gs.Counters), len(gs.Telemetry), len(got.Events)},
		[4]int{len(fs.Samples), len(fs.Counters), len(fs.Telemetry), len(onDisk.Events)}, "file holds what memory holds")
	assert.Equal(t, "replay", onDisk.Env.Source.Kind)
	// Every recorded sample inside the replayed span was captured, once, with its value.
	first, last := gs.Samples[0].Time, gs.Samples[len(gs.Samples)-1].Time
	var want int
	for _, x := range ds.Samples {
		if rt := src.ToReplayTime(x.Time); !rt.Before(first) && !rt.After(last) {
			want++
		}
	}
	assert.Equal(t, want, len(gs.Samples), "captured samples")
	assert.Equal(t, uint64(len(gs.Samples)), st.SamplesCaptured)
	assert.Zero(t, st.DrainGaps, "no gap between drains")
	assert.Zero(t, st.Overruns)
	assert.InDelta(t, 75, len(gs.Counters), 3, "counter read once a second (phase-lock reads are not stored)")

	_, end := got.Span()
	phases := trace.Phases(got.Events, end)
	require.Len(t, phases, 5, "load, idle, bs1, bs8, bs32")
	capRows, capLag := energy.ByPhase(0, gs, phases, energy.Options{})
	t.Logf("captured lag %v (contrast %.1f)", capLag.Lag, capLag.Contrast)

	_, dend := direct.Span()
	dphases := trace.Phases(direct.Events, dend)
	dirRows, _ := energy.ByPhase(0, ds, dphases, energy.Options{})
	for i := range dirRows {
		d, c := dirRows[i], capRows[i]
		require.Equal(t, d.Phase, c.Phase)
		assert.InEpsilon(t, d.HybridJ, c.HybridJ, 0.005, "%s: captured hybrid %.1f J vs direct %.1f J", d.Phase, c.HybridJ, d.HybridJ)
		assert.InEpsilon(t, d.SampledJ, c.SampledJ, 0.001, "%s: 50 Hz", d.Phase)
		t.Logf("%-5s direct %.1f J  captured %.1f J  (%+.2f %%)", d.Phase, d.HybridJ, c.HybridJ, 100*(c.HybridJ/d.HybridJ-1))
	}
}

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

// A lost GPU is reported and skipped; the other keeps sampling (fault injected through go-nvml's mock).
func TestLostGPUDoesNotStopOthers(t *testing.T) {
	src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}, &gputest.Fault{LostAfter: 2}), nil)
	require.NoError(t, err)
	defer src.Close()
	s, err := sampler.New(src, nil, sampler.Config{DrainInterval: 50 * time.Millisecond, CounterInterval: 50 * time.Millisecond,
		TelemetryInterval: 50 * time.Millisecond}, nil)
	require.NoError(t, err)
	sub := s.Subscribe("test", 1024)
	stop := run(t, s)
	time.Sleep(400 * time.Millisecond)
	stop()
	sub.Close()

	ok, _ := s.Stats(0)
	lost, _ := s.Stats(1)
	assert.False(t, ok.Lost)
	assert.True(t, lost.Lost)
	assert.Contains(t, lost.LastError, "GPU is lost")
	assert.Greater(t, lost.Calls[sampler.CallSamples].Errors, uint64(2))
	assert.Zero(t, ok.Calls[sampler.CallSamples].Errors)
	assert.Greater(t, ok.SamplesCaptured, uint64(100), "healthy GPU kept its history and kept draining")
	assert.Greater(t, ok.CounterReads, uint64(4))
	assert.Greater(t, ok.EnergyJ, 0.0)

	var lostEvents int
	for r := range sub.C() {
		if r.Kind == sampler.KindEvent && r.Event.Type == trace.EventDeviceError && r.Event.GPU == 1 {
			lostEvents++
		}
	}
	assert.Equal(t, 1, lostEvents, "one event when the GPU is lost, not one per failed call")
}

func TestNotSupportedCounterIsNotAnError(t *testing.T) {
	src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{NoEnergy: true}), nil)
	require.NoError(t, err)
	defer src.Close()
	s, err := sampler.New(src, nil, sampler.Config{CounterInterval: 20 * time.Millisecond}, nil)
	require.NoError(t, err)
	stop := run(t, s)
	time.Sleep(120 * time.Millisecond)
	stop()
	st, _ := s.Stats(0)
	c := st.Calls[sampler.CallEnergy]
	assert.Greater(t, c.NotSupported, uint64(2))
	assert.Zero(t, c.Errors)
	assert.False(t, st.HasCounter)
	assert.Empty(t, st.LastError)
	assert.Greater(t, st.SamplesCaptured, uint64(50), "samples still flow")
}

func TestSlowSubscriberNeverBlocks(t *testing.T) {
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
	time.Sleep(300 * time.Millisecond)
	stop()
	fast.Close()
	stuck.Close()
	<-done
	var late int
	for range stuck.C() { // a consumer reads until its queue closes: the record queued and the one pending
		late++
	}
	assert.Equal(t, 2, late)
	assert.Greater(t, stuck.Dropped(), uint64(10), "the stuck queue drops and counts")
	assert.Zero(t, fast.Dropped())
	assert.Greater(t, got, 60, "the other consumer got everything")
	st, _ := s.Stats(0)
	assert.Greater(t, st.Calls[sampler.CallSamples].Count, uint64(20), "sampling went on")
	assert.Equal(t, map[string]uint64{}, s.Subscriptions())
}

func TestReadCounterOnDemandAndWindow(t *testing.T) {
	src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{}), nil)
	require.NoError(t, err)
	defer src.Close()
	s, err := sampler.New(src, nil, sampler.Config{}, nil)
	require.NoError(t, err)
	run(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	t0 := time.Now()
	c, err := s.ReadCounter(ctx, 0)
	require.NoError(t, err)
	assert.False(t, c.Time.Before(t0), "read after the request")
	_, err = s.ReadCounter(ctx, 5)
	assert.ErrorContains(t, err, "GPU 5")

	time.Sleep(50 * time.Millisecond)
	w, err := s.Window(0, time.Now().Add(-time.Second), time.Now())
	require.NoError(t, err)
	assert.InDelta(t, 50, len(w.Samples), 3, "the drained buffer's last second")
	assert.NotEmpty(t, w.Counters)
}

// With the counter read once a second, reads are phase-locked to the counter's 100 ms update grid: each one comes
// half a period after an update instead of at a random point of the period.
func TestCounterReadsArePhaseLocked(t *testing.T) {
	rec0 := time.Unix(1795735590, 0)
	tr := trace.New(meta.Environment{})
	s0 := tr.Series(0)
	var updates []time.Time
	for ms := 0; ms <= 20_000; ms += 20 {
		s0.Samples = append(s0.Samples, trace.PowerSample{Time: rec0.Add(time.Duration(ms) * time.Millisecond), PowerW: 100})
	}
	// The replay starts at rec0 (first sample and a first reading); updates then come 17 ms past each 100 ms, so
	// reads at whole seconds from the start would be 83 ms stale.
	s0.Counters = append(s0.Counters, trace.CounterReading{Time: rec0, EnergyMJ: 0})
	for ms := 17; ms <= 20_000; ms += 100 {
		at := rec0.Add(time.Duration(ms) * time.Millisecond)
		updates = append(updates, at)
		s0.Counters = append(s0.Counters, trace.CounterReading{Time: at, EnergyMJ: uint64(ms * 100)})
	}
	src, err := gpu.NewReplay(tr, "grid", gpu.ReplayOptions{Speed: 3})
	require.NoError(t, err)
	defer src.Close()
	s, err := sampler.New(src, nil, sampler.Config{}, nil)
	require.NoError(t, err)
	rec, err := recorder.Start(s, recorder.Options{Memory: true})
	require.NoError(t, err)
	stop := run(t, s)
	time.Sleep(2500 * time.Millisecond) // 7.5 s of replay time
	stop()
	got, err := rec.Stop()
	require.NoError(t, err)
	cs := got.GPUs[0].Counters
	require.GreaterOrEqual(t, len(cs), 7)
	var locked int
	for _, c := range cs[len(cs)-6:] { // the last six: past the lock burst, a second apart
		recT := c.Time.Add(-src.ToReplayTime(rec0).Sub(rec0))
		i := sort.Search(len(updates), func(i int) bool { return updates[i].After(recT) }) - 1
		require.GreaterOrEqual(t, i, 0)
		stale := recT.Sub(updates[i])
		// Unlocked, these reads would be 83 ms stale; wall-clock jitter is tripled by the 3x replay.
		assert.InDelta(t, float64(50*time.Millisecond), float64(stale), float64(18*time.Millisecond),
			"read %s after the update it shows", stale)
		locked++
	}
	assert.Equal(t, 6, locked)
	gaps := cs[len(cs)-1].Time.Sub(cs[len(cs)-2].Time)
	assert.InDelta(t, float64(time.Second), float64(gaps), float64(60*time.Millisecond), "one read a second")
}
