package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/exporter"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
)

// Options describe one run.
type Options struct {
	Experiment      string
	RunID           string // default: experiment, UTC time and a random suffix
	OutDir          string // run directories are created here
	Command         []string
	Env             []string
	Baseline        time.Duration // 0 disables
	BaselineTTL     time.Duration // reuse a per-GPU baseline younger than this
	BaselineCache   string        // file of cached baselines (default: the user cache dir)
	Cooldown        string        // "", "stable" or a temperature such as "45" or "45C"
	CooldownTimeout time.Duration
	Timeout         time.Duration
	StopGrace       time.Duration
	Tail            time.Duration // sampling kept up after exit, so the last samples cover the end
	Sampler         sampler.Config
	ExporterURL     string // mirror run/phase markers to a running lem-exporter
	ExporterToken   string
	Campaign        string
	Cycle           int
	Position        int                 // place in the campaign's run order
	Variables       map[string]string   // the campaign grid's values for this run
	Inference       *manifest.Inference // the inference backend's effective parameters
	// WorkloadGPUs are the indices of the GPUs the workload gets; the other sampled GPUs are observed only
	// (their energy reported apart). Empty: every sampled GPU.
	WorkloadGPUs   []int
	Stdout, Stderr io.Writer // workload output passthrough (default os.Stdout/os.Stderr)
	Progress       io.Writer // countdowns and progress (default os.Stderr)
}

// markerHoster is implemented by backends whose workloads reach the marker server on a particular address.
type markerHoster interface {
	MarkerHost(ctx context.Context) (string, error)
}

// Result is a finished run: its directory, manifest and the exit code lem-run should return.
type Result struct {
	Dir      string
	Manifest *manifest.Manifest
	ExitCode int
}

// ExitCodes of lem-run for runs that did not end on their own.
const (
	ExitInterrupted = 130
	ExitTimeout     = 124
)

func newRunID(experiment string, now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, experiment)
	if len(clean) > 40 {
		clean = clean[:40]
	}
	return clean + "-" + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// Run measures one experiment: pre-flight, cool-down, idle baseline, the workload bracketed by counter reads,
