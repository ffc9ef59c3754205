package exporter_test

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/gpu/gputest"
	"github.com/lem-energy/lem/internal/meta"
	lemtest "github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// runExporter runs an exporter over src for d on the virtual clock and returns it stopped.
func runExporter(t *testing.T, src gpu.Source, opts exporter.Options, d time.Duration) *exporter.Exporter {
	t.Helper()
	e, err := exporter.New(src, nil, opts, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.Run(ctx) }()
	time.Sleep(d)
	cancel()
	wg.Wait()
	return e
}

// conservedMJ checks the ledger's law on a GPU: every millijoule of the counter's increase is in one total.
func conservedMJ(t *testing.T, g account.LedgerGPU) {
	t.Helper()
	sum := g.IdleMJ + g.UnattributedMJ + g.OverflowMJ + g.FoldedMJ
	for _, p := range g.Processes {
		sum += p.EnergyMJ
	}
	assert.Equal(t, g.SettledMJ, sum, "processes + idle + unattributed + overflow + folded = the counter's increase")
}

// Two processes at 60 and 40 % SM share a mocked GPU drawing 100 W, with 40 W idle: their series split the 60 W
// above idle 60:40 to within a millijoule per interval, and the series add up to the counter's increase exactly.
func TestProcessSeriesFromNVML(t *testing.T) {
	const pidA, pidB = gputest.DefaultPID + 1, gputest.DefaultPID + 2
	var (
		exp []byte
		g   account.LedgerGPU
	)
	lemtest.VirtualTime(t, func(t *testing.T) {
		f := &gputest.Fault{Processes: []gputest.Load{{PID: pidA, SM: 60, Mem: 12, MemoryBytes: 874 << 20},
			{PID: pidB, SM: 40, Mem: 8, MemoryBytes: 638 << 20}}}
		src, err := gpu.OpenNVML(gputest.MockNVML(f), nil)
		require.NoError(t, err)
		defer src.Close()
		e := runExporter(t, src, exporter.Options{Processes: exporter.ProcessOptions{IdleW: map[int]float64{0: 40}}}, 30*time.Second)
		var ok bool
		g, ok = e.Processes().Ledger().Snapshot(0)
		require.True(t, ok)
		exp = exposition(t, e.Processes())
		problems, err := testutil.CollectAndLint(e.Processes())
		require.NoError(t, err)
		assert.Empty(t, problems)
	})
	conservedMJ(t, g)
	require.Len(t, g.Processes, 2)
	a, b := g.Processes[0], g.Processes[1]
	intervals := int64(g.SettledTo.Sub(g.Processes[0].FirstSeen).Seconds()) + 1
	above := g.SettledMJ - g.IdleMJ
	assert.InDelta(t, 0.6*float64(above), float64(a.EnergyMJ), float64(intervals), "60 % of the energy above idle")
	assert.InDelta(t, 0.4*float64(above), float64(b.EnergyMJ), float64(intervals))
	assert.InDelta(t, 40.0/100*float64(g.SettledMJ), float64(g.IdleMJ), float64(intervals), "40 W of 100 W")
	assert.Greater(t, g.SettledMJ, int64(2_700_000), "about 28 s of 100 W settled")

	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(exp))
	require.NoError(t, err)
	gpu0 := map[string]string{"gpu": "0", "uuid": "GPU-aaaa", "container": "", "pod": "", "namespace": ""}
	energy := series(t, mfs, "lem_process_gpu_energy_joules_total", with(gpu0, "pid", strconv.Itoa(pidA)))
	assert.Equal(t, float64(a.EnergyMJ)/1000, energy.GetCounter().GetValue())
	assert.Equal(t, g.SettledTo.UnixMilli(), energy.GetTimestampMs(), "stamped with the end of what is settled")
	assert.Equal(t, float64(g.IdleMJ)/1000, series(t, mfs, "lem_process_gpu_energy_joules_total", with(gpu0, "pid", "idle")).
		GetCounter().GetValue())
	assert.Equal(t, 0.0, series(t, mfs, "lem_process_gpu_energy_joules_total", with(gpu0, "pid", "unattributed")).
		GetCounter().GetValue())
	assert.Len(t, mfs["lem_process_gpu_energy_joules_total"].GetMetric(), 4, "two processes, idle, unattributed: no overflow")
	assert.Equal(t, 40.0, series(t, mfs, "lem_process_gpu_idle_power_watts", map[string]string{"gpu": "0", "uuid": "GPU-aaaa"}).
		GetGauge().GetValue())

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		lemtest.SkipOrFail(t, "promtool not installed (Debian package prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exp)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics:\n%s", out)
}

