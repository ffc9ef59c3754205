package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/marker"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/backend"
)

type runCmd struct {
	cli.SourceFlags
	cli.SamplerFlags
	Image           string        `help:"Run the command in a container of this image (Docker); without it, as a plain process."`
	Env             []string      `short:"e" help:"Environment variable for the workload, KEY=VALUE (repeatable)."`
	Volume          []string      `short:"v" help:"Bind mount for the container, SRC:DST[:ro] (repeatable)."`
	Name            string        `help:"Container name."`
	Keep            bool          `help:"Keep the container after the run."`
	Pull            bool          `help:"Pull the image if it is missing (otherwise a missing image is an error)."`
	Experiment      string        `required:"" help:"Experiment name (groups runs for the analyzer)."`
	RunID           string        `name:"run-id" help:"Run id: 1-64 letters, digits or _.:- (default: experiment, time and a random suffix)."`
	Out             string        `default:"runs" env:"LEM_RUNS_DIR" help:"Directory for run directories."`
	Baseline        time.Duration `default:"${baseline}" help:"Idle baseline measured before the run (0 disables)."`
	BaselineTTL     time.Duration `name:"baseline-ttl" help:"Reuse a per-GPU baseline younger than this instead of measuring again."`
	BaselineCache   string        `name:"baseline-cache" help:"File of cached baselines (default: the user cache directory)."`
	IdleHistory     string        `name:"idle-history" help:"File of this host's measured idle baselines, for the idle-temperature fit and --cooldown idle (default: the user cache directory; 'off': none)."`
	Cooldown        string        `help:"Before the baseline, wait until the GPUs are at or below a temperature (e.g. 45C), within 2 °C of their usual idle temperature ('idle'), or 'stable' (±1 °C over 10 s)."`
	CooldownTimeout time.Duration `name:"cooldown-timeout" default:"${cooldown_timeout}" help:"Give up waiting for the cool-down after this long (recorded)."`
	Timeout         time.Duration `help:"Stop the workload after this long."`
	StopGrace       time.Duration `name:"stop-grace" default:"${stop_grace}" help:"Grace period between SIGTERM and SIGKILL when stopping the workload."`
	Exporter        string        `help:"Also post run and phase markers to this lem-exporter URL (user:password@ for basic auth)."`
	ExporterToken   string        `name:"exporter-token-file" type:"existingfile" help:"Marker token file for --exporter."`
	ExporterCA      string        `name:"exporter-ca-file" type:"existingfile" help:"PEM certificate(s) to trust, beside the system's, for an https --exporter (self-signed or private CA)."`
	Observe         []string      `sep:"," help:"Also sample these GPUs (indices, UUIDs or all) without giving them to the workload; their energy is reported apart, never in the run's totals."`
	JSON            bool          `name:"json" help:"Print the manifest as JSON on stdout (the summary goes to stderr)."`
	PTY             bool          `name:"pty" help:"Give the workload a pseudo-terminal as stdout (a container: a terminal), so it writes marker lines as it prints them (programs buffer output to pipes; Python gets PYTHONUNBUFFERED=1 anyway). Standard error is then merged into standard output."`
	Command         []string      `arg:"" optional:"" passthrough:"" help:"The workload command (after --)."`
}

