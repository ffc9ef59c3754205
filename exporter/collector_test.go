package exporter_test

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
	lemtest "github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

var update = flag.Bool("update", false, "rewrite exporter/testdata/exposition.prom from the collectors")

const goldenPath = "testdata/exposition.prom"

// recordedState is a sampler's state at a fixed instant of real recordings: the identity the replay sources
// report and, per GPU, the Stats a sampler that had read every recorded value up to then would hold. Feeding it
// to the collectors makes the exposition deterministic; the consumer queues are a real (idle) sampler's.
type recordedState struct {
	env   meta.Environment
	stats map[int]sampler.Stats
	drops map[string]uint64 // consumer queue drops
}

func (r *recordedState) Environment() meta.Environment { return r.env }

func (r *recordedState) Stats(g int) (sampler.Stats, bool) {
	st, ok := r.stats[g]
	return st, ok
}

func (r *recordedState) Subscriptions() map[string]uint64 { return r.drops }

// recordedStats accounts the recorded series s up to at as the sampler does: every counter reading read once
// (timed by its recorded read duration), every sample drained (once a second, 0.3 ms a drain), every telemetry
// snapshot polled (0.5 ms a poll), gaps over twice the 20 ms period, clock-event reasons timed between snapshots.
func recordedStats(g int, s *trace.Series, at time.Time) sampler.Stats {
	const period = 20 * time.Millisecond
	st := sampler.Stats{GPU: g, Calls: map[string]sampler.CallStats{}, ClockReasonSeconds: map[uint64]float64{},
		Lag:    map[string]time.Duration{"counter": 2 * time.Millisecond, "drain": time.Millisecond, "telemetry": 500 * time.Microsecond},
		MaxLag: map[string]time.Duration{"counter": 9 * time.Millisecond, "drain": 4 * time.Millisecond, "telemetry": 3 * time.Millisecond}}
	var energy, drains, telem sampler.CallStats
	for _, c := range s.Counters {
		if c.Time.After(trace.StampOf(at)) {
			break
		}
		energy.Count++
		energy.Total += c.ReadDuration
		energy.Max = max(energy.Max, c.ReadDuration)
		st.CounterReads++
		st.LatestCounter, st.HasCounter = c, true
	}
	for i, smp := range s.Samples {
		if smp.Time.After(trace.StampOf(at)) {
			break
		}
		if i == 0 {
			st.FirstSample = smp.Time
		} else {
			prev := s.Samples[i-1]
			gap := smp.Time.Sub(prev.Time)
			if gap > 2*period {
				st.Gaps++
				st.GapTime += gap - period
				st.MissedSamples += uint64((gap+period/2)/period) - 1
			}
			st.SampledEnergyJ += (prev.PowerW + smp.PowerW) / 2 * gap.Seconds()
		}
		st.SamplesCaptured++
		st.LastSample, st.LatestSample = smp.Time, smp
	}
	drains.Count = uint64(st.LastSample.Sub(st.FirstSample)/time.Second) + 1
	drains.Total, drains.Max = time.Duration(drains.Count)*300*time.Microsecond, 700*time.Microsecond
	for _, t := range s.Telemetry {
		if t.Time.After(trace.StampOf(at)) {
			break
		}
		if prev := st.LatestTelem; st.HasTelemetry && prev.ClockReasonsValid {
			for _, r := range gpu.ClockReasons {
				if prev.ClockReasons&r.Bit != 0 {
					st.ClockReasonSeconds[r.Bit] += t.Time.Sub(prev.Time).Seconds()
				}
			}
		}
		telem.Count++
		st.LatestTelem, st.HasTelemetry = t, true
	}
	telem.Total, telem.Max = time.Duration(telem.Count)*500*time.Microsecond, 2*time.Millisecond
	st.Calls[sampler.CallEnergy], st.Calls[sampler.CallSamples], st.Calls[sampler.CallTelemetry] = energy, drains, telem
	return st
}

