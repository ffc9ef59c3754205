package dashboards_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/internal/trace"
)

// The test data: what a Prometheus scraping lem-exporter every 15 s would have stored while lem-run measured runs
// on that host. The real exporter runs over replayed recordings on a virtual clock (minutes of it in a second
// or two), is scraped through its own handler, and records everything it samples to disk, which lem-analyze
// report reads for the reference figures. Subsampling the 15 s scrapes gives the 30 s and 60 s views of the same
// host.

// A run the exporter is told of, as lem-run's mirror tells it: start with the workload's GPUs, the idle baseline
// measured just before, phases, results at the end.
type simRun struct {
	id, experiment string
	gpu            int           // the workload's GPU; -1: none named, no baseline (markers from the workload itself)
	start          time.Duration // from the exporter's start
	phases         []simPhase
	results        map[string]any
	end            time.Duration
}

type simPhase struct {
	name string
	at   time.Duration
}

// baselineSpan is the idle baseline lem-run measures before a run (the demo's --baseline 5s).
const baselineSpan = 5 * time.Second

// scrape is one /metrics answer: when it was taken and every lem_ sample in it.
type scrape struct {
	at      time.Time
	samples []scraped
}

type scraped struct {
	name   string
	labels map[string]string
	v      float64
	ms     int64 // the sample's own timestamp (the energy counters carry their read time); 0: the scrape's
}

// simulation is what the exporter exposed and recorded.
type simulation struct {
	scrapes []scrape
	recDir  string
	start   time.Time // the exporter's start
}

// hostTrace is the demo's recording (an H200 running LLM inference, GPU 0) with a second GPU that only
// observes: the H200 known-shape recording (idle, full load, idle, half load, idle; 4 s each), repeated over
// the same span, so that its energy differs from GPU 0's at every instant.
func hostTrace(t testing.TB) *trace.Trace {
	llm, err := trace.ReadFile(testutil.TracePath("h200-llm"))
	require.NoError(t, err)
	shape, err := trace.ReadFile(testutil.TracePath("h200-shape"))
	require.NoError(t, err)
	t0, t1 := llm.Common()
	s := shape.GPUs[shape.GPUIndices()[0]]
	f0, f1 := s.Common()
	period := f1.Sub(f0)
	out := &trace.Series{}
	var carried uint64 // the counter keeps rising across copies
	base := s.Counters[0].EnergyMJ
	for k := 0; ; k++ {
		shift := t0.Sub(f0) + time.Duration(k)*period
		if f0.Add(shift).After(t1) {
			break
		}
		in := func(x time.Time) bool { return !x.Before(f0) && x.Before(f1) && !x.Add(shift).After(t1) }
		for _, p := range s.Samples {
			if in(p.Time.Time()) {
				out.Samples = append(out.Samples, trace.PowerSample{Time: p.Time.Add(shift), PowerW: p.PowerW})
			}
		}
		var last uint64
		for _, c := range s.Counters {
			if in(c.Time.Time()) {
				last = c.EnergyMJ - base
				out.Counters = append(out.Counters, trace.CounterReading{Time: c.Time.Add(shift), EnergyMJ: carried + last + 1_000_000, ReadDuration: c.ReadDuration})
			}
		}
		for _, x := range s.Telemetry {
			if in(x.Time.Time()) {
				x.Time = x.Time.Add(shift)
				out.Telemetry = append(out.Telemetry, x)
			}
		}
		carried += last
	}
	llm.GPUs[1] = out
	dev := shape.Env.Devices[0]
	dev.Index, dev.UUID = 1, "GPU-h200-shape-recording"
	llm.Env.Devices = append(llm.Env.Devices, dev)
	return llm
}