// check rejects bad input before anything is opened or measured.
func (c *runCmd) check() error {
	if len(c.Command) > 0 && c.Command[0] == "--" {
		c.Command = c.Command[1:]
	}
	if len(c.Command) == 0 && c.Image == "" {
		return fmt.Errorf("nothing to run: give a command after --, or --image%w", cli.Usage)
	}
	if c.RunID != "" {
		if err := marker.ValidRunID(c.RunID); err != nil {
			return fmt.Errorf("--run-id: %v%w", err, cli.Usage)
		}
	}
	for _, kv := range c.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("--env %q: want KEY=VALUE%w", kv, cli.Usage)
		}
	}
	if c.Cooldown != "" {
		if _, err := runner.ParseCooldown(c.Cooldown); err != nil {
			return fmt.Errorf("--cooldown: %v%w", err, cli.Usage)
		}
	}
	for _, v := range c.Volume {
		if parts := strings.Split(v, ":"); len(parts) < 2 || parts[0] == "" || parts[1] == "" {
			return fmt.Errorf("--volume %q: want SRC:DST[:ro]%w", v, cli.Usage)
		}
	}
	if c.Exporter != "" {
		if _, err := marker.NewClient(c.Exporter, ""); err != nil {
			return fmt.Errorf("--exporter: %v%w", err, cli.Usage)
		}
		if _, err := marker.NewClient(c.Exporter, "", marker.WithCAFile(c.ExporterCA)); err != nil {
			return fmt.Errorf("--exporter-ca-file: %v%w", err, cli.Usage)
		}
	} else if c.ExporterCA != "" {
		return fmt.Errorf("--exporter-ca-file without --exporter%w", cli.Usage)
	}
	return nil
}

func (c *runCmd) Run(ctx context.Context, log *slog.Logger) error {
	if err := c.check(); err != nil {
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
	var workloadGPUs []int
	if len(c.Observe) > 0 {
		obs, err := gpu.Select(src.Devices(), c.Observe)
		if err != nil {
			return fmt.Errorf("--observe: %v%w", err, cli.Usage)
		}
		for _, d := range devs {
			workloadGPUs = append(workloadGPUs, d.Info().Index)
		}
		for _, d := range obs {
			if !slices.Contains(workloadGPUs, d.Info().Index) {
				devs = append(devs, d)
			}
		}
	}
	var be backend.Backend
	if c.Image != "" {
		d, err := backend.NewDocker(backend.DockerOptions{Image: c.Image, Env: c.Env, Volumes: c.Volume, Name: c.Name, TTY: c.PTY,
			Keep: c.Keep, Pull: c.Pull, RequestGPUs: src.Environment().Source.Kind == "nvml", Watchdog: watchdog(c.StopGrace)})
		if err != nil {
			return err
		}
		defer d.Close()
		be = d
	} else {
		be = &backend.Process{Clock: src.Clock(), Watchdog: watchdog(c.StopGrace), PTY: c.PTY}
	}
	summary := os.Stdout
	if c.JSON {
		summary = os.Stderr
	}
	opts := runner.Options{Experiment: c.Experiment, RunID: c.RunID, OutDir: c.Out, Command: c.Command,
		Baseline: c.Baseline, BaselineTTL: c.BaselineTTL, BaselineCache: c.BaselineCache, IdleHistory: c.IdleHistory, Cooldown: c.Cooldown,
		CooldownTimeout: c.CooldownTimeout, Timeout: c.Timeout, StopGrace: c.StopGrace, Sampler: c.SamplerFlags.Config(),
		ExporterURL: c.Exporter, ExporterToken: token, ExporterCA: c.ExporterCA, Stdout: summary, WorkloadGPUs: workloadGPUs,
		ProgressTTY: cli.IsTerminal(os.Stderr)}
	if c.Image == "" {
		opts.Env = c.Env // containers get --env through the backend
	}
	res, err := runner.Run(ctx, opts, src, devs, be, log)
	if res == nil {
		return err
	}
	if perr := runner.WriteSummary(summary, res.Dir, res.Manifest); perr != nil {
		err = errors.Join(err, perr)
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res.Manifest)
	}
	if res.ExitCode != 0 {
		return &cli.ExitError{Code: res.ExitCode, Err: runFailed(res, err)}
	}
	return err
}

// runFailed is the one line lem-run ends with when a run did not end ok: the run, how it ended and why, its
// directory, and what else went wrong that the manifest does not already say.
func runFailed(res *runner.Result, err error) error {
	m := res.Manifest
	why := m.Status
	if m.Error != "" {
		why += ": " + m.Error
	}
	msg := fmt.Sprintf("run %s %s (run directory %s)", m.RunID, why, res.Dir)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if line != "" && line != m.Error {
				msg += "; " + line
			}
		}
	}
	return errors.New(strings.ReplaceAll(msg, "\n", "; "))
}
