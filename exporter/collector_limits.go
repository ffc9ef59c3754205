package exporter

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lem-energy/lem/internal/marker"
)

// markerLimits is what the limits collector reads of the marker store: what it refused, expired and evicted, its
// limits, and its runs (listing them also expires the runs whose lease or age ran out, so a scrape counts an
// expiry even when no marker arrives).
type markerLimits interface {
	Stats() marker.Stats
	Limits() marker.Limits
	Snapshot() []marker.Run
}

var _ markerLimits = (*marker.Store)(nil)

// sampleLimits is what the limits collector reads of the raw-sample API.
type sampleLimits interface {
	SampleRequestStats() SampleRequestStats
}

var _ sampleLimits = (*API)(nil)

// LimitsCollector exposes what the exporter refused, expired or evicted to stay within its bounds (marker store,
// sample downloads), and how close it is to them, so an operator sees a limit before a client hits it.
type LimitsCollector struct {
	markers markerLimits
	samples sampleLimits
	table   table[*limitsView]
}

var _ prometheus.Collector = (*LimitsCollector)(nil)

// NewLimitsCollector builds the limit metrics' descriptors once, over the marker store and the sample API.
func NewLimitsCollector(markers markerLimits, samples sampleLimits) *LimitsCollector {
	return &LimitsCollector{markers: markers, samples: samples, table: newTable(nil, limitMetrics)}
}

// Describe sends every descriptor of the table.
func (c *LimitsCollector) Describe(ch chan<- *prometheus.Desc) { c.table.describe(ch) }

// Collect reads the store's runs, counts and limits, and the sample API's.
func (c *LimitsCollector) Collect(ch chan<- prometheus.Metric) {
	v := &limitsView{lim: c.markers.Limits(), dl: c.samples.SampleRequestStats()}
	for _, r := range c.markers.Snapshot() { // first: it expires what ran out, which Stats then counts
		if r.Active() {
			v.active++
		} else {
			v.ended++
		}
	}
	v.st = c.markers.Stats()
	c.table.collect(ch, v)
}

// limitsView is what the limit metrics are made from.
type limitsView struct {
	st            marker.Stats
	lim           marker.Limits
	active, ended int
	dl            SampleRequestStats
}

// rejectReasons are the marker store's reasons, always exposed (0 until one happens) so rate() works from the
// start; a reason the store adds later is exposed after them.
var rejectReasons = []string{"invalid", "not_found", "conflict", "limit"}

// byReason is one sample per reason: the known ones in order, then any other, sorted.
func byReason(known []string, counts map[string]uint64) []value {
	out := make([]value, 0, len(known)+len(counts))
	for _, r := range known {
		out = append(out, value{v: float64(counts[r]), labels: []string{r}})
	}
	for _, r := range slices.Sorted(maps.Keys(counts)) {
		if !slices.Contains(known, r) {
			out = append(out, value{v: float64(counts[r]), labels: []string{r}})
		}
	}
	return out
}

// limitMetrics is the limits collector's table, one entry per metric.
var limitMetrics = []metric[*limitsView]{
	{name: "lem_exporter_marker_rejected_total", typ: prometheus.CounterValue, labels: []string{"reason"},
		help: "Marker writes refused, by reason (invalid: bad input; not_found: unknown run; conflict: run exists or ended; " +
			"limit: active runs, phase names, result keys or baselines of a run at their limit).",
		values: func(v *limitsView) []value { return byReason(rejectReasons, v.st.Rejected) }},
	{name: "lem_exporter_runs_expired_total", typ: prometheus.CounterValue,
		help:   "Active runs ended as expired: their lease ran out (the runner died) or they outlived --markers.max-run-age.",
		values: func(v *limitsView) []value { return one(float64(v.st.Expired)) }},
	{name: "lem_exporter_runs_evicted_total", typ: prometheus.CounterValue,
		help:   "Ended runs dropped before their grace period was over, the oldest first, beyond --markers.max-ended-runs.",
		values: func(v *limitsView) []value { return one(float64(v.st.Evicted)) }},
	{name: "lem_exporter_runs", typ: prometheus.GaugeValue, labels: []string{"state"},
		help: "Runs the marker store holds: active, or ended and within the grace period.",
		values: func(v *limitsView) []value {
			return []value{{v: float64(v.active), labels: []string{"active"}}, {v: float64(v.ended), labels: []string{"ended"}}}
		}},
	{name: "lem_exporter_runs_limit", typ: prometheus.GaugeValue, labels: []string{"state"},
		help: "Most runs the marker store holds per state (--markers.max-active-runs, --markers.max-ended-runs).",
		values: func(v *limitsView) []value {
			return []value{{v: float64(v.lim.MaxActive), labels: []string{"active"}},
				{v: float64(v.lim.MaxEnded), labels: []string{"ended"}}}
		}},
	{name: "lem_exporter_sample_requests_in_flight", typ: prometheus.GaugeValue,
		help:   "Raw-sample downloads (/api/v1/samples) in progress.",
		values: func(v *limitsView) []value { return one(float64(v.dl.InFlight)) }},
	{name: "lem_exporter_sample_requests_in_flight_limit", typ: prometheus.GaugeValue,
		help:   "Most raw-sample downloads served at once (--web.max-sample-requests).",
		values: func(v *limitsView) []value { return one(float64(v.dl.MaxInFlight)) }},
	{name: "lem_exporter_sample_requests_refused_total", typ: prometheus.CounterValue, labels: []string{"reason"},
		help: "Raw-sample downloads refused, by reason (busy: --web.max-sample-requests in progress, answered 503; " +
			"too_many_samples: the range held more than --web.max-samples-per-response, answered 400).",
		values: func(v *limitsView) []value { return byReason([]string{RefusedBusy, RefusedTooLarge}, v.dl.Refused) }},
}
