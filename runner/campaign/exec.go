package campaign

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
)

var lookPath = exec.LookPath

type executor struct {
	p          *Prepared
	opts       Options
	st         *State
	containers map[string]*backendContainer
	job        *manifest.Job // the cluster job this executes in (RunOne), if any
}

// backendContainer is a persistent backend container of the campaign.
type backendContainer struct {
	name   string
	spec   *Persistent
	d      *backend.Docker
	pc     *backend.Persistent
	starts int
	failed error
}

func (ex *executor) devices(e *Experiment) ([]gpu.Device, error) {
	sel := e.GPUs
	if len(sel) == 0 {
		sel = ex.p.File.GPUs
	}
	devs, err := gpu.Select(ex.opts.Devices, sel)
	if err != nil {
		return nil, fmt.Errorf("experiment %s: gpus: %w", e.Name, err)
	}
	return devs, nil
}

func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// env is a configuration's environment: its own, the grid values, and the backend parameters as JSON.
func (ex *executor) env(c *Config, cycle int) []string {
	m := map[string]string{"LEM_CAMPAIGN": ex.p.File.Name, "LEM_CYCLE": fmt.Sprint(cycle)}
	for k, v := range c.Env {
		m[k] = v
	}
	if len(c.Params) > 0 {
		b, _ := json.Marshal(c.Params)
		m["LEM_BACKEND_PARAMS"] = string(b)
	}
	return envList(m)
}

// runOptions are lem-run's options for one run of the campaign.
func (ex *executor) runOptions(runID, experiment string, cycle int) runner.Options {
	f := ex.p.File
	cooldown := f.Cooldown.Target
	switch {
	case ex.opts.Cooldown != "":
		cooldown = ex.opts.Cooldown
	case cooldown == "":
		cooldown = runner.CooldownIdle // runs start from the same thermal state (docs/CAMPAIGNS.md)
	}
	o := runner.Options{Experiment: experiment, RunID: runID, OutDir: ex.p.out, Baseline: f.BaselineDuration(),
		Cooldown: cooldown, CooldownTimeout: f.Cooldown.Timeout.D(), Timeout: f.Timeout.D(), IdleHistory: ex.opts.IdleHistory,
		Sampler: ex.opts.Sampler, ExporterURL: ex.opts.ExporterURL, ExporterToken: ex.opts.ExporterToken,
		Campaign: f.Name, Cycle: cycle, Stdout: io.Discard, Stderr: io.Discard, Progress: io.Discard, Job: ex.job}
	state := filepath.Join(ex.p.out, ".state")
	if ex.job != nil { // baselines are a node's: jobs on other nodes keep their own
		state = filepath.Join(state, "nodes", sanitise(ex.job.Node))
	}
	switch f.Baseline.Policy {
	case "per_run":
		o.BaselineCache = filepath.Join(state, "baselines.json") // TTL 0: always measured
	case "per_cycle":
		// The first run of a cycle measures; the cycle's later runs reuse it.
		o.BaselineTTL, o.BaselineCache = 7*24*time.Hour, filepath.Join(state, fmt.Sprintf("baselines-cycle%d.json", cycle))
	case "ttl":
		o.BaselineTTL, o.BaselineCache = f.Baseline.TTL.D(), filepath.Join(state, "baselines.json")
	}
	return o
}

// moveAside keeps an earlier attempt's directory under .attempts: nothing measured is deleted.
func (ex *executor) moveAside(runID string) error {
	dir := filepath.Join(ex.p.out, runID)
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(ex.p.out, report.AttemptsDir), 0o755); err != nil {
		return err
	}
	for n := 1; ; n++ {
		dst := report.EarlierAttemptDir(ex.p.out, runID, n)
		if _, err := os.Stat(dst); os.IsNotExist(err) {
			return os.Rename(dir, dst)
		}
	}
}

// attempts is the run's attempts by the one rule lem-analyze also reads them by.
func (ex *executor) attempts(runID string) int { return report.Attempts(ex.p.out, runID, nil) }

// labels mark the containers a campaign starts.
func (ex *executor) labels() map[string]string {
	return map[string]string{backend.LabelCampaign: ex.p.File.Name}
}

