package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/lem-energy/lem/analyze"
	"github.com/lem-energy/lem/analyze/energy"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/gpu"
	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/sampler"
	"github.com/lem-energy/lem/internal/trace"
	"github.com/lem-energy/lem/runner"
)

type recordCmd struct {
	cli.SourceFlags
	cli.SamplerFlags
	Out      string        `short:"o" default:"trace.parquet" help:"Trace file to write."`
	Duration time.Duration `help:"Stop after this long (default: when the command exits, the replay ends, or on SIGINT)."`
	Tail     time.Duration `default:"1s" help:"Keep recording this long after the command exits."`
	Command  []string      `arg:"" optional:"" passthrough:"" help:"Command to run while recording; its LEM_PHASE/LEM_RESULT/MARK lines become events."`
}

func (c *recordCmd) Run(log *slog.Logger) error {
	started := time.Now()
	if len(c.Command) > 0 && c.Command[0] == "--" {
		c.Command = c.Command[1:]
	}
	src, devs, err := c.SourceFlags.Open(log)
	if err != nil {
		return err
	}
	defer src.Close()
	smp, err := sampler.New(src, devs, c.SamplerFlags.Config(), log)
	if err != nil {
		return err
	}
	w, err := trace.Create(c.Out, smp.Environment())
	if err != nil {
		return err
	}
	rec := recorder.Start(smp, recorder.Options{Writer: w, Memory: true})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, stopSampler := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); smp.Run(sctx) }()

	var runErr error
	switch {
	case len(c.Command) > 0:
		runErr = c.runCommand(ctx, smp, log)
		sleepCtx(ctx, c.Tail)
	default:
		var ended <-chan struct{}
		if r, ok := src.(*gpu.ReplaySource); ok {
			ended = r.Ended()
		}
		var timeout <-chan time.Time
		if c.Duration > 0 {
			timeout = time.After(c.Duration)
		}
		select {
		case <-ctx.Done():
		case <-ended:
		case <-timeout:
		}
	}
	stopSampler()
	wg.Wait()
	t, recErr := rec.Stop()
	if recErr != nil {
		log.Error("recording incomplete", "file", c.Out, "err", recErr)
	} else {
		log.Info("trace written", "file", c.Out)
	}
	cpu := cli.ProcessCPU()
	wall := time.Since(started)
	fmt.Printf("lem-run CPU: %.3f s user+sys over %.1f s wall = %.2f %% of a core for %d GPU(s)\n",
		cpu.Seconds(), wall.Seconds(), 100*cpu.Seconds()/wall.Seconds(), len(devs))
	if err := analyze.WritePhaseTables(os.Stdout, analyze.PhaseEnergies(t, energy.Options{})); err != nil {
		return err
	}
	return errors.Join(runErr, recErr)
}

// runCommand runs the command in its own process group, passes its output through and turns marker lines into
// events. An interrupt is forwarded as SIGTERM to the whole group.
func (c *recordCmd) runCommand(ctx context.Context, smp *sampler.Sampler, log *slog.Logger) error {
	cmd := exec.Command(c.Command[0], c.Command[1:]...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("command %q: %w", c.Command[0], err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %q: %w", c.Command[0], err)
	}
	smp.Emit(trace.Event{GPU: trace.NoGPU, Type: trace.EventRunStart, Name: c.Command[0]})
	done := make(chan struct{})
	go func() {
		defer close(done)
		followMarkers(out, os.Stdout, smp, log)
	}()
	go func() {
		select {
		case <-ctx.Done():
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		case <-done:
		}
	}()
	<-done
	err = cmd.Wait()
	smp.Emit(trace.Event{GPU: trace.NoGPU, Type: trace.EventRunEnd, Name: c.Command[0]})
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &cli.ExitError{Code: max(ee.ExitCode(), 1), Err: fmt.Errorf("command %q: %w", c.Command[0], err)}
	}
	return err
}

func followMarkers(r io.Reader, w io.Writer, smp *sampler.Sampler, log *slog.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(w, line)
		evs, ok, err := runner.ParseMarker(line, smp.Clock().Now())
		if !ok {
			continue
		}
		if err != nil {
			log.Warn("marker ignored", "err", err)
			continue
		}
		for _, ev := range evs {
			smp.Emit(ev)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
