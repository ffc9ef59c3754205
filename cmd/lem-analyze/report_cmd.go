package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/lem-energy/lem/analyze/calibrate"
	"github.com/lem-energy/lem/analyze/pull"
	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/cli"
)

type reportCmd struct {
	Paths     []string `arg:"" help:"Run directories (or directories holding them), or lem traces (.parquet) whose marked runs are reported."`
	Format    string   `short:"f" default:"md" enum:"md,html,json,csv" help:"Output format (${enum})."`
	Table     string   `default:"runs" enum:"runs,phases,experiments,windows" help:"Table written by --format csv (${enum}): one row per run and GPU, per run and phase, per experiment and figure, or per run and window."`
	Reference string   `help:"Experiment the others are compared with (ratios with 95 % intervals and expanded uncertainties)."`
	Out       string   `short:"o" env:"LEM_REPORT_FILE" help:"Write the report to this file instead of stdout."`
	SlurmJob  string   `name:"slurm-job" help:"Report only the runs of this Slurm job: the job's own run (marked by the Slurm Prolog, in a recording or a pull) and campaign runs measured inside it."`
	// Calibration corrects energies to an external meter's scale (lem-analyze calibrate).
	Calibration string `type:"existingfile" help:"Calibration file (lem-analyze calibrate): energies of the boards it holds corrected to the meter's scale, their gain uncertainty the fit's."`
	Stream      string `default:"auto" enum:"auto,always,never" help:"Read lem traces in windows, a row group at a time, memory bounded by the longest run (${enum}); auto: traces too large to read whole within --memory-limit."`
	MemoryMiB   int64  `name:"memory-limit" default:"1024" help:"Memory (MiB, 64 to 16777216; 0: the default) the report aims to stay within: the garbage collector works harder from three quarters of it, and traces whose whole read would not fit within that are streamed (GOMEMLIMIT overrides)."`
}

// The --memory-limit a report accepts (MiB).
const (
	minMemoryMiB = 64
	maxMemoryMiB = 16 << 20
)

func (c *reportCmd) Run(ctx context.Context, log *slog.Logger) error {
	slog.SetDefault(log)
	var cal *calibrate.File
	if c.Calibration != "" {
		var err error
		if cal, err = calibrate.ReadFile(c.Calibration); err != nil {
			return fmt.Errorf("--calibration: %v%w", err, cli.Usage)
		}
	}
	// Below 64 MiB the collector runs without pause (a report of one run takes 40 MiB); beyond 16 TiB the limit in
	// bytes would overflow (2^44 MiB is 0 bytes: the collector would never stop).
	if c.MemoryMiB == 0 {
		c.MemoryMiB = report.DefaultMemoryLimit >> 20
	}
	if c.MemoryMiB < minMemoryMiB || c.MemoryMiB > maxMemoryMiB {
		return fmt.Errorf("--memory-limit %d: want %d to %d (MiB)%w", c.MemoryMiB, minMemoryMiB, maxMemoryMiB, cli.Usage)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The collector's soft limit a quarter below: it lets garbage grow (GOGC 400) up to there, and what is
		// not heap (stacks, the runtime's own) and its overshoot under load stay inside the limit.
		debug.SetMemoryLimit(c.MemoryMiB << 20 * 3 / 4)
	}
	log.Debug("report started", "paths", len(c.Paths))
	// Every format reads the traces: the uncertainty budgets' lag term is evaluated on them.
	runs, probs := report.LoadWith(c.Paths, report.LoadOptions{Stream: c.Stream,
		MemoryLimit: c.MemoryMiB << 20, NoPlots: c.Format != "html"})
	if cal != nil {
		n := report.Calibrate(runs, cal, c.Calibration)
		log.Info("energies corrected by the calibration", "file", c.Calibration, "runs", n, "of", len(runs))
	}
	for _, p := range probs {
		log.Warn("input skipped", "path", p.Path, "err", p.Err)
	}
	if c.SlurmJob != "" {
		runs = slurmJobRuns(runs, c.SlurmJob)
		if len(runs) == 0 {
			return fmt.Errorf("%w of Slurm job %s in %v", report.ErrNoRuns, c.SlurmJob, c.Paths)
		}
	}
	if len(runs) == 0 {
		return fmt.Errorf("%w in %v", report.ErrNoRuns, c.Paths)
	}
	t0 := time.Now()
	exps, err := report.Experiments(runs, c.Reference)
	if err != nil {
		return err
	}
	t1 := time.Now()
	defer func() { log.Debug("report written", "summaries", t1.Sub(t0), "written", time.Since(t1)) }()
	return c.write(func(w io.Writer) error {
		switch c.Format {
		case "csv":
			return report.CSV(w, c.Table, runs, exps)
		case "json":
			return report.JSON(w, runs, exps, probs)
		case "html":
			return report.HTML(w, runs, exps, probs)
		default:
			return report.Markdown(w, runs, exps, probs)
		}
	})
}

// slurmJobRuns keeps the runs of Slurm job id: its own runs (run ids slurm-<cluster>-<id>[-r<n>]) and campaign
// runs whose manifest names the job.
func slurmJobRuns(runs []report.Run, id string) []report.Run {
	var out []report.Run
	for _, r := range runs {
		m := r.Manifest
		if pull.SlurmJobOf(m.RunID) == id || m.Job != nil && m.Job.Scheduler == "slurm" && m.Job.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// write sends the report to -o or stdout.
func (c *reportCmd) write(render func(io.Writer) error) error {
	w := bufio.NewWriterSize(os.Stdout, 1<<16)
	var f *os.File
	if c.Out != "" {
		var err error
		if f, err = os.Create(c.Out); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		w = bufio.NewWriterSize(f, 1<<16)
	}
	err := render(w)
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
