package runner

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner/backend"
)

// RecordOptions describe a recording (lem-run record): every sampled GPU into one trace file, optionally around a
// command whose markers become the run's events. No baseline, no run directory.
type RecordOptions struct {
	Out       string        // trace file
	Duration  time.Duration // without a command: stop after this long (0: when the replay ends or on interrupt)
	Tail      time.Duration // keep recording this long after the command exits
	Command   []string
	Sampler   sampler.Config
	StopGrace time.Duration
	Stdout    io.Writer
	Stderr    io.Writer
	Watchdog  backend.Watchdog // stops the command if lem-run dies
	PTY       bool             // the command's stdout is a pseudo-terminal (see backend.Process)
}

// RecordResult is a finished recording: the trace, and with a command the run accounted by the one accounting
// and the exit code lem-run returns.
type RecordResult struct {
	Trace    *trace.Trace
	Manifest *manifest.Manifest // nil without a command
	ExitCode int
}

// Record records the GPUs into a trace, around a command if one is given. With a command the run is bracketed
// by counter reads (one before the command starts, so its first phase has counter energy) and accounted like
// lem-run's runs; an interrupt stops the command and exits 130, as lem-run does.
func Record(ctx context.Context, opts RecordOptions, src gpu.Source, devs []gpu.Device, log *slog.Logger) (*RecordResult, error) {
	ro := Options{Experiment: "record", Stdout: opts.Stdout, Stderr: opts.Stderr, StopGrace: opts.StopGrace}
	ro.defaults()
	be := &backend.Process{Clock: src.Clock(), Watchdog: opts.Watchdog, PTY: opts.PTY}
	if len(opts.Command) > 0 {
		if err := be.Check(opts.Command); err != nil {
			return nil, usage("%v", err)
		}
	}
	smp, err := sampler.New(src, devs, opts.Sampler, log)
	if err != nil {
		return nil, usage("%v", err)
	}
	if dir := filepath.Dir(opts.Out); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, usage("-o: %v", err)
		}
	}
	clock := src.Clock()
	r := &run{opts: ro,
		src: src, smp: smp, be: be, log: log, clock: clock,
		m: &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, Backend: be.Name(), Command: opts.Command,
			Environment: smp.Environment(), LemVersion: meta.LemVersion()}}
	if len(opts.Command) > 0 {
		r.opts.Experiment = filepath.Base(opts.Command[0])
		r.opts.RunID = NewRunID(r.opts.Experiment, clock.Now())
		r.m.RunID, r.m.Experiment = r.opts.RunID, r.opts.Experiment
	}
	stop, err := r.startSampling(opts.Out)
	if err != nil {
		return nil, usage("-o: %v", err)
	}
	if len(opts.Command) == 0 {
		var ended <-chan struct{}
		if rs, ok := src.(*gpu.ReplaySource); ok {
			ended = rs.Ended()
		}
		var timeout <-chan time.Time
		if opts.Duration > 0 {
			timeout = clock.After(opts.Duration)
		}
		select {
		case <-ctx.Done():
		case <-ended:
		case <-timeout:
		}
		t, err := stop()
		return &RecordResult{Trace: t}, err
	}
	r.store = marker.NewStore(clock.Now, marker.Limits{MaxActive: 1}, smp.Emit)
	exit, start, end := r.recordCommand(ctx, opts)
	t, err := stop()
	if t != nil {
		var gpus []account.GPU
		for _, d := range r.m.Environment.Devices {
			gpus = append(gpus, account.GPU{Index: d.Index, Role: manifest.RoleWorkload})
		}
		account.Fill(r.m, account.Input{Trace: t, RunID: r.opts.RunID, Start: start, End: end, GPUs: gpus,
			Baselines: map[int]*manifest.Baseline{}})
		r.m.Markers = r.markers
	}
	return &RecordResult{Trace: t, Manifest: r.m, ExitCode: exit}, err
}

// recordCommand runs the command between counter reads, following its markers; it returns lem-run's exit code
// and the run's bounds.
func (r *run) recordCommand(ctx context.Context, opts RecordOptions) (exit int, start, end time.Time) {
	start = latest(r.readAll(), r.clock.Now())
	r.store.Start(marker.StartReq{RunID: r.opts.RunID, Experiment: r.opts.Experiment, At: start})
	wl, err := r.be.Start(ctx, backend.Spec{RunID: r.opts.RunID, Command: opts.Command, GPUIndices: r.workloadGPUs()})
	if err != nil {
		r.m.Status, r.m.Error = manifest.StatusError, err.Error()
		end = r.clock.Now()
		r.store.End(r.opts.RunID, manifest.StatusError, end)
		return 1, start, end
	}
	out := r.await(ctx, wl, io.Discard, io.Discard, start)
	if opts.Tail > 0 && ctx.Err() == nil {
		sleepClock(r.clock, opts.Tail) // the recording goes on a little after the run, so samples cover its end
	}
	return r.settle(out), start, out.end
}