// simulate runs lem-exporter over the host's replay on a virtual clock for span, starting the replay from into
// the recording (--replay-from), tells it of the runs, and scrapes it every interval from offset on.
func simulate(t *testing.T, tr *trace.Trace, from, span, interval, offset time.Duration, runs []simRun) simulation {
	sim := simulation{recDir: t.TempDir()}
	testutil.VirtualTime(t, func(t *testing.T) {
		sim.start = time.Now()
		src, err := gpu.NewReplay(tr, "h200-llm+shape", gpu.ReplayOptions{Loop: true, Start: sim.start.Add(-from)})
		require.NoError(t, err)
		defer src.Close()
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		// lem-exporter's own cadence: the counter every 2 s, telemetry every second.
		e, err := exporter.New(src, nil, exporter.Options{
			Sampler: sampler.Config{CounterInterval: 2 * time.Second, TelemetryInterval: time.Second},
			Record:  &recorder.DirOptions{Dir: sim.recDir, FlushEvery: time.Minute}}, log)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); e.Run(ctx) }()

		call := func(method, path string, body any) *httptest.ResponseRecorder {
			var r io.Reader
			if body != nil {
				b, err := json.Marshal(body)
				require.NoError(t, err)
				r = strings.NewReader(string(b))
			}
			req := httptest.NewRequest(method, path, r)
			req.RemoteAddr = "127.0.0.1:40000" // marker writes from loopback, as lem-run's on the host
			rec := httptest.NewRecorder()
			e.Handler().ServeHTTP(rec, req)
			require.Less(t, rec.Code, 300, "%s %s: %s", method, path, rec.Body)
			return rec
		}
		type action struct {
			at time.Duration
			do func()
		}
		var plan []action
		for at := offset; at <= span; at += interval {
			plan = append(plan, action{at, func() {
				sim.scrapes = append(sim.scrapes, parseScrape(t, time.Now(), call(http.MethodGet, "/metrics", nil).Body))
			}})
		}
		for _, r := range runs {
			base := "/api/v1/runs/" + r.id
			plan = append(plan, action{r.start, func() {
				if r.gpu < 0 {
					call(http.MethodPost, "/api/v1/runs", map[string]any{"run_id": r.id, "experiment": r.experiment})
					return
				}
				now := time.Now()
				win, err := e.Sampler().Window(r.gpu, now.Add(-baselineSpan), now)
				require.NoError(t, err)
				b, err := energy.ComputeBaseline(win.Samples, win.Telemetry, now.Add(-baselineSpan), now)
				require.NoError(t, err)
				call(http.MethodPost, "/api/v1/runs", map[string]any{"run_id": r.id, "experiment": r.experiment,
					"labels": map[string]string{trace.LabelWorkloadGPUs: fmt.Sprint(r.gpu)}})
				call(http.MethodPost, base+"/baseline", map[string]any{"gpu": r.gpu, "baseline": manifest.Baseline{
					Start: b.Start, End: b.End, MedianW: b.MedianW, P25W: b.P25W, P75W: b.P75W, Samples: b.N}})
			}})
			for _, p := range r.phases {
				plan = append(plan, action{r.start + p.at, func() { call(http.MethodPost, base+"/phase", map[string]any{"name": p.name}) }})
			}
			plan = append(plan, action{r.end, func() {
				call(http.MethodPost, base+"/result", r.results)
				call(http.MethodPost, base+"/end", map[string]any{"status": "ok"})
			}})
		}
		sort.SliceStable(plan, func(i, j int) bool { return plan[i].at < plan[j].at })
		for _, a := range plan {
			time.Sleep(sim.start.Add(a.at).Sub(time.Now()))
			synctest.Wait() // whatever falls due at this instant (a drain, a counter read) goes first
			a.do()
		}
		cancel()
		<-done
	})
	return sim
}

func parseScrape(t testing.TB, at time.Time, body io.Reader) scrape {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(body)
	require.NoError(t, err)
	sc := scrape{at: at}
	for name, f := range fams {
		if !strings.HasPrefix(name, "lem_") {
			continue
		}
		for _, m := range f.Metric {
			l := map[string]string{}
			for _, lp := range m.Label {
				l[lp.GetName()] = lp.GetValue()
			}
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Untyped != nil:
				v = m.Untyped.GetValue()
			default:
				continue
			}
			sc.samples = append(sc.samples, scraped{name: name, labels: l, v: v, ms: m.GetTimestampMs()})
		}
	}
	return sc
}

// store holds series as Prometheus stores them: per series, samples in time order, a sample no newer than the
// last one dropped (an exposed counter reading seen again, or out of order).
type store map[string]*stored

type stored struct {
	name   string
	labels map[string]string
	points []point
}

type point struct {
	ms int64
	v  float64
}

func (s store) add(name string, labels map[string]string, ms int64, v float64) {
	k := name + labelText(labels)
	x := s[k]
	if x == nil {
		x = &stored{name: name, labels: labels}
		s[k] = x
	}
	if n := len(x.points); n > 0 && x.points[n-1].ms >= ms {
		return
	}
	x.points = append(x.points, point{ms, v})
}

func labelText(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, l[k])
	}
	b.WriteByte('}')
	return b.String()
}

