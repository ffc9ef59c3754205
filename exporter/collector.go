// Package exporter is lem-exporter: Prometheus collectors over the sampler's state, the experiment-marker and
// raw-sample HTTP APIs, health endpoints, a rotating Parquet recorder and a remote-write stream of the full-rate
// data.
package exporter

import (
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
)

// The collectors make no NVML call: a scrape only reads what the sampler's goroutines already stored, so it never
// waits on a GPU and never disturbs sampling. Each collector is a table of metrics (collector_gpu.go,
// collector_self.go, collector_runs.go); a metric is defined in exactly one entry, and its descriptor, type and
// labels go with it to every sample made from it.

// value is one sample of a metric: the number, the values of the metric's own labels (in the order of its
// labels), and, for a value that belongs to an instant of its own, that instant.
type value struct {
	v      float64
	labels []string
	at     time.Time
}

// one is a metric's single sample.
func one(v float64, labels ...string) []value { return []value{{v: v, labels: labels}} }

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// metric defines one metric. S is what the collector hands its value function: one GPU's state, one run.
type metric[S any] struct {
	name, help string
	typ        prometheus.ValueType
	labels     []string        // the metric's own labels, after the table's common ones
	values     func(S) []value // the samples now; none: no series (no data yet, not supported)
}

// table is a collector's metrics with their descriptors, built once.
type table[S any] struct {
	defs  []metric[S]
	descs []*prometheus.Desc
}

// newTable builds the descriptors of defs; common labels (gpu and uuid, or run_id and experiment) come first
// on every one.
func newTable[S any](common []string, defs []metric[S]) table[S] {
	t := table[S]{defs: defs, descs: make([]*prometheus.Desc, len(defs))}
	for i, d := range defs {
		t.descs[i] = prometheus.NewDesc(d.name, d.help, append(append([]string{}, common...), d.labels...), nil)
	}
	return t
}

func (t table[S]) describe(ch chan<- *prometheus.Desc) {
	for _, d := range t.descs {
		ch <- d
	}
}

// collect sends every sample of s's metrics, common label values first. A NaN gauge is a field the GPU does not
// report: it has no series. A sample client_golang rejects (a label value that is not UTF-8) is sent as an
// invalid metric, which fails that series only: the handler serves the rest of the scrape.
func (t table[S]) collect(ch chan<- prometheus.Metric, s S, common ...string) {
	lv := make([]string, 0, len(common)+8) // reused: client_golang copies the label values
	for i, d := range t.defs {
		for _, v := range d.values(s) {
			if d.typ == prometheus.GaugeValue && math.IsNaN(v.v) {
				continue
			}
			lv = append(append(lv[:0], common...), v.labels...)
			m, err := prometheus.NewConstMetric(t.descs[i], d.typ, v.v, lv...)
			switch {
			case err != nil:
				m = prometheus.NewInvalidMetric(t.descs[i], err)
			case !v.at.IsZero():
				m = prometheus.NewMetricWithTimestamp(v.at, m)
			}
			ch <- m
		}
	}
}

// sampledGPUs is what the GPU collectors read: the sampled devices and each one's state.
type sampledGPUs interface {
	Environment() meta.Environment
	Stats(gpu int) (sampler.Stats, bool)
}

var _ sampledGPUs = (*sampler.Sampler)(nil)

// gpuView is what one GPU's metrics are made from: its identity, the environment's, and the sampler's state.
type gpuView struct {
	dev meta.Device
	env *meta.Environment
	st  sampler.Stats
}

// gpuLabels are the labels of every per-GPU series.
var gpuLabels = []string{"gpu", "uuid"}

// eachGPU collects t for every sampled GPU that has a state. Each GPU's series come from its own state only, so a
// GPU that failed or was lost changes nothing but its own series.
func eachGPU(ch chan<- prometheus.Metric, s sampledGPUs, env *meta.Environment, t table[*gpuView]) {
	for _, dev := range env.Devices {
		st, ok := s.Stats(dev.Index)
		if !ok {
			continue
		}
		t.collect(ch, &gpuView{dev: dev, env: env, st: st}, strconv.Itoa(dev.Index), dev.UUID)
	}
}
