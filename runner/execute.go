package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner/backend"
)

// execute runs the protocol once the run directory exists: sampling and recording, cool-down, baseline, the
// bracketed workload, and the manifest.
func (r *run) execute(ctx context.Context) (*Result, error) {
	stopSampling, err := r.startSampling(filepath.Join(r.dir, manifest.TraceFile))
	if err != nil {
		return nil, err
	}
	finishSampling := func() *trace.Trace {
		t, err := stopSampling()
		if err != nil {
			r.warn("trace_incomplete", nil, "trace file: %v", err)
		}
		return t
	}
	mirror := r.startMirror()
	defer mirror.Close(5 * time.Second)
	r.store = marker.NewStore(r.clock.Now, marker.Limits{MaxActive: 1}, func(ev trace.Event) {
		r.smp.Emit(ev)
		mirror.Send(ev)
		switch ev.Type {
		case trace.EventPhase, trace.EventPhaseEnd, trace.EventResult, trace.EventWindowEnd:
			r.mu.Lock()
			r.changes++
			r.notePhase(ev)
			r.mu.Unlock()
		}
	})
	r.preflightGPUs()
	r.cooldown(ctx)
	baselines := r.baseline(ctx)
	if ctx.Err() != nil {
		t := finishSampling()
		r.m.Status, r.m.Error = manifest.StatusIntr, "interrupted before the workload started"
		now := r.clock.Now()
		return r.finish(t, now, now, baselines, nil, ExitInterrupted)
	}
	l, err := r.launch(ctx, baselines)
	if l != nil {
		defer l.close()
	}
	if err != nil {
		// The workload never started: the manifest says why, and what the backend created for it.
		if l != nil && l.wl != nil {
			if cerr := l.wl.Cleanup(r.m); cerr != nil {
				r.warn("cleanup_failed", nil, "%v", cerr)
			}
		}
		end := r.clock.Now()
		start := end
		var brackets map[int]account.Bracket
		if l != nil && !l.start.IsZero() {
			start, brackets = l.start, l.brackets
			r.store.End(r.opts.RunID, manifest.StatusError, end)
		}
		t := finishSampling()
		r.m.Status, r.m.Error = manifest.StatusError, err.Error()
		res, ferr := r.finish(t, start, end, baselines, brackets, 1)
		return res, errors.Join(err, ferr)
	}
	stopProvisional := r.keepProvisional()
	out := r.await(ctx, l.wl, l.stdout, l.stderr, l.start)
	stopProvisional()
	for g, c := range out.endReads {
		b := l.brackets[g]
		b.End = &manifest.CounterRead{Time: c.Time.Time(), EnergyMJ: c.EnergyMJ}
		l.brackets[g] = b
	}
	if err := l.wl.Cleanup(r.m); err != nil {
		r.warn("cleanup_failed", nil, "%v", err)
	}
	sleepClock(r.clock, r.opts.Tail) // let the last samples and a drain cover the end
	t := finishSampling()
	return r.finish(t, l.start, out.end, baselines, l.brackets, r.settle(out))
}

// launched is a workload started between its bracketing reads, with what serves it.
type launched struct {
	srv            *http.Server
	stdout, stderr *os.File
	start          time.Time // zero until the start bracket is read
	brackets       map[int]account.Bracket
	wl             backend.Workload
}

func (l *launched) close() {
	if l.srv != nil {
		l.srv.Close()
	}
	if l.stdout != nil {
		l.stdout.Close()
		l.stderr.Close()
	}
}

// launch serves the markers, opens the logs, reads the start bracket, starts the run's markers (with its GPUs
// and baselines, so a trace, a recording or a pull of it has what the accounting needs) and starts the workload.
// On error the returned launch (if any) still holds what must be closed and how far it got.
func (r *run) launch(ctx context.Context, baselines map[int]*manifest.Baseline) (*launched, error) {
	l := &launched{brackets: map[int]account.Bracket{}}
	srv, markerURL, token, err := r.serveMarkers(ctx)
	if err != nil {
		return l, err
	}
	l.srv = srv
	if l.stdout, l.stderr, err = r.openLogs(); err != nil {
		return l, err
	}
	var uuids []string
	idx := r.workloadGPUs()
	for _, g := range idx {
		d, _ := r.m.Environment.Device(g)
		uuids = append(uuids, d.UUID)
	}
	spec := backend.Spec{RunID: r.opts.RunID, Command: r.opts.Command, GPUs: uuids, GPUIndices: idx,
		ResultsDir: filepath.Join(r.dir, manifest.ResultsDir), RunDir: r.dir, MarkerURL: markerURL,
		Env: append(append([]string{}, r.opts.Env...), "LEM_RUN_ID="+r.opts.RunID, "LEM_MARKER_URL="+markerURL,
			"LEM_MARKER_TOKEN="+token, "LEM_EXPERIMENT="+r.opts.Experiment),
		Labels: map[string]string{"lem.run_id": r.opts.RunID, "lem.experiment": r.opts.Experiment}}

	// Bracket: counter reads on every GPU immediately before the start.
	startReads := r.readAll()
	l.start = latest(startReads, r.clock.Now())
	r.m.Times.Start = l.start
	for g, c := range startReads {
		l.brackets[g] = account.Bracket{Start: &manifest.CounterRead{Time: c.Time.Time(), EnergyMJ: c.EnergyMJ}}
	}
	if _, err := r.store.Start(marker.StartReq{RunID: r.opts.RunID, Experiment: r.opts.Experiment,
		Labels: map[string]string{trace.LabelWorkloadGPUs: marker.FormatGPUs(idx)}, At: l.start}); err != nil {
		l.start = time.Time{}
		return l, fmt.Errorf("marker store: %w", err)
	}
	for g, b := range baselines {
		if _, err := r.store.Baseline(r.opts.RunID, g, *b); err != nil {
			r.log.Warn("baseline not recorded with the run", "gpu", g, "err", err)
		}
	}
	r.setGPUs(baselines, l.brackets)
	if err := r.writeManifest(); err != nil {
		r.log.Warn("provisional manifest", "err", err)
	}
	l.wl, err = r.be.Start(ctx, spec)
	return l, err
}

