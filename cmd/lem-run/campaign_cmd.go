package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/campaign"
	"github.com/lem-energy/lem/runner/introspect"
)

type campaignCmd struct {
	cli.SourceFlags
	cli.SamplerFlags
	File          string `arg:"" type:"existingfile" help:"Campaign file (YAML)."`
	Out           string `help:"Campaign directory (default campaigns/NAME)."`
	DryRun        bool   `name:"dry-run" help:"Validate, print the ordered plan and its estimated duration, run nothing."`
	Exporter      string `help:"Also post run and phase markers to this lem-exporter URL."`
	ExporterToken string `name:"exporter-token-file" type:"existingfile" help:"Bearer token file for --exporter."`
	Force         bool   `help:"Resume even though the campaign file changed since the campaign started (runs already ok under the new plan's ids are kept)."`
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (c *campaignCmd) Run(log *slog.Logger) error {
	f, err := campaign.Load(c.File)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := campaign.Prepare(ctx, f, c.Out, log)
	if err != nil {
		return err
	}
	if c.DryRun {
		f.PrintPlan(os.Stdout, p.Plan, p.Configs)
		for e, cat := range p.Catalogues {
			fmt.Printf("experiment %s: backend %s %s (%d parameters; %d set explicitly)\n", e.Name, cat.Backend,
				cat.Version, len(cat.Parameters), len(e.BackendParams))
		}
		return nil
	}
	fmt.Fprintf(os.Stderr, "campaign %s: %d configurations × %d cycles = %d runs (%s), about %s; directory %s\n",
		f.Name, len(p.Configs), f.Cycles, len(p.Plan), f.Structure,
		f.Estimate(p.Plan, p.Configs).Round(time.Second), p.OutDir())
	src, devs, err := c.SourceFlags.Open(log)
	if err != nil {
		return err
	}
	defer src.Close()
	token := ""
	if c.ExporterToken != "" {
		b, err := os.ReadFile(c.ExporterToken)
		if err != nil {
			return fmt.Errorf("--exporter-token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	st, err := campaign.Run(ctx, p, campaign.Options{Source: src, Devices: devs,
		Sampler: c.SamplerFlags.Config(), ExporterURL: strings.TrimRight(c.Exporter, "/"), ExporterToken: token,
		RequestGPUs: src.Environment().Source.Kind == "nvml", Stdout: os.Stdout,
		Progress: campaign.NewProgress(os.Stderr, isTerminal(os.Stderr)), Log: log, Force: c.Force})
	if st != nil {
		fmt.Printf("\ncampaign %s: %s — %s/%s\n\n", st.Campaign, st.Status, p.OutDir(), campaign.StateFile)
		report.ExperimentTable(os.Stdout, st.Experiments)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return &cli.ExitError{Code: runner.ExitInterrupted, Err: fmt.Errorf("campaign interrupted; run it again to resume: %w", err)}
	case errors.Is(err, campaign.ErrIncomplete):
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("some runs did not end ok (see %s); run the campaign again to redo them", campaign.StateFile)}
	}
	return err
}

type introspectCmd struct {
	Backend string   `required:"" enum:"transformers,vllm,tensorrt-llm,python" help:"Inference backend: transformers, vllm, tensorrt-llm, or python (any module:attr given with --target)."`
	Image   string   `help:"Introspect inside this image (Docker); without it, with --python on this host."`
	Python  string   `default:"python3" help:"Python interpreter (in the image, or on this host)."`
	Target  []string `help:"module:attr to catalogue (backend python; repeatable)."`
	Output  string   `short:"o" help:"Write the catalogue to this file (default: stdout)."`
}

func (c *introspectCmd) Run(log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var ex introspect.Executor = introspect.Process{Python: c.Python}
	if c.Image != "" {
		d, err := runner.NewDocker(runner.DockerOptions{Image: c.Image})
		if err != nil {
			return err
		}
		defer d.Close()
		if err := d.Preflight(ctx); err != nil {
			return err
		}
		ex = d
	}
	cat, err := introspect.Capture(ctx, ex, c.Python, c.Backend, c.Target)
	if err != nil {
		return err
	}
	if c.Output != "" {
		if err := cat.Save(c.Output); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%s %s: %d parameters → %s\n", cat.Backend, cat.Version, len(cat.Parameters), c.Output)
		return nil
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(cat)
}
