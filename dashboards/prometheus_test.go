package dashboards_test

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/dashboards"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// The host: the demo's replay of the LLM recording, looping, scraped for a little over twelve minutes. The demo
// starts it 26 s in, where the model is loaded; from 18 s the 5 s baseline falls in deep idle (78 W), and the
// energy above idle is then a quarter of the raw energy: a sharper test of the adjusted figures.
const (
	replayFrom   = 18 * time.Second
	simSpan      = 740 * time.Second
	scrapeOffset = 7300 * time.Millisecond // the first scrape after the exporter's start: on no boundary of anything
)

// The runs: the demo run (lem-run --gpus 0 with a 5 s baseline, prefill and decode, output tokens reported at the
// end) stretched to ten minutes, since a 7 s run is shorter than one scrape interval, with its phases in two
// rounds; a run of the known-shape load on the other GPU overlapping it (its power swings between ~80 and ~700 W
// every 4 s: the hard case for readings 15 to 60 s apart); and a run whose markers a workload posted itself,
// naming no GPUs and measuring no baseline.
var simRuns = []simRun{
	{id: "demo-1", experiment: "demo", gpu: 0, start: 5 * time.Second, end: 612 * time.Second,
		phases:  []simPhase{{"prefill", 0}, {"decode", 60 * time.Second}, {"prefill", 300 * time.Second}, {"decode", 340 * time.Second}},
		results: map[string]any{"output_tokens": 41984, "requests": 64}},
	{id: "shape-1", experiment: "shape", gpu: 1, start: 65 * time.Second, end: 545 * time.Second,
		phases: []simPhase{{"load", 0}}, results: map[string]any{"output_tokens": 100000}},
	{id: "job-1", experiment: "k8s-job", gpu: -1, start: 560 * time.Second, end: 700 * time.Second,
		phases: []simPhase{{"serve", 0}}, results: map[string]any{"output_tokens": 5000}},
}

// One Prometheus holds the host three times, as scraped every 15, 30 and 60 s (instances h15, h30, h60: the
// 15 s scrapes, every second one, every fourth one), each beside the exporter's remote-write stream of the same
// instance (job lem_stream: every counter reading and 50 Hz sample), and per-process energy on h15 and h30 only.
var views = []view{{"h15", 15 * time.Second}, {"h30", 30 * time.Second}, {"h60", 60 * time.Second}}

type view struct {
	instance string
	scrape   time.Duration
}

// fixture is the backfilled Prometheus and the reference figures.
type fixture struct {
	api      api
	from, to time.Time                     // the dashboard's time range
	reports  map[string]*manifest.Manifest // lem-analyze report of the exporter's recording, by run id
	rec      *trace.Trace                  // the exporter's recording
	sim      simulation
}

func newFixture(t *testing.T) *fixture {
	begin := time.Now()
	sim := simulate(t, hostTrace(t), replayFrom, simSpan, 15*time.Second, scrapeOffset, simRuns)
	require.Len(t, sim.scrapes, 49)
	f := &fixture{from: sim.start, to: sim.start.Add(simSpan), reports: map[string]*manifest.Manifest{}, sim: sim}

	// The reference: lem-analyze report over the exporter's recording (lem-analyze report DIR).
	runs, probs := report.Load([]string{sim.recDir})
	require.Empty(t, probs)
	for _, r := range runs {
		f.reports[r.Manifest.RunID] = r.Manifest
	}
	files, err := filepath.Glob(filepath.Join(sim.recDir, "*.parquet"))
	require.NoError(t, err)
	require.Len(t, files, 1)
	f.rec, err = trace.ReadFile(files[0])
	require.NoError(t, err)

	s := store{}
	for _, v := range views {
		s.addScrapes(sim.scrapes, int(v.scrape/(15*time.Second)), v.instance)
		s.addStream(f.rec, v.instance)
		if v.scrape < time.Minute {
			s.addProcesses(sim.scrapes, int(v.scrape/(15*time.Second)), v.instance, f.rec.Env)
		}
	}
	data := backfill(t, s)
	prom := testutil.StartPrometheus(t, "global:\n  scrape_interval: 15s\n", "--storage.tsdb.path="+data,
		"--storage.tsdb.retention.time=100y") // the virtual clock's data lie in 2000
	f.api = api{prom.URL}
	t.Logf("simulated, recorded, reported, backfilled and started Prometheus in %s", time.Since(begin).Round(time.Millisecond))
	return f
}

