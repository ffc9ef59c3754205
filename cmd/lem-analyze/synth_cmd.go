package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/lem-energy/lem/internal/trace"
)

// synthCmd builds large traces from a real recording for benchmarks (hidden: not an analysis).
type synthCmd struct {
	From   string `required:"" type:"existingfile" help:"Real recording to tile."`
	Copies int    `default:"640" help:"Copies, each one run."`
	GPUs   int    `name:"gpus" default:"4" help:"GPUs."`
	Output string `short:"o" required:"" help:"Output trace."`
}

func (c *synthCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.Copies < 1 || c.GPUs < 1 {
		return fmt.Errorf("--copies and --gpus must be at least 1")
	}
	src, err := trace.ReadFile(c.From)
	if err != nil {
		return err
	}
	w, err := trace.Create(c.Output, src.Env)
	if err != nil {
		return err
	}
	n, err := trace.WriteTiled(w, src, c.Copies, c.GPUs)
	if err != nil {
		w.Abort()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	fmt.Printf("%s: %d power samples, %d runs on %d GPUs\n", c.Output, n, c.Copies, c.GPUs)
	return nil
}