// goldenFixture is the state the golden exposition is made from. GPU 0 is the replayed H200 recording
// (h200-shape) 14 s in, in its full-load phase (power-capped); GPU 1 is the replayed H100 recording
// (h100-gpuload), whose identity is complete (PCI bus, compute capability, MIG mode, memory, every power limit),
// lost after its last recorded value. Two runs are known at that instant: one ended (inside the grace period) and
// one in its second phase.
type goldenFixture struct {
	state *recordedState
	runs  *marker.Store
	at    time.Time     // the instant the state stands at
	h200  *trace.Series // GPU 0's recording
}

func newGoldenFixture(t *testing.T) goldenFixture {
	t.Helper()
	h200, h100 := replay(t, "h200-shape", gpu.ReplayOptions{}), replay(t, "h100-gpuload", gpu.ReplayOptions{})
	t.Cleanup(func() { h200.Close(); h100.Close() })
	rec200, err := trace.ReadFile(lemtest.TracePath("h200-shape"))
	require.NoError(t, err)
	rec100, err := trace.ReadFile(lemtest.TracePath("h100-gpuload"))
	require.NoError(t, err)

	env := h200.Environment()
	lost := h100.Environment().Devices[0]
	lost.Index = 1
	env.Devices = append(env.Devices, lost)

	first, _ := rec200.Span()
	at := first.Add(14 * time.Second)
	_, end100 := rec100.Span()
	st1 := recordedStats(1, rec100.GPUs[0], end100)
	st1.Lost, st1.LastError = true, "GPU is lost"
	for _, call := range []string{sampler.CallEnergy, sampler.CallSamples, sampler.CallTelemetry} {
		cs := st1.Calls[call]
		cs.Count += 3
		cs.Errors = 3
		st1.Calls[call] = cs
	}

	// A real sampler, never started, receives the marker events; the consumers' drop counts are fixed state.
	s, err := sampler.New(h200, nil, sampler.Config{}, nil)
	require.NoError(t, err)
	clock := &gpu.ScaledClock{Origin: at, Start: at} // stopped clock: Speed 0
	runs := marker.NewStore(clock.Now, marker.Limits{MaxActive: 8, Grace: time.Minute}, s.Emit)
	sec := func(n int) time.Time { return at.Add(time.Duration(n) * time.Second) }
	_, err = runs.Start(marker.StartReq{RunID: "warm-0", Experiment: "warm-up", At: sec(-12)})
	require.NoError(t, err)
	_, err = runs.Phase("warm-0", "load", sec(-11))
	require.NoError(t, err)
	_, err = runs.End("warm-0", "ok", sec(-9))
	require.NoError(t, err)
	_, err = runs.Start(marker.StartReq{RunID: "r1", Experiment: "llama-bs8",
		Labels: map[string]string{"batch": "8", trace.LabelWorkloadGPUs: "0"}, At: sec(-7)})
	require.NoError(t, err)
	t33, t34, util := 33.0, 34.0, 0.0
	_, err = runs.Baseline("r1", 0, manifest.Baseline{Start: sec(-37), End: sec(-7), MedianW: 120.5, P25W: 120.1,
		P75W: 121.0, Samples: 1500, TempStartC: &t33, TempEndC: &t34, UtilMean: &util})
	require.NoError(t, err)
	_, err = runs.Phase("r1", "prefill", sec(-6))
	require.NoError(t, err)
	_, err = runs.Phase("r1", "decode", sec(-2))
	require.NoError(t, err)
	// model is not a number: no lem_run_result series for it.
	_, err = runs.Result("r1", map[string]string{"output_tokens": "1024", "requests": "8", "model": "llama"}, sec(-1))
	require.NoError(t, err)
	// Writes the store refuses: an invalid phase name, a second start of r1.
	_, err = runs.Phase("r1", "has space", time.Time{})
	require.ErrorIs(t, err, marker.ErrInvalid)
	_, err = runs.Start(marker.StartReq{RunID: "r1", Experiment: "llama-bs8"})
	require.ErrorIs(t, err, marker.ErrConflict)

	return goldenFixture{
		state: &recordedState{env: env, drops: map[string]uint64{"recorder": 7},
			stats: map[int]sampler.Stats{0: recordedStats(0, rec200.GPUs[0], at), 1: st1}},
		runs: runs,
		at:   at,
		h200: rec200.GPUs[0],
	}
}

