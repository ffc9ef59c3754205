package exporter

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/prometheus/client_golang/prometheus"
)

// runLister is all the runs collector knows of the marker store: the runs active now and those ended within the
// grace period, each with its current phase and recently ended ones, one per name.
type runLister interface{ Snapshot() []marker.Run }

// RunsCollector exposes the experiment runs and phases the marker store knows, so Grafana can draw them and
// lem-analyze pull can find runs in Prometheus.
type RunsCollector struct {
	runs  runLister
	table table[*marker.Run]
}

var _ prometheus.Collector = (*RunsCollector)(nil)

// NewRunsCollector builds the run metrics' descriptors once, over runs.
func NewRunsCollector(runs runLister) *RunsCollector {
	return &RunsCollector{runs: runs, table: newTable([]string{"run_id", "experiment"}, runMetrics)}
}

// Describe sends every descriptor of the table.
func (c *RunsCollector) Describe(ch chan<- *prometheus.Desc) { c.table.describe(ch) }

// Collect reads one snapshot of the runs.
func (c *RunsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.runs.Snapshot() {
		c.table.collect(ch, &r, r.ID, r.Experiment)
	}
}

// active is 1 until end is set, then 0 for the rest of the grace period (a series that ends cleanly).
func active(end time.Time) float64 {
	if end.IsZero() {
		return 1
	}
	return 0
}

