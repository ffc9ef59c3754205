package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/lem-energy/lem/analyze/report"
)

type reportCmd struct {
	Paths     []string `arg:"" help:"Run directories (or directories holding them), or lem traces (.parquet) whose marked runs are reported."`
	Format    string   `short:"f" default:"md" enum:"md,html,json,csv" help:"Output format (${enum})."`
	Reference string   `help:"Experiment the others are compared with (ratios with 95 % intervals)."`
	Out       string   `short:"o" env:"LEM_REPORT_FILE" help:"Write the report to this file instead of stdout."`
}

func (c *reportCmd) Run(ctx context.Context, log *slog.Logger) error {
	slog.SetDefault(log)
	load := report.Load
	if c.Format == "csv" {
		load = report.LoadManifests // the table needs no steady state or plots
	}
	runs, probs := load(c.Paths)
	for _, p := range probs {
		log.Warn("input skipped", "path", p.Path, "err", p.Err)
	}
	if len(runs) == 0 {
		return fmt.Errorf("%w in %v", report.ErrNoRuns, c.Paths)
	}
	if c.Format == "csv" { // one row per run and GPU: no experiment statistics (their bootstrap is the costly part)
		return c.write(func(w io.Writer) error { return report.CSV(w, runs) })
	}
	exps, err := report.Experiments(runs, c.Reference)
	if err != nil {
		return err
	}
	return c.write(func(w io.Writer) error {
		switch c.Format {
		case "json":
			return report.JSON(w, runs, exps, probs)
		case "html":
			return report.HTML(w, runs, exps, probs)
		default:
			return report.Markdown(w, runs, exps, probs)
		}
	})
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

type validateCmd struct {
	Paths []string `arg:"" help:"Run directories, or directories holding them."`
}

// errInvalid makes validate exit non-zero for pipelines.
var errInvalid = errors.New("runs fail the quality rules")

func (c *validateCmd) Run(ctx context.Context, log *slog.Logger) error {
	runs, probs := report.Load(c.Paths)
	bad := len(probs)
	for _, p := range probs {
		fmt.Printf("ERROR %s: %s\n", p.Path, p.Err)
	}
	for _, r := range runs {
		v := report.Violations(r.Manifest)
		if len(v) == 0 {
			fmt.Printf("ok    %s (%s)\n", r.Manifest.RunID, r.Manifest.Experiment)
			continue
		}
		bad++
		for _, s := range v {
			fmt.Printf("FAIL  %s (%s): %s\n", r.Manifest.RunID, r.Manifest.Experiment, s)
		}
	}
	if len(runs) == 0 && len(probs) == 0 {
		return fmt.Errorf("%w in %v", report.ErrNoRuns, c.Paths)
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d of %d inputs", errInvalid, bad, len(runs)+len(probs))
	}
	return nil
}

type auditCmd struct {
	Paths  []string `arg:"" help:"Run directories or campaign directories."`
	All    bool     `help:"List every parameter, not only the explicit and energy-relevant ones."`
	Format string   `short:"f" default:"md" enum:"md,json" help:"Output format: md or json."`
}

func (c *auditCmd) Run(ctx context.Context, log *slog.Logger) error {
	runs, probs := report.LoadManifests(c.Paths)
	exps, aprobs := report.Audit(runs)
	probs = append(probs, aprobs...)
	if c.Format == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"experiments": exps, "problems": probs}); err != nil {
			return err
		}
	} else {
		report.AuditMarkdown(os.Stdout, exps, probs, c.All)
	}
	if len(exps) == 0 {
		return fmt.Errorf("no runs with recorded backend parameters in %v", c.Paths)
	}
	return nil
}