// downloads is a fixed state of the raw-sample API: one download in progress, four refused.
type downloads exporter.SampleRequestStats

func (d downloads) SampleRequestStats() exporter.SampleRequestStats {
	return exporter.SampleRequestStats(d)
}

var fixedDownloads = downloads{InFlight: 1, MaxInFlight: exporter.DefaultMaxSampleRequests,
	Refused: map[string]uint64{exporter.RefusedBusy: 3, exporter.RefusedTooLarge: 1}}

// collectors are the collectors lem-exporter registers, as one.
type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

func (f goldenFixture) collectors() collectors {
	return collectors{exporter.NewGPUCollector(f.state), exporter.NewSelfCollector(f.state),
		exporter.NewRunsCollector(f.runs), exporter.NewLimitsCollector(f.runs, fixedDownloads)}
}

// exposition renders what c collects in the text format, the way a scrape does.
func exposition(t *testing.T, c prometheus.Collector) []byte {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		require.NoError(t, enc.Encode(mf))
	}
	return b.Bytes()
}

func with(labels map[string]string, kv ...string) map[string]string {
	out := maps.Clone(labels)
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// series finds the one series of family name with exactly these labels.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mf, ok := mfs[name]
	require.True(t, ok, "no family %s", name)
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if maps.Equal(got, labels) {
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "%s%v", name, labels)
	return found[0]
}