// Bounded cardinality: with a cap of 2 series, five processes give two series of their own, pid="other" for the
// rest, and a count of three in lem_process_series_overflow_total.
func TestProcessSeriesCap(t *testing.T) {
	var (
		g   account.LedgerGPU
		exp []byte
	)
	lemtest.VirtualTime(t, func(t *testing.T) {
		var loads []gputest.Load
		for i := range 5 {
			loads = append(loads, gputest.Load{PID: gputest.DefaultPID + uint32(i) + 1, SM: 20})
		}
		src, err := gpu.OpenNVML(gputest.MockNVML(&gputest.Fault{Processes: loads}), nil)
		require.NoError(t, err)
		defer src.Close()
		e := runExporter(t, src, exporter.Options{Processes: exporter.ProcessOptions{MaxSeries: 2, IdleW: map[int]float64{0: 0}}},
			10*time.Second)
		g, _ = e.Processes().Ledger().Snapshot(0)
		exp = exposition(t, e.Processes())
	})
	conservedMJ(t, g)
	require.Len(t, g.Processes, 2)
	assert.Equal(t, uint64(3), g.Overflowed)
	assert.InDelta(t, 3*float64(g.Processes[0].EnergyMJ), float64(g.OverflowMJ), 10, "three of five equal processes")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(exp))
	require.NoError(t, err)
	assert.Len(t, mfs["lem_process_gpu_energy_joules_total"].GetMetric(), 2+3, "two processes, idle, unattributed, other")
	gpu0 := map[string]string{"gpu": "0", "uuid": "GPU-aaaa"}
	assert.Equal(t, 3.0, series(t, mfs, "lem_process_series_overflow_total", gpu0).GetCounter().GetValue())
	assert.Equal(t, float64(g.OverflowMJ)/1000, series(t, mfs, "lem_process_gpu_energy_joules_total",
		with(gpu0, "pid", "other", "container", "", "pod", "", "namespace", "")).GetCounter().GetValue())
}

// A recorded shared GPU replayed through the exporter: A alone, A and B, B holding its context (the account
// package's worked example, 80 W idle). The series add up to the counter's increase exactly; A and B get what
// the model gives on the recording's levels (5,720 J and 2,080 J) to within 2 %: the ledger splits whole intervals
// between counter readings, which hold energy up to half an update (50 ms) before they are read, so energy near a
// level edge lands in the neighbouring interval (the run's accounting, on the hybrid, has no such shift).
func TestProcessSeriesFromReplay(t *testing.T) {
	rec := sharedRecording()
	var (
		g       account.LedgerGPU
		counted float64
	)
	lemtest.VirtualTime(t, func(t *testing.T) {
		src, err := gpu.NewReplay(rec, "shared", gpu.ReplayOptions{})
		require.NoError(t, err)
		defer src.Close()
		e := runExporter(t, src, exporter.Options{Processes: exporter.ProcessOptions{IdleW: map[int]float64{0: 80}}}, 55*time.Second)
		g, _ = e.Processes().Ledger().Snapshot(0)
		w, err := e.Sampler().Window(0, time.Time{}, g.SettledTo)
		require.NoError(t, err)
		counted = float64(w.Counters[len(w.Counters)-1].EnergyMJ - w.Counters[0].EnergyMJ)
	})
	conservedMJ(t, g)
	assert.Equal(t, counted, float64(g.SettledMJ), "the counter's increase from the first reading to the last settled")
	require.Len(t, g.Processes, 2)
	assert.Equal(t, "bench-a", g.Processes[0].Identity.ContainerName, "the recorded identity")
	assert.InEpsilon(t, 5720_000, float64(g.Processes[0].EnergyMJ), 0.02)
	assert.InEpsilon(t, 2080_000, float64(g.Processes[1].EnergyMJ), 0.02)
}

// sharedRecording is the shared GPU of the account tests as a recording: its counter every 100 ms, its 50 Hz
// samples, A's and B's driver samples and polls.
func sharedRecording() *trace.Trace {
	t0 := time.Unix(1795735590, 0).UTC()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	levels := []struct{ from, w float64 }{{0, 80}, {10, 400}, {20, 500}, {30, 120}, {40, 90}}
	power := func(s float64) float64 {
		w := levels[0].w
		for _, l := range levels {
			if s >= l.from {
				w = l.w
			}
		}
		return w
	}
	tr := trace.New(meta.Environment{Devices: []meta.Device{{Index: 0, UUID: "GPU-shared", Name: "NVIDIA H200",
		EnergyCounter: true, PowerSamples: true, ProcessUtilization: true}}})
	s := tr.Series(0)
	e := uint64(5_000_000)
	for ms := 0; ms <= 50000; ms += 20 {
		x := float64(ms) / 1000
		s.Samples = append(s.Samples, trace.PowerSample{Time: trace.StampOf(at(x)), PowerW: power(x)})
		if ms%100 == 0 {
			s.Counters = append(s.Counters, trace.CounterReading{Time: trace.StampOf(at(x)), EnergyMJ: e})
			e += uint64(power(x) * 100)
		}
	}
	a := trace.ProcessIdentity{Command: "python3", Runtime: "docker", ContainerName: "bench-a",
		ContainerID: "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"}
	for sec := 11; sec <= 30; sec++ {
		sm := 1.0
		if sec > 20 {
			sm = 0.6
			s.ProcessSamples = append(s.ProcessSamples, trace.ProcessSample{Time: at(float64(sec)), PID: 202, SM: 0.4})
		}
		s.ProcessSamples = append(s.ProcessSamples, trace.ProcessSample{Time: at(float64(sec)), PID: 101, SM: sm})
	}
	for ms := 10000; ms <= 39000; ms += 500 {
		x := float64(ms) / 1000
		if ms <= 29000 {
			s.Processes = append(s.Processes, trace.Process{Time: at(x), PID: 101, GPUInstance: -1, ComputeInstance: -1, Identity: a})
		}
		if ms >= 20000 {
			s.Processes = append(s.Processes, trace.Process{Time: at(x), PID: 202, GPUInstance: -1, ComputeInstance: -1,
				Identity: trace.ProcessIdentity{Command: "bench"}})
		}
	}
	s.Sort()
	return tr
}
