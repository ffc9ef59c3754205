package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/campaign"
)

type campaignCmd struct {
	cli.SourceFlags
	cli.SamplerFlags
	File          string `arg:"" type:"existingfile" help:"Campaign file (YAML)."`
	Out           string `help:"Campaign directory (default campaigns/NAME)."`
	DryRun        bool   `name:"dry-run" help:"Validate, print the ordered plan and its estimated duration, run nothing."`
	Exporter      string `help:"Also post run and phase markers to this lem-exporter URL (with --executor slurm: the exporter every job posts to, e.g. its node's at http://127.0.0.1:9636)."`
	ExporterToken string `name:"exporter-token-file" type:"existingfile" help:"Bearer token file for --exporter."`
	Force         bool   `help:"Resume even though the campaign file changed since the campaign started (runs already ok under the new plan's ids are kept)."`
	Cooldown      string `help:"Override the file's cool-down gate: idle (the default: each GPU within 2 °C of its usual idle temperature), stable, a temperature such as 45C, or none."`
	IdleHistory   string `name:"idle-history" help:"File of this host's measured idle baselines (default: the user cache directory; 'off': none)."`

	Executor string        `enum:",local,slurm" default:"" help:"Where the runs are measured: local (one after another on this host) or slurm (each run a Slurm job); default: the file's executor.type, else local."`
	Status   bool          `help:"Print each run's status (with slurm: its job, the job's state and node) and the campaign's counts; run and submit nothing."`
	Detach   bool          `help:"With slurm: submit the runs to submit and return without following the jobs (--status shows them; running the campaign again follows them)."`
	Cancel   bool          `help:"With slurm: cancel the campaign's queued and running jobs."`
	Poll     time.Duration `help:"With slurm: how often the queue is read while following (default: the file's executor.poll, else 10s)."`

	RunOne     string `name:"run-one" help:"Measure this one run of the plan here, now, on the GPUs Slurm granted when inside a Slurm job: what each job of --executor slurm runs."`
	Submission string `hidden:"" help:"The submission the job of --run-one is (written by --executor slurm into its job script)."`
}

// check rejects bad combinations of flags before anything is read.
func (c *campaignCmd) check() error {
	n := 0
	for _, set := range []bool{c.DryRun, c.Status, c.Cancel, c.RunOne != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("--dry-run, --status, --cancel and --run-one exclude each other%w", cli.Usage)
	}
	if _, err := runner.ParseCooldown(c.Cooldown); err != nil {
		return fmt.Errorf("--cooldown: %v%w", err, cli.Usage)
	}
	if c.RunOne != "" {
		if err := marker.ValidRunID(c.RunOne); err != nil {
			return fmt.Errorf("--run-one: %v%w", err, cli.Usage)
		}
	}
	if c.Poll < 0 || c.Poll > 0 && c.Poll < 100*time.Millisecond {
		return fmt.Errorf("--poll %s: at least 100ms%w", c.Poll, cli.Usage)
	}
	if c.Exporter != "" {
		if _, err := marker.NewClient(c.Exporter, ""); err != nil {
			return fmt.Errorf("--exporter: %v%w", err, cli.Usage)
		}
	}
	return nil
}

func (c *campaignCmd) Run(ctx context.Context, log *slog.Logger) error {
	if err := c.check(); err != nil {
		return err
	}
	f, err := campaign.Load(c.File)
	if err != nil {
		return err
	}
	executor := c.Executor
	if executor == "" {
		executor = f.ExecutorType()
	}
	if c.RunOne != "" {
		return c.runOne(ctx, f, log)
	}
	if err := c.checkExecutor(f, executor); err != nil {
		return err
	}
	if c.DryRun {
		p, err := campaign.PrepareDryRun(ctx, f, c.Out, log)
		if err != nil {
			return err
		}
		p.WriteDryRun(os.Stdout, os.Stderr)
		return nil
	}
	p, err := campaign.Prepare(ctx, f, c.Out, log)
	if err != nil {
		return err
	}
	opts, closeSource, err := c.options(executor, log)
	if err != nil {
		return err
	}
	defer closeSource()
	if !c.Status && !c.Cancel {
		p.WriteStart(os.Stderr, executor)
	}
	st, err := campaign.Run(ctx, p, opts)
	if c.Status || c.Cancel {
		return statusOnly(st, err)
	}
	if st != nil {
		p.WriteSummary(os.Stdout, st)
	}
	return exitError(ctx, err)
}

// statusOnly writes the state that --status or --cancel looked at; cancelled runs not ending ok is no error.
func statusOnly(st *campaign.State, err error) error {
	if st != nil {
		campaign.WriteStatus(os.Stdout, st)
	}
	if errors.Is(err, campaign.ErrIncomplete) {
		return nil // cancelled runs did not end ok: that was the point
	}
	return err
}

// checkExecutor rejects an executor the file cannot use, and flags that only a Slurm executor takes.
func (c *campaignCmd) checkExecutor(f *campaign.File, executor string) error {
	if err := f.CheckExecutor(executor); err != nil {
		return fmt.Errorf("%w%w", err, cli.Usage)
	}
	if executor != "slurm" && (c.Detach || c.Cancel || c.Poll != 0) {
		return fmt.Errorf("--detach, --cancel and --poll are for --executor slurm%w", cli.Usage)
	}
	return nil
}

