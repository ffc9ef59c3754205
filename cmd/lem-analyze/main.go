// Command lem-analyze computes energy per experiment, phase and token from lem traces.
package main

import (
	"os"

	"github.com/alecthomas/kong"

	"github.com/lem-energy/lem/internal/cli"
)

type app struct {
	cli.Globals
	ImportProbe importProbeCmd `cmd:"" name:"import-probe" help:"Convert an NVML probe CSV recording into a lem trace."`
	Pull        pullCmd        `cmd:"" help:"Pull runs' (or an instance's) power and energy series from Prometheus into lem traces, losslessly."`
	Report      reportCmd      `cmd:"" help:"Per-run and per-experiment energy tables from lem-run's run directories."`
	Validate    validateCmd    `cmd:"" help:"Check runs against the quality rules; exits non-zero when any fails."`
	Audit       auditCmd       `cmd:"" help:"Backend-parameter coverage: every parameter's effective value, explicit vs defaulted, energy-relevant ones highlighted."`
	Phases      phasesCmd      `cmd:"" help:"Energy per phase by counter, 50 Hz samples and hybrid, with capture quality."`
	Synth       synthCmd       `cmd:"" hidden:"" help:"Tile a real recording into a large trace (benchmarks)."`
	Version     cli.VersionCmd `cmd:"" help:"Print the version."`
}

func main() {
	var a app
	ctx := kong.Parse(&a, kong.Name("lem-analyze"),
		kong.Description("Baseline-subtracted GPU energy per experiment, phase and token."),
		kong.UsageOnError(), kong.DefaultEnvars("LEM"))
	ctx.FatalIfErrorf(ctx.Run(a.Globals.Logger(os.Stderr)))
}
