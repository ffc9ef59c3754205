package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/lem-energy/lem/analyze/precision"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/manifest"
	"github.com/lem-energy/lem/internal/trace"
)

type precisionCmd struct {
	Input  string `arg:"" type:"path" help:"Run directory (or its trace.parquet) of the characterisation workload, scripts/gpu/precision.py."`
	Format string `short:"f" default:"md" enum:"md,json" help:"Output format (${enum})."`
	GPU    *int   `help:"GPU to analyse (default: the trace's only GPU)."`
	Plot   string `type:"path" placeholder:"FILE.svg" help:"Also draw the characterisation as SVG into this file: each square wave's error against the counter by method, each burst length's energy spread by counter cadence."`
}

func (c *precisionCmd) Run(ctx context.Context, log *slog.Logger) error {
	// Checked before the trace is read: a typo should not cost the analysis.
	if c.Plot != "" {
		if !strings.EqualFold(filepath.Ext(c.Plot), ".svg") {
			return fmt.Errorf("--plot %s: the plot is written as SVG only; name a .svg file%w", c.Plot, cli.Usage)
		}
		if st, err := os.Stat(filepath.Dir(c.Plot)); err != nil || !st.IsDir() {
			return fmt.Errorf("--plot %s: no directory %s to write it in%w", c.Plot, filepath.Dir(c.Plot), cli.Usage)
		}
	}
	path := c.Input
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, manifest.TraceFile)
	}
	t, err := trace.ReadFile(path)
	if err != nil {
		return err
	}
	gs := t.GPUIndices()
	g := 0
	switch {
	case c.GPU != nil:
		if _, ok := t.GPUs[*c.GPU]; !ok {
			return fmt.Errorf("--gpu %d: the trace holds GPUs %v%w", *c.GPU, gs, cli.Usage)
		}
		g = *c.GPU
	case len(gs) == 1:
		g = gs[0]
	default:
		return fmt.Errorf("%s holds GPUs %v: say which with --gpu%w", path, gs, cli.Usage)
	}
	sq, err := precision.Squares(t, g)
	if err != nil {
		return err
	}
	bs, err := precision.BurstTable(t, g, precision.DefaultCadences)
	if err != nil {
		return err
	}
	if len(sq) == 0 && len(bs) == 0 {
		return fmt.Errorf("%s: no square-wave phases (sq_p<period>ms_d<duty>) and no burst windows (burst_<length>ms): "+
			"not a run of scripts/gpu/precision.py%w", path, cli.Usage)
	}
	if c.Plot != "" {
		dev, _ := t.Env.Device(g)
		title := fmt.Sprintf("Precision characterisation, GPU %d", g)
		if dev.Name != "" {
			title = fmt.Sprintf("Precision characterisation, %s (GPU %d)", dev.Name, g)
		}
		if err := fileutil.WriteAtomic(c.Plot, precision.SVG(title, sq, bs)); err != nil {
			return fmt.Errorf("--plot %s: %w", c.Plot, err)
		}
		log.Info("plot written", "file", c.Plot)
	}
	if c.Format == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Squares []precision.SquareRow `json:"squares"`
			Bursts  []precision.BurstRow  `json:"bursts"`
		}{sq, bs})
	}
	fmt.Printf("# Precision characterisation: %s, GPU %d\n\n%s", path, g, precision.Markdown(sq, bs))
	return nil
}
