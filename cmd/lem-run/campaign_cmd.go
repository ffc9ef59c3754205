package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/lem-energy/lem/analyze/report"
	"github.com/lem-energy/lem/internal/cli"
	"github.com/lem-energy/lem/runner"
	"github.com/lem-energy/lem/runner/campaign"
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
	Cooldown      string `help:"Override the file's cool-down gate: idle (the default: each GPU within 2 °C of its usual idle temperature), stable, a temperature such as 45C, or none."`
	IdleHistory   string `name:"idle-history" help:"File of this host's measured idle baselines (default: the user cache directory; 'off': none)."`
}

func (c *campaignCmd) Run(ctx context.Context, log *slog.Logger) error {
	if _, err := runner.ParseCooldown(c.Cooldown); err != nil {
		return fmt.Errorf("--cooldown: %v%w", err, cli.Usage)
	}
	f, err := campaign.Load(c.File)
	if err != nil {
		return err
	}
	prepare := campaign.Prepare
	if c.DryRun {
		prepare = campaign.PrepareDryRun
	}
	p, err := prepare(ctx, f, c.Out, log)
	if err != nil {
		return err
	}
	if c.DryRun {
		for _, n := range p.Notes {
			fmt.Fprintln(os.Stderr, "warning: "+n)
		}
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
	token, err := cli.ReadSecret("--exporter-token-file", c.ExporterToken)
	if err != nil {
		return err
	}
	st, err := campaign.Run(ctx, p, campaign.Options{Source: src, Devices: devs,
		Sampler: c.SamplerFlags.Config(), ExporterURL: c.Exporter, ExporterToken: token,
		RequestGPUs: src.Environment().Source.Kind == "nvml", Watchdog: watchdog(0), Stdout: os.Stdout,
		Progress: campaign.NewProgress(os.Stderr, cli.IsTerminal(os.Stderr)), Log: log, Force: c.Force,
		Cooldown: c.Cooldown, IdleHistory: c.IdleHistory})
	if st != nil {
		fmt.Printf("\ncampaign %s: %s — %s/%s\n\n", st.Campaign, st.Status, p.OutDir(), campaign.StateFile)
		report.ExperimentTable(os.Stdout, st.Experiments)
	}
	// The error names the campaign, what failed and where (its run directory, campaign.json) on one line.
	switch {
	case err != nil && ctx.Err() != nil:
		return &cli.ExitError{Code: runner.ExitInterrupted, Err: err}
	case errors.Is(err, campaign.ErrIncomplete):
		return &cli.ExitError{Code: 1, Err: err}
	}
	return err
}
