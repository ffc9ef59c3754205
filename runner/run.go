// Package runner is lem-run's measurement protocol: pre-flight checks, the cool-down gate, the idle baseline, the
// workload bracketed by exact energy-counter reads, its phase and result markers, and the run directory with its
// manifest. How the workload runs (a process, a container, an exec in a backend container) is runner/backend's.
package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/internal/meta"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/runner/backend"
)

// Defaults of Options, shown in lem-run's --help.
const (
	DefaultBaseline        = 30 * time.Second
	DefaultCooldownTimeout = 5 * time.Minute
	DefaultStopGrace       = 10 * time.Second
	DefaultTail            = 1500 * time.Millisecond
	// DefaultMirrorLease is the lease a run mirrored to lem-exporter holds there: if lem-run dies, the
	// exporter ends the run this long after the last renewal.
	DefaultMirrorLease = time.Minute
)

// Options describe one run.
type Options struct {
	Experiment    string
	RunID         string // default: experiment, UTC time and a random suffix
	OutDir        string // run directories are created here
	Command       []string
	Env           []string
	Baseline      time.Duration // 0 disables
	BaselineTTL   time.Duration // reuse a per-GPU baseline younger than this
	BaselineCache string        // file of cached baselines (default: the user cache dir)
	// IdleHistory is the host's file of measured idle baselines (default: the user cache dir; "off": none),
	// for the idle-temperature fit and the "idle" cool-down gate.
	IdleHistory     string
	Cooldown        string // "", "stable" or a temperature such as "45" or "45C"
	CooldownTimeout time.Duration
	Timeout         time.Duration
	StopGrace       time.Duration
	Tail            time.Duration // sampling kept up after exit, so the last samples cover the end
	Sampler         sampler.Config
	ExporterURL     string // mirror run/phase markers to a running lem-exporter
	ExporterToken   string
	ExporterCA      string // PEM file of the CA that signed an https exporter's certificate (beside the system's)
	Campaign        string
	Cycle           int
	Position        int                 // place in the campaign's run order
	Variables       map[string]string   // the campaign grid's values for this run
	Inference       *manifest.Inference // the inference backend's effective parameters
	Job             *manifest.Job       // the cluster job the run is measured in
	// WorkloadGPUs are the indices of the GPUs the workload gets; the other sampled GPUs are observed only
	// (their energy reported apart). Empty: every sampled GPU.
	WorkloadGPUs   []int
	Stdout, Stderr io.Writer // workload output passthrough (default os.Stdout/os.Stderr)
	Progress       io.Writer // countdowns and progress (default os.Stderr)
	// ProgressTTY says Progress is a terminal: countdowns redraw one line instead of logging.
	ProgressTTY bool
}

func (o *Options) defaults() {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Progress == nil {
		o.Progress = os.Stderr
	}
	if o.StopGrace <= 0 {
		o.StopGrace = DefaultStopGrace
	}
	if o.Tail <= 0 {
		o.Tail = DefaultTail
	}
	if o.CooldownTimeout <= 0 {
		o.CooldownTimeout = DefaultCooldownTimeout
	}
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
	ExitUsage       = 2 // bad input found before anything was measured
)

// usage makes an error found before anything was measured (bad options, a command not on PATH, a missing
// image): lem-run exits 2 with one line naming the problem.
func usage(format string, a ...any) error {
	return fmt.Errorf("%s%w", fmt.Sprintf(format, a...), cli.Usage)
}

// NewRunID makes a run id from the experiment name (sanitised, shortened), the UTC time and a random suffix.
func NewRunID(experiment string, now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, experiment)
	clean = strings.Trim(clean, "-.")
	if len(clean) > 40 {
		clean = clean[:40]
	}
	if clean == "" {
		clean = "run"
	}
	return clean + "-" + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// commandChecker is a backend that can tell, before anything is measured, whether a command can start.
type commandChecker interface {
	Check(command []string) error
}