// its phases, and the manifest. It returns an error only when nothing could be measured; a workload that fails
// or is interrupted still gets its run directory and manifest.
func Run(ctx context.Context, opts Options, src gpu.Source, devs []gpu.Device, be Backend, log *slog.Logger) (*Result, error) {
	if opts.Experiment == "" {
		return nil, errors.New("--experiment is required")
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Progress == nil {
		opts.Progress = os.Stderr
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 10 * time.Second
	}
	if opts.Tail <= 0 {
		opts.Tail = 1500 * time.Millisecond
	}
	clock := src.Clock()
	if opts.RunID == "" {
		opts.RunID = newRunID(opts.Experiment, clock.Now())
	}
	if err := be.Preflight(ctx); err != nil {
		return nil, err
	}
	smp, err := sampler.New(src, devs, opts.Sampler, log)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(opts.OutDir, opts.RunID)
	if err := os.MkdirAll(filepath.Join(dir, manifest.ResultsDir), 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	r := &run{opts: opts, src: src, smp: smp, be: be, log: log, dir: dir, clock: clock,
		m: &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: opts.RunID, Experiment: opts.Experiment,
			Campaign: opts.Campaign, Cycle: opts.Cycle, Position: opts.Position, Variables: opts.Variables,
			Inference: opts.Inference, Backend: be.Name(), Command: opts.Command,
			Environment: smp.Environment(), LemVersion: meta.LemVersion(), Warnings: []manifest.Warning{},
			Files: manifest.Files{Trace: manifest.TraceFile, Stdout: manifest.StdoutFile, Stderr: manifest.StderrFile,
				Results: manifest.ResultsDir}}}
	if rs, ok := src.(*gpu.ReplaySource); ok {
		r.m.Environment.Source.ReplayOffsetNS = rs.ToReplayTime(time.Unix(0, 0)).UnixNano()
	}
	return r.execute(ctx)
}

type run struct {
	opts  Options
	src   gpu.Source
	smp   *sampler.Sampler
	be    Backend
	log   *slog.Logger
	dir   string
	clock gpu.Clock
	m     *manifest.Manifest
	runs  *exporter.Runs

	mu      sync.Mutex
	results map[string]string
	parsed  int // marker lines parsed
	bad     int // marker lines malformed
	// Phase and result markers recorded: all of them, and those that came from output lines (the rest were
	// posted to LEM_MARKER_URL).
	allMarkers, lineMarkers int
}

// workload says whether GPU index is given to the workload (not merely observed).
func (r *run) workload(index int) bool {
	return len(r.opts.WorkloadGPUs) == 0 || slices.Contains(r.opts.WorkloadGPUs, index)
}

func (r *run) warn(code string, g *int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.m.Warnings = append(r.m.Warnings, manifest.Warning{Code: code, GPU: g, Message: msg})
	if g != nil {
		r.log.Warn(msg, "code", code, "gpu", *g)
	} else {
		r.log.Warn(msg, "code", code)
	}
}

func (r *run) execute(ctx context.Context) (*Result, error) {
	w, err := trace.Create(filepath.Join(r.dir, manifest.TraceFile), r.smp.Environment())
	if err != nil {
		return nil, err
	}
	w.SetMetadata("lem.run_id", r.opts.RunID)
	rec := recorder.Start(r.smp, recorder.Options{Writer: w, Memory: true})
	sctx, stopSampling := context.WithCancel(context.Background())
	var swg sync.WaitGroup
	swg.Add(1)
	go func() { defer swg.Done(); r.smp.Run(sctx) }()
	finishSampling := func() *trace.Trace {
		stopSampling()
		swg.Wait()
		t, err := rec.Stop()
		if err != nil {
			r.warn("trace_incomplete", nil, "trace file: %v", err)
		}
		return t
	}

	mirror := newMirror(r.opts.ExporterURL, r.opts.ExporterToken, r.log)
	defer mirror.close()
	r.runs = exporter.NewRuns(r.clock, 1, time.Hour, func(ev trace.Event) {
		r.smp.Emit(ev)
		if ev.Type == trace.EventPhase || ev.Type == trace.EventResult {
			r.mu.Lock()
			r.allMarkers++
			r.mu.Unlock()
		}
		r.noteResult(ev)
		mirror.send(r.opts.RunID, r.opts.Experiment, ev)
	})
	r.preflightGPUs()

	if err := r.cooldown(ctx); err != nil {
		finishSampling()
		return nil, err
	}
	baselines, err := r.baseline(ctx)
	if err != nil {
		finishSampling()
		return nil, err
	}
	if ctx.Err() != nil {
		t := finishSampling()
		r.m.Status = manifest.StatusIntr
		r.m.Error = "interrupted before the workload started"
		return r.finish(t, baselines, ExitInterrupted)
	}

	srv, markerURL, token, err := r.serveMarkers(ctx)
	if err != nil {
		finishSampling()
		return nil, err
	}
	defer srv.Close()

	stdout, stderr, err := r.openLogs()
	if err != nil {
		finishSampling()
		return nil, err
	}
	defer stdout.Close()
	defer stderr.Close()

	uuids := make([]string, 0, len(r.m.Environment.Devices))
	idx := make([]int, 0, len(r.m.Environment.Devices))
	for _, d := range r.m.Environment.Devices {
		if !r.workload(d.Index) {
			continue
		}
		uuids = append(uuids, d.UUID)
		idx = append(idx, d.Index)
	}
	spec := Spec{RunID: r.opts.RunID, Command: r.opts.Command, GPUs: uuids, GPUIndices: idx,
		ResultsDir: filepath.Join(r.dir, manifest.ResultsDir), MarkerURL: markerURL,
		Env: append(append([]string{}, r.opts.Env...), "LEM_RUN_ID="+r.opts.RunID, "LEM_MARKER_URL="+markerURL,
			"LEM_MARKER_TOKEN="+token, "LEM_EXPERIMENT="+r.opts.Experiment),
		Labels: map[string]string{"lem.run_id": r.opts.RunID, "lem.experiment": r.opts.Experiment}}

	// Bracket: counter reads on every GPU immediately before the start.
	startReads := r.readAll()
	start := latest(startReads, r.clock.Now())
	// The run marker names the workload's GPUs: a trace or exporter recording then tells them from observed ones.
	gpuList := make([]string, len(idx))
	for i, g := range idx {
		gpuList[i] = strconv.Itoa(g)
	}
	if _, err := r.runs.StartAt(r.opts.RunID, r.opts.Experiment, map[string]string{trace.LabelWorkloadGPUs: strings.Join(gpuList, ",")}, start); err != nil {
		r.log.Error("marker store", "err", err)
	}
	// The exporter's Experiment dashboard draws the idle baseline from these results.
	idle := map[string]string{}
	for g, b := range baselines {
		idle[fmt.Sprintf("idle_w_gpu%d", g)] = strconv.FormatFloat(b.MedianW, 'f', 3, 64)
	}
	if len(idle) > 0 {
		mirror.send(r.opts.RunID, r.opts.Experiment, trace.Event{Time: start, Type: trace.EventResult, Attrs: idle})
	}
	wl, err := r.be.Start(ctx, spec)
	if err != nil {
		t := finishSampling()
		r.m.Status, r.m.Error = manifest.StatusError, err.Error()
		r.m.Times.Start = start
		res, ferr := r.finish(t, baselines, 1)
		if ferr != nil {
			return nil, errors.Join(err, ferr)
		}
		return res, err
	}
	follow := make(chan struct{})
	go func() { defer close(follow); r.follow(wl, stdout, stderr) }()

	status, code, waitErr := r.wait(ctx, wl)
	<-follow
	endReads := r.readAll()
	end := latest(endReads, r.clock.Now())
	if _, err := r.runs.EndAt(r.opts.RunID, status, end); err != nil {
		r.log.Error("marker store", "err", err)
	}
	if err := wl.Cleanup(r.m); err != nil {
		r.warn("cleanup_failed", nil, "%v", err)
	}
	sleepClock(r.clock, r.opts.Tail) // let the last samples and a drain cover the end
	t := finishSampling()

	r.m.Status = status
	if waitErr != nil {
		r.m.Error = waitErr.Error()
	}
	if status == manifest.StatusOK || status == manifest.StatusFail {
		r.m.ExitCode = &code
	}
	r.m.Times.Start, r.m.Times.End = start, end
	r.fillBrackets(startReads, endReads)
	exit := code
	switch status {
	case manifest.StatusIntr:
		exit = ExitInterrupted
	case manifest.StatusTime:
		exit = ExitTimeout
	case manifest.StatusError:
		exit = 1
	}
	return r.finish(t, baselines, exit)
}

// wait waits for the workload, stopping it on interrupt or timeout.
func (r *run) wait(ctx context.Context, wl Workload) (status string, code int, err error) {
	done := make(chan struct{})
	var ex Exit
	var werr error
	go func() {
		defer close(done)
		ex, werr = wl.Wait(context.Background())
	}()
	var timeout <-chan time.Time
	if r.opts.Timeout > 0 {
		timeout = r.clock.After(r.opts.Timeout)
	}
	status = ""
	select {
	case <-done:
	case <-ctx.Done():
		status = manifest.StatusIntr
		r.log.Warn("interrupted: stopping the workload", "grace", r.opts.StopGrace)
		wl.Stop(r.opts.StopGrace)
		<-done
	case <-timeout:
		status = manifest.StatusTime
		r.warn("timeout", nil, "the workload ran past --timeout %s and was stopped", r.opts.Timeout)
		wl.Stop(r.opts.StopGrace)
		<-done
	}
	if werr != nil {
		return manifest.StatusError, -1, werr
	}
	if ex.OOMKilled {
		r.warn("oom_killed", nil, "the container was killed for running out of memory")
	}
	if status == "" {
		status = manifest.StatusOK
		if ex.Code != 0 {
			status = manifest.StatusFail
		}
	}
	return status, ex.Code, nil
}

func latest(reads map[int]trace.CounterReading, fallback time.Time) time.Time {
	var t time.Time
	for _, c := range reads {
		if c.Time.After(t) {
			t = c.Time
		}
	}
	if t.IsZero() {
		return fallback
	}
	return t
}

// readAll reads every GPU's counter at once (each on its own sampler goroutine), each aligned on the counter's
// update grid like the periodic reads, so both brackets and everything between are equally stale.
func (r *run) readAll() map[int]trace.CounterReading {
	out := map[int]trace.CounterReading{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, d := range r.smp.Devices() {
		if !d.EnergyCounter {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := r.smp.ReadCounterAligned(ctx, d.Index)
			if err != nil {
				r.log.Warn("bracketing counter read failed", "gpu", d.Index, "err", err)
				return
			}
			mu.Lock()
			out[d.Index] = c
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func (r *run) fillBrackets(start, end map[int]trace.CounterReading) {
	for _, d := range r.m.Environment.Devices {
		g := r.gpu(d.Index)
		if c, ok := start[d.Index]; ok {
			g.CounterStart = &manifest.CounterRead{Time: c.Time, EnergyMJ: c.EnergyMJ}
		}
		if c, ok := end[d.Index]; ok {
			g.CounterEnd = &manifest.CounterRead{Time: c.Time, EnergyMJ: c.EnergyMJ}
		}
	}
}

func (r *run) gpu(index int) *manifest.GPU {
	for i := range r.m.GPUs {
		if r.m.GPUs[i].Index == index {
			return &r.m.GPUs[i]
		}
	}
	d, _ := r.m.Environment.Device(index)
	role := manifest.RoleWorkload
	if !r.workload(index) {
		role = manifest.RoleObserved
	}
	r.m.GPUs = append(r.m.GPUs, manifest.GPU{Index: index, Role: role, UUID: d.UUID, Name: d.Name})
	return &r.m.GPUs[len(r.m.GPUs)-1]
}

func (r *run) openLogs() (io.WriteCloser, io.WriteCloser, error) {
	out, err := os.Create(filepath.Join(r.dir, manifest.StdoutFile))
	if err != nil {
		return nil, nil, fmt.Errorf("run log: %w", err)
	}
	errf, err := os.Create(filepath.Join(r.dir, manifest.StderrFile))
	if err != nil {
		out.Close()
		return nil, nil, fmt.Errorf("run log: %w", err)
	}
	return out, errf, nil
}

// follow passes output through to the terminal and the log files and turns marker lines into phase and result
// markers, stamped with the line's own time.
func (r *run) follow(wl Workload, stdout, stderr io.Writer) {
	for l := range wl.Lines() {
		if l.Stderr {
			fmt.Fprintln(r.opts.Stderr, l.Text)
			fmt.Fprintln(stderr, l.Text)
			continue
		}
		fmt.Fprintln(r.opts.Stdout, l.Text)
		fmt.Fprintln(stdout, l.Text)
		evs, ok, err := ParseMarker(l.Text, l.Time)
		if !ok {
			continue
		}
		r.mu.Lock()
		if err != nil {
			r.bad++
		} else {
			r.parsed++
		}
		r.mu.Unlock()
		if err != nil {
			r.log.Warn("malformed marker passed through", "err", err)
			continue
		}
		for _, ev := range evs {
			var merr error
			switch ev.Type {
			case trace.EventPhase:
				_, merr = r.runs.PhaseAt(r.opts.RunID, ev.Name, ev.Time)
			case trace.EventResult:
				_, merr = r.runs.ResultAt(r.opts.RunID, ev.Attrs, ev.Time)
			}
			switch {
			case merr != nil:
				r.log.Warn("marker rejected", "line", l.Text, "err", merr)
			case ev.Type == trace.EventPhase || ev.Type == trace.EventResult:
				r.mu.Lock()
				r.lineMarkers++
				r.mu.Unlock()
			}
		}
	}
}

// noteResult accumulates result values: numbers with the same key add up (one LEM_RESULT per batch), other values
// keep the last.
func (r *run) noteResult(ev trace.Event) {
	if ev.Type != trace.EventResult {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.results == nil {
		r.results = map[string]string{}
	}
	for k, v := range ev.Attrs {
		nv, err1 := strconv.ParseFloat(v, 64)
		old, err2 := strconv.ParseFloat(r.results[k], 64)
		if err1 == nil && err2 == nil {
			r.results[k] = strconv.FormatFloat(old+nv, 'f', -1, 64)
		} else {
			r.results[k] = v
		}
	}
}

// serveMarkers serves the marker API for LEM_MARKER_URL on an address the workload reaches, with a fresh token.
func (r *run) serveMarkers(ctx context.Context) (*http.Server, string, string, error) {
	host := "127.0.0.1"
	if mh, ok := r.be.(markerHoster); ok {
		h, err := mh.MarkerHost(ctx)
		if err != nil {
			return nil, "", "", err
		}
		host = h
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, "", "", fmt.Errorf("marker server on %s: %w", host, err)
	}
	var b [16]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	mux := http.NewServeMux()
	exporter.NewAPI(r.runs, r.smp, token, r.log).Register(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	url := fmt.Sprintf("http://%s/api/v1/runs/%s", ln.Addr().String(), r.opts.RunID)
	return srv, url, token, nil
}

func sleepClock(c gpu.Clock, d time.Duration) { <-c.After(d) }

func f64p(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}