// outcome is how a workload ended and the end bracket after it.
type outcome struct {
	status   string
	ex       backend.Exit
	err      error
	end      time.Time
	endReads map[int]trace.CounterReading
}

// await follows the workload's output until it has exited (stopping it on interrupt or timeout), ends its last
// phase when it exited (what follows until the end bracket is the tail, in no phase), reads the end bracket and
// ends the run's markers.
func (r *run) await(ctx context.Context, wl backend.Workload, stdout, stderr io.Writer, start time.Time) outcome {
	followed := make(chan struct{})
	go func() { defer close(followed); r.follow(wl, stdout, stderr) }()
	var out outcome
	out.status, out.ex, out.err = r.wait(ctx, wl)
	<-followed
	if fin := out.ex.FinishedAt; !fin.IsZero() && fin.After(start) {
		if run, ok := r.store.Get(r.opts.RunID); ok && run.Phase != "" {
			r.store.EndPhase(r.opts.RunID, fin)
		}
	}
	out.endReads = r.readAll()
	out.end = latest(out.endReads, r.clock.Now())
	if _, err := r.store.End(r.opts.RunID, out.status, out.end); err != nil {
		r.log.Error("marker store", "err", err)
	}
	return out
}

// settle records how the workload ended in the manifest and returns lem-run's exit code for it.
func (r *run) settle(out outcome) int {
	r.m.Status = out.status
	if out.err != nil {
		r.m.Error = out.err.Error()
	}
	switch out.status {
	case manifest.StatusIntr:
		return ExitInterrupted
	case manifest.StatusTime:
		return ExitTimeout
	case manifest.StatusError:
		return 1
	}
	code := out.ex.Code
	r.m.ExitCode = &code
	return code
}

// startSampling starts the sampler and the recorder of the trace at path (the run's id in its metadata); the
// returned function stops both and returns the recorded trace.
func (r *run) startSampling(path string) (func() (*trace.Trace, error), error) {
	md := map[string]string{}
	if r.opts.RunID != "" {
		md["lem.run_id"] = r.opts.RunID
	}
	rec, err := recorder.Start(r.smp, recorder.Options{Path: path, Memory: true, Metadata: md})
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.smp.Run(sctx) }()
	var once sync.Once
	var t *trace.Trace
	return func() (*trace.Trace, error) {
		once.Do(func() {
			stop()
			wg.Wait()
			t, err = rec.Stop()
		})
		return t, err
	}, nil
}

func (r *run) startMirror() *marker.Mirror {
	if r.opts.ExporterURL == "" {
		return nil
	}
	c, err := marker.NewClient(r.opts.ExporterURL, r.opts.ExporterToken, marker.WithCAFile(r.opts.ExporterCA))
	if err != nil {
		r.warn("exporter_url", nil, "%v: markers are not mirrored", err)
		return nil
	}
	return marker.NewMirror(c, DefaultMirrorLease, r.log)
}

