// Package pull reads lem's (or dcgm-exporter's) series back from any Prometheus-compatible API, losslessly: raw
// samples through range selectors in chunks, never resampled query_range output, into lem's trace format.
package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/trace"
)

// Options configure a pull.
type Options struct {
	URL      string
	HTTP     config.HTTPClientConfig // bearer token, basic auth, TLS
	From, To time.Time
	Chunk    time.Duration // range-selector window per query (default 10 min)
	Workers  int           // chunks queried at once (default 4)
	Timeout  time.Duration // per query (default 2 min)
	Retries  int           // per query (default 3)
	DCGM     bool          // read dcgm-exporter's series instead of lem's
	Progress io.Writer     // a terminal: progress bars (nil: none)
	Log      *slog.Logger
}

// Client queries one Prometheus.
type Client struct {
	api  v1.API
	opts Options
}

// New connects (lazily) to the API.
func New(opts Options) (*Client, error) {
	if opts.Chunk <= 0 {
		opts.Chunk = 10 * time.Minute
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Retries <= 0 {
		opts.Retries = 3
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	rt, err := config.NewRoundTripperFromConfig(opts.HTTP, "lem-analyze")
	if err != nil {
		return nil, fmt.Errorf("--prometheus client: %w", err)
	}
	c, err := api.NewClient(api.Config{Address: opts.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("--prometheus %q: %w", opts.URL, err)
	}
	return &Client{api: v1.NewAPI(c), opts: opts}, nil
}

// query runs an instant query with a timeout and retries with backoff; auth failures and bad queries fail at once.
func (c *Client) query(ctx context.Context, q string, at time.Time) (model.Value, error) {
	var err error
	backoff := 500 * time.Millisecond
	for attempt := 0; attempt < c.opts.Retries; attempt++ {
		qctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
		var v model.Value
		v, _, _, err = c.api.Query(qctx, q, at)
		cancel()
		if err == nil {
			return v, nil
		}
		var perr *v1.Error
		if errors.As(err, &perr) && (perr.Type == v1.ErrBadData ||
			perr.Type == v1.ErrClient && !strings.Contains(perr.Msg, strconv.Itoa(http.StatusTooManyRequests))) {
			break // a bad query or a 4xx such as 401/403: retrying will not help
		}
		c.opts.Log.Warn("query failed; retrying", "query", q, "attempt", attempt+1, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	return nil, fmt.Errorf("query %q at %s against %s: %w", q, at.Format(time.RFC3339), c.opts.URL, err)
}

// Raw returns every stored sample of the selector in [from, to], querying range selectors chunk by chunk.
func (c *Client) Raw(ctx context.Context, selector string, from, to time.Time) ([]*model.SampleStream, error) {
	// Prometheus stores milliseconds: align the window so the chunks tile it exactly.
	from, to = from.Truncate(time.Millisecond), to.Truncate(time.Millisecond)
	byKey := map[string]*model.SampleStream{}
	var order []string
	bar := newProgress(c.opts.Progress, selector, from, to)
	var n int64
	for start := from; start.Before(to); start = start.Add(c.opts.Chunk) {
		end := start.Add(c.opts.Chunk)
		if end.After(to) {
			end = to
		}
		q := fmt.Sprintf("%s[%dms]", selector, end.Sub(start).Milliseconds())
		v, err := c.query(ctx, q, end)
		if err != nil {
			return nil, err
		}
		m, ok := v.(model.Matrix)
		if !ok {
			return nil, fmt.Errorf("query %q returned %s, not a matrix", q, v.Type())
		}
		for _, ss := range m {
			k := ss.Metric.String()
			dst := byKey[k]
			if dst == nil {
				dst = &model.SampleStream{Metric: ss.Metric}
				byKey[k] = dst
				order = append(order, k)
			}
			// Prometheus 2 range selectors are closed ([end−window, end]): a sample on a chunk boundary comes
			// back in both chunks. Keep each timestamp once (Prometheus 3's left-open selectors need nothing).
			for _, p := range ss.Values {
				if n := len(dst.Values); n > 0 && !p.Timestamp.After(dst.Values[n-1].Timestamp) {
					continue
				}
				dst.Values = append(dst.Values, p)
				n++
			}
		}
		bar.update(end, n)
	}
	bar.done(n)
	out := make([]*model.SampleStream, 0, len(order))
	for _, k := range order {
		out = append(out, byKey[k])
	}
	return out, nil
}

// RunInfo is a run found from the marker series.
type RunInfo struct {
	RunID, Experiment, Instance string
	Start, End                  time.Time
}

// FindRuns lists the runs whose markers Prometheus holds in [from, to]: a run spans the samples where
// lem_run_active was 1.
func (c *Client) FindRuns(ctx context.Context, from, to time.Time) ([]RunInfo, error) {
	streams, err := c.Raw(ctx, `lem_run_active`, from, to)
	if err != nil {
		return nil, err
	}
	var out []RunInfo
	for _, s := range streams {
		ri := RunInfo{RunID: string(s.Metric["run_id"]), Experiment: string(s.Metric["experiment"]),
			Instance: string(s.Metric["instance"])}
		for _, p := range s.Values {
			if p.Value != 1 {
				continue
			}
			t := p.Timestamp.Time()
			if ri.Start.IsZero() || t.Before(ri.Start) {
				ri.Start = t
			}
			if t.After(ri.End) {
				ri.End = t
			}
		}
		if ri.Start.IsZero() {
			continue
		}
		// The exact start and end are exported; scrapes only bound them.
		for _, x := range []struct {
			metric string
			t      *time.Time
		}{{"lem_run_start_timestamp_seconds", &ri.Start}, {"lem_run_end_timestamp_seconds", &ri.End}} {
			v, err := c.query(ctx, fmt.Sprintf(`max_over_time(%s{run_id=%q,instance=%q}[%dms])`, x.metric, ri.RunID,
				ri.Instance, to.Sub(from).Milliseconds()+1), to)
			if err != nil {
				return nil, err
			}
			if vec, ok := v.(model.Vector); ok && len(vec) > 0 {
				*x.t = time.Unix(0, int64(float64(vec[0].Value)*1e9))
			}
		}
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out, nil
}

// selectors of the power and energy series of one instance, for lem's or dcgm-exporter's names.
func (c *Client) selectors(instance string) (power, energy string) {
	if c.opts.DCGM {
		return fmt.Sprintf(`DCGM_FI_DEV_POWER_USAGE{instance=%q}`, instance),
			fmt.Sprintf(`DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{instance=%q}`, instance)
	}
	return fmt.Sprintf(`lem_gpu_power_watts{source="sample",instance=%q}`, instance),
		fmt.Sprintf(`lem_gpu_energy_joules_total{instance=%q}`, instance)
}

// Trace pulls one instance's power and energy series over [from, to] into a lem trace in memory, with the phases
// of run (if given) as events (Stream writes a trace of any length as it arrives).
func (c *Client) Trace(ctx context.Context, instance string, from, to time.Time, run *RunInfo) (*trace.Trace, error) {
	devs, err := c.Devices(ctx, instance, from, to)
	if err != nil {
		return nil, err
	}
	tr := trace.New(c.Environment(devs))
	if _, err := c.Stream(ctx, instance, from, to, devs, memorySink{tr}); err != nil {
		return nil, err
	}
	for _, s := range tr.GPUs {
		s.Sort()
	}
	if run != nil {
		if tr.Events, err = c.RunEvents(ctx, *run, from, to); err != nil {
			return nil, err
		}
		tr.Extra[MetaRunID] = run.RunID
	}
	return tr, nil
}

// MetaRunID is the trace metadata key naming the run a pulled trace holds.
const MetaRunID = "lem.run_id"

// Environment is a pulled trace's: the source and the GPUs.
func (c *Client) Environment(devs []meta.Device) meta.Environment {
	return meta.Environment{Source: meta.Source{Kind: "prometheus", Path: c.opts.URL}, Devices: devs}
}

// RunEvents rebuilds a run's events from its series: start, phases, end, results, baselines and which GPUs were
// the workload's, in time order (none for dcgm-exporter, which has no runs).
func (c *Client) RunEvents(ctx context.Context, run RunInfo, from, to time.Time) ([]trace.Event, error) {
	if c.opts.DCGM {
		return nil, nil
	}
	evs, err := c.phases(ctx, run, from, to)
	if err != nil {
		return nil, err
	}
	more, workload, err := c.runEvents(ctx, run, from, to)
	if err != nil {
		return nil, err
	}
	for i := range evs {
		if evs[i].Type == trace.EventRunStart && workload != "" {
			evs[i].Attrs = map[string]string{trace.AttrWorkloadGPUs: workload}
		}
	}
	evs = append(evs, more...)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	return evs, nil
}

// telemetryGauges are the scraped telemetry gauges pulled back into the trace, and the field each fills.
var telemetryGauges = []struct {
	metric string
	set    func(*trace.Telemetry, float64)
}{
	{"lem_gpu_temperature_celsius", func(t *trace.Telemetry, v float64) { t.TemperatureC = v }},
	{"lem_gpu_utilization_ratio", func(t *trace.Telemetry, v float64) { t.UtilGPU = v }},
	{"lem_gpu_memory_used_bytes", func(t *trace.Telemetry, v float64) { t.MemUsedBytes = v }},
	{"lem_gpu_sm_clock_hertz", func(t *trace.Telemetry, v float64) { t.SMClockHz = v }},
	{"lem_gpu_performance_state", func(t *trace.Telemetry, v float64) { t.PState = v }},
}

// latest returns, per series of selector, its last value in [from, to].
func (c *Client) latest(ctx context.Context, selector string, from, to time.Time) ([]*model.Sample, error) {
	v, err := c.query(ctx, fmt.Sprintf(`last_over_time(%s[%dms])`, selector, to.Sub(from).Milliseconds()+1), to)
	if err != nil {
		return nil, err
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query of %s returned %s, not a vector", selector, v.Type())
	}
	return vec, nil
}

// runEvents rebuilds what the run carried besides its phases from the run's series: its results (their final
// values), its baselines, and which GPUs were the workload's (the workload_gpus label value; "" when not known).
func (c *Client) runEvents(ctx context.Context, run RunInfo, from, to time.Time) (evs []trace.Event, workload string, err error) {
	sel := func(metric string) string {
		return fmt.Sprintf(`%s{run_id=%q,instance=%q}`, metric, run.RunID, run.Instance)
	}
	results, err := c.latest(ctx, sel("lem_run_result"), from, to)
	if err != nil {
		return nil, "", err
	}
	if len(results) > 0 {
		attrs := map[string]string{}
		for _, r := range results {
			attrs[string(r.Metric["key"])] = strconv.FormatFloat(float64(r.Value), 'g', -1, 64)
		}
		evs = append(evs, trace.Event{Time: run.End, GPU: trace.NoGPU, Type: trace.EventResult, RunID: run.RunID, Attrs: attrs})
	}
	// Baselines: one event per GPU, from the baseline series' last values.
	type part struct{ metric, label string }
	vals := map[int]map[string]float64{}
	for _, p := range []part{{"lem_run_baseline_watts", "stat"}, {"lem_run_baseline_window_timestamp_seconds", "edge"},
		{"lem_run_baseline_samples", ""}, {"lem_run_baseline_temperature_celsius", "edge"}, {"lem_run_baseline_utilization_ratio", ""}} {
		vec, err := c.latest(ctx, sel(p.metric), from, to)
		if err != nil {
			return nil, "", err
		}
		for _, v := range vec {
			g := gpuLabel(v.Metric)
			if vals[g] == nil {
				vals[g] = map[string]float64{}
			}
			vals[g][p.metric+"/"+string(v.Metric[model.LabelName(p.label)])] = float64(v.Value)
		}
	}
	for g, v := range vals {
		ns := func(k string) time.Time { return time.Unix(0, int64(v[k]*1e9)).UTC() }
		opt := func(k string) *float64 {
			if x, ok := v[k]; ok {
				return &x
			}
			return nil
		}
		b := manifest.Baseline{Start: ns("lem_run_baseline_window_timestamp_seconds/start"),
			End:     ns("lem_run_baseline_window_timestamp_seconds/end"),
			MedianW: v["lem_run_baseline_watts/median"], P25W: v["lem_run_baseline_watts/p25"], P75W: v["lem_run_baseline_watts/p75"],
			Samples:    int(v["lem_run_baseline_samples/"]),
			TempStartC: opt("lem_run_baseline_temperature_celsius/start"), TempEndC: opt("lem_run_baseline_temperature_celsius/end"),
			UtilMean: opt("lem_run_baseline_utilization_ratio/")}
		b.IQRW = b.P75W - b.P25W
		ev := marker.BaselineEvent(g, b)
		ev.Time, ev.RunID = run.Start, run.RunID
		evs = append(evs, ev)
	}
	gpus, err := c.latest(ctx, sel("lem_run_gpu_active"), from, to)
	if err != nil {
		return nil, "", err
	}
	if len(gpus) > 0 {
		var idx []int
		for _, v := range gpus {
			idx = append(idx, gpuLabel(v.Metric))
		}
		sort.Ints(idx)
		workload = marker.FormatGPUs(idx)
	}
	return evs, workload, nil
}

// preferStream keeps, per GPU, the series of lem's remote-write stream (job lem_stream: every sample) when it is
// there, else the scraped one.
func preferStream(ss []*model.SampleStream) []*model.SampleStream {
	best := map[string]*model.SampleStream{}
	var order []string
	for _, s := range ss {
		g := string(s.Metric["gpu"])
		cur, ok := best[g]
		if !ok {
			order = append(order, g)
		}
		if !ok || (s.Metric["job"] == "lem_stream" && cur.Metric["job"] != "lem_stream") ||
			(s.Metric["job"] == cur.Metric["job"] && len(s.Values) > len(cur.Values)) {
			best[g] = s
		}
	}
	out := make([]*model.SampleStream, 0, len(order))
	for _, g := range order {
		out = append(out, best[g])
	}
	return out
}

// phases rebuilds the run's phase events from lem_run_phase_start_timestamp_seconds (exact starts) and
// lem_run_phase_end_timestamp_seconds (exact ends of phases ended on their own, not by the next one).
func (c *Client) phases(ctx context.Context, run RunInfo, from, to time.Time) ([]trace.Event, error) {
	starts, err := c.Raw(ctx, fmt.Sprintf(`lem_run_phase_start_timestamp_seconds{run_id=%q,instance=%q}`, run.RunID, run.Instance), from, to)
	if err != nil {
		return nil, err
	}
	ends, err := c.Raw(ctx, fmt.Sprintf(`lem_run_phase_end_timestamp_seconds{run_id=%q,instance=%q}`, run.RunID, run.Instance), from, to)
	if err != nil {
		return nil, err
	}
	evs := []trace.Event{{Time: run.Start, GPU: trace.NoGPU, Type: trace.EventRunStart, RunID: run.RunID, Name: run.Experiment}}
	seen := map[string]bool{}
	at := map[int64]bool{}
	for _, s := range starts {
		for _, p := range s.Values {
			ns := int64(math.Round(float64(p.Value) * 1e9))
			key := string(s.Metric["phase"]) + "@" + strconv.FormatInt(ns, 10)
			if seen[key] {
				continue
			}
			seen[key], at[ns] = true, true
			evs = append(evs, trace.Event{Time: time.Unix(0, ns), GPU: trace.NoGPU, Type: trace.EventPhase, RunID: run.RunID,
				Name: string(s.Metric["phase"])})
		}
	}
	for _, s := range ends {
		for _, p := range s.Values {
			ns := int64(math.Round(float64(p.Value) * 1e9))
			if at[ns] || ns >= run.End.UnixNano() {
				continue // ended by the next phase or the run's end: nothing to add
			}
			at[ns] = true
			evs = append(evs, trace.Event{Time: time.Unix(0, ns), GPU: trace.NoGPU, Type: trace.EventPhaseEnd, RunID: run.RunID,
				Name: string(s.Metric["phase"])})
		}
	}
	evs = append(evs, trace.Event{Time: run.End, GPU: trace.NoGPU, Type: trace.EventRunEnd, RunID: run.RunID, Name: run.Experiment})
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	return evs, nil
}

// gpuLabel reads a series' gpu label (0 when absent: single-GPU exporters of other kinds).
func gpuLabel(m model.Metric) int {
	g, err := strconv.Atoi(string(m["gpu"]))
	if err != nil {
		return 0
	}
	return g
}