// options wires the flags into a campaign's options: the runs' Slurm jobs, or (unless only the status is asked
// for) this host's GPU source, which the returned function closes.
func (c *campaignCmd) options(executor string, log *slog.Logger) (campaign.Options, func(), error) {
	token, err := cli.ReadSecret("--exporter-token-file", c.ExporterToken)
	if err != nil {
		return campaign.Options{}, nil, err
	}
	progress := campaign.NewProgress(os.Stderr, cli.IsTerminal(os.Stderr))
	opts := campaign.Options{Sampler: c.SamplerFlags.Config(), ExporterURL: c.Exporter, ExporterToken: token,
		Stdout: os.Stdout, Progress: progress, Log: log, Force: c.Force, ReadOnly: c.Status,
		Cooldown: c.Cooldown, IdleHistory: c.IdleHistory}
	closeSource := func() {}
	if executor == "slurm" {
		// The jobs measure on the nodes; this host (a login node) needs no GPU.
		args, err := c.jobArgs()
		if err != nil {
			return campaign.Options{}, nil, err
		}
		opts.Executor = &campaign.Slurm{Args: args, Detach: c.Detach, Cancel: c.Cancel, Poll: c.Poll}
	} else if !c.Status {
		src, devs, err := c.SourceFlags.Open(log)
		if err != nil {
			return campaign.Options{}, nil, err
		}
		closeSource = func() { src.Close() }
		opts.Source, opts.Devices = src, devs
		opts.RequestGPUs = src.Environment().Source.Kind == "nvml"
		opts.Watchdog = watchdog(0)
	}
	return opts, closeSource, nil
}

// exitError gives a campaign's error its exit status: interrupted, or 1 where runs did not end ok. The error names
// the campaign, what failed and where (its run directory, campaign.json) on one line.
func exitError(ctx context.Context, err error) error {
	switch {
	case err != nil && ctx.Err() != nil:
		return &cli.ExitError{Code: runner.ExitInterrupted, Err: err}
	case errors.Is(err, campaign.ErrIncomplete):
		return &cli.ExitError{Code: 1, Err: err}
	}
	return err
}

// jobArgs are the options of lem-run campaign that every Slurm job gets: the GPU source, the sampler's cadence and
// the exporter (files by absolute path: a job starts in the campaign directory).
func (c *campaignCmd) jobArgs() ([]string, error) {
	abs := func(flag, p string) (string, error) {
		a, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flag, err)
		}
		return a, nil
	}
	var args []string
	if c.Replay != "" {
		p, err := abs("--replay", c.Replay)
		if err != nil {
			return nil, err
		}
		args = append(args, "--replay", p, "--speed", strconv.FormatFloat(c.Speed, 'g', -1, 64))
		if c.Loop {
			args = append(args, "--loop")
		}
		if c.From > 0 {
			args = append(args, "--replay-from", c.From.String())
		}
	}
	if len(c.GPUs) > 0 {
		return nil, fmt.Errorf("--gpus with --executor slurm: Slurm chooses each run's GPUs (executor.gpus or executor.gres in the campaign file)%w", cli.Usage)
	}
	s := c.SamplerFlags
	args = append(args, "--counter-interval", s.CounterInterval.String(), "--drain-interval", s.DrainInterval.String(),
		"--telemetry-interval", s.TelemetryInterval.String(), "--ring-span", s.RingSpan.String())
	if s.SerialReads {
		args = append(args, "--serial-counter-reads")
	}
	if c.Cooldown != "" {
		args = append(args, "--cooldown", c.Cooldown)
	}
	if c.IdleHistory != "" { // the default is each node's own user cache directory: idle is per GPU
		args = append(args, "--idle-history", c.IdleHistory)
	}
	if c.Exporter != "" {
		args = append(args, "--exporter", c.Exporter)
		if c.ExporterToken != "" {
			p, err := abs("--exporter-token-file", c.ExporterToken)
			if err != nil {
				return nil, err
			}
			args = append(args, "--exporter-token-file", p)
		}
	}
	return args, nil
}

// runOne measures one run of the plan here: inside a Slurm job, on the GPUs Slurm granted (matched by UUID), with
// the job recorded in the manifest.
func (c *campaignCmd) runOne(ctx context.Context, f *campaign.File, log *slog.Logger) error {
	p, err := campaign.Prepare(ctx, f, c.Out, log)
	if err != nil {
		return err
	}
	token, err := cli.ReadSecret("--exporter-token-file", c.ExporterToken)
	if err != nil {
		return err
	}
	src, devs, err := c.SourceFlags.Open(log)
	if err != nil {
		return err
	}
	defer src.Close()
	job, devs, err := campaign.SlurmJob(os.Getenv, c.Submission, devs, campaign.GresConf(os.Getenv), "/proc")
	if err != nil {
		return err
	}
	if job != nil {
		var uuids []string
		for _, d := range devs {
			uuids = append(uuids, d.Info().UUID)
		}
		log.Info("measuring in a Slurm job", "run", c.RunOne, "job", job.ID, "node", job.Node, "slurm_gpus", job.GPUs,
			"gpus", uuids, "mapping", job.GPUMapping)
	}
	rs, err := campaign.RunOne(ctx, p, c.RunOne, campaign.Options{Source: src, Devices: devs,
		Sampler: c.SamplerFlags.Config(), ExporterURL: c.Exporter, ExporterToken: token,
		RequestGPUs: src.Environment().Source.Kind == "nvml", Watchdog: watchdog(0), Stdout: os.Stdout,
		Progress: campaign.NewProgress(os.Stderr, false), Log: log, Cooldown: c.Cooldown, IdleHistory: c.IdleHistory}, job)
	if rs != nil {
		msg := rs.Status
		if rs.Error != "" {
			msg += ": " + rs.Error
		}
		fmt.Printf("run %s: %s (%s)\n", rs.RunID, msg, filepath.Join(p.OutDir(), rs.RunID))
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return &cli.ExitError{Code: runner.ExitInterrupted, Err: err}
	case err != nil:
		return err
	case rs.Status != manifest.StatusOK:
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("run %s %s", rs.RunID, rs.Status)}
	}
	return nil
}
