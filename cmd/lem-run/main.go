// Command lem-run brackets GPU experiments with an idle baseline, exact energy-counter reads and the workload's
// own phase markers.
package main

import (
	"os"

	"github.com/alecthomas/kong"

	"github.com/lem-energy/lem/internal/cli"
)

type app struct {
	cli.Globals
	Run        runCmd         `cmd:"" default:"withargs" help:"Measure one experiment: baseline, bracketed run, phases, manifest (the default)."`
	Record     recordCmd      `cmd:"" help:"Record the GPUs' power samples, counter and telemetry to a trace, optionally around a command."`
	Campaign   campaignCmd    `cmd:"" help:"Run a campaign file: a grid of experiments over repeated cycles, resumable."`
	Introspect introspectCmd  `cmd:"" help:"Print an inference backend's parameter catalogue (versions, parameters, defaults) as JSON."`
	Version    cli.VersionCmd `cmd:"" help:"Print the version."`
}

func main() {
	var a app
	ctx := kong.Parse(&a, kong.Name("lem-run"),
		kong.Description("Measure the GPU energy of an experiment."),
		kong.UsageOnError(), kong.DefaultEnvars("LEM"), kong.Vars(cli.SamplerVars("1s", "100ms")))
	err := ctx.Run(a.Globals.Logger(os.Stderr))
	if code, ok := cli.ExitCode(err); ok {
		os.Exit(code)
	}
	ctx.FatalIfErrorf(err)
}