// with returns l plus the target labels.
func with(l map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(l)+len(kv)/2)
	for k, v := range l {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// addScrapes stores every every-th scrape as the shipped scrape configurations label it.
func (s store) addScrapes(scrapes []scrape, every int, instance string) {
	for i, sc := range scrapes {
		if i%every != 0 {
			continue
		}
		for _, x := range sc.samples {
			ms := x.ms
			if ms == 0 {
				ms = sc.at.UnixMilli()
			}
			s.add(x.name, with(x.labels, "job", "lem-exporter", "instance", instance), ms, x.v)
		}
	}
}

// writeOpenMetrics writes the store for promtool's backfill.
func (s store) writeOpenMetrics(w io.Writer) error {
	byName := map[string][]*stored{}
	for _, x := range s {
		byName[x.name] = append(byName[x.name], x)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		// Typed as gauges: OpenMetrics would want counters' families without _total; the queries do not care.
		if _, err := fmt.Fprintf(w, "# TYPE %s gauge\n", n); err != nil {
			return err
		}
		for _, x := range byName[n] {
			l := labelText(x.labels)
			for _, p := range x.points {
				if _, err := fmt.Fprintf(w, "%s%s %s %d.%03d\n", n, l, strconv.FormatFloat(p.v, 'g', -1, 64), p.ms/1000, p.ms%1000); err != nil {
					return err
				}
			}
		}
	}
	_, err := io.WriteString(w, "# EOF\n")
	return err
}

// backfill writes the store into a TSDB directory with promtool.
func backfill(t *testing.T, s store) string {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testutil.SkipOrFail(t, "promtool not installed (Debian package prometheus)")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "data.om")
	f, err := os.Create(in)
	require.NoError(t, err)
	require.NoError(t, s.writeOpenMetrics(f))
	require.NoError(t, f.Close())
	data := filepath.Join(dir, "data")
	out, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", in, data).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return data
}

// addStream stores what lem-exporter's remote-write stream sends for the host: every counter reading and every
// 50 Hz sample of the recording, job lem_stream, the scrapes' instance.
func (s store) addStream(rec *trace.Trace, instance string) {
	for _, g := range rec.GPUIndices() {
		dev, _ := rec.Env.Device(g)
		l := map[string]string{"job": "lem_stream", "instance": instance, "gpu": fmt.Sprint(g), "uuid": dev.UUID}
		for _, c := range rec.GPUs[g].Counters {
			s.add("lem_gpu_energy_joules_total", l, c.Time.UnixMilli(), c.Joules())
		}
		p := with(l, "source", "sample")
		for _, x := range rec.GPUs[g].Samples {
			s.add("lem_gpu_power_watts", p, x.Time.UnixMilli(), x.PowerW)
		}
	}
}

// A process on a GPU drawing a constant power from one time to another (after the exporter's start); its
// counter starts at 0 (lem-exporter attributes energy from its own start or the process's) and stays exposed,
// flat, after the process ends.
type process struct {
	gpu                     int
	pid, container, pod, ns string
	watts                   float64
	from, to                time.Duration
}

// processes: two in one container (the second starting and ending mid-range), one in another pod on the other
// GPU, one on the host outside any container.
var processes = []process{
	{0, "4242", "vllm", "llama-0", "inference", 150, 0, simSpan},
	{0, "4711", "vllm", "llama-0", "inference", 50, 300 * time.Second, 500 * time.Second},
	{1, "5150", "trainer", "ft-1", "research", 80, 0, simSpan},
	{0, "999", "", "", "", 10, 0, simSpan},
}

// addProcesses stores lem_process_gpu_energy_joules_total as every every-th scrape would have carried it.
func (s store) addProcesses(scrapes []scrape, every int, instance string, env meta.Environment) {
	start := scrapes[0].at.Add(-scrapeOffset)
	for i, sc := range scrapes {
		if i%every != 0 {
			continue
		}
		for _, p := range processes {
			alive := min(sc.at.Sub(start), p.to) - p.from
			if alive < 0 {
				continue
			}
			dev, _ := env.Device(p.gpu)
			l := map[string]string{"job": "lem-exporter", "instance": instance, "gpu": fmt.Sprint(p.gpu), "uuid": dev.UUID,
				"pid": p.pid, "container": p.container, "pod": p.pod, "namespace": p.ns}
			for k, v := range l {
				if v == "" {
					delete(l, k) // Prometheus drops empty labels
				}
			}
			s.add("lem_process_gpu_energy_joules_total", l, sc.at.UnixMilli(), p.watts*alive.Seconds())
		}
	}
}

// processEnergy is the energy each container (namespace/pod/container) was given from the exporter's start to
// each time (every process's counter at that time, summed).
func processEnergy(since time.Duration) map[string]float64 {
	out := map[string]float64{}
	for _, p := range processes {
		out[p.ns+"/"+p.pod+"/"+p.container] += p.watts * max(min(since, p.to)-p.from, 0).Seconds()
	}
	return out
}