// container returns the experiment's backend container, started (its start-up measured as a run) if needed.
func (ex *executor) container(ctx context.Context, name string, devs []gpu.Device, cycle int) (*backendContainer, error) {
	bc := ex.containers[name]
	if bc == nil {
		spec := ex.p.File.Backends[name]
		d, err := backend.NewDocker(backend.DockerOptions{Image: spec.Image, Entrypoint: spec.Entrypoint, Env: envList(spec.Env),
			Volumes: spec.Volumes, Name: fmt.Sprintf("lem-%s-%s", ex.p.File.Name, name), RequestGPUs: ex.opts.RequestGPUs,
			Labels: ex.labels(), Watchdog: ex.opts.Watchdog})
		if err != nil {
			return nil, err
		}
		bc = &backendContainer{name: name, spec: spec, d: d, pc: d.NewPersistent(backend.PersistentOptions{
			Command: spec.Command, HealthURL: spec.Health.HTTP, HealthCommand: spec.Health.Command,
			HealthTimeout: spec.Health.Timeout.D(), ResultsHost: filepath.Join(absPath(ex.p.out), ".backends", name)})}
		ex.containers[name] = bc
	}
	if bc.failed != nil {
		return nil, bc.failed
	}
	if bc.pc.ID() != "" {
		return bc, nil
	}
	// Every start-up is a measurement of its own, numbered on from those of earlier executions (a resumed
	// campaign's start-up is not another attempt of the last one).
	label := "startup-" + name
	id := runID(ex.p.File.Name, label, bc.starts+1)
	for ex.attempts(id) > 0 {
		bc.starts++
		id = runID(ex.p.File.Name, label, bc.starts+1)
	}
	bc.starts++
	o := ex.runOptions(id, label, cycle)
	o.Command = slices.Clone(bc.spec.Command)
	ex.opts.Log.Info("starting backend container (start-up measured)", "backend", name, "run", id)
	res, err := runner.Run(ctx, o, ex.opts.Source, devs, bc.pc.StartupBackend(), ex.opts.Log)
	rs := RunState{Position: 0, Cycle: cycle, Experiment: label, RunID: id, Status: manifest.StatusError}
	if res != nil {
		rs.Status, rs.Error, rs.DurationS = res.Manifest.Status, res.Manifest.Error, res.Manifest.Times.DurationS
	} else if err != nil {
		rs.Error = err.Error()
	}
	rs.Attempts = ex.attempts(id)
	ex.st.Startups = append(ex.st.Startups, rs)
	if rs.Status != manifest.StatusOK {
		bc.pc.Remove(5 * time.Second)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		bc.failed = fmt.Errorf("backend container %s did not start (start-up run %s): %s", name,
			filepath.Join(ex.p.out, id), rs.Error)
		return nil, bc.failed
	}
	return bc, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func (ex *executor) closeContainers() {
	for _, bc := range ex.containers {
		if err := bc.pc.Remove(10 * time.Second); err != nil {
			ex.opts.Log.Error("backend container", "name", bc.name, "err", err)
		}
		bc.d.Close()
	}
	ex.containers = map[string]*backendContainer{}
}

// backend is the runner backend for one run of c, and what to release after it.
func (ex *executor) backend(ctx context.Context, c *Config, devs []gpu.Device, cycle int, env []string) (backend.Backend, []string, func(), error) {
	e := c.Exp
	if e.Container != "" {
		bc, err := ex.container(ctx, e.Container, devs, cycle)
		if err != nil {
			return nil, nil, nil, err
		}
		if bc.spec.Mode == "exec" {
			return bc.pc.ExecBackend(), env, func() {}, nil
		}
		env = append(env, "LEM_BACKEND_HOST="+bc.pc.Host())
	}
	if e.Image != "" {
		d, err := backend.NewDocker(backend.DockerOptions{Image: e.Image, Entrypoint: e.Entrypoint, Volumes: e.Volumes,
			RequestGPUs: ex.opts.RequestGPUs, Labels: ex.labels(), Watchdog: ex.opts.Watchdog})
		if err != nil {
			return nil, nil, nil, err
		}
		return d, env, func() { d.Close() }, nil
	}
	return &backend.Process{Clock: ex.opts.Source.Clock(), Watchdog: ex.opts.Watchdog}, env, func() {}, nil
}

// run measures one planned run. Failed runs are recorded and the campaign goes on; only an interrupt stops it.
func (ex *executor) run(ctx context.Context, pl *Planned, rs *RunState) error {
	c := pl.Config
	rs.Error, rs.DurationS = "", 0
	defer func() { rs.Attempts = ex.attempts(pl.RunID) }()
	fail := func(err error) error {
		rs.Status, rs.Error = manifest.StatusError, err.Error()
		ex.opts.Log.Error("run not measured", "run", pl.RunID, "err", err)
		return ctx.Err()
	}
	if err := ex.moveAside(pl.RunID); err != nil {
		return fail(fmt.Errorf("keeping the earlier attempt: %w", err))
	}
	devs, err := ex.devices(c.Exp)
	if err != nil {
		return fail(err)
	}
	be, env, release, err := ex.backend(ctx, c, devs, pl.Cycle, ex.env(c, pl.Cycle))
	if err != nil {
		return fail(err)
	}
	defer release()
	o := ex.runOptions(pl.RunID, c.Name, pl.Cycle)
	o.Command, o.Env, o.Position, o.Variables, o.Inference = c.Command, env, pl.Position, c.Vars, ex.p.params[c]
	if c.Exp.Timeout > 0 {
		o.Timeout = c.Exp.Timeout.D()
	}
	res, err := runner.Run(ctx, o, ex.opts.Source, devs, be, ex.opts.Log)
	if res == nil {
		if err == nil {
			err = errors.New("no result")
		}
		return fail(err)
	}
	m := res.Manifest
	rs.Status, rs.Error, rs.DurationS = m.Status, m.Error, m.Times.DurationS
	if c.Exp.Container != "" && ex.containers[c.Exp.Container].spec.ForceColdStart {
		ex.containers[c.Exp.Container].pc.Remove(10 * time.Second) // the next run starts (and measures) it afresh
	}
	return ctx.Err()
}

// warmups executes each configuration that still has runs warmup_runs times, unmeasured.
func (ex *executor) warmups(ctx context.Context, remaining map[*Config]bool) error {
	n := ex.p.File.WarmupRuns
	if n == 0 {
		return nil
	}
	for _, c := range ex.p.Configs {
		if !remaining[c] {
			continue
		}
		devs, err := ex.devices(c.Exp)
		if err != nil {
			return err
		}
		for k := 1; k <= n; k++ {
			id := fmt.Sprintf("warmup-%s-%d", c.ID, k) // the id: a configuration name may hold a path
			if ex.job != nil {
				// Jobs of one configuration may warm up at once on several nodes.
				id = fmt.Sprintf("warmup-%s-job%s-%d", c.ID, ex.job.ID, k)
			}
			dir := filepath.Join(ex.p.out, ".warmup", id)
			if err := os.MkdirAll(filepath.Join(dir, manifest.ResultsDir), 0o755); err != nil {
				return err
			}
			be, env, release, err := ex.backend(ctx, c, devs, 1, ex.env(c, 0))
			if err != nil {
				return fmt.Errorf("warm-up %s: %w", id, err)
			}
			log, err := os.Create(filepath.Join(dir, "output.log"))
			if err != nil {
				release()
				return err
			}
			uuids, idx := make([]string, 0, len(devs)), make([]int, 0, len(devs))
			for _, d := range devs {
				uuids, idx = append(uuids, d.Info().UUID), append(idx, d.Info().Index)
			}
			ex.opts.Progress.Note("warm-up %s (%d of %d, not measured)", c.Name, k, n)
			code, err := backend.Execute(ctx, be, backend.Spec{RunID: id, Command: c.Command, Env: env, GPUs: uuids,
				GPUIndices: idx, ResultsDir: filepath.Join(absPath(dir), manifest.ResultsDir)}, log, 10*time.Second)
			log.Close()
			release()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil || code != 0 {
				ex.opts.Log.Warn("warm-up run did not succeed", "config", c.Name, "exit", code, "err", err,
					"log", filepath.Join(dir, "output.log"))
			}
		}
	}
	return nil
}

// Progress shows run k of N, the current experiment and an ETA: a redrawn bar on a terminal, lines otherwise.
type Progress struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	total   int
	done    int
	spent   time.Duration
	measure int
	began   time.Time
}