// runMetrics is the runs collector's table, one entry per metric.
var runMetrics = []metric[*marker.Run]{
	{name: "lem_run_active", typ: prometheus.GaugeValue,
		help:   "1 while the experiment run is active; 0 for a grace period after it ended.",
		values: func(r *marker.Run) []value { return one(active(r.End)) }},
	{name: "lem_run_start_timestamp_seconds", typ: prometheus.GaugeValue,
		help:   "Start time of the run.",
		values: func(r *marker.Run) []value { return one(unixSeconds(r.Start)) }},
	{name: "lem_run_end_timestamp_seconds", typ: prometheus.GaugeValue,
		help: "End time of a run that ended (shown for the grace period).",
		values: func(r *marker.Run) []value {
			if r.End.IsZero() {
				return nil
			}
			return one(unixSeconds(r.End))
		}},
	{name: "lem_run_phase_active", typ: prometheus.GaugeValue, labels: []string{"phase"},
		help: "1 while the phase is active; 0 for a grace period after it ended.",
		values: func(r *marker.Run) []value {
			out := make([]value, len(r.Phases))
			for i, p := range r.Phases {
				out[i] = value{v: active(p.End), labels: []string{p.Name}}
			}
			return out
		}},
	{name: "lem_run_phase_start_timestamp_seconds", typ: prometheus.GaugeValue, labels: []string{"phase"},
		help: "Start time of the phase.",
		values: func(r *marker.Run) []value {
			out := make([]value, len(r.Phases))
			for i, p := range r.Phases {
				out[i] = value{v: unixSeconds(p.Start), labels: []string{p.Name}}
			}
			return out
		}},
	{name: "lem_run_phase_end_timestamp_seconds", typ: prometheus.GaugeValue, labels: []string{"phase"},
		help: "End time of the phase's latest occurrence, once it ended (shown for the grace period).",
		values: func(r *marker.Run) []value {
			var out []value
			for _, p := range r.Phases {
				if !p.End.IsZero() {
					out = append(out, value{v: unixSeconds(p.End), labels: []string{p.Name}})
				}
			}
			return out
		}},
	// The workload's GPUs (the run's workload_gpus label): dashboards and pulls sum these, not the whole host.
	{name: "lem_run_gpu_active", typ: prometheus.GaugeValue, labels: []string{"gpu"},
		help: "1 while the run is active on this GPU (one of the workload's); 0 for the grace period after it ended.",
		values: func(r *marker.Run) []value {
			var out []value
			for _, g := range runGPUs(r) {
				out = append(out, value{v: active(r.End), labels: []string{g}})
			}
			return out
		}},
	// The idle baseline lem-run measured for each GPU: adjusted energy from Prometheus needs it.
	{name: "lem_run_baseline_watts", typ: prometheus.GaugeValue, labels: []string{"gpu", "stat"},
		help: "Idle power of the run's baseline per GPU, watts: stat=median (subtracted), p25, p75.",
		values: func(r *marker.Run) []value {
			var out []value
			for _, g := range baselineGPUs(r) {
				b, gs := r.Baselines[g], strconv.Itoa(g)
				out = append(out, value{v: b.MedianW, labels: []string{gs, "median"}},
					value{v: b.P25W, labels: []string{gs, "p25"}}, value{v: b.P75W, labels: []string{gs, "p75"}})
			}
			return out
		}},
	{name: "lem_run_baseline_window_timestamp_seconds", typ: prometheus.GaugeValue, labels: []string{"gpu", "edge"},
		help: "Start and end of the run's baseline window per GPU (edge=start|end).",
		values: func(r *marker.Run) []value {
			var out []value
			for _, g := range baselineGPUs(r) {
				b, gs := r.Baselines[g], strconv.Itoa(g)
				out = append(out, value{v: unixSeconds(b.Start), labels: []string{gs, "start"}},
					value{v: unixSeconds(b.End), labels: []string{gs, "end"}})
			}
			return out
		}},
	{name: "lem_run_baseline_samples", typ: prometheus.GaugeValue, labels: []string{"gpu"},
		help: "Power samples the run's baseline rests on, per GPU.",
		values: func(r *marker.Run) []value {
			var out []value
			for _, g := range baselineGPUs(r) {
				out = append(out, value{v: float64(r.Baselines[g].Samples), labels: []string{strconv.Itoa(g)}})
			}
			return out
		}},
	{name: "lem_run_baseline_temperature_celsius", typ: prometheus.GaugeValue, labels: []string{"gpu", "edge"},
		help: "GPU temperature at the start and end of the run's baseline window (edge=start|end).",
		values: func(r *marker.Run) []value {
			var out []value
			for _, g := range baselineGPUs(r) {
				b, gs := r.Baselines[g], strconv.Itoa(g)
				if b.TempStartC != nil {
					out = append(out, value{v: *b.TempStartC, labels: []string{gs, "start"}})
				}
				if b.TempEndC != nil {
					out = append(out, value{v: *b.TempEndC, labels: []string{gs, "end"}})
				}
			}
			return out
		}},
	{name: "lem_run_baseline_utilization_ratio", typ: prometheus.GaugeValue, labels: []string{"gpu"},
		help: "Mean GPU utilization during the run's baseline, 0 to 1 (idle is near 0).",
		values: func(r *marker.Run) []value {
			var out []value
			for _, g := range baselineGPUs(r) {
				if u := r.Baselines[g].UtilMean; u != nil {
					out = append(out, value{v: *u, labels: []string{strconv.Itoa(g)}})
				}
			}
			return out
		}},
	// Results are strings on the wire; only numbers become samples (a model name has no value to plot).
	{name: "lem_run_result", typ: prometheus.GaugeValue, labels: []string{"key"},
		help: "Numeric results the run reported (output_tokens, requests, ...), by key.",
		values: func(r *marker.Run) []value {
			var out []value
			for _, k := range slices.Sorted(maps.Keys(r.Results)) {
				if f, ok := marker.Number(r.Results[k]); ok {
					out = append(out, value{v: f, labels: []string{k}})
				}
			}
			return out
		}},
}

// runGPUs lists the run's workload GPUs from its workload_gpus label (none without one).
func runGPUs(r *marker.Run) []string {
	var out []string
	for _, f := range strings.Split(r.Labels[trace.LabelWorkloadGPUs], ",") {
		if f = strings.TrimSpace(f); f != "" {
			if _, err := strconv.Atoi(f); err == nil {
				out = append(out, f)
			}
		}
	}
	return out
}

// baselineGPUs lists the GPUs with a baseline, ascending.
func baselineGPUs(r *marker.Run) []int {
	return slices.Sorted(maps.Keys(r.Baselines))
}