// keepProvisional rewrites the provisional manifest every few seconds while the workload runs, so a crash leaves
// the phases and results so far; the returned function stops it.
func (r *run) keepProvisional() func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(provisionalEvery)
		defer t.Stop()
		last := -1
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			r.mu.Lock()
			n := r.changes
			r.mu.Unlock()
			if n == last {
				continue
			}
			last = n
			if run, ok := r.store.Get(r.opts.RunID); ok {
				r.mu.Lock()
				r.m.Results = run.Results
				r.mu.Unlock()
			}
			if err := r.writeManifest(); err != nil {
				r.log.Debug("provisional manifest", "err", err)
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// notePhase keeps the manifest's phases so far (name, first start, last end, count, ended time; the current one
// open, its end zero) for the provisional manifest, so a crash leaves them; the final accounting replaces them,
// energies included. Called with r.mu held.
func (r *run) notePhase(ev trace.Event) {
	if ev.Type != trace.EventPhase && ev.Type != trace.EventPhaseEnd {
		return
	}
	if i := slices.IndexFunc(r.m.Phases, func(p manifest.Phase) bool { return p.Name == r.openPhase }); i >= 0 {
		p := &r.m.Phases[i]
		p.End = ev.Time
		p.DurationS += ev.Time.Sub(r.openSince).Seconds()
	}
	r.openPhase = ""
	if ev.Type != trace.EventPhase {
		return
	}
	i := slices.IndexFunc(r.m.Phases, func(p manifest.Phase) bool { return p.Name == ev.Name })
	if i < 0 {
		i = len(r.m.Phases)
		r.m.Phases = append(r.m.Phases, manifest.Phase{Name: ev.Name, Start: ev.Time, GPUs: []manifest.PhaseGPU{},
			Energy: manifest.Unmeasured()})
	}
	p := &r.m.Phases[i]
	p.Count++
	p.End = time.Time{}
	r.openPhase, r.openSince = ev.Name, ev.Time
}

// provisionalEvery is how often the provisional manifest is refreshed while markers arrive.
const provisionalEvery = 2 * time.Second

// setGPUs fills the manifest's GPUs with their identity, role, baseline and start bracket (provisional).
func (r *run) setGPUs(baselines map[int]*manifest.Baseline, brackets map[int]account.Bracket) {
	r.m.GPUs = nil
	for _, d := range r.m.Environment.Devices {
		g := manifest.GPU{Index: d.Index, Role: manifest.RoleWorkload, UUID: d.UUID, Name: d.Name,
			Baseline: baselines[d.Index], Energy: manifest.Unmeasured(), MeanPowerW: manifest.Null, PeakPowerW: manifest.Null}
		if !r.workload(d.Index) {
			g.Role = manifest.RoleObserved
		}
		g.CounterStart = brackets[d.Index].Start
		r.m.GPUs = append(r.m.GPUs, g)
	}
	r.m.Energy = manifest.Unmeasured()
}

// wait waits for the workload, stopping it on interrupt or timeout.
func (r *run) wait(ctx context.Context, wl backend.Workload) (status string, ex backend.Exit, err error) {
	done := make(chan struct{})
	var werr error
	go func() {
		defer close(done)
		ex, werr = wl.Wait(context.Background())
	}()
	var timeout <-chan time.Time
	if r.opts.Timeout > 0 {
		timeout = r.clock.After(r.opts.Timeout)
	}
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
		return manifest.StatusError, ex, werr
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
	return status, ex, nil
}

// latest is the time of the latest of the reads, now when there are none.
func latest(reads map[int]trace.CounterReading, now time.Time) time.Time {
	if len(reads) == 0 {
		return now
	}
	var t trace.Stamp
	for _, c := range reads {
		if c.Time.After(t) {
			t = c.Time
		}
	}
	// The reads are stamped on the wall clock: the latest one placed relative to now, so that the run's edges
	// keep now's monotonic reading (and zone) and a wall-clock step during the run does not change its duration.
	return now.Add(t.Sub(trace.StampOf(now)))
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

func (r *run) openLogs() (*os.File, *os.File, error) {
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

// finish accounts the run with the one accounting, adds the runner's own findings, writes the manifest and
// returns the result.
func (r *run) finish(t *trace.Trace, start, end time.Time, baselines map[int]*manifest.Baseline,
	brackets map[int]account.Bracket, exit int) (*Result, error) {
	var gpus []account.GPU
	for _, d := range r.m.Environment.Devices {
		role := manifest.RoleWorkload
		if !r.workload(d.Index) {
			role = manifest.RoleObserved
		}
		gpus = append(gpus, account.GPU{Index: d.Index, Role: role})
	}
	if baselines == nil {
		baselines = map[int]*manifest.Baseline{}
	}
	lags := r.keptLags()
	r.mu.Lock()
	account.Fill(r.m, account.Input{Trace: t, RunID: r.opts.RunID, Start: start, End: end, GPUs: gpus,
		Baselines: baselines, Brackets: brackets, FallbackLags: lags})
	r.m.Markers = r.markers
	r.keepLags()
	r.mu.Unlock()
	// A line that starts like a marker but cannot be read is a marker lost as surely as a rejected one.
	if n, bad := r.markers.Rejected, r.markers.Malformed; n+bad > 0 {
		r.warn("marker_rejected", nil, "%d marker(s) were rejected and %d marker line(s) malformed (see the log): "+
			"phases or results are missing", n, bad)
	}
	if err := r.writeManifest(); err != nil {
		return nil, err
	}
	return &Result{Dir: r.dir, Manifest: r.m, ExitCode: exit}, nil
}