// grafana holds the values Grafana gives its variables for one view of the dashboards.
type grafana struct {
	view
	run, phase string
	from, to   time.Time
}

// interval is $__interval: the time range over the panel's points, never under the data source's scrape
// interval (the provisioned data source sets it; here the view's).
func (g grafana) interval() time.Duration {
	return max(g.scrape, (g.to.Sub(g.from) / 1000).Round(time.Second))
}

// expand substitutes the variables as Grafana does.
func (g grafana) expand(q string) string {
	secs := func(d time.Duration) string { return fmt.Sprintf("%ds", int(d.Seconds())) }
	return strings.NewReplacer(
		"$__rate_interval", secs(max(g.interval()+g.scrape, 4*g.scrape)),
		"$__interval_ms", fmt.Sprint(g.interval().Milliseconds()),
		"$__interval", secs(g.interval()),
		"$__range", secs(g.to.Sub(g.from)),
		"$job", "lem-exporter",
		"$instance", g.instance,
		"$gpu", ".*",
		"$run_id", g.run,
		"$phase", g.phase,
	).Replace(q)
}

// panel runs a panel's queries as Grafana would (instant at the range's end, or over the range) and returns
// each target's results.
func (f *fixture) panel(t *testing.T, g grafana, p dashboards.Panel) [][]result {
	t.Helper()
	var out [][]result
	for _, tg := range p.Targets {
		q := g.expand(tg.Expr)
		var res []result
		var err error
		if tg.Instant {
			res, err = f.api.instant(q, g.to)
		} else {
			res, err = f.api.rangeQuery(q, g.from, g.to, g.interval())
		}
		require.NoError(t, err, "%s (%s)", p.Title, g.instance)
		out = append(out, res)
	}
	return out
}

