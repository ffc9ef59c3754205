package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/lem-energy/lem/analyze/account"
	"github.com/lem-energy/lem/analyze/calibrate"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

type calibrateCmd struct {
	Input     string        `arg:"" type:"path" help:"A lem trace (.parquet) or a run directory, recorded while the meter logged the board."`
	Meter     string        `required:"" type:"existingfile" help:"The power meter's log: CSV with a header naming a time and a power column (see docs/METHODOLOGY.md), or a SPEC PTDaemon log."`
	Format    string        `default:"auto" enum:"auto,csv,ptd" help:"Meter log format (${enum}); auto: PTDaemon if the first line starts with Time,."`
	TimeZone  string        `name:"meter-timezone" default:"UTC" help:"Time zone of meter times that carry none (PTDaemon logs its host's local time): an IANA name, UTC or Local."`
	GPU       *int          `help:"The GPU the meter measured (default: the trace's only GPU)."`
	MaxOffset time.Duration `name:"max-offset" default:"10s" help:"Search the meter clock's offset from lem's within ± this."`
	Accuracy  float64       `name:"meter-accuracy" help:"The meter's specified accuracy, a relative bound (0.002 for ±0.2 % of reading): added to every corrected energy's uncertainty."`
	Out       string        `short:"o" default:"calibration.json" help:"Calibration file to write; the other boards of an existing one are kept."`
}

func (c *calibrateCmd) Run(ctx context.Context, log *slog.Logger) error {
	loc, err := time.LoadLocation(c.TimeZone)
	if err != nil {
		return fmt.Errorf("--meter-timezone %q: %v%w", c.TimeZone, err, cli.Usage)
	}
	if c.Accuracy < 0 || c.Accuracy > 0.5 {
		return fmt.Errorf("--meter-accuracy %g: want a relative bound between 0 and 0.5%w", c.Accuracy, cli.Usage)
	}
	path := c.Input
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, manifest.TraceFile)
	}
	t, err := trace.ReadFile(path)
	if err != nil {
		return err
	}
	g, err := c.gpu(t)
	if err != nil {
		return err
	}
	f, err := os.Open(c.Meter)
	if err != nil {
		return fmt.Errorf("meter log: %w", err)
	}
	defer f.Close()
	ml, err := calibrate.Parse(c.Meter, f, c.Format, loc)
	if err != nil {
		return fmt.Errorf("%v%w", err, cli.Usage)
	}
	s := t.GPUs[g]
	from, to := s.Common()
	res, err := calibrate.Fit(ml.Readings, account.NewMeter(s), from, to, calibrate.Options{MaxOffset: c.MaxOffset})
	if err != nil {
		return fmt.Errorf("calibrating GPU %d of %s against %s: %w", g, path, c.Meter, err)
	}
	b := calibrate.BoardOf(res)
	b.Meter, b.Format, b.Trace, b.FittedAt = c.Meter, ml.Format, path, time.Now().UTC()
	b.MeterU = c.Accuracy / math.Sqrt(3)
	uuid := ""
	if d, ok := t.Env.Device(g); ok {
		uuid, b.Name = d.UUID, d.Name
	}
	if uuid == "" {
		return fmt.Errorf("GPU %d of %s has no UUID: a calibration is kept per board%w", g, path, cli.Usage)
	}
	cal := &calibrate.File{Boards: map[string]calibrate.Board{}}
	if old, err := calibrate.ReadFile(c.Out); err == nil {
		cal = old
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%v (not overwritten)%w", err, cli.Usage)
	}
	cal.Boards[uuid] = b
	if err := cal.Write(c.Out); err != nil {
		return err
	}
	q := res.Quantile97()
	fmt.Printf("GPU %d (%s, %s): gain %.4f ± %.4f, offset %+.2f ± %.2f W (95 %%, fit only); meter clock %+.3f s from lem's; "+
		"%d readings every %s over %.0f–%.0f W, residual %.2f W (lag-1 %.2f)%s\n", g, uuid, b.Name, res.Gain, q*res.GainSE,
		res.OffsetW, q*res.OffsetSE, res.ClockOffset.Seconds(), res.Points, res.Interval, res.MinW, res.MaxW,
		res.ResidualSDW, res.Lag1, skipped(ml.Skipped))
	if c.Accuracy == 0 {
		log.Warn("the meter's own accuracy is not in the calibration's uncertainty: give --meter-accuracy (its specification)")
	}
	fmt.Println(c.Out)
	return nil
}

func skipped(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d readings the meter gave as NaN left out", n)
}

// gpu picks the measured GPU: --gpu, or the trace's only one.
func (c *calibrateCmd) gpu(t *trace.Trace) (int, error) {
	gs := t.GPUIndices()
	if c.GPU != nil {
		if _, ok := t.GPUs[*c.GPU]; !ok {
			return 0, fmt.Errorf("--gpu %d: the trace holds GPUs %v%w", *c.GPU, gs, cli.Usage)
		}
		return *c.GPU, nil
	}
	if len(gs) != 1 {
		return 0, fmt.Errorf("the trace holds GPUs %v: say which one the meter measured with --gpu%w", gs, cli.Usage)
	}
	return gs[0], nil
}
