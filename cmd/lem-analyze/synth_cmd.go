package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/recorder"
	"github.com/lem-energy/lem/internal/trace"
)

// synthCmd builds large traces from a real recording for benchmarks (hidden: not an analysis).
type synthCmd struct {
	From     string `required:"" type:"existingfile" help:"Real recording to tile."`
	Copies   int    `default:"640" help:"Copies, each one run."`
	GPUs     int    `name:"gpus" default:"4" help:"GPUs."`
	Output   string `short:"o" required:"" help:"Output trace."`
	Segments int    `name:"segment-copies" help:"Write the trace as a recording's closed segments of this many copies each, beside the output (which is not written): a recording never merged."`
}

func (c *synthCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.Copies < 1 || c.GPUs < 1 || c.Segments < 0 {
		return fmt.Errorf("--copies and --gpus must be at least 1, --segment-copies at least 0")
	}
	src, err := trace.ReadFile(c.From)
	if err != nil {
		return err
	}
	t, err := trace.NewTiler(src, c.GPUs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.Output), 0o755); err != nil {
		return err
	}
	per, files := c.Copies, 1
	if c.Segments > 0 {
		per, files = c.Segments, (c.Copies+c.Segments-1)/c.Segments
	}
	n := 0
	for k := range files {
		path := c.Output
		if c.Segments > 0 {
			name := strings.TrimSuffix(filepath.Base(c.Output), ".parquet")
			path = filepath.Join(filepath.Dir(c.Output), fmt.Sprintf("%s%s-%06d.parquet", recorder.SegmentPrefix, name, k))
		}
		w, err := trace.Create(path, src.Env)
		if err != nil {
			return err
		}
		var m int
		if c.Segments > 0 {
			m, err = t.Write(w, min(per, c.Copies-k*per))
		} else {
			m, err = trace.WriteTiled(w, src, c.Copies, c.GPUs)
		}
		n += m
		if err != nil {
			w.Abort()
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	where := c.Output
	if c.Segments > 0 {
		where = fmt.Sprintf("%d segments of %s", files, c.Output)
	}
	fmt.Printf("%s: %d power samples, %d runs on %d GPUs, %s of recording\n", where, n, c.Copies, c.GPUs,
		(t.Period() * time.Duration(c.Copies)).Round(time.Second))
	return nil
}