// labelValues evaluates a label_values(selector, label) variable over the time range.
func (f *fixture) labelValues(t *testing.T, g grafana, v dashboards.Variable) []string {
	t.Helper()
	q := v.Query.(map[string]any)["query"].(string)
	m := labelValuesRe.FindStringSubmatch(g.expand(q))
	require.NotNil(t, m, "variable %s: %s", v.Name, q)
	sets, err := f.api.series(m[1], g.from, g.to)
	require.NoError(t, err)
	var out []string
	for _, s := range sets {
		if x := s[m[2]]; x != "" && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}

// one is the single value of an instant stat query.
func one(t *testing.T, rs [][]result, what string) float64 {
	t.Helper()
	require.Len(t, rs, 1, what)
	require.Len(t, rs[0], 1, "%s: one value", what)
	return rs[0][0].Value
}

func TestDashboardsOnPrometheus(t *testing.T) {
	f := newFixture(t)
	fleet, exp := dashboards.Fleet(), dashboards.Experiment()

	t.Run("scraped and streamed series side by side", func(t *testing.T) {
		res, err := f.api.instant(`count by (job) (lem_gpu_energy_joules_total{instance="h15"})`, f.to)
		require.NoError(t, err)
		jobs := map[string]float64{}
		for _, r := range res {
			jobs[r.Metric["job"]] = r.Value
		}
		assert.Equal(t, map[string]float64{"lem-exporter": 2, "lem_stream": 2}, jobs, "a query without the job would add both")
	})

	t.Run("variables", func(t *testing.T) {
		g := grafana{view: views[0], run: "demo-1", from: f.from, to: f.to}
		assert.Equal(t, []string{"lem-exporter"}, f.labelValues(t, g, variable(t, fleet, "job")), "scrape jobs only")
		g.instance = ".*"
		assert.Equal(t, []string{"h15", "h30", "h60"}, f.labelValues(t, g, variable(t, fleet, "instance")))
		assert.Equal(t, []string{"0", "1"}, f.labelValues(t, g, variable(t, fleet, "gpu")))
		assert.Equal(t, []string{"demo-1", "job-1", "shape-1"}, f.labelValues(t, g, variable(t, exp, "run_id")))
		assert.Equal(t, []string{"h15", "h30", "h60"}, f.labelValues(t, g, variable(t, exp, "instance")))
		assert.Equal(t, []string{"decode", "prefill"}, f.labelValues(t, g, variable(t, exp, "phase")))
	})

	// Every panel and annotation returns data at every scrape interval; the per-container panels only where the
	// exporter exposes per-process energy, and nothing (no error) where it does not.
	t.Run("every panel returns data", func(t *testing.T) {
		for _, v := range views {
			g := grafana{view: v, run: "demo-1", from: f.from, to: f.to}
			for _, d := range []dashboards.Dashboard{fleet, exp} {
				for _, p := range d.Panels {
					phases := []string{""}
					if p.Repeat == "phase" {
						phases = f.labelValues(t, g, variable(t, d, "phase"))
						require.NotEmpty(t, phases)
					}
					for _, ph := range phases {
						g.phase = ph
						perProcess := strings.Contains(p.Targets[0].Expr, "lem_process_")
						for i, res := range f.panel(t, g, p) {
							if perProcess && v.scrape == time.Minute {
								assert.Empty(t, res, "%s %s: no per-process series, no data", v.instance, p.Title)
								continue
							}
							if p.Title == "Memory used" && i == 1 {
								continue // the recorded H200 reported no memory total
							}
							assert.True(t, hasData(res), "%s %s / %s %s: query %c returned no data", v.instance, d.UID, p.Title, ph, 'A'+i)
						}
					}
				}
				for _, a := range d.Annotations.List {
					step, err := time.ParseDuration(a.Step)
					require.NoError(t, err)
					res, err := f.api.rangeQuery(g.expand(a.Expr), f.from, f.to, step)
					require.NoError(t, err)
					assert.True(t, hasData(res), "%s %s annotation %s", v.instance, d.UID, a.Name)
				}
			}
		}
	})

	// The experiment dashboard's figures against lem-analyze report of the same data (the exporter's own
	// recording: every counter reading and 50 Hz sample), at each scrape interval.
	t.Run("run energy equals lem-analyze report", func(t *testing.T) {
		stat := func(title string) dashboards.Panel {
			for _, p := range exp.Panels {
				if p.Title == title {
					return p
				}
			}
			require.FailNow(t, "no panel", title)
			return dashboards.Panel{}
		}
		// Between two readings S apart the energy is spread evenly: at each edge of a window (run or phase
		// occurrence) part of one interval's energy can land on the wrong side. The demo run and the long run on
		// the swinging load stay within 1 % at every interval; shorter windows are held to a tenth of the mean
		// power over one interval per edge (measured: at most about half of that).
		long := map[string]bool{"demo-1": true, "shape-1": true}
		t.Logf("%-4s %-8s %-22s %12s %12s %8s %8s", "scr", "run", "figure", "dashboard", "report", "diff", "limit")
		for _, v := range views {
			for _, r := range simRuns {
				m := f.reports[r.id]
				require.NotNil(t, m, r.id)
				g := grafana{view: v, run: r.id, from: f.from, to: f.to}
				meanW := float64(m.Energy.HybridJ) / m.Times.DurationS
				check := func(what string, got, want float64, edges int, watts float64, ref float64) {
					rel := got/want - 1
					limit := 0.1 * v.scrape.Seconds() * float64(edges) * watts / ref
					if long[r.id] && !strings.HasPrefix(what, "phase") {
						limit = 0.01
					}
					t.Logf("%-4s %-8s %-22s %12.4f %12.4f %+7.3f%% %7.2f%%", v.scrape, r.id, what, got, want, 100*rel, 100*limit)
					assert.LessOrEqual(t, math.Abs(rel), limit, "%s %s %s: dashboard %.4f, report %.4f", v.instance, r.id, what, got, want)
				}
				raw, adj := float64(m.Energy.HybridJ), float64(m.Energy.AdjustedJ)
				check("energy", one(t, f.panel(t, g, stat("Run energy")), "energy"), raw, 2, meanW, raw)
				check("J/token", one(t, f.panel(t, g, stat("Energy per output token")), "J/token"), float64(m.Derived.JPerOutputToken), 2, meanW, raw)
				assert.Equal(t, float64(m.Derived.OutputTokens), one(t, f.panel(t, g, stat("Output tokens")), "tokens"))
				assert.InDelta(t, m.Times.DurationS, one(t, f.panel(t, g, stat("Run duration")), "duration"), 1e-3)
				if m.Energy.AdjustedJ.Valid() {
					check("energy above idle", one(t, f.panel(t, g, stat("Run energy above idle")), "adjusted"), adj, 2, meanW, adj)
					check("J/token above idle", one(t, f.panel(t, g, stat("Energy per output token above idle")), "adjusted J/token"),
						float64(m.Derived.JPerOutputTokenAdj), 2, meanW, adj)
				} else {
					assert.Empty(t, f.panel(t, g, stat("Run energy above idle"))[0], "%s: no baseline, no figure above idle", r.id)
				}
				phases := 0.0
				for _, ph := range m.Phases {
					g.phase = ph.Name
					e := float64(ph.Energy.HybridJ)
					got := one(t, f.panel(t, g, stat("Phase $phase")), ph.Name)
					check("phase "+ph.Name, got, e, 2*ph.Count, e/ph.DurationS, e)
					phases += got
				}
				assert.InEpsilon(t, one(t, f.panel(t, g, stat("Run energy")), "energy"), phases, 1e-9, "%s: phases tile the run", r.id)
			}
		}
		// A run on several hosts adds up the hosts.
		sum := 0.0
		for _, v := range views {
			sum += one(t, f.panel(t, grafana{view: v, run: "demo-1", from: f.from, to: f.to}, stat("Run energy")), "energy")
		}
		all := one(t, f.panel(t, grafana{view: view{".*", 15 * time.Second}, run: "demo-1", from: f.from, to: f.to}, stat("Run energy")), "all hosts")
		assert.InEpsilon(t, sum, all, 1e-9, "every host's energy once")
	})

	// Half-way through the demo run (the dashboard's range ending at 300 s): the run so far, up to the newest
	// reading a scrape stored, against the recorded counter over the same time.
	t.Run("a run still going", func(t *testing.T) {
		to := f.from.Add(300 * time.Second)
		var newest time.Time
		for _, sc := range f.sim.scrapes {
			for _, x := range sc.samples {
				if x.name == "lem_gpu_energy_joules_total" && x.labels["gpu"] == "0" && !sc.at.After(to) {
					newest = time.UnixMilli(x.ms)
				}
			}
		}
		start := f.from.Add(simRuns[0].start)
		want := testutil.PlainCounter(f.rec.GPUs[0].Counters, start, newest)
		g := grafana{view: views[0], run: "demo-1", from: f.from, to: to}
		for _, p := range exp.Panels {
			switch p.Title {
			case "Run energy":
				got := one(t, f.panel(t, g, p), p.Title)
				t.Logf("run energy so far %.1f J, recorded counter %.1f J until the newest scraped reading %s later (%+.3f%%)",
					got, want, newest.Sub(start), 100*(got/want-1))
				assert.InEpsilon(t, want, got, 0.01)
			case "Run duration":
				assert.InDelta(t, to.Sub(start).Seconds(), one(t, f.panel(t, g, p), p.Title), 1e-3)
			}
		}
	})

	// The fleet dashboard's energy over the time range against the exporter's recorded counter readings, and the
	// per-container energy against the energy the backfilled processes were given.
	t.Run("fleet energy", func(t *testing.T) {
		var rangeEnergy, byContainer, containerPower dashboards.Panel
		for _, p := range fleet.Panels {
			switch p.Title {
			case "Energy in the time range":
				rangeEnergy = p
			case "GPU energy by container":
				byContainer = p
			case "GPU power by container":
				containerPower = p
			}
		}
		for _, v := range views {
			g := grafana{view: v, from: f.from, to: f.to}
			res := f.panel(t, g, rangeEnergy)[0]
			require.Len(t, res, 2, v.instance)
			for _, r := range res {
				var idx int
				fmt.Sscan(r.Metric["gpu"], &idx)
				cs := f.rec.GPUs[idx].Counters
				want := testutil.PlainCounter(cs, cs[0].Time.Time(), cs[len(cs)-1].Time.Time())
				t.Logf("%-4s GPU %d energy in range %10.1f J, recorded counter %10.1f J (%+.3f%%)", v.scrape, idx, r.Value, want, 100*(r.Value/want-1))
				// increase() extrapolates from the first and last reading a scrape stored to the range's edges (here
				// 20 s of 740 s) at the mean power between them.
				assert.InEpsilon(t, want, r.Value, 0.03, "%s GPU %d", v.instance, idx)
			}
			if v.scrape == time.Minute {
				continue
			}
			got := map[string]float64{}
			for _, r := range f.panel(t, g, byContainer)[0] {
				got[r.Metric["namespace"]+"/"+r.Metric["pod"]+"/"+r.Metric["container"]] = r.Value
			}
			// What the scrapes can tell: the containers' energy from the newest scrape before the range's first
			// step (none here: the exporter started with the range) to the newest scrape by its last step (steps of
			// $__interval, on multiples of it). Energy after that is not in Prometheus yet.
			step := g.interval().Milliseconds()
			lastStep := time.UnixMilli(f.to.UnixMilli() / step * step)
			var newest time.Time
			for i, sc := range f.sim.scrapes {
				if i%int(v.scrape/(15*time.Second)) == 0 && !sc.at.After(lastStep) {
					newest = sc.at
				}
			}
			want, all := processEnergy(newest.Sub(f.from)), processEnergy(f.to.Sub(f.from))
			require.Len(t, got, len(want), v.instance)
			for k, w := range want {
				t.Logf("%-4s container %-26s %10.1f J, given %10.1f J by the newest scrape %s, %10.1f J by the range's end",
					v.scrape, k, got[k], w, newest.Sub(f.from), all[k])
				assert.InEpsilon(t, w, got[k], 1e-9, "%s %s", v.instance, k)
			}
			// Power per container: 150 W + 50 W while both vllm processes ran (300-500 s), 150 W after.
			power := map[string]map[float64]float64{}
			for _, r := range f.panel(t, g, containerPower)[0] {
				k := r.Metric["namespace"] + "/" + r.Metric["pod"] + "/" + r.Metric["container"]
				power[k] = map[float64]float64{}
				for _, p := range r.Values {
					power[k][p[0]-float64(f.from.Unix())] = p[1]
				}
			}
			for k, want := range map[string]map[float64]float64{
				"inference/llama-0/vllm": {360: 200, 480: 200, 600: 150, 720: 150},
				"research/ft-1/trainer":  {360: 80, 720: 80},
				"//":                     {360: 10, 720: 10},
			} {
				for at, w := range want {
					assert.InDelta(t, w, power[k][at], 1e-6, "%s %s power at %gs", v.instance, k, at)
				}
			}
		}
	})
}
