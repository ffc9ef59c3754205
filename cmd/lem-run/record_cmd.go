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
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/runner"
)

type recordCmd struct {
	cli.SourceFlags
	cli.SamplerFlags
	Out      string        `short:"o" default:"trace.parquet" env:"LEM_TRACE" help:"Trace file to write."`
	Duration time.Duration `help:"Stop after this long (default: when the command exits, the replay ends, or on SIGINT)."`
	Tail     time.Duration `default:"1s" help:"Keep recording this long after the command exits."`
	PTY      bool          `name:"pty" help:"Give the command a pseudo-terminal as stdout, so it writes marker lines as it prints them."`
	Command  []string      `arg:"" optional:"" passthrough:"" help:"Command to run while recording; its LEM_PHASE/LEM_RESULT/MARK lines become events."`
}

func (c *recordCmd) Run(ctx context.Context, log *slog.Logger) error {
	started := time.Now()
	if len(c.Command) > 0 && c.Command[0] == "--" {
		c.Command = c.Command[1:]
	}
	src, devs, err := c.SourceFlags.Open(log)
	if err != nil {
		return err
	}
	defer src.Close()
	res, err := runner.Record(ctx, runner.RecordOptions{Out: c.Out, Duration: c.Duration, Tail: c.Tail, Command: c.Command,
		Sampler: c.SamplerFlags.Config(), Watchdog: watchdog(0), PTY: c.PTY}, src, devs, log)
	if res == nil {
		return err
	}
	if err != nil {
		log.Error("recording incomplete", "file", c.Out, "err", err)
	} else {
		log.Info("trace written", "file", c.Out)
	}
	cpu := cli.ProcessCPU()
	wall := time.Since(started)
	fmt.Printf("lem-run CPU: %.3f s user+sys over %.1f s wall = %.2f %% of a core for %d GPU(s)\n",
		cpu.Seconds(), wall.Seconds(), 100*cpu.Seconds()/wall.Seconds(), len(src.Environment().Devices))
	if res.Trace != nil {
		if werr := analyze.WritePhaseTables(os.Stdout, analyze.PhaseEnergies(res.Trace, energy.Options{})); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if m := res.Manifest; m != nil {
		if werr := runner.WriteSummary(os.Stdout, c.Out, m); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if res.ExitCode != 0 {
		return &cli.ExitError{Code: res.ExitCode, Err: errors.Join(err, fmt.Errorf("command %q: %s", c.Command[0], res.Manifest.Status))}
	}
	return err
}
