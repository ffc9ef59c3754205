package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/lem-energy/lem/analyze"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/trace"
)

type phasesCmd struct {
	Files []string       `arg:"" type:"existingfile" help:"Trace files (.parquet)."`
	Lag   *time.Duration `help:"Counter lag for the hybrid (default: estimated from the data)."`
	Marks string         `type:"existingfile" help:"Probe marks file (MARK <name> <unix ns> …) to take phases from instead of the trace's events."`
}

func (c *phasesCmd) Run(ctx context.Context, log *slog.Logger) error {
	var errs []error
	for _, f := range c.Files {
		// One bad file is reported and the others still analysed.
		if err := c.one(f); err != nil {
			log.Error("trace skipped", "file", f, "err", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *phasesCmd) one(path string) error {
	t, err := trace.ReadFile(path)
	if err != nil {
		return err
	}
	if c.Marks != "" {
		b, err := os.ReadFile(c.Marks)
		if err != nil {
			return fmt.Errorf("reading marks: %w", err)
		}
		evs, err := trace.ParseProbeMarks(string(b))
		if err != nil {
			return fmt.Errorf("marks %s: %w", c.Marks, err)
		}
		t.Events = append(t.Events, evs...)
	}
	fmt.Printf("== %s (source %s)\n", path, t.Env.Source.Kind)
	return analyze.WritePhaseTables(os.Stdout, analyze.PhaseEnergies(t, energy.Options{Lag: c.Lag}))
}
