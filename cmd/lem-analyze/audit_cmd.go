package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/lem-energy/lem/analyze/report"
)

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
