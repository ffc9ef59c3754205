package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/lem-energy/lem/analyze/report"
)

type validateCmd struct {
	Paths []string `arg:"" help:"Run directories, or directories holding them."`
}

// errInvalid makes validate exit non-zero for pipelines.
var errInvalid = errors.New("runs fail the quality rules")

func (c *validateCmd) Run(ctx context.Context, log *slog.Logger) error {
	// The rules read manifests only (report.Violations): the traces are not needed.
	runs, probs := report.LoadManifests(c.Paths)
	bad := len(probs)
	for _, p := range probs {
		fmt.Printf("ERROR %s: %s\n", p.Path, p.Err)
	}
	for _, r := range runs {
		what := r.Manifest.Experiment
		if r.Attempts > 1 { // a campaign's run measured again: the earlier attempts are kept, not validated
			what += fmt.Sprintf("; attempt %d", r.Attempts)
		}
		v := report.Violations(r.Manifest)
		if len(v) == 0 {
			fmt.Printf("ok    %s (%s)\n", r.Manifest.RunID, what)
			continue
		}
		bad++
		for _, s := range v {
			fmt.Printf("FAIL  %s (%s): %s\n", r.Manifest.RunID, what, s)
		}
	}
	if len(runs) == 0 && len(probs) == 0 {
		return fmt.Errorf("%w in %v", report.ErrNoRuns, c.Paths)
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d of %d inputs", errInvalid, bad, len(runs)+len(probs))
	}
	return nil
}