// The collectors' exposition of a fixed state of two replayed GPUs and two runs matches the committed golden
// file exactly: names, help, types, labels, values and the energy counters' own timestamps. Nothing is dropped:
// the state is fed, not sampled, so no series depends on when the test runs. Regenerate with -update and review
// the diff.
func TestExpositionGolden(t *testing.T) {
	f := newGoldenFixture(t)
	cs := f.collectors()
	if *update {
		header := "# The exposition of exporter/collector_test.go's goldenFixture.\n" +
			"# Regenerate: go test ./exporter -run TestExpositionGolden -update\n"
		require.NoError(t, os.WriteFile(goldenPath, append([]byte(header), exposition(t, cs)...), 0o644))
	}
	golden, err := os.ReadFile(goldenPath)
	require.NoError(t, err)
	require.NoError(t, testutil.CollectAndCompare(cs, bytes.NewReader(golden)))

	// The golden values that come straight from the recording, read from it here: GPU 0's counter and newest
	// sample as they stood at that instant, each with its own time; the lost GPU down, the other up.
	var c trace.CounterReading
	for _, r := range f.h200.Counters {
		if !r.Time.After(trace.StampOf(f.at)) {
			c = r
		}
	}
	var smp trace.PowerSample
	for _, r := range f.h200.Samples {
		if !r.Time.After(trace.StampOf(f.at)) {
			smp = r
		}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(golden))
	require.NoError(t, err)
	gpu0 := map[string]string{"gpu": "0", "uuid": "GPU-h200-recording"}
	energy := series(t, mfs, "lem_gpu_energy_joules_total", gpu0)
	assert.Equal(t, float64(c.EnergyMJ)/1000, energy.GetCounter().GetValue())
	assert.Equal(t, c.Time.UnixMilli(), energy.GetTimestampMs())
	assert.Equal(t, smp.PowerW, series(t, mfs, "lem_gpu_power_watts", with(gpu0, "source", "sample")).GetGauge().GetValue())
	assert.Equal(t, float64(smp.Time.UnixNano())/1e9,
		series(t, mfs, "lem_exporter_last_sample_timestamp_seconds", gpu0).GetGauge().GetValue())
	assert.Equal(t, 1.0, series(t, mfs, "lem_gpu_up", gpu0).GetGauge().GetValue())
	gpu1 := map[string]string{"gpu": "1", "uuid": "GPU-425d1a57-5d7d-2dba-6409-9ac8f02cdd13"}
	assert.Equal(t, 0.0, series(t, mfs, "lem_gpu_up", gpu1).GetGauge().GetValue())
	assert.Equal(t, 7.0, series(t, mfs, "lem_exporter_consumer_dropped_total", map[string]string{"consumer": "recorder"}).
		GetCounter().GetValue(), "the fixture's drops")
	r1gpu0 := map[string]string{"run_id": "r1", "experiment": "llama-bs8", "gpu": "0"}
	assert.Equal(t, 120.5, series(t, mfs, "lem_run_baseline_watts", with(r1gpu0, "stat", "median")).GetGauge().GetValue())
	assert.Equal(t, 1.0, series(t, mfs, "lem_run_gpu_active", r1gpu0).GetGauge().GetValue())
	reason := func(r string) map[string]string { return map[string]string{"reason": r} }
	assert.Equal(t, 1.0, series(t, mfs, "lem_exporter_marker_rejected_total", reason("invalid")).GetCounter().GetValue(),
		"the fixture's phase name with a space")
	assert.Equal(t, 1.0, series(t, mfs, "lem_exporter_marker_rejected_total", reason("conflict")).GetCounter().GetValue(),
		"the fixture's second start of r1")
	assert.Equal(t, 0.0, series(t, mfs, "lem_exporter_marker_rejected_total", reason("limit")).GetCounter().GetValue())
	state := func(s string) map[string]string { return map[string]string{"state": s} }
	assert.Equal(t, 1.0, series(t, mfs, "lem_exporter_runs", state("active")).GetGauge().GetValue(), "r1")
	assert.Equal(t, 1.0, series(t, mfs, "lem_exporter_runs", state("ended")).GetGauge().GetValue(), "warm-0")
	assert.Equal(t, 8.0, series(t, mfs, "lem_exporter_runs_limit", state("active")).GetGauge().GetValue())
	assert.Equal(t, 3.0, series(t, mfs, "lem_exporter_sample_requests_refused_total", reason("busy")).GetCounter().GetValue())
	assert.Len(t, mfs, 49, "metric families")

	for _, c := range cs {
		problems, err := testutil.CollectAndLint(c)
		require.NoError(t, err)
		assert.Empty(t, problems)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		lemtest.SkipOrFail(t, "promtool not installed (Debian package prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(golden)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics %s:\n%s", filepath.Base(goldenPath), out)
}

// One GPU failing changes only its own series: beside a healthy GPU, a lost GPU that never delivered anything
// has its identity and lem_gpu_up 0 and no readings, and a GPU the sampler has no state for has no series at
// all; the healthy GPU's exposition is the same as when it is alone.
func TestFailedGPUChangesOnlyItsOwnSeries(t *testing.T) {
	f := newGoldenFixture(t)
	healthy := f.state.stats[0]
	alone := &recordedState{env: f.state.env, drops: f.state.drops, stats: map[int]sampler.Stats{0: healthy}}
	alone.env.Devices = alone.env.Devices[:1]

	broken := &recordedState{env: f.state.env, drops: f.state.drops, stats: map[int]sampler.Stats{0: healthy}}
	broken.env.Devices = append(append([]meta.Device{}, f.state.env.Devices...), meta.Device{Index: 2, UUID: "GPU-no-state"})
	// GPU 1 was lost before any call answered; its telemetry, had it come, would have been all unsupported.
	broken.stats[1] = sampler.Stats{GPU: 1, Lost: true, HasTelemetry: true, LatestTelem: trace.NewTelemetry(trace.StampOf(f.at)),
		Calls: map[string]sampler.CallStats{sampler.CallSamples: {Count: 2, Errors: 2}}}

	for _, c := range []func(*recordedState) prometheus.Collector{
		func(s *recordedState) prometheus.Collector { return exporter.NewGPUCollector(s) },
		func(s *recordedState) prometheus.Collector { return exporter.NewSelfCollector(s) },
	} {
		mfs := gather(t, c(broken))
		byGPU := map[string]map[string]int{} // gpu -> family -> series
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "gpu" {
						if byGPU[lp.GetValue()] == nil {
							byGPU[lp.GetValue()] = map[string]int{}
						}
						byGPU[lp.GetValue()][mf.GetName()]++
					}
				}
			}
		}
		assert.NotContains(t, byGPU, "2", "a GPU without state has no series")
		for fam := range byGPU["1"] {
			assert.NotContains(t, []string{"lem_gpu_energy_joules_total", "lem_gpu_sampled_energy_joules_total",
				"lem_gpu_power_watts", "lem_gpu_temperature_celsius", "lem_gpu_clock_event_reason_active",
				"lem_exporter_last_sample_timestamp_seconds", "lem_exporter_sampler_lag_seconds"}, fam, "lost GPU 1 read nothing")
		}

		// GPU 0's series are exactly those it has alone.
		var onlyGPU0 bytes.Buffer
		enc := expfmt.NewEncoder(&onlyGPU0, expfmt.NewFormat(expfmt.TypeTextPlain))
		var names []string
		for _, mf := range mfs {
			keep := &dto.MetricFamily{Name: mf.Name, Help: mf.Help, Type: mf.Type}
			for _, m := range mf.GetMetric() {
				if gpuOf(m) == "0" {
					keep.Metric = append(keep.Metric, m)
				}
			}
			if len(keep.Metric) > 0 {
				require.NoError(t, enc.Encode(keep))
				names = append(names, mf.GetName())
			}
		}
		require.NoError(t, testutil.CollectAndCompare(c(alone), &onlyGPU0, names...))
	}

	mfs := gather(t, exporter.NewGPUCollector(broken))
	gpu1 := map[string]string{"gpu": "1", "uuid": "GPU-425d1a57-5d7d-2dba-6409-9ac8f02cdd13"}
	assert.Equal(t, 0.0, series(t, mfs, "lem_gpu_up", gpu1).GetGauge().GetValue())
	gpu0 := map[string]string{"gpu": "0", "uuid": "GPU-h200-recording"}
	assert.Equal(t, 1.0, series(t, mfs, "lem_gpu_up", gpu0).GetGauge().GetValue())
	assert.Equal(t, 1.0, series(t, mfs, "lem_gpu_info", with(gpu1, "name", "NVIDIA H100 80GB HBM3", "pci_bus_id", "00000000:00:06.0",
		"compute_capability", "9.0", "mig_mode", "false", "driver_version", "580.159.04", "nvml_version", "13.580.159.04",
		"cuda_driver_version", "", "source", "replay")).GetGauge().GetValue())
	assert.Equal(t, 700.0, series(t, mfs, "lem_gpu_power_limit_watts", with(gpu1, "kind", "max")).GetGauge().GetValue(),
		"the board's limits are identity, known without a call")
	self := gather(t, exporter.NewSelfCollector(broken))
	assert.Equal(t, 2.0, series(t, self, "lem_exporter_nvml_errors_total", with(gpu1, "call", "power_samples")).GetCounter().GetValue())
	assert.Equal(t, 0.0, series(t, self, "lem_exporter_nvml_errors_total", with(gpu1, "call", "energy")).GetCounter().GetValue())
}

