package exporter

import (
	"strconv"
	"time"

	"github.com/lem-energy/lem/internal/marker"
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
	// Results are strings on the wire; only numbers become samples (a model name has no value to plot).
	{name: "lem_run_result", typ: prometheus.GaugeValue, labels: []string{"key"},
		help: "Numeric results the run reported (output_tokens, requests, ...), by key.",
		values: func(r *marker.Run) []value {
			var out []value
			for k, v := range r.Results {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					out = append(out, value{v: f, labels: []string{k}})
				}
			}
			return out
		}},
}
