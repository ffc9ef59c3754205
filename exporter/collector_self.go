package exporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// samplerSelf is what the self collector reads: the sampled GPUs' capture accounting and the consumer queues.
type samplerSelf interface {
	sampledGPUs
	Subscriptions() map[string]uint64
}

var _ samplerSelf = (*sampler.Sampler)(nil)

// SelfCollector exposes how well the exporter captures: samples, gaps and overruns, counter reads, device-call
// counts, errors and latency, loop lag per GPU, and records dropped by slow consumers.
type SelfCollector struct {
	s      samplerSelf
	env    meta.Environment
	perGPU table[*gpuView]
	drops  table[map[string]uint64]
}

var _ prometheus.Collector = (*SelfCollector)(nil)

// NewSelfCollector builds the self metrics' descriptors once, over s's sampled GPUs.
func NewSelfCollector(s samplerSelf) *SelfCollector {
	return &SelfCollector{s: s, env: s.Environment(), perGPU: newTable(gpuLabels, selfMetrics),
		drops: newTable(nil, dropMetrics)}
}

// Describe sends every descriptor of the tables.
func (c *SelfCollector) Describe(ch chan<- *prometheus.Desc) {
	c.perGPU.describe(ch)
	c.drops.describe(ch)
}

// Collect reads each GPU's accounting and the consumers' drop counts.
func (c *SelfCollector) Collect(ch chan<- prometheus.Metric) {
	eachGPU(ch, c.s, &c.env, c.perGPU)
	c.drops.collect(ch, c.s.Subscriptions())
}

// calls lists the device calls in a fixed order.
var calls = []string{sampler.CallEnergy, sampler.CallSamples, sampler.CallTelemetry}

// selfMetrics is the self collector's per-GPU table, one entry per metric.
var selfMetrics = []metric[*gpuView]{
	{name: "lem_exporter_samples_captured_total", typ: prometheus.CounterValue,
		help:   "Driver power samples captured.",
		values: func(g *gpuView) []value { return one(float64(g.st.SamplesCaptured)) }},
	{name: "lem_exporter_sample_gaps_total", typ: prometheus.CounterValue, labels: []string{"where"},
		help: "Intervals between captured samples over twice the sample period, by where they fell (in_batch: the driver's own; at_drain: possibly lost by the exporter).",
		values: func(g *gpuView) []value {
			return []value{{v: float64(g.st.Gaps - g.st.DrainGaps), labels: []string{trace.GapInBatch}},
				{v: float64(g.st.DrainGaps), labels: []string{trace.GapAtDrain}}}
		}},
	{name: "lem_exporter_samples_missed_total", typ: prometheus.CounterValue,
		help:   "Samples the gaps should have held.",
		values: func(g *gpuView) []value { return one(float64(g.st.MissedSamples)) }},
	{name: "lem_exporter_sample_buffer_overruns_total", typ: prometheus.CounterValue,
		help:   "Drains that came too late and lost samples from the driver buffer.",
		values: func(g *gpuView) []value { return one(float64(g.st.Overruns)) }},
	{name: "lem_exporter_energy_reads_total", typ: prometheus.CounterValue,
		help:   "Reads of the GPU total-energy counter.",
		values: func(g *gpuView) []value { return one(float64(g.st.CounterReads)) }},
	{name: "lem_exporter_energy_resets_total", typ: prometheus.CounterValue,
		help:   "Resets of the GPU total-energy counter seen (driver reload).",
		values: func(g *gpuView) []value { return one(float64(g.st.CounterResets)) }},
	{name: "lem_exporter_nvml_calls_total", typ: prometheus.CounterValue, labels: []string{"call"},
		help:   "Device calls by kind.",
		values: perCall(func(cs sampler.CallStats) float64 { return float64(cs.Count) })},
	{name: "lem_exporter_nvml_errors_total", typ: prometheus.CounterValue, labels: []string{"call"},
		help:   "Failed device calls by kind (not-supported answers excluded).",
		values: perCall(func(cs sampler.CallStats) float64 { return float64(cs.Errors) })},
	{name: "lem_exporter_nvml_call_seconds_total", typ: prometheus.CounterValue, labels: []string{"call"},
		help:   "Time spent in device calls by kind.",
		values: perCall(func(cs sampler.CallStats) float64 { return cs.Total.Seconds() })},
	{name: "lem_exporter_nvml_call_max_seconds", typ: prometheus.GaugeValue, labels: []string{"call"},
		help:   "Longest device call by kind.",
		values: perCall(func(cs sampler.CallStats) float64 { return cs.Max.Seconds() })},
	{name: "lem_exporter_sampler_lag_seconds", typ: prometheus.GaugeValue, labels: []string{"loop"},
		help: "How late the last iteration of each sampler loop ran.",
		values: func(g *gpuView) []value {
			var out []value
			for _, loop := range []string{"counter", "drain", "telemetry"} {
				if l, ok := g.st.Lag[loop]; ok { // a loop that has not ticked yet has no lag
					out = append(out, value{v: l.Seconds(), labels: []string{loop}})
				}
			}
			return out
		}},
	{name: "lem_exporter_last_sample_timestamp_seconds", typ: prometheus.GaugeValue,
		help: "Driver timestamp of the newest captured power sample.",
		values: func(g *gpuView) []value {
			if g.st.SamplesCaptured == 0 {
				return nil
			}
			return one(unixSeconds(g.st.LatestSample.Time.Time()))
		}},
}

// perCall is one sample per device call kind; a kind never called counts zero.
func perCall(of func(sampler.CallStats) float64) func(*gpuView) []value {
	return func(g *gpuView) []value {
		out := make([]value, len(calls))
		for i, name := range calls {
			out[i] = value{v: of(g.st.Calls[name]), labels: []string{name}}
		}
		return out
	}
}

// dropMetrics is the self collector's table of consumer queues (name: records dropped).
var dropMetrics = []metric[map[string]uint64]{
	{name: "lem_exporter_consumer_dropped_total", typ: prometheus.CounterValue, labels: []string{"consumer"},
		help: "Records dropped because a consumer's queue was full.",
		values: func(subs map[string]uint64) []value {
			out := make([]value, 0, len(subs))
			for name, n := range subs {
				out = append(out, value{v: float64(n), labels: []string{name}})
			}
			return out
		}},
}