func gpuOf(m *dto.Metric) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == "gpu" {
			return lp.GetValue()
		}
	}
	return ""
}

// gather collects c through a pedantic registry (every sample described, consistent types) into families by name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	got, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, mf := range got {
		out[mf.GetName()] = mf
	}
	return out
}

// lem-exporter's /metrics, served by a running sampler over the replayed H200 recording, holds every family of
// the golden exposition with the same type, help and labels (but the memory total, which that recording lacks),
// and the process and handler metrics beside them. The energy counter carries its read time and a value the
// recording held; promtool accepts the whole scrape. It waits for the sampler's first records on a
// subscription, not on the clock.
func TestMetricsHandlerServesTheGoldenFamilies(t *testing.T) {
	r := start(t, replay(t, "h200-shape", gpu.ReplayOptions{}), exporter.Options{Markers: marker.Limits{Grace: time.Minute}})
	sub := r.Sampler().Subscribe("test", 4096)
	defer sub.Close()
	seen := map[sampler.Kind]bool{}
	timeout := time.After(10 * time.Second)
	for !seen[sampler.KindCounter] || !seen[sampler.KindSamples] || !seen[sampler.KindTelemetry] {
		select {
		case rec := <-sub.C():
			seen[rec.Kind] = true
		case <-timeout:
			t.Fatalf("the sampler delivered only %v in 10 s", seen)
		}
	}
	for _, p := range [][2]string{
		{"", `{"run_id":"r0","experiment":"warm-up"}`}, {"/r0/phase", `{"name":"load"}`}, {"/r0/end", `{}`},
		{"", `{"run_id":"r1","experiment":"llama-bs8","labels":{"workload_gpus":"0"}}`}, {"/r1/phase", `{"name":"prefill"}`},
		{"/r1/result", `{"output_tokens":128}`},
		{"/r1/baseline", `{"gpu":0,"baseline":{"start":"2026-01-01T00:00:00Z","end":"2026-01-01T00:00:30Z","median_w":78,"p25_w":77,"p75_w":79,"samples":1500,"temp_start_c":33,"temp_end_c":33,"util_mean":0}}`},
	} {
		code, out := post(t, r.URL+"/api/v1/runs"+p[0], p[1])
		require.Less(t, code, 300, "%s %s: %v", p[0], p[1], out)
	}

	code, body := get(t, r.URL+"/metrics")
	require.Equal(t, 200, code)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	live, err := parser.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	golden, err := os.ReadFile(goldenPath)
	require.NoError(t, err)
	parser = expfmt.NewTextParser(model.UTF8Validation)
	want, err := parser.TextToMetricFamilies(bytes.NewReader(golden))
	require.NoError(t, err)
	delete(want, "lem_gpu_memory_total_bytes")

	var liveLem []string
	for name := range live {
		if strings.HasPrefix(name, "lem_") {
			liveLem = append(liveLem, name)
		}
	}
	assert.ElementsMatch(t, slices.Collect(maps.Keys(want)), liveLem)
	for name, w := range want {
		l, ok := live[name]
		if !ok {
			continue
		}
		assert.Equal(t, w.GetType(), l.GetType(), name)
		assert.Equal(t, w.GetHelp(), l.GetHelp(), name)
		assert.Equal(t, labelNames(w.GetMetric()[0]), labelNames(l.GetMetric()[0]), name)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "promhttp_metric_handler_requests_total"} {
		assert.Contains(t, live, name)
	}

	energy := live["lem_gpu_energy_joules_total"].GetMetric()
	require.Len(t, energy, 1)
	assert.WithinDuration(t, time.Now(), time.UnixMilli(energy[0].GetTimestampMs()), 2*time.Second)
	rec, err := trace.ReadFile(lemtest.TracePath("h200-shape"))
	require.NoError(t, err)
	v := energy[0].GetCounter().GetValue()
	assert.True(t, slices.ContainsFunc(rec.GPUs[0].Counters, func(c trace.CounterReading) bool { return c.Joules() == v }),
		"exposed %v J is a recorded counter value", v)

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		lemtest.SkipOrFail(t, "promtool not installed (Debian package prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics:\n%s", out)
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, lp := range m.GetLabel() {
		out = append(out, lp.GetName())
	}
	slices.Sort(out)
	return out
}

// A label value that is not UTF-8 (a GPU name from a replayed file, which is user input) fails the one series
// that carries it: the scrape reports the error and still serves every other series, the other GPU's info too.
func TestInvalidLabelValueFailsOnlyItsSeries(t *testing.T) {
	f := newGoldenFixture(t)
	f.state.env.Devices = slices.Clone(f.state.env.Devices)
	f.state.env.Devices[1].Name = "H100\xff"
	reg := prometheus.NewRegistry()
	reg.MustRegister(exporter.NewGPUCollector(f.state))
	got, err := reg.Gather()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `lem_gpu_info`)
	assert.Contains(t, err.Error(), `not valid UTF-8`)
	mfs := map[string]*dto.MetricFamily{}
	for _, mf := range got {
		mfs[mf.GetName()] = mf
	}
	require.Contains(t, mfs, "lem_gpu_info")
	require.Len(t, mfs["lem_gpu_info"].GetMetric(), 1)
	assert.Equal(t, "0", gpuOf(mfs["lem_gpu_info"].GetMetric()[0]))
	assert.Len(t, mfs["lem_gpu_up"].GetMetric(), 2)
	assert.Len(t, slices.Collect(maps.Keys(mfs)), 15, "every GPU family of the golden file")
}
