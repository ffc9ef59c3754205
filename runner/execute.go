package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
		if ev.Type == trace.EventPhase || ev.Type == trace.EventPhaseEnd || ev.Type == trace.EventResult {
			r.mu.Lock()
			r.changes++
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
	// failed ends a run that could not start its workload: the manifest says why.
	failed := func(err error, start time.Time, brackets map[int]account.Bracket) (*Result, error) {
		end := r.clock.Now()
		if start.IsZero() {
			start = end
		} else {
			r.store.End(r.opts.RunID, manifest.StatusError, end)
		}
		t := finishSampling()
		r.m.Status, r.m.Error = manifest.StatusError, err.Error()
		res, ferr := r.finish(t, start, end, baselines, brackets, 1)
		return res, errors.Join(err, ferr)
	}
	srv, markerURL, token, err := r.serveMarkers(ctx)
	if err != nil {
		return failed(err, time.Time{}, nil)
	}
	defer srv.Close()
	stdout, stderr, err := r.openLogs()
	if err != nil {
		return failed(err, time.Time{}, nil)
	}
	defer stdout.Close()
	defer stderr.Close()

	var uuids []string
	idx := r.workloadGPUs()
	for _, g := range idx {
		d, _ := r.m.Environment.Device(g)
		uuids = append(uuids, d.UUID)
	}
	spec := backend.Spec{RunID: r.opts.RunID, Command: r.opts.Command, GPUs: uuids, GPUIndices: idx,
		ResultsDir: filepath.Join(r.dir, manifest.ResultsDir), MarkerURL: markerURL,
		Env: append(append([]string{}, r.opts.Env...), "LEM_RUN_ID="+r.opts.RunID, "LEM_MARKER_URL="+markerURL,
			"LEM_MARKER_TOKEN="+token, "LEM_EXPERIMENT="+r.opts.Experiment),
		Labels: map[string]string{"lem.run_id": r.opts.RunID, "lem.experiment": r.opts.Experiment}}

	// Bracket: counter reads on every GPU immediately before the start.
	startReads := r.readAll()
	start := latest(startReads, r.clock.Now())
	r.m.Times.Start = start
	brackets := map[int]account.Bracket{}
	for g, c := range startReads {
		brackets[g] = account.Bracket{Start: &manifest.CounterRead{Time: c.Time, EnergyMJ: c.EnergyMJ}}
	}
	// The run marker names the workload's GPUs, and carries the baselines: a trace, an exporter's recording or
	// a Prometheus pull of this run then has what the accounting needs.
	if _, err := r.store.Start(marker.StartReq{RunID: r.opts.RunID, Experiment: r.opts.Experiment,
		Labels: map[string]string{trace.LabelWorkloadGPUs: marker.FormatGPUs(idx)}, At: start}); err != nil {
		return nil, fmt.Errorf("marker store: %w", err)
	}
	for g, b := range baselines {
		if _, err := r.store.Baseline(r.opts.RunID, g, *b); err != nil {
			r.log.Warn("baseline not recorded with the run", "gpu", g, "err", err)
		}
	}
	r.setGPUs(baselines, brackets)
	if err := r.writeManifest(); err != nil {
		r.log.Warn("provisional manifest", "err", err)
	}

	wl, err := r.be.Start(ctx, spec)
	if err != nil {
		return failed(err, start, brackets)
	}
	stopProvisional := r.keepProvisional()
	followed := make(chan struct{})
	go func() { defer close(followed); r.follow(wl, stdout, stderr) }()

	status, ex, waitErr := r.wait(ctx, wl)
	<-followed
	stopProvisional()
	// The last phase ends when the workload does; what follows until the end bracket is the tail, in no phase.
	if !ex.FinishedAt.IsZero() && ex.FinishedAt.After(start) {
		if run, ok := r.store.Get(r.opts.RunID); ok && run.Phase != "" {
			r.store.EndPhase(r.opts.RunID, ex.FinishedAt)
		}
	}
	endReads := r.readAll()
	end := latest(endReads, r.clock.Now())
	for g, c := range endReads {
		b := brackets[g]
		b.End = &manifest.CounterRead{Time: c.Time, EnergyMJ: c.EnergyMJ}
		brackets[g] = b
	}
	if _, err := r.store.End(r.opts.RunID, status, end); err != nil {
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
		code := ex.Code
		r.m.ExitCode = &code
	}
	exit := ex.Code
	switch status {
	case manifest.StatusIntr:
		exit = ExitInterrupted
	case manifest.StatusTime:
		exit = ExitTimeout
	case manifest.StatusError:
		exit = 1
	}
	return r.finish(t, start, end, baselines, brackets, exit)
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
	c, err := marker.NewClient(r.opts.ExporterURL, r.opts.ExporterToken)
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
	r.mu.Lock()
	account.Fill(r.m, account.Input{Trace: t, RunID: r.opts.RunID, Start: start, End: end, GPUs: gpus,
		Baselines: baselines, Brackets: brackets})
	r.m.Markers = r.markers
	r.mu.Unlock()
	if n := r.markers.Rejected; n > 0 {
		r.warn("marker_rejected", nil, "%d marker(s) were rejected (see the log): phases or results are missing", n)
	}
	if err := r.writeManifest(); err != nil {
		return nil, err
	}
	return &Result{Dir: r.dir, Manifest: r.m, ExitCode: exit}, nil
}