// Run measures one experiment: pre-flight, cool-down, idle baseline, the workload bracketed by counter reads,
// its phases, and the manifest. Bad options, an invalid run id, a command that cannot start, a backend that is
// not ready or an unwritable output directory are errors (ErrUsage) before anything is measured; after that a
// workload that fails or is interrupted still gets its run directory and manifest.
func Run(ctx context.Context, opts Options, src gpu.Source, devs []gpu.Device, be backend.Backend, log *slog.Logger) (*Result, error) {
	opts.defaults()
	if opts.Experiment == "" {
		return nil, usage("--experiment is required")
	}
	if err := marker.ValidExperiment(opts.Experiment); err != nil {
		return nil, usage("--experiment: %v", err)
	}
	clock := src.Clock()
	if opts.RunID == "" {
		opts.RunID = NewRunID(opts.Experiment, clock.Now())
	}
	if err := marker.ValidRunID(opts.RunID); err != nil {
		return nil, usage("--run-id: %v", err)
	}
	if opts.Cooldown != "" {
		if _, err := ParseCooldown(opts.Cooldown); err != nil {
			return nil, usage("--cooldown: %v", err)
		}
	}
	if c, ok := be.(commandChecker); ok {
		if err := c.Check(opts.Command); err != nil {
			return nil, usage("%v", err)
		}
	}
	if err := be.Preflight(ctx); err != nil {
		return nil, usage("%v", err)
	}
	smp, err := sampler.New(src, devs, opts.Sampler, log)
	if err != nil {
		return nil, usage("%v", err)
	}
	for _, g := range opts.WorkloadGPUs {
		if _, ok := smp.Environment().Device(g); !ok {
			return nil, usage("workload GPU %d is not sampled", g)
		}
	}
	dir := filepath.Join(opts.OutDir, opts.RunID)
	if _, err := os.Stat(dir); err == nil {
		return nil, usage("run directory %s already exists: choose another --run-id", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, manifest.ResultsDir), 0o755); err != nil {
		return nil, usage("output directory: %v", err)
	}
	r := &run{opts: opts, src: src, smp: smp, be: be, log: log, dir: dir, clock: clock,
		m: &manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: opts.RunID, Experiment: opts.Experiment,
			Campaign: opts.Campaign, Cycle: opts.Cycle, Position: opts.Position, Variables: opts.Variables,
			Inference: opts.Inference, Backend: be.Name(), Command: opts.Command, Status: manifest.StatusRunning,
			Runner: ptr(meta.Self()), Job: opts.Job,
			Environment: smp.Environment(), LemVersion: meta.LemVersion(), Warnings: []manifest.Warning{},
			Files: manifest.Files{Trace: manifest.TraceFile, Stdout: manifest.StdoutFile, Stderr: manifest.StderrFile,
				Results: manifest.ResultsDir}}}
	if r.m.Environment.Host.Hostname == "" {
		r.m.Environment.Host = meta.CollectHost() // a replayed recording names no host: this one measured
	}
	if rs, ok := src.(*gpu.ReplaySource); ok {
		r.m.Environment.Source.ReplayOffsetNS = rs.ToReplayTime(time.Unix(0, 0)).UnixNano()
	}
	// The run directory exists from here on: a provisional manifest says who is measuring it, so a crash
	// leaves a directory lem-analyze reports as crashed instead of one nothing explains.
	if err := r.writeManifest(); err != nil {
		return nil, usage("output directory: %v", err)
	}
	return r.execute(ctx)
}

type run struct {
	opts  Options
	src   gpu.Source
	smp   *sampler.Sampler
	be    backend.Backend
	log   *slog.Logger
	dir   string
	clock gpu.Clock
	m     *manifest.Manifest
	store *marker.Store

	mu      sync.Mutex // guards m, the marker counts and changes
	markers manifest.Markers
	changes int // phase and result markers the store took (the provisional manifest follows them)
	// The phase in progress and its start (notePhase).
	openPhase string
	openSince time.Time
}

// workload says whether GPU index is given to the workload (not merely observed).
func (r *run) workload(index int) bool {
	return len(r.opts.WorkloadGPUs) == 0 || slices.Contains(r.opts.WorkloadGPUs, index)
}

// workloadGPUs lists the workload's GPU indices, in the environment's order.
func (r *run) workloadGPUs() []int {
	var out []int
	for _, d := range r.m.Environment.Devices {
		if r.workload(d.Index) {
			out = append(out, d.Index)
		}
	}
	return out
}

func (r *run) warn(code string, g *int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.mu.Lock()
	r.m.Warnings = append(r.m.Warnings, manifest.Warning{Code: code, GPU: g, Message: msg})
	r.mu.Unlock()
	if g != nil {
		r.log.Warn(msg, "code", code, "gpu", *g)
	} else {
		r.log.Warn(msg, "code", code)
	}
}

// writeManifest stores the manifest as it stands (provisional while the run is in progress).
func (r *run) writeManifest() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return manifest.Write(r.dir, r.m)
}

func sleepClock(c gpu.Clock, d time.Duration) { <-c.After(d) }

func ptr[T any](v T) *T { return &v }