// NewProgress writes to w; tty redraws one line.
func NewProgress(w io.Writer, tty bool) *Progress { return &Progress{w: w, tty: tty} }

// Start sets the plan size and the runs already done (resume).
func (p *Progress) Start(total, done int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.done = total, done
	if done > 0 {
		fmt.Fprintf(p.w, "campaign: resuming, %d of %d runs already ok\n", done, total)
	}
}

func (p *Progress) eta() string {
	if p.measure == 0 {
		return "ETA –"
	}
	left := time.Duration(p.total-p.done) * (p.spent / time.Duration(p.measure))
	return "ETA " + left.Round(time.Second).String()
}

// Begin announces a run.
func (p *Progress) Begin(pl *Planned) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.began = time.Now()
	k := p.done + 1
	if p.tty {
		const width = 24
		fill := width * p.done / max(p.total, 1)
		fmt.Fprintf(p.w, "\r\033[K[%s%s] run %d/%d %s (cycle %d) %s", strings.Repeat("█", fill),
			strings.Repeat("░", width-fill), k, p.total, pl.Config.Name, pl.Cycle, p.eta())
		return
	}
	fmt.Fprintf(p.w, "campaign: run %d/%d %s (cycle %d, %s) started; %s\n", k, p.total, pl.Config.Name, pl.Cycle, pl.RunID, p.eta())
}

// End reports a run's outcome.
func (p *Progress) End(pl *Planned, rs *RunState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	p.measure++
	p.spent += time.Since(p.began)
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	msg := rs.Status
	if rs.Error != "" {
		msg += ": " + rs.Error
	}
	fmt.Fprintf(p.w, "campaign: run %d/%d %s (cycle %d): %s (%.1f s workload, %s total); %s\n", p.done, p.total,
		pl.Config.Name, pl.Cycle, msg, rs.DurationS, time.Since(p.began).Round(100*time.Millisecond), p.eta())
}

// Note prints a line (warm-ups, container start-ups).
func (p *Progress) Note(format string, a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "campaign: "+format+"\n", a...)
}
